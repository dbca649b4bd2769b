//! Reads go to a real streaming replica, writes to the primary, and reads fall back to the
//! primary without errors when the replica stops.

use std::time::{Duration, Instant};

use serde_json::json;
use swarm_director::{
    config::SecretUrl,
    store::{ReadFrom, Store},
    task::TaskEnvelope,
};

use crate::support::{TestEnv, pg_cluster::PgPair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_the_replica_and_fall_back_to_the_primary() {
    let mut pair = PgPair::start();
    let env = TestEnv::new().await;
    let mut settings = env.settings.database.clone();
    settings.url = SecretUrl::new(pair.primary_url());
    settings.replica_urls = vec![SecretUrl::new(pair.standby_url())];
    let store = Store::connect(&settings).await.unwrap();
    store.migrate().await.unwrap();

    // Writes go to the primary.
    let (standby, port): (bool, i32) =
        sqlx::query_as("SELECT pg_is_in_recovery(), inet_server_port()")
            .fetch_one(store.primary())
            .await
            .unwrap();
    assert_eq!((standby, port), (false, i32::from(pair.primary_port)));
    let task = TaskEnvelope::new("echo", json!({"replicated": true}));
    store
        .record_queued(std::slice::from_ref(&task))
        .await
        .unwrap();

    // A read right after the write finds it (from the primary if the replica lags) ...
    let (found, _) = store.read_task(task.id).await.unwrap();
    assert!(found.is_some(), "read-your-write");
    // ... and once replicated it comes from the standby.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (found, from) = store.read_task(task.id).await.unwrap();
        if from == ReadFrom::Replica {
            assert_eq!(found.unwrap().status, "queued");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never served the row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (standby, port, from) = store.read_probe().await.unwrap();
    assert_eq!(
        (standby, port, from),
        (true, i32::from(pair.standby_port), ReadFrom::Replica)
    );

    // The replica stops: reads go to the primary, without an error.
    pair.stop_standby();
    let fallback = Instant::now();
    let (found, from) = store.read_task(task.id).await.unwrap();
    assert!(found.is_some() && from == ReadFrom::Primary);
    assert!(
        fallback.elapsed() < Duration::from_secs(2),
        "fell back in {:?}",
        fallback.elapsed()
    );
    for _ in 0..3 {
        let (found, from) = store.read_task(task.id).await.unwrap();
        assert!(found.is_some());
        assert_eq!(from, ReadFrom::Primary);
    }
    let (standby, port, from) = store.read_probe().await.unwrap();
    assert_eq!(
        (standby, port, from),
        (false, i32::from(pair.primary_port), ReadFrom::Primary)
    );
    store.drop_schema().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_urls_with_sslmode_require_use_tls() {
    let env = TestEnv::new().await;
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl")
        .fetch_one(env.store.primary())
        .await
        .unwrap();
    if ssl != "on" {
        println!("the local PostgreSQL has ssl = {ssl}: nothing to check here");
        env.cleanup().await;
        return;
    }
    let mut settings = env.settings.database.clone();
    let url = settings.url.expose().split('?').next().unwrap().to_string();
    settings.url = SecretUrl::new(format!("{url}?sslmode=require"));
    let store = Store::connect(&settings).await.expect("a TLS connection");
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.primary())
            .await
            .unwrap();
    assert!(encrypted, "the connection is encrypted");
    env.cleanup().await;
}
