//! Cancellation: a queued or delayed task never runs, a running one is told across
//! processes and stops, one that will not stop is abandoned after the grace period, and a
//! cancel racing completion ends in exactly one final state — row, answer and legacy keys
//! agreeing.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use redis::AsyncCommands as _;
use serde_json::json;
use swarm_director::{
    mirror::LegacyKeys,
    task::{Codec, TaskEnvelope},
};

use crate::{
    api::{app, call, get, post_to},
    support::{TestEnv, eventually, succeeds},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_and_delayed_tasks_cancelled_before_a_worker_comes_never_run() {
    let env = TestEnv::new().await;
    // Each would end `dead` if its agent ran.
    let doomed = || TaskEnvelope::new("fail", json!({"permanent": true}));
    // As the API publishes: a `queued` (or `scheduled`) row first.
    let queued = doomed();
    let mut delayed = doomed();
    delayed.not_before = Some(Utc::now() + chrono::Duration::seconds(2));
    env.store
        .tasks()
        .record_queued(&[queued.clone(), delayed.clone()], None)
        .await
        .unwrap();
    for task in [&queued, &delayed] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let with_row = queued.id;
    let without_row = doomed();
    env.publish_straight(&without_row).await;
    let finished = TaskEnvelope::new("echo", json!("done first"));
    env.broker.publish(&finished, Codec::Json).await.unwrap();
    // A pool of `echo` only finishes that one; the `fail` tasks wait.
    let echo_pool = env.spawn(env.worker_with(|s| s.worker.agents = vec!["echo".into()]));
    env.wait_finished(&[finished.id], Duration::from_secs(10))
        .await;
    echo_pool.stop().await;

    let printed = succeeds(env.swarmd().args([
        "cancel",
        &with_row.to_string(),
        &without_row.id.to_string(),
        &delayed.id.to_string(),
        &finished.id.to_string(),
    ]))
    .await;
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains(&format!("{with_row} cancelled")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{} cancelled", delayed.id)),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{} cancel requested", without_row.id)),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{} already completed", finished.id)),
        "{printed}"
    );

    // A worker started after the cancel learns it from PostgreSQL.
    let assembled = env.legacy_worker(|_| {});
    let worker = env.spawn_assembled(assembled);
    let ids = [with_row, without_row.id, delayed.id];
    let rows = env.wait_finished(&ids, Duration::from_secs(15)).await;
    // The delayed one comes due and is dropped too.
    eventually(
        "the delayed task dropped",
        Duration::from_secs(10),
        || async { (env.broker.delays().counts().await.unwrap().total() == 0).then_some(()) },
    )
    .await;
    env.assert_stream_drains("cancelled tasks leave the stream")
        .await;
    let counts = worker.stop().await;
    for row in &rows {
        assert_eq!(row.status, "cancelled", "{row:?}");
        assert!(
            row.cancelled_by
                .as_deref()
                .is_some_and(|by| by.starts_with("cli:")),
            "{:?}",
            row.cancelled_by
        );
        assert_eq!(row.last_error.as_deref(), Some("cancelled"));
    }
    assert_eq!(counts.dead(), 0, "no agent ran");
    let keys = LegacyKeys::new(&env.settings.redis.key_prefix);
    let mut redis = env.redis().await;
    for id in ids {
        let shown: Option<String> = redis
            .hget(&keys.failed_tasks, id.to_string())
            .await
            .unwrap();
        let shown = shown.unwrap_or_else(|| {
            panic!(
                "{id} not in failed_tasks ({with_row} queued, {} straight, {} delayed)",
                without_row.id, delayed.id
            )
        });
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(shown["last_error"], "cancelled", "{shown}");
    }
    let finished_row = env.store.tasks().get(finished.id).await.unwrap().unwrap();
    assert_eq!(
        finished_row.status, "completed",
        "a finished task stays as it ended"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_cancelled_over_http_and_one_that_will_not_stop_is_abandoned() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker_with(|s| s.worker.cancel_grace_secs = 1.0));
    let app = app(&env, Some("cancel-token"));
    let listens = TaskEnvelope::new("sleep", json!({"ms": 20_000}));
    let deaf = TaskEnvelope::new("sleep", json!({"ms": 20_000, "ignore_cancel": true}));
    for task in [&listens, &deaf] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    // Both running: each reported progress.
    eventually("both running", Duration::from_secs(10), || async {
        let rows = env
            .store
            .tasks()
            .by_ids(&[listens.id, deaf.id])
            .await
            .unwrap();
        (rows.len() == 2 && rows.iter().all(|r| r.progress.is_some())).then_some(())
    })
    .await;
    let asked = Instant::now();
    for task in [&listens, &deaf] {
        let cancelled_before = worker.counts.cancelled();
        let sent = Instant::now();
        let (status, body) = call(
            &app,
            post_to(
                &format!("/v1/tasks/{}/cancel", task.id),
                "",
                Some("cancel-token"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "cancelled");
        crate::support::schemas::assert_openapi_response(
            "post",
            "/v1/tasks/{id}/cancel",
            200,
            &body,
        );
        if task.id == listens.id {
            // Told across NATS, the agent stops and its delivery is settled cancelled.
            eventually("the agent stopped", Duration::from_secs(3), || async {
                (worker.counts.cancelled() > cancelled_before).then_some(())
            })
            .await;
            println!(
                "a listening agent stopped {:?} after the cancel was sent",
                sent.elapsed()
            );
        }
    }
    // The row is final at once; the agents are told and stop (or are dropped).
    let (_, read) = call(&app, get(format!("/v1/tasks/{}", listens.id))).await;
    assert_eq!(read["status"], "cancelled", "{read}");
    assert_eq!(read["cancelled_by"], "api:write token #1");
    crate::support::schemas::assert_openapi_response("get", "/v1/tasks/{id}", 200, &read);
    let next = TaskEnvelope::new("echo", json!("after"));
    env.broker.publish(&next, Codec::Json).await.unwrap();
    env.wait_finished(&[next.id], Duration::from_secs(10)).await;
    env.assert_stream_drains("both cancelled deliveries acknowledged")
        .await;
    let stopped = asked.elapsed();
    println!("both attempts ended {stopped:?} after the cancel (grace 1 s for the deaf one)");
    assert!(stopped < Duration::from_secs(5), "{stopped:?}");
    let counts = worker.stop().await;
    assert_eq!(counts.cancelled(), 2);

    // Cancelling what has finished is refused; a bad id is a 400.
    let (status, body) = call(
        &app,
        post_to(
            &format!("/v1/tasks/{}/cancel", next.id),
            "",
            Some("cancel-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_finished");
    let (status, _) = call(
        &app,
        post_to("/v1/tasks/nope/cancel", "", Some("cancel-token")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_completion_ends_in_one_final_state_everywhere() {
    let env = TestEnv::new().await;
    let worker = env.spawn_assembled(env.legacy_worker(|s| s.worker.cancel_grace_secs = 0.2));
    let app = app(&env, Some("race-token"));
    let tasks: Vec<TaskEnvelope> = (0..200)
        .map(|i| TaskEnvelope::new("sleep", json!({"ms": i % 40})))
        .collect();
    let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.id).collect();
    env.store.tasks().record_queued(&tasks, None).await.unwrap();
    let results = env
        .broker
        .publish_many(&tasks, Codec::Json, 256, || {})
        .await;
    assert!(results.iter().all(Result::is_ok));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (status, answer) = call(
        &app,
        post_to(
            "/v1/tasks/cancel",
            json!({ "ids": ids }).to_string(),
            Some("race-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    crate::support::schemas::assert_openapi_response("post", "/v1/tasks/cancel", 200, &answer);
    let rows = env.wait_finished(&ids, Duration::from_secs(20)).await;
    env.assert_stream_drains("every delivery acknowledged")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    let said_cancelled: Vec<String> = answer["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let said_finished: Vec<(String, String)> = answer["finished"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        said_cancelled.len() + said_finished.len(),
        ids.len(),
        "{answer}"
    );
    let keys = LegacyKeys::new(&env.settings.redis.key_prefix);
    let mut redis = env.redis().await;
    let (mut cancelled, mut completed) = (0, 0);
    for row in &rows {
        let id = row.id.to_string();
        match row.status.as_str() {
            "cancelled" => {
                cancelled += 1;
                assert!(said_cancelled.contains(&id), "answered otherwise: {id}");
            }
            "completed" => {
                completed += 1;
                assert!(
                    said_finished.contains(&(id.clone(), "completed".into())),
                    "{id} completed but the answer said cancelled"
                );
            }
            other => panic!("{id} ended {other}"),
        }
        let (in_completed, in_failed): (bool, bool) = redis::pipe()
            .hexists(&keys.completed_tasks, &id)
            .hexists(&keys.failed_tasks, &id)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(
            (in_completed, in_failed),
            (row.status == "completed", row.status == "cancelled"),
            "{id}: the legacy keys agree with the row ({})",
            row.status
        );
    }
    println!("racing 200 tasks: {completed} completed first, {cancelled} cancelled");
    assert!(
        cancelled > 0,
        "the cancel came while tasks were still waiting or running"
    );
    env.cleanup().await;
}
