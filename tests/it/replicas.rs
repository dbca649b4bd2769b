//! Reads go to a real streaming replica, writes to the primary, and reads fall back to the
//! primary without errors when the replica stops.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Body, http::Request};
use serde_json::json;
use swarm_director::{
    config::SecretUrl,
    http::{
        api::{self, ApiState, READ_FROM_HEADER},
        auth::Access,
    },
    store::{ReadFrom, Store},
    task::TaskEnvelope,
};
use tower::ServiceExt;

use crate::support::{TestEnv, eventually, pg_cluster::PgPair};

/// How long a test waits for the standby to serve: a read that found it slow (a loaded
/// machine: the first connection past its 750 ms patience) sets it aside for 10 s, so the
/// wait must outlast that pause; a healthy run ends it at once.
const REPLICA_WAIT: Duration = Duration::from_secs(30);

/// A private primary with a streaming standby, and a migrated store writing to the primary
/// and reading from the standby.
async fn with_a_streaming_standby() -> (PgPair, TestEnv, Store) {
    let pair = PgPair::start();
    let env = TestEnv::new().await;
    let mut settings = env.settings.database.clone();
    settings.url = SecretUrl::new(pair.primary_url());
    settings.replica_urls = vec![SecretUrl::new(pair.standby_url())];
    let store = Store::connect(&settings).await.unwrap();
    store.migrate().await.unwrap();
    (pair, env, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_use_the_replica_and_fall_back_to_the_primary() {
    let (mut pair, env, store) = with_a_streaming_standby().await;

    // Writes go to the primary.
    let (standby, port): (bool, i32) =
        sqlx::query_as("SELECT pg_is_in_recovery(), inet_server_port()")
            .fetch_one(store.primary())
            .await
            .unwrap();
    assert_eq!((standby, port), (false, i32::from(pair.primary_port)));
    let task = TaskEnvelope::new("echo", json!({"replicated": true}));
    store
        .tasks()
        .record_queued(std::slice::from_ref(&task), None)
        .await
        .unwrap();

    // A read right after the write finds it (from the primary if the replica lags) ...
    let (found, _) = store.reads().task(task.id).await.unwrap();
    assert!(found.is_some(), "read-your-write");
    // ... and once replicated it comes from the standby.
    let found = eventually("the replica to serve the row", REPLICA_WAIT, || async {
        let (found, from) = store.reads().task(task.id).await.unwrap();
        (from == ReadFrom::Replica).then_some(found)
    })
    .await;
    assert_eq!(found.unwrap().status, "queued");
    let (standby, port, from) = store.reads().probe().await.unwrap();
    assert_eq!(
        (standby, port, from),
        (true, i32::from(pair.standby_port), ReadFrom::Replica)
    );

    // The replica stops: reads go to the primary, without an error.
    pair.stop_standby();
    let fallback = Instant::now();
    let (found, from) = store.reads().task(task.id).await.unwrap();
    assert!(found.is_some() && from == ReadFrom::Primary);
    assert!(
        fallback.elapsed() < Duration::from_secs(2),
        "fell back in {:?}",
        fallback.elapsed()
    );
    for _ in 0..3 {
        let (found, from) = store.reads().task(task.id).await.unwrap();
        assert!(found.is_some());
        assert_eq!(from, ReadFrom::Primary);
    }
    let (standby, port, from) = store.reads().probe().await.unwrap();
    assert_eq!(
        (standby, port, from),
        (false, i32::from(pair.primary_port), ReadFrom::Primary)
    );
    store.drop_schema().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_urls_with_sslmode_require_use_tls() {
    // A server of the test's own with `ssl = on` and a self-signed certificate.
    let pair = PgPair::start_primary_with_tls();
    let env = TestEnv::new().await;
    let mut settings = env.settings.database.clone();
    settings.replica_urls = Vec::new();
    settings.url = SecretUrl::new(format!("{}?sslmode=require", pair.primary_url()));
    let store = Store::connect(&settings).await.expect("a TLS connection");
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.primary())
            .await
            .unwrap();
    assert!(encrypted, "the connection is encrypted");
    // `verify-full` refuses a certificate no trusted authority signed.
    settings.url = SecretUrl::new(format!("{}?sslmode=verify-full", pair.primary_url()));
    assert!(
        Store::connect(&settings).await.is_err(),
        "an untrusted certificate is refused"
    );
    // Without TLS the same server still answers, unencrypted.
    settings.url = SecretUrl::new(format!("{}?sslmode=disable", pair.primary_url()));
    let plain = Store::connect(&settings).await.unwrap();
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(plain.primary())
            .await
            .unwrap();
    assert!(!encrypted);
    store.drop_schema().await.unwrap();
    env.cleanup().await;
}

/// `GET /v1/tasks/{id}` through the API and who answered it.
async fn get_task(app: &axum::Router, id: uuid::Uuid) -> (u16, String, serde_json::Value) {
    let request = Request::get(format!("/v1/tasks/{id}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let from = response
        .headers()
        .get(READ_FROM_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, from, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_status_counts_read_from_the_replica_and_fall_back_to_the_primary() {
    let (mut pair, env, store) = with_a_streaming_standby().await;
    let app = api::router(
        Arc::new(ApiState {
            broker: env.broker.clone(),
            store: store.clone(),
            access: Arc::new(Access::insecure()),
            redis: None,
            meter: Arc::default(),
            events: Default::default(),
            trace_url: swarm_director::config::DEFAULT_TRACE_URL.into(),
            legacy_keys: None,
        }),
        api::Limits::default(),
    );

    let first = TaskEnvelope::new("echo", json!({"n": 1}));
    store
        .tasks()
        .record_queued(std::slice::from_ref(&first), None)
        .await
        .unwrap();
    eventually("the API to read the replica", REPLICA_WAIT, || async {
        let (status, from, body) = get_task(&app, first.id).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("queued")));
        assert!(["primary", "replica"].contains(&from.as_str()), "{from}");
        (from == "replica").then_some(())
    })
    .await;

    // The standby stops replaying: a task written now is on the primary only. The API still
    // finds it (read-your-write, from the primary); the counts come from the standby, which
    // does not know it yet — so they were not read on the primary.
    let standby = sqlx::PgPool::connect(&pair.standby_url()).await.unwrap();
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .unwrap();
    let second = TaskEnvelope::new("echo", json!({"n": 2}));
    store
        .tasks()
        .record_queued(std::slice::from_ref(&second), None)
        .await
        .unwrap();
    let (status, from, _) = get_task(&app, second.id).await;
    assert_eq!((status, from.as_str()), (200, "primary"));
    let (counts, from) = store.reads().status_counts().await.unwrap();
    assert_eq!((counts.get("queued"), from), (Some(&1), ReadFrom::Replica));
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .unwrap();
    standby.close().await;
    eventually("the replica caught up", REPLICA_WAIT, || async {
        let (counts, _) = store.reads().status_counts().await.unwrap();
        (counts.get("queued") == Some(&2)).then_some(())
    })
    .await;

    // The standby is gone: the same reads come from the primary, without an error.
    pair.stop_standby();
    let (status, from, _) = get_task(&app, first.id).await;
    assert_eq!((status, from.as_str()), (200, "primary"));
    let (counts, from) = store.reads().status_counts().await.unwrap();
    assert_eq!((counts.get("queued"), from), (Some(&2), ReadFrom::Primary));
    let (_, from) = store.reads().recent_counts(5).await.unwrap();
    assert_eq!(from, ReadFrom::Primary);
    store.drop_schema().await.unwrap();
    env.cleanup().await;
}
