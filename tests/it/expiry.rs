//! Expiry: a task whose `expires_at` passes before an attempt begins is not run; it ends
//! `dead` with the dead-letter reason `expired`, counted in the metrics.

use std::time::Duration;

use serde_json::json;
use swarm_director::{
    clock::Clock,
    task::{Codec, TaskEnvelope},
};

use crate::support::{TestEnv, succeeds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_not_started_by_its_expiry_is_not_run_and_the_rest_flows() {
    let env = TestEnv::new().await;
    // No worker runs yet: these wait.
    let mut soon = TaskEnvelope::new("echo", json!("too late"));
    soon.expires_at = Some(chrono::Utc::now() + chrono::Duration::milliseconds(500));
    let mut later = TaskEnvelope::new("echo", json!("in time"));
    later.expires_at = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
    let plain = TaskEnvelope::new("echo", json!("no expiry"));
    for task in [&soon, &later, &plain] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let cli = succeeds(env.swarmd().args([
        "publish",
        "--agent",
        "echo",
        "--data",
        r#""cli, too late""#,
        "--expires-in",
        "500ms",
    ]))
    .await;
    let cli_id: uuid::Uuid = String::from_utf8_lossy(&cli.stdout).trim().parse().unwrap();
    // The worker's clock stands 1.2 s ahead: the 500 ms ones have expired by it.
    let clock = Clock::manual(chrono::Utc::now() + chrono::Duration::milliseconds(1200));
    let worker = env.spawn(env.worker().with_clock(clock));
    let ids = [soon.id, later.id, plain.id, cli_id];
    let rows = env.wait_finished(&ids, Duration::from_secs(20)).await;
    let counts = worker.stop().await;
    let row = |id| rows.iter().find(|r| r.id == id).unwrap();
    for id in [soon.id, cli_id] {
        let expired = row(id);
        assert_eq!(expired.status, "dead");
        assert_eq!(expired.result, None, "the agent never ran");
        assert!(
            expired
                .last_error
                .as_deref()
                .unwrap()
                .contains("expired at"),
            "{:?}",
            expired.last_error
        );
    }
    assert_eq!(row(later.id).result, Some(json!("in time")));
    assert_eq!(row(plain.id).result, Some(json!("no expiry")));
    let letters = swarm_director::dlq::DeadLetterStream::of(&env.broker)
        .page(&Default::default(), None, 10)
        .await
        .unwrap();
    let reasons: Vec<&str> = letters
        .letters
        .iter()
        .map(|s| s.letter.reason.as_str())
        .collect();
    assert_eq!(reasons, ["expired", "expired"]);
    let expired = counts
        .metrics()
        .dead_letters
        .with_label_values(&["echo", "expired"])
        .get();
    assert_eq!(expired, 2, "counted as expired dead letters");
    env.cleanup().await;
}
