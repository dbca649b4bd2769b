//! Horizontal scale on a real three-node JetStream cluster: an R3 stream survives the loss
//! of its leader mid-run with nothing lost.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};
use tokio::process::Child;

use crate::support::{TestEnv, eventually, nats_cluster::NatsCluster};

fn spawn_worker(env: &TestEnv) -> Child {
    env.swarmd()
        .arg("worker")
        .env("SWARM_ACK_WAIT_SECS", "2")
        .env("SWARM_CONCURRENCY", "32")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start swarmd worker")
}

/// `n` short sleep tasks over all priorities; their ids.
async fn publish_sleeps(env: &TestEnv, n: usize) -> Vec<uuid::Uuid> {
    let tasks: Vec<_> = (0..n)
        .map(|n| TaskEnvelope::new("sleep", json!({"ms": 2})).with_priority((n % 10) as u8))
        .collect();
    let results = env
        .broker
        .publish_many(&tasks, Codec::MessagePack, 512, || {})
        .await;
    assert!(results.iter().all(Result::is_ok));
    tasks.iter().map(|t| t.id).collect()
}

/// Rows written again after their final write: a second commit of a finished task.
async fn rewritten_after_finishing(env: &TestEnv, ids: &[uuid::Uuid]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE id = ANY($1) AND updated_at IS DISTINCT FROM completed_at",
    )
    .bind(ids)
    .fetch_one(env.store.primary())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_dies_and_nothing_is_lost() {
    let mut cluster = NatsCluster::start();
    let env = TestEnv::on_cluster(Some(cluster.urls()), 3).await;
    let mut stream = env.stream().await;
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3, "an R3 stream");
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a stream leader");

    let ids = publish_sleeps(&env, 5000).await;
    let mut workers = [spawn_worker(&env), spawn_worker(&env)];

    while (env.store.tasks().count_finished(&ids).await.unwrap() as usize) < ids.len() / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill(&leader);
    let killed = Instant::now();
    // The pause: how long until completions flow again.
    let before = env.store.tasks().count_finished(&ids).await.unwrap();
    let mut resumed = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = env.store.tasks().count_finished(&ids).await.unwrap();
        if resumed.is_none() && done > before + 50 {
            resumed = Some(killed.elapsed());
        }
        if done as usize == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 5,000 done after the node died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = env.store.tasks().by_ids(&ids).await.unwrap();
    assert_eq!(rows.len(), 5000);
    assert!(rows.iter().all(|r| r.status == "completed"), "none lost");
    // A final write is its row's last: redelivered work was recognised or fenced off.
    assert_eq!(
        rewritten_after_finishing(&env, &ids).await,
        0,
        "none committed twice"
    );
    println!(
        "killed the stream leader {leader} after {before} of 5,000: work flowed again after {:.2} s, all done {:.2} s after the kill",
        resumed.unwrap_or_default().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    for worker in &mut workers {
        let _ = worker.start_kill();
        let _ = worker.wait().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surviving_worker_finishes_everything() {
    let env = TestEnv::new().await;
    let ids = publish_sleeps(&env, 2000).await;
    let mut doomed = spawn_worker(&env);
    let mut survivor = spawn_worker(&env);
    while (env.store.tasks().count_finished(&ids).await.unwrap() as usize) < ids.len() / 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    eventually(
        "the survivor to finish the work",
        Duration::from_secs(60),
        || async {
            (env.store.tasks().count_finished(&ids).await.unwrap() as usize == ids.len())
                .then_some(())
        },
    )
    .await;
    let rows = env.store.tasks().by_ids(&ids).await.unwrap();
    assert!(rows.iter().all(|r| r.status == "completed"));
    assert_eq!(
        rewritten_after_finishing(&env, &ids).await,
        0,
        "none committed twice"
    );
    let by_survivor = rows.iter().filter(|r| r.attempts > 1).count();
    println!(
        "one of two workers killed: the survivor finished all 2,000 ({by_survivor} redelivered from the dead one)"
    );
    env.assert_stream_drains("every task acknowledged by the survivor")
        .await;
    let _ = survivor.start_kill();
    let _ = survivor.wait().await;
    env.cleanup().await;
}
