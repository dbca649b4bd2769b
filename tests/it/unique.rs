//! Unique tasks: an `idempotency_key` is held by one live task (until it finishes, or for
//! `unique_for_secs`); a task published meanwhile with the same key is that task. Enforced
//! in PostgreSQL, so racing producers and producers on NATS get one task.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};
use uuid::Uuid;

use crate::{
    api::{app, call, post_to},
    support::{TestEnv, succeeds},
};

async fn rows_with_key(env: &TestEnv, key: &str) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT id, status FROM tasks WHERE idempotency_key = $1 ORDER BY created_at")
        .bind(key)
        .fetch_all(env.store.primary())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_publishing_one_key_at_once_make_one_task() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let publish = || {
        env.swarmd()
            .args(["publish", "--agent", "sleep", "--data", r#"{"ms": 600}"#])
            .args(["--idempotency-key", "nightly-report"])
            .output()
    };
    let (first, second) = tokio::join!(publish(), publish());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.status.success() && second.status.success());
    let id = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert_eq!(
        id,
        String::from_utf8_lossy(&second.stdout).trim(),
        "both name the one task"
    );
    let id: Uuid = id.parse().unwrap();
    env.wait_finished(&[id], Duration::from_secs(15)).await;
    assert_eq!(
        rows_with_key(&env, "nightly-report").await,
        [(id, "completed".to_string())]
    );
    // Finished: the key is free again (`until_finished`), a new task takes it.
    let again = succeeds(
        env.swarmd()
            .args(["publish", "--agent", "sleep", "--data", r#"{"ms": 1}"#])
            .args(["--idempotency-key", "nightly-report"]),
    )
    .await;
    let new_id: Uuid = String::from_utf8_lossy(&again.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_id, id);
    env.wait_finished(&[new_id], Duration::from_secs(15)).await;
    worker.stop().await;
    assert_eq!(rows_with_key(&env, "nightly-report").await.len(), 2);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_for_a_window_answers_the_first_task_over_http_even_once_finished() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let app = app(&env, Some("unique-token"));
    let task = json!({"agent_type": "echo", "data": 1, "idempotency_key": "invoice-7",
                      "unique_for_secs": 60});
    let (status, first) = call(
        &app,
        post_to("/v1/tasks?wait=10s", task.to_string(), Some("unique-token")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = first["id"].clone();
    // Finished, but inside the window: the same task, 200 and `existing`.
    let (status, again) = call(
        &app,
        post_to("/v1/tasks", task.to_string(), Some("unique-token")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!((&again["id"], &again["existing"]), (&id, &json!(true)));
    crate::support::schemas::assert_openapi_response("post", "/v1/tasks", 200, &again);
    // In a batch beside a new task: the held one named by its holder, the batch 202.
    let batch = json!({"tasks": [task, {"agent_type": "echo", "data": 2}]});
    let (status, body) = call(
        &app,
        post_to("/v1/tasks", batch.to_string(), Some("unique-token")),
    )
    .await;
    worker.stop().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ids"][0], id);
    assert_eq!(body["existing"], json!([id]));
    crate::support::schemas::assert_openapi_response("post", "/v1/tasks", 202, &body);
    assert_eq!(rows_with_key(&env, "invoice-7").await.len(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_producers_copy_outside_the_duplicate_window_is_caught_by_the_key() {
    let env = TestEnv::new().await;
    // Two tasks with one key but their own ids (so their own `Nats-Msg-Id`): JetStream keeps
    // both, as it would a copy published after its duplicate window.
    let keyed = |n: i32| {
        let mut task = TaskEnvelope::new("echo", json!(n));
        task.idempotency_key = Some("sensor-42".into());
        task.unique_for_secs = Some(60);
        task
    };
    let (first, copy) = (keyed(1), keyed(2));
    for task in [&first, &copy] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let worker = env.spawn(env.worker());
    // Delivered together, either may take the key first: the other is the copy.
    crate::support::eventually("both are settled", Duration::from_secs(15), || async {
        let counts = &worker.counts;
        let settled = counts.completed() + counts.duplicates();
        (settled >= 2).then_some(())
    })
    .await;
    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 1, "one ran");
    assert_eq!(counts.duplicates(), 1, "the other did not");
    let rows = rows_with_key(&env, "sensor-42").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!([first.id, copy.id].contains(&rows[0].0) && rows[0].1 == "completed");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_keys_that_hold_nothing_and_keeps_live_ones() {
    let env = TestEnv::new().await;
    let mut live = TaskEnvelope::new("echo", json!("live"));
    live.idempotency_key = Some("still-running".into());
    let mut done = TaskEnvelope::new("echo", json!("done"));
    done.idempotency_key = Some("long-finished".into());
    env.store.keys().take(&[&live, &done]).await.unwrap();
    env.store
        .tasks()
        .record_queued(&[live.clone()], None)
        .await
        .unwrap();
    // `done` never got a row (gone with its partition); both keys were taken long ago.
    sqlx::query("UPDATE task_keys SET claimed_at = now() - interval '30 days'")
        .execute(env.store.primary())
        .await
        .unwrap();
    let mut report = Default::default();
    env.store
        .retention()
        .drop_finished_before(chrono::Utc::now() - chrono::Duration::days(7), &mut report)
        .await
        .unwrap();
    assert_eq!(report.forgotten_keys, 1);
    let left: Vec<(String,)> = sqlx::query_as("SELECT idempotency_key FROM task_keys")
        .fetch_all(env.store.primary())
        .await
        .unwrap();
    assert_eq!(left, [("still-running".to_string(),)]);
    env.cleanup().await;
}
