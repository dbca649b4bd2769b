//! The dead-letter stream through `swarmd dlq`: list with filters and JSON, show, replay
//! (which then succeeds), and purge with confirmation.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use swarm_director::{
    agent::AgentRegistry,
    dlq::{DeadLetter, DeadReason, Filter},
    task::{Codec, TaskEnvelope},
};
use tokio::io::AsyncWriteExt;

use crate::support::{TestEnv, switch::Switch};

async fn output(command: &mut tokio::process::Command) -> (bool, String, String) {
    let out = command.output().await.expect("swarmd runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_listed_shown_replayed_and_purged() {
    let env = TestEnv::new().await;
    let switch = Arc::new(AtomicBool::new(false));
    let registry = AgentRegistry::with_builtins().with(Switch(switch.clone()));
    let worker = env.spawn(env.worker_with_agents(registry, |_| {}));

    let blocked = TaskEnvelope::new("switch", json!({"order": 7})).with_priority(8);
    let hopeless = TaskEnvelope::new("fail", json!({})).with_max_attempts(2);
    env.broker.publish(&blocked, Codec::Json).await.unwrap();
    env.broker.publish(&hopeless, Codec::Json).await.unwrap();
    env.wait_finished(&[blocked.id, hopeless.id], Duration::from_secs(10))
        .await;
    env.wait_dead_letters(2, Duration::from_secs(10)).await;

    // list --json: one record per line, filterable by reason and agent.
    let (ok, stdout, stderr) = output(env.swarmd().args(["dlq", "list", "--json"])).await;
    assert!(ok, "{stderr}");
    let records: Vec<DeadLetter> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert_eq!(records.len(), 2);
    let exhausted = records.iter().find(|r| r.id == hopeless.id).unwrap();
    assert_eq!(exhausted.reason, DeadReason::AttemptsExhausted);
    assert_eq!(exhausted.attempts.len(), 2, "every attempt's error is kept");
    assert_eq!(exhausted.attempts[0].attempt, 1);
    let (_, stdout, _) = output(env.swarmd().args([
        "dlq",
        "list",
        "--json",
        "--reason",
        "permanent_error",
        "--since",
        "1h",
    ]))
    .await;
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.contains(&blocked.id.to_string()));
    // Pages: newest first, the cursor for the next page on stderr.
    let (ok, first, stderr) =
        output(env.swarmd().args(["dlq", "list", "--json", "--limit", "1"])).await;
    assert!(ok && first.lines().count() == 1, "{stderr}");
    let before = stderr
        .split("--before ")
        .nth(1)
        .expect("a cursor after a full page")
        .trim()
        .to_string();
    let (_, second, stderr) = output(
        env.swarmd()
            .args(["dlq", "list", "--json", "--limit", "1", "--before", &before]),
    )
    .await;
    assert_eq!(second.lines().count(), 1, "{stderr}");
    assert_ne!(first, second);
    let (_, stdout, _) = output(env.swarmd().args(["dlq", "list", "--agent", "fail"])).await;
    assert!(
        stdout.contains("attempts_exhausted") && !stdout.contains("switch"),
        "{stdout}"
    );

    // show
    let (ok, stdout, _) = output(env.swarmd().args(["dlq", "show", &blocked.id.to_string()])).await;
    assert!(ok);
    let shown: DeadLetter = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown.envelope.as_ref(), Some(&blocked));

    // The dependency is fixed: replay succeeds as a new task linked to the original.
    switch.store(true, Ordering::SeqCst);
    let (ok, stdout, stderr) =
        output(
            env.swarmd()
                .args(["dlq", "replay", &blocked.id.to_string()]),
        )
        .await;
    assert!(ok, "{stderr}");
    let new_id: uuid::Uuid = stdout
        .lines()
        .next()
        .and_then(|l| l.split(" -> ").nth(1))
        .expect("prints old -> new")
        .parse()
        .unwrap();
    let rows = env.wait_finished(&[new_id], Duration::from_secs(10)).await;
    assert_eq!(rows[0].status, "completed");
    assert_eq!(rows[0].replay_of, Some(blocked.id));
    assert_eq!(rows[0].priority, 8);
    assert_eq!(rows[0].result, Some(json!({"done": {"order": 7}})));
    let left = env.dead_letters().list(&Filter::default()).await.unwrap();
    assert_eq!(left.len(), 1, "the replayed dead letter is removed");

    // purge asks first; "no" keeps everything.
    let mut purge = env
        .swarmd()
        .args(["dlq", "purge"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    purge
        .stdin
        .take()
        .unwrap()
        .write_all(b"no\n")
        .await
        .unwrap();
    assert!(!purge.wait_with_output().await.unwrap().status.success());
    assert_eq!(env.dead_letter_count().await, 1);
    let (ok, stdout, _) = output(env.swarmd().args(["dlq", "purge", "--yes"])).await;
    assert!(ok && stdout.contains("purged 1"), "{stdout}");
    assert_eq!(env.dead_letter_count().await, 0);

    worker.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_message_cannot_be_replayed_and_says_why() {
    let env = TestEnv::new().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "garbage-1");
    env.broker
        .publish_raw(
            env.broker.subjects().task(5, "echo"),
            headers,
            bytes::Bytes::from_static(b"\xc1"),
        )
        .await
        .unwrap();
    let worker = env.spawn(env.worker());
    let letters = env.wait_dead_letters(1, Duration::from_secs(10)).await;
    worker.stop().await;
    let id = letters[0].letter.id.to_string();
    let (ok, _, stderr) = output(env.swarmd().args(["dlq", "replay", &id])).await;
    assert!(!ok);
    assert!(stderr.contains("never decoded"), "{stderr}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_one_dead_letter_twice_runs_the_task_once() {
    let env = TestEnv::new().await;
    let doomed = TaskEnvelope::new("fail", json!({"permanent": true}));
    env.broker.publish(&doomed, Codec::Json).await.unwrap();
    let worker = env.spawn(env.worker());
    let letters = env.wait_dead_letters(1, Duration::from_secs(10)).await;
    worker.stop().await;
    let stored = letters.into_iter().next().unwrap();
    let dead_letters = env.dead_letters();
    // Two clients (or one that retried) replay the same record at once.
    let (first, second) = tokio::join!(
        swarm_director::dlq::replay(&env.broker, &dead_letters, &stored),
        swarm_director::dlq::replay(&env.broker, &dead_letters, &stored),
    );
    let ids: Vec<uuid::Uuid> = [first, second].into_iter().filter_map(Result::ok).collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|id| *id == ids[0]), "one replay id: {ids:?}");
    let worker = env.spawn(env.worker());
    let rows = env.wait_finished(&ids[..1], Duration::from_secs(10)).await;
    let counts = worker.stop().await;
    assert_eq!(rows[0].attempts, 1, "the replay ran once");
    assert_eq!(counts.dead(), 1, "one delivery of the replay");
    assert_eq!(env.stream_messages().await, 0);
    env.cleanup().await;
}
