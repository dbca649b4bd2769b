//! Delayed tasks: never run early, run within about a second of their time, survive worker
//! and server restarts, spend no attempt waiting (held by the server's schedules on NATS ≥
//! 2.12, by the delay stream before), and read `scheduled` in their row and the mirror.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

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
            .tasks()
            .count_finished(&[id, via_library.id])
            .await
            .unwrap(),
        0
    );
    // The CLI recorded its task: readable, `scheduled`, while it waits.
    let waiting = env
        .store
        .tasks()
        .get(id)
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
    env.publish_straight(&task).await;
    let rows = env.wait_finished(&[task.id], Duration::from_secs(15)).await;
    let counts = worker.stop().await;
    assert_eq!(rows[0].status, "completed");
    let late = lateness(&rows[0], task.not_before.unwrap());
    assert!(late < Duration::from_millis(1500), "on time: {late:?}");
    assert_eq!(counts.dead(), 0, "nothing dead-lettered for waiting");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_wait_where_the_server_allows_and_run_on_time() {
    use swarm_director::{
        broker::{Broker, DelayedCounts},
        config::DelayMode,
    };
    let env = TestEnv::new().await;
    let version = env
        .broker
        .server_version()
        .expect("the server says its version");
    let native = version.at_least(2, 12);
    assert_eq!(env.broker.stream_takes_schedules(), native, "{version}");
    let due = Utc::now() + chrono::Duration::seconds(2);
    let delayed = |data: &str| {
        let mut task = TaskEnvelope::new("echo", json!(data));
        task.not_before = Some(due);
        task
    };
    let by_default = delayed("where the server allows");
    env.broker.publish(&by_default, Codec::Json).await.unwrap();
    let expected = if native {
        DelayedCounts {
            held_by_server: 1,
            in_delay_stream: 0,
        }
    } else {
        DelayedCounts {
            held_by_server: 0,
            in_delay_stream: 1,
        }
    };
    assert_eq!(env.broker.delays().counts().await.unwrap(), expected);

    // `stream` keeps them in the delay stream on any server.
    let mut settings = env.settings.nats.clone();
    settings.delays = DelayMode::Stream;
    let in_stream = Broker::with_client(env.broker.client().clone(), &settings);
    in_stream.ensure_stream().await.unwrap();
    let kept = delayed("in the delay stream");
    in_stream.publish(&kept, Codec::Json).await.unwrap();
    let counts = env.broker.delays().counts().await.unwrap();
    assert_eq!(counts.in_delay_stream, expected.in_delay_stream + 1);

    // `native` on a server without schedules is refused, naming the version needed.
    settings.delays = DelayMode::Native;
    let asked = Broker::with_client(env.broker.client().clone(), &settings);
    match asked.ensure_stream().await {
        Ok(()) => assert!(native, "{version} has no message schedules"),
        Err(error) => {
            let said = error.to_string();
            assert!(!native, "{version}: {said}");
            assert!(
                said.contains("2.12") && said.contains(&version.to_string()),
                "{said}"
            );
        }
    }

    let worker = env.spawn(env.worker());
    let rows = env
        .wait_finished(&[by_default.id, kept.id], Duration::from_secs(15))
        .await;
    worker.stop().await;
    for row in &rows {
        assert_eq!(row.status, "completed");
        let late = lateness(row, due);
        println!(
            "NATS {version}: {} started {late:?} after it was due",
            row.id
        );
        assert!(late < Duration::from_millis(1500), "on time: {late:?}");
    }
    assert_eq!(env.broker.delays().counts().await.unwrap().total(), 0);
    env.assert_stream_drains("held tasks leave when they run")
        .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_published_straight_to_nats_reads_scheduled_in_its_row_and_the_mirror() {
    use redis::AsyncCommands as _;
    use swarm_director::mirror::LegacyKeys;
    let env = TestEnv::new().await;
    let keys = LegacyKeys::new(&env.settings.redis.key_prefix);
    let worker = env.spawn_assembled(env.legacy_worker(|_| {}));
    // A NATS producer: no row made by the API, straight to the task subject.
    let mut task = TaskEnvelope::new("echo", json!("straight"));
    let due = Utc::now() + chrono::Duration::seconds(3);
    task.not_before = Some(due);
    env.publish_straight(&task).await;
    let mut redis = env.redis().await;
    let row = crate::support::eventually("a scheduled row", Duration::from_secs(2), || async {
        env.store
            .tasks()
            .get(task.id)
            .await
            .unwrap()
            .filter(|row| row.status == "scheduled")
    })
    .await;
    let recorded = row.not_before.expect("the due time is recorded");
    assert!(
        (recorded - due).num_milliseconds().abs() < 1,
        "{recorded} vs {due}"
    );
    let shown: Vec<(String, f64)> =
        crate::support::eventually("a scheduled_tasks entry", Duration::from_secs(2), || {
            let (mut redis, key) = (redis.clone(), keys.scheduled_tasks.clone());
            async move {
                let shown: Vec<(String, f64)> = redis.zrange_withscores(key, 0, -1).await.unwrap();
                (!shown.is_empty()).then_some(shown)
            }
        })
        .await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    let member: serde_json::Value = serde_json::from_str(&shown[0].0).unwrap();
    assert_eq!(member["id"], task.id.to_string());
    let score = shown[0].1;
    assert!(
        (score - due.timestamp_micros() as f64 / 1e6).abs() < 0.001,
        "{score}"
    );
    let waiting: Vec<String> = redis.zrange(&keys.agent_tasks, 0, -1).await.unwrap();
    assert!(
        waiting.is_empty(),
        "not waiting before it is due: {waiting:?}"
    );

    let rows = env.wait_finished(&[task.id], Duration::from_secs(15)).await;
    assert_eq!(rows[0].status, "completed");
    lateness(&rows[0], due);
    crate::support::eventually("completed_tasks shows it", Duration::from_secs(3), || {
        let (mut redis, key) = (redis.clone(), keys.completed_tasks.clone());
        let id = task.id.to_string();
        async move {
            redis
                .hexists::<_, _, bool>(key, id)
                .await
                .unwrap()
                .then_some(())
        }
    })
    .await;
    let left: Vec<String> = redis.zrange(&keys.scheduled_tasks, 0, -1).await.unwrap();
    assert!(left.is_empty(), "no longer scheduled once done: {left:?}");
    worker.stop().await;
    env.cleanup().await;
}
