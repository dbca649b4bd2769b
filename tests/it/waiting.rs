//! Waiting for outcomes, as the seed's executor handed a batch's results back: over HTTP
//! (`?wait=`), from the CLI (`publish --wait`) and on NATS itself (`<prefix>.results.<id>`).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::StreamExt as _;
use serde_json::{Value, json};
use swarm_director::{
    broker::PublishOptions,
    task::{Codec, TaskEnvelope},
};
use uuid::Uuid;

use crate::{
    api::{app, call, get, post_to},
    support::{
        TestEnv,
        schemas::{assert_openapi_response, assert_valid, validator},
    },
};

const TOKEN: &str = "wait-token";

fn ids_of(body: &Value) -> Vec<String> {
    body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_mixed_tasks_awaited_over_http_returns_100_outcomes() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let app = app(&env, Some(TOKEN));
    let tasks: Vec<Value> = (0..100)
        .map(|n| match n % 10 {
            0 => json!({"agent_type": "fail", "data": {"permanent": true}}),
            1 => json!({"agent_type": "quality", "data": {"text": "Fine words."}}),
            _ => json!({"agent_type": "echo", "data": {"n": n}}),
        })
        .collect();
    let (status, body) = call(
        &app,
        post_to(
            "/v1/tasks?wait=30s",
            json!({ "tasks": tasks }).to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    worker.stop().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_openapi_response("post", "/v1/tasks", 200, &body);
    assert_eq!(body["complete"], true);
    assert_eq!(body["pending"], json!([]));
    let outcomes = body["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 100);
    for (n, (outcome, id)) in outcomes.iter().zip(ids_of(&body)).enumerate() {
        assert_eq!(outcome["id"], id.as_str(), "in the order sent");
        match n % 10 {
            0 => {
                assert_eq!(outcome["status"], "dead", "{outcome}");
                assert!(outcome["error"].as_str().unwrap().contains("permanent"));
            }
            1 => {
                assert_eq!(outcome["status"], "completed", "{outcome}");
                assert!(outcome["result"].get("score").is_some(), "{outcome}");
            }
            _ => assert_eq!(outcome["result"], json!({"n": n}), "{outcome}"),
        }
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_longer_than_the_wait_is_reported_pending_and_the_rest_final() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let app = app(&env, Some(TOKEN));
    let mut tasks = vec![json!({"agent_type": "sleep", "data": {"ms": 2500}})];
    tasks.extend((0..5).map(|n| json!({"agent_type": "echo", "data": n})));
    let started = Instant::now();
    let (status, body) = call(
        &app,
        post_to(
            "/v1/tasks?wait=1s",
            json!({ "tasks": tasks }).to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_openapi_response("post", "/v1/tasks", 202, &body);
    assert!(
        waited >= Duration::from_millis(950),
        "it waited: {waited:?}"
    );
    let sleeper = ids_of(&body)[0].clone();
    assert_eq!(body["complete"], false);
    assert_eq!(body["pending"], json!([sleeper]));
    let outcomes = body["outcomes"].as_array().unwrap();
    let still = outcomes[0]["status"].as_str().unwrap();
    assert!(["queued", "processing"].contains(&still), "{body}");
    assert!(
        outcomes[1..].iter().all(|o| o["status"] == "completed"),
        "{body}"
    );

    // Waiting on the task itself: answered when it ends, well before the wait is over.
    let started = Instant::now();
    let (status, task) = call(&app, get(format!("/v1/tasks/{sleeper}?wait=20s"))).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "completed", "{task}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A waiter that comes after the outcome gets it at once.
    let started = Instant::now();
    let (status, again) = call(&app, get(format!("/v1/tasks/{sleeper}?wait=20s"))).await;
    assert_eq!(
        (status, &again["status"]),
        (StatusCode::OK, &json!("completed"))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    worker.stop().await;

    // A wait that is not a duration is refused; an unknown task is not waited for.
    let (status, body) = call(&app, get(format!("/v1/tasks/{sleeper}?wait=soon"))).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_query"))
    );
    let started = Instant::now();
    let (status, _) = call(&app, get(format!("/v1/tasks/{}?wait=20s", Uuid::now_v7()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(started.elapsed() < Duration::from_secs(2));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_announcements_a_waiter_reads_the_outcome_at_its_deadline() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker_with(|s| s.nats.announce_outcomes = false));
    let app = app(&env, Some(TOKEN));
    let started = Instant::now();
    let (status, body) = call(
        &app,
        post_to(
            "/v1/tasks?wait=1500ms",
            json!({"agent_type": "echo", "data": "quiet"}).to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    worker.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "nothing was announced"
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_openapi_response("post", "/v1/tasks", 200, &body);
    assert_eq!(body["outcome"]["status"], "completed");
    assert_eq!(body["outcome"]["result"], "quiet");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_producer_hears_the_outcome_it_subscribed_to() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let client = env.broker.client().clone();
    let prefix = env.settings.nats.subject_prefix.clone();
    // A task published without asking is not announced (nobody pays for it).
    let unasked = TaskEnvelope::new("echo", json!({"heard": false}));
    let mut silence = client
        .subscribe(format!("{prefix}.results.{}", unasked.id))
        .await
        .unwrap();
    client.flush().await.unwrap();
    env.broker.publish(&unasked, Codec::Json).await.unwrap();
    env.wait_finished(&[unasked.id], Duration::from_secs(15))
        .await;

    // What schemas/README.md tells producers: subscribe to the result subject, then publish
    // with `Swarm-Announce: outcome`.
    let task = TaskEnvelope::new("echo", json!({"heard": true}));
    let mut outcomes = client
        .subscribe(format!("{prefix}.results.{}", task.id))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let asking = PublishOptions {
        announce: true,
        ..Codec::Json.into()
    };
    env.broker.publish(&task, asking).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(15), outcomes.next())
        .await
        .expect("announced")
        .unwrap();
    worker.stop().await;
    let heard = tokio::time::timeout(Duration::from_millis(200), silence.next()).await;
    assert!(
        heard.is_err(),
        "the unasked outcome was announced: {heard:?}"
    );
    let outcome: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_valid(&validator("task-outcome.schema.json"), &outcome);
    assert_eq!(outcome["id"], task.id.to_string());
    assert_eq!(outcome["result"], json!({"heard": true}));
    // Announced only once the row is committed.
    let row = env.store.tasks().get(task.id).await.unwrap().unwrap();
    assert_eq!(row.status, "completed");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarmd_publish_wait_prints_the_outcome_and_fails_unless_completed() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let done = crate::support::succeeds(env.swarmd().args([
        "publish",
        "--agent",
        "echo",
        "--data",
        r#"{"cli":1}"#,
        "--wait",
        "20s",
    ]))
    .await;
    let outcome: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(outcome["status"], "completed");
    assert_eq!(outcome["result"], json!({"cli": 1}));

    let failed = env
        .swarmd()
        .args([
            "publish",
            "--agent",
            "fail",
            "--data",
            r#"{"permanent":true}"#,
            "--wait",
            "20s",
        ])
        .output()
        .await
        .unwrap();
    worker.stop().await;
    assert!(!failed.status.success());
    let outcome: Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(outcome["status"], "dead");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("0 of 1 tasks completed; 1 dead"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_naming_one_task_twice_is_answered_once_it_ends() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let app = app(&env, Some(TOKEN));
    let id = Uuid::now_v7();
    let task = json!({"agent_type": "echo", "data": "twice", "id": id});
    let started = Instant::now();
    let (status, body) = call(
        &app,
        post_to(
            "/v1/tasks?wait=20s",
            json!({ "tasks": [task, task] }).to_string(),
            Some(TOKEN),
        ),
    )
    .await;
    worker.stop().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not the whole wait"
    );
    let outcomes = body["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes
            .iter()
            .all(|o| o["id"] == id.to_string() && o["result"] == "twice")
    );
    env.cleanup().await;
}
