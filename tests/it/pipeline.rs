//! Publish -> worker -> agent -> PostgreSQL, for every built-in agent and outcome.

use std::time::Duration;

use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::support::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_agent_commits_its_result() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let tasks = [
        TaskEnvelope::new("echo", json!({"hello": [1, 2, 3]})),
        TaskEnvelope::new("sleep", json!({"ms": 20})),
        TaskEnvelope::new("fail", json!({"succeed_on_attempt": 1})),
        TaskEnvelope::new(
            "email",
            json!({"to": "ann@example.org", "subject": "Hi {{name}}",
                   "template": "Dear {{name}}, welcome.", "variables": {"name": "Ann"}}),
        ),
        TaskEnvelope::new(
            "quality",
            json!({"text": "Short and clear. Easy to read. Nothing repeats here."}),
        ),
        TaskEnvelope::new(
            "review",
            json!({"subject": "Welcome", "body": "Hello Ann,\nwelcome aboard. TODO add link"}),
        ),
    ];
    for (n, task) in tasks.iter().enumerate() {
        let codec = if n % 2 == 0 {
            Codec::Json
        } else {
            Codec::MessagePack
        };
        env.broker.publish(task, codec).await.expect("publish");
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(20)).await;
    let result = |agent: &str| {
        let row = rows.iter().find(|r| r.agent_type == agent).expect("row");
        assert_eq!(row.status, "completed", "{agent}: {:?}", row.last_error);
        assert_eq!(row.attempts, 1);
        assert!(row.worker_id.is_some() && row.started_at.is_some() && row.completed_at.is_some());
        row.result.clone().expect("result stored")
    };
    assert_eq!(result("echo"), json!({"hello": [1, 2, 3]}));
    assert_eq!(result("sleep"), json!({"slept_ms": 20}));
    assert_eq!(result("fail"), json!({"succeeded_on_attempt": 1}));
    let email = result("email");
    assert_eq!(email["body"], "Dear Ann, welcome.");
    assert_eq!(email["valid"], true);
    let quality = result("quality")["score"].as_u64().expect("score");
    assert!(quality <= 100);
    let review = result("review");
    assert_eq!(review["approved"], false);
    assert_eq!(review["findings"][0]["rule"], "placeholder");

    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 6);
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_then_succeed_or_end_dead() {
    let env = TestEnv::new().await;
    // 200 ms, then 400 ms, each +/-20 %; a slow idle rescan, so only the retry alarm can
    // explain an on-time retry.
    let worker = env.spawn(env.worker_with(|s| {
        s.worker.retry_base_ms = 200;
        s.worker.idle_rescan_ms = 10_000;
    }));
    let flaky = TaskEnvelope::new("fail", json!({"succeed_on_attempt": 3}));
    let hopeless = TaskEnvelope::new("fail", json!({})).with_max_attempts(2);
    let permanent = TaskEnvelope::new("fail", json!({"permanent": true}));
    for task in [&flaky, &hopeless, &permanent] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let rows = env
        .wait_finished(
            &[flaky.id, hopeless.id, permanent.id],
            Duration::from_secs(20),
        )
        .await;
    let row = |id| rows.iter().find(|r| r.id == id).unwrap();

    let flaky_row = row(flaky.id);
    assert_eq!(flaky_row.status, "completed");
    assert_eq!(flaky_row.attempts, 3);
    let errors = flaky_row.errors.as_array().unwrap();
    assert_eq!(errors.len(), 2, "one error per failed attempt: {errors:?}");
    let at = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(errors[i]["at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    // Between a failure's commit and the next failure's commit: the delay, plus a claim and
    // a commit (a few ms). Bounds: the jitter band, plus 150 ms of slack.
    let first_gap = (at(1) - at(0)).num_milliseconds();
    let second_gap = (flaky_row.completed_at.unwrap() - at(1)).num_milliseconds();
    println!("retry gaps: {first_gap} ms (expected 160-240), {second_gap} ms (expected 320-480)");
    assert!(
        (160..=390).contains(&first_gap),
        "first retry after {first_gap} ms"
    );
    assert!(
        (320..=630).contains(&second_gap),
        "second retry after {second_gap} ms"
    );

    let hopeless_row = row(hopeless.id);
    assert_eq!(hopeless_row.status, "dead");
    assert_eq!(hopeless_row.attempts, 2);
    assert!(
        hopeless_row
            .last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 2 attempts")
    );

    let permanent_row = row(permanent.id);
    assert_eq!(permanent_row.status, "dead");
    assert_eq!(
        permanent_row.attempts, 1,
        "a permanent error is not retried"
    );

    let counts = worker.stop().await;
    assert_eq!(counts.retried(), 3);
    assert_eq!(counts.dead(), 2);
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_tasks_first() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let tasks: Vec<_> = (0..4)
        .map(|_| TaskEnvelope::new("sleep", json!({"ms": 400})))
        .collect();
    for task in &tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    // Wait until they run, then ask the worker to stop.
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    loop {
        let rows = env.store.tasks().by_ids(&ids).await.unwrap();
        if rows.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = worker.stop().await;
    assert_eq!(counts.completed(), 4, "in-flight tasks finish before exit");
    let rows = env.store.tasks().by_ids(&ids).await.unwrap();
    assert!(rows.iter().all(|r| r.status == "completed"));
    env.assert_stream_drains("every message acknowledged").await;
    env.cleanup().await;
}
