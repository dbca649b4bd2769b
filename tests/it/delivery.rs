//! Delivery guarantees: de-duplication, exactly-once effect, and no loss when a worker
//! process dies holding a task.

use std::{process::Stdio, time::Duration};

use async_nats::HeaderMap;
use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::support::{Settled, TestEnv, eventually, own_metrics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_id_is_stored_and_processed_once() {
    let env = TestEnv::new().await;
    let task = TaskEnvelope::new("echo", json!({"once": true}));
    let first = env.broker.publish(&task, Codec::Json).await.unwrap();
    let again = env.broker.publish(&task, Codec::MessagePack).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate, "JetStream must drop the re-publish");
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(env.stream_messages().await, 1);

    let worker = env.spawn(env.worker());
    let rows = env.wait_finished(&[task.id], Duration::from_secs(10)).await;
    assert_eq!(rows[0].attempts, 1);
    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_task_delivered_again_is_acked_without_running() {
    // The same task arrives again under another message id, as after a producer retry
    // that did not keep the id.
    let task = TaskEnvelope::new("sleep", json!({"ms": 1}));
    a_late_copy_is_not_run(task, "late-copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_published_again_after_the_duplicate_window_is_not_run_again() {
    // Created ten minutes ago and published again under its own id: JetStream stored the
    // copy, so the first one is older than the duplicate window (simulated here by storing
    // the first copy under another id) and the worker must look the task up.
    let mut task = TaskEnvelope::new("sleep", json!({"ms": 1}));
    task.created_at -= chrono::Duration::minutes(10);
    let own_id = task.id.to_string();
    a_late_copy_is_not_run(task, &own_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_a_task_in_one_fetch_run_it_once() {
    // Both copies are stored (different message ids) before the worker starts, so its first
    // fetch takes them together: one runs, the other is handed back and comes again as a
    // duplicate of the committed task.
    let env = TestEnv::new().await;
    let task = TaskEnvelope::new("sleep", json!({"ms": 1}));
    let subject = env.broker.subjects().task(task.priority, &task.agent_type);
    let body = Codec::Json.encode(&task).unwrap();
    for copy in ["copy-1", "copy-2"] {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", copy);
        headers.insert("Content-Type", "application/json");
        let stored = env
            .broker
            .publish_raw(subject.clone(), headers, body.clone())
            .await
            .unwrap();
        assert!(!stored.duplicate, "{copy} is stored");
    }
    let worker = env.spawn(env.worker());
    let rows = env.wait_finished(&[task.id], Duration::from_secs(10)).await;
    assert_eq!(rows[0].attempts, 1);
    eventually(
        "the second copy settled as a duplicate",
        Duration::from_secs(10),
        || async { (worker.counts.duplicates() == 1).then_some(()) },
    )
    .await;
    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 1, "the agent ran once");
    env.assert_stream_drains("both copies acknowledged").await;
    env.cleanup().await;
}

/// Runs `task` to completion, then publishes it again with `Nats-Msg-Id: copy_id` and
/// checks the copy is acknowledged as a duplicate without running or touching the row.
async fn a_late_copy_is_not_run(task: TaskEnvelope, copy_id: &str) {
    let env = TestEnv::new().await;
    let subject = env.broker.subjects().task(task.priority, &task.agent_type);
    let body = Codec::Json.encode(&task).unwrap();
    let headers = |id: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert("Content-Type", "application/json");
        headers
    };
    env.broker
        .publish_raw(subject.clone(), headers("first-copy"), body.clone())
        .await
        .unwrap();
    let worker = env.spawn(env.worker());
    let before = env.wait_finished(&[task.id], Duration::from_secs(10)).await;

    let copy = env
        .broker
        .publish_raw(subject, headers(copy_id), body)
        .await
        .unwrap();
    assert!(!copy.duplicate, "the copy is stored");

    eventually("the duplicate settled", Duration::from_secs(10), || async {
        (worker.counts.duplicates() > 0).then_some(())
    })
    .await;
    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 1, "the agent ran once");
    let after = env.store.tasks().get(task.id).await.unwrap().unwrap();
    assert_eq!(
        after.completed_at, before[0].completed_at,
        "the row was not touched"
    );
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing() {
    let env = TestEnv::new().await;
    let slow = TaskEnvelope::new("sleep", json!({"ms": 3000}));
    let quick: Vec<_> = (0..20)
        .map(|n| TaskEnvelope::new("echo", json!({"n": n})))
        .collect();
    env.broker.publish(&slow, Codec::Json).await.unwrap();

    // A real worker process, killed with SIGKILL while it holds the slow task.
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmd"))
        .arg("worker")
        .envs(env.process_env())
        .env("SWARM_ACK_WAIT_SECS", "1")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start swarmd worker");
    let row = eventually(
        "the process to take the task",
        Duration::from_secs(20),
        || async { env.store.tasks().get(slow.id).await.unwrap() },
    )
    .await;
    assert_eq!(row.status, "processing");
    process.start_kill().unwrap();
    process.wait().await.unwrap();
    for task in &quick {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }

    // A second worker finishes everything, the orphaned task included.
    let worker = env.spawn(env.worker());
    let mut ids: Vec<_> = quick.iter().map(|t| t.id).collect();
    ids.push(slow.id);
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    let counts = worker.stop().await;
    assert!(rows.iter().all(|r| r.status == "completed"));
    let slow_row = rows.iter().find(|r| r.id == slow.id).unwrap();
    assert_eq!(
        slow_row.attempts, 2,
        "the orphan came back as a second delivery"
    );
    assert_eq!(slow_row.result, Some(json!({"slept_ms": 3000})));
    assert_eq!(
        counts.completed(),
        21,
        "each committed result ran once here"
    );
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}

/// Blocks its whole (single-threaded) runtime on the first attempt, like a stalled process:
/// no lease renewals go out meanwhile.
struct StallOnce;

#[async_trait::async_trait]
impl swarm_director::agent::Agent for StallOnce {
    fn name(&self) -> &'static str {
        "stall"
    }
    async fn run(
        &self,
        _: &serde_json::Value,
        context: &swarm_director::agent::AgentContext,
    ) -> Result<serde_json::Value, swarm_director::agent::AgentError> {
        if context.attempt == 1 {
            std::thread::sleep(Duration::from_millis(2500));
        }
        Ok(json!({ "attempt": context.attempt }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_workers_late_result_is_fenced_off() {
    use swarm_director::{agent::AgentRegistry, broker::Broker, store::Store, worker::Worker};

    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.nats.ack_wait_secs = 1.0;
    let registry = || AgentRegistry::with_builtins().with(StallOnce);
    let task = TaskEnvelope::new("stall", json!({}));
    env.broker.publish(&task, Codec::Json).await.unwrap();

    // Worker A runs alone on one thread, so the stall freezes everything it does.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (counts_tx, counts_rx) = std::sync::mpsc::channel();
    let stalled_settings = settings.clone();
    let stalled = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let broker = Broker::connect(&stalled_settings.nats).await.unwrap();
            let store = Store::connect(&stalled_settings.database).await.unwrap();
            let worker = Worker::new(broker, store, registry(), stalled_settings.worker)
                .with_metrics(own_metrics());
            counts_tx.send(Settled(worker.metrics())).unwrap();
            let mut stop = stop_rx;
            worker
                .run(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        });
    });
    let stalled_counts = counts_rx.recv().unwrap();
    // A has taken the task (a first delivery writes no row before its outcome).
    while env.consumer_backlog().await.1 == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Worker B takes the redelivery once the lease lapses and commits first.
    let healthy = env.spawn(env.worker_with_agents(registry(), |s| s.nats.ack_wait_secs = 1.0));
    let rows = env.wait_finished(&[task.id], Duration::from_secs(10)).await;
    assert_eq!(rows[0].result, Some(json!({"attempt": 2})));

    // A wakes up, finishes attempt 1 and tries to commit: fenced off.
    eventually(
        "the late result fenced",
        Duration::from_secs(10),
        || async { (stalled_counts.fenced() > 0).then_some(()) },
    )
    .await;
    let after = env.store.tasks().get(task.id).await.unwrap().unwrap();
    assert_eq!(
        after.result,
        Some(json!({"attempt": 2})),
        "the first commit wins"
    );
    assert_eq!(after.attempts, 2);
    stop_tx.send(true).unwrap();
    stalled.join().unwrap();
    let healthy_counts = healthy.stop().await;
    assert_eq!(healthy_counts.completed(), 1);
    assert_eq!(stalled_counts.completed(), 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_first_delivery_shows_as_processing_while_it_runs() {
    let env = TestEnv::new().await;
    let quick = TaskEnvelope::new("echo", json!({"quick": true}));
    let long = TaskEnvelope::new("sleep", json!({"ms": 2000}));
    env.broker.publish(&quick, Codec::Json).await.unwrap();
    env.broker.publish(&long, Codec::Json).await.unwrap();
    let worker = env.spawn(env.worker());
    let rows = env
        .wait_finished(&[quick.id], Duration::from_secs(10))
        .await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("completed", 1)
    );
    assert!(rows[0].started_at.is_some(), "the attempt's start is kept");
    // The long one gets a `processing` row while it runs, then its outcome.
    let row = eventually("a processing row", Duration::from_secs(5), || async {
        env.store.tasks().get(long.id).await.unwrap()
    })
    .await;
    assert_eq!(row.status, "processing", "seen while running");
    assert_eq!(row.worker_id.as_deref(), Some(worker_id(&env).as_str()));
    let rows = env.wait_finished(&[long.id], Duration::from_secs(10)).await;
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("completed", 1)
    );
    worker.stop().await;
    env.cleanup().await;
}

fn worker_id(env: &TestEnv) -> String {
    env.settings.worker.worker_id()
}
