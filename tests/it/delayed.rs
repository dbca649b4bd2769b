//! Delayed tasks: never run early, run within about a second of their time, survive worker
//! and server restarts, and spend no attempt waiting (the delay stream holds them).

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use swarm_director::{
    broker::headers,
    task::{Codec, TaskEnvelope},
};

use crate::support::{TestEnv, nats_server::NatsServer, succeeds};

/// How late the task started after it was due, checking it did not start early.
fn lateness(row: &swarm_director::store::TaskRecord, due: chrono::DateTime<Utc>) -> Duration {
    let started = row.started_at.expect("it started");
    assert!(started >= due, "started {started}, due {due}: early");
    assert_eq!(row.attempts, 1, "no attempt spent waiting");
    (started - due).to_std().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_runs_on_time_across_a_worker_restart() {
    let env = TestEnv::new().await;
    let first = env.spawn(env.worker());
    let published = succeeds(env.swarmd().args([
        "publish",
        "--agent",
        "echo",
        "--data",
        r#""later""#,
        "--delay",
        "3s",
    ]))
    .await;
    let id: uuid::Uuid = String::from_utf8_lossy(&published.stdout)
        .trim()
        .parse()
        .unwrap();
    let mut via_library = TaskEnvelope::new("echo", json!("library"));
    via_library.not_before = Some(Utc::now() + chrono::Duration::seconds(3));
    env.broker.publish(&via_library, Codec::Json).await.unwrap();
    // The worker that saw them published goes away; another comes before they are due.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.store
            .count_finished(&[id, via_library.id])
            .await
            .unwrap(),
        0
    );
    // The CLI recorded its task: readable, `scheduled`, while it waits.
    let waiting = env
        .store
        .task(id)
        .await
        .unwrap()
        .expect("a row while it waits");
    assert_eq!(waiting.status, "scheduled");
    first.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = env.spawn(env.worker());
    let rows = env
        .wait_finished(&[id, via_library.id], Duration::from_secs(15))
        .await;
    second.stop().await;
    for row in &rows {
        assert_eq!(row.status, "completed");
        let due = if row.id == id {
            row.created_at + chrono::Duration::seconds(3)
        } else {
            via_library.not_before.unwrap()
        };
        let late = lateness(row, due);
        println!("{}: started {late:?} after it was due", row.id);
        assert!(late < Duration::from_millis(1500), "on time: {late:?}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_published_straight_to_its_subject_early_waits_without_spending_an_attempt() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    // A producer that ignores the delay stream: its only attempt must not be used up.
    let mut task = TaskEnvelope::new("echo", json!("direct")).with_max_attempts(1);
    task.not_before = Some(Utc::now() + chrono::Duration::seconds(2));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(headers::MSG_ID, task.id.to_string().as_str());
    headers.insert(headers::CONTENT_TYPE, "application/json");
    env.broker
        .publish_raw(
            env.broker.subjects().task(task.priority, "echo"),
            headers,
            Codec::Json.encode(&task).unwrap(),
        )
        .await
        .unwrap();
    let rows = env.wait_finished(&[task.id], Duration::from_secs(15)).await;
    let counts = worker.stop().await;
    assert_eq!(rows[0].status, "completed");
    let late = lateness(&rows[0], task.not_before.unwrap());
    assert!(late < Duration::from_millis(1500), "on time: {late:?}");
    assert_eq!(
        counts.dead.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing dead-lettered for waiting"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_survives_a_broker_restart() {
    let mut nats = NatsServer::start();
    let env = TestEnv::on_nats(Some(nats.url())).await;
    let worker = env.spawn(env.worker());
    let mut task = TaskEnvelope::new("echo", json!("after the restart"));
    task.not_before = Some(Utc::now() + chrono::Duration::seconds(3));
    env.broker.publish(&task, Codec::Json).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.restart();
    let rows = env.wait_finished(&[task.id], Duration::from_secs(30)).await;
    worker.stop().await;
    assert_eq!(rows[0].status, "completed");
    let late = lateness(&rows[0], task.not_before.unwrap());
    println!("started {late:?} after it was due, across a broker restart");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_task_reads_scheduled_until_due_and_status_counts_it() {
    use axum::http::StatusCode;

    use crate::api::{app, call, get, post_to};
    let env = TestEnv::new().await;
    let app = app(&env, Some("delay-token"));
    let due = Utc::now() + chrono::Duration::seconds(2);
    let task = json!({"agent_type": "echo", "data": "at noon", "not_before": due});
    let (status, body) = call(
        &app,
        post_to("/v1/tasks", task.to_string(), Some("delay-token")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (_, read) = call(&app, get(format!("/v1/tasks/{id}"))).await;
    assert_eq!(read["status"], "scheduled", "{read}");
    crate::support::schemas::assert_openapi_response("get", "/v1/tasks/{id}", 200, &read);
    let printed = succeeds(env.swarmd().arg("status")).await;
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("scheduled (not due yet"), "{printed}");
    assert!(printed.contains("): 1"), "{printed}");

    let worker = env.spawn(env.worker());
    let rows = env
        .wait_finished(&[id.parse().unwrap()], Duration::from_secs(15))
        .await;
    worker.stop().await;
    assert_eq!(rows[0].status, "completed");
    lateness(&rows[0], due);
    env.cleanup().await;
}
