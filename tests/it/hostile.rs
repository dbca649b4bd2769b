//! No message, however malformed, holds a batch, a lane or a worker: a corpus of hostile
//! messages published straight to the subjects, each ending in the dead-letter stream with
//! its reason while good tasks published after it complete; a database that refuses one
//! row and a dead-letter stream that refuses one record cost that message only.

use std::time::Duration;

use async_nats::{HeaderMap, jetstream::context::PublishErrorKind};
use bytes::Bytes;
use serde_json::{Value, json};
use swarm_director::{
    broker::BrokerError,
    dlq::{DeadReason, StoredDeadLetter},
    task::{Codec, TaskEnvelope},
};

use crate::support::{
    TestEnv,
    schemas::{assert_valid, validator},
};

fn headers(content_type: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
    headers.insert("Content-Type", content_type);
    headers
}

/// `depth` arrays inside one another around a 1.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

/// An envelope as JSON with `data` and `extra` fields written in by hand (so that values
/// the library refuses to build can be sent).
fn raw_envelope(agent: &str, priority: u8, data: &str, extra: &str) -> Bytes {
    let id = uuid::Uuid::new_v4();
    format!(
        r#"{{"id":"{id}","agent_type":"{agent}","priority":{priority},"created_at":"2026-11-30T12:00:00Z","data":{data}{extra}}}"#
    )
    .into()
}

fn letter_of<'a>(letters: &'a [StoredDeadLetter], body: &[u8]) -> Option<&'a StoredDeadLetter> {
    letters.iter().find(|s| {
        s.letter.raw.as_ref().is_some_and(|raw| {
            let kept = raw.bytes();
            !kept.is_empty() && body.starts_with(&kept)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_corpus_ends_in_dead_letters_and_good_work_flows() {
    let env = TestEnv::new().await;
    let subjects = env.broker.subjects().clone();
    let echo = subjects.task(5, "echo");

    // Published raw: each must become a dead letter that keeps (the start of) its bytes.
    let mut control_body = vec![b'{'];
    control_body.extend(std::iter::repeat_n(1u8, 900 * 1024));
    let deep_json = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let deep_msgpack = {
        let mut task = TaskEnvelope::new("echo", json!(null));
        task.data = nested(300);
        Codec::MessagePack.encode(&task).unwrap()
    };
    let raw_cases: Vec<(String, Bytes, DeadReason, &str)> = vec![
        (
            echo.clone(),
            Bytes::from_static(b"\xc1\xc1\xff not an envelope"),
            DeadReason::Undecodable,
            "MessagePack",
        ),
        (
            echo.clone(),
            Bytes::from_static(b"[1, 2, 3]"),
            DeadReason::SchemaViolation,
            "",
        ),
        (
            echo.clone(),
            raw_envelope("echo", 5, r#"{"s":"a\u0000b"}"#, ""),
            DeadReason::BadInput,
            "NUL",
        ),
        (
            echo.clone(),
            raw_envelope("echo", 5, r#"{"a\u0000":1}"#, ""),
            DeadReason::BadInput,
            "a key in data",
        ),
        (
            echo.clone(),
            Bytes::from(control_body),
            DeadReason::Undecodable,
            "JSON",
        ),
        (
            echo.clone(),
            // Well-formed JSON past serde_json's own nesting limit (128).
            raw_envelope("echo", 5, &deep_json, ""),
            DeadReason::SchemaViolation,
            "recursion limit",
        ),
        (
            echo.clone(),
            raw_envelope("echo", 5, "1", r#","timeout":1e20"#),
            DeadReason::SchemaViolation,
            "timeout",
        ),
        (
            echo.clone(),
            raw_envelope("echo", 5, "1", r#","max_attempts":94.5"#),
            DeadReason::SchemaViolation,
            "max_attempts",
        ),
        (
            format!("{}.tasks.p05.echo", subjects.prefix()),
            raw_envelope("echo", 5, "1", ""),
            DeadReason::BadSubject,
            "p05",
        ),
        (
            format!("{}.tasks.p5.bad%name", subjects.prefix()),
            raw_envelope("echo", 5, "1", ""),
            DeadReason::BadSubject,
            "no lane",
        ),
    ];
    for (subject, body, _, _) in &raw_cases {
        let content_type = if body.first() == Some(&b'\xc1') {
            "application/msgpack"
        } else {
            "application/json"
        };
        env.broker
            .publish_raw(subject.clone(), headers(content_type), body.clone())
            .await
            .unwrap();
    }
    env.broker
        .publish_raw(
            echo.clone(),
            headers("application/msgpack"),
            deep_msgpack.clone(),
        )
        .await
        .unwrap();
    // Extra subject tokens: the stream does not take them at all.
    let extra = env
        .broker
        .publish_raw(
            format!("{echo}.extra"),
            headers("application/json"),
            raw_envelope("echo", 5, "1", ""),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&extra, BrokerError::Publish { source, .. } if source.kind() == PublishErrorKind::StreamNotFound),
        "{extra}"
    );

    // Decoded tasks whose agents refuse them: rendering 50 MB, reviewing 900 KB.
    let email_bomb = TaskEnvelope::new(
        "email",
        json!({
            "to": "a@example.org", "subject": "hi",
            "template": "{{a}}".repeat(200_000),
            "variables": {"a": "x".repeat(500)},
        }),
    );
    let big_review = TaskEnvelope::new(
        "review",
        json!({
            "body": "Hello team, word ".repeat(50_000),
            "rules": {"banned_words": (0..1000).map(|i| format!("w{i}")).collect::<Vec<_>>()},
        }),
    );
    let unknown = TaskEnvelope::new("nonesuch", json!({}));
    for task in [&email_bomb, &big_review, &unknown] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    // The library refuses what the worker would refuse, naming the field.
    let nul = TaskEnvelope::new("echo", json!({"s": "a\u{0}b"}));
    let refused = env.broker.publish(&nul, Codec::Json).await.unwrap_err();
    assert!(refused.to_string().contains("NUL"), "{refused}");

    // Good work published after the corpus.
    let good: Vec<TaskEnvelope> = (0..20)
        .map(|i| TaskEnvelope::new("echo", json!({"i": i})).with_priority(i % 10))
        .collect();
    for task in &good {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }

    let worker =
        env.spawn(env.worker_with(|s| {
            s.worker.concurrency = swarm_director::config::Concurrency::Fixed(64)
        }));
    let mut ids: Vec<uuid::Uuid> = good.iter().map(|t| t.id).collect();
    ids.extend([email_bomb.id, big_review.id, unknown.id]);
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    let expected_letters = raw_cases.len() + 1 + 2;
    let letters = env
        .wait_dead_letters(expected_letters, Duration::from_secs(30))
        .await;
    let counts = worker.stop().await;

    for task in &good {
        let row = rows.iter().find(|r| r.id == task.id).unwrap();
        assert_eq!(row.status, "completed", "good work after the corpus ran");
    }
    let status = |id| rows.iter().find(|r| r.id == id).unwrap().status.clone();
    assert_eq!(
        status(big_review.id),
        "completed",
        "a large review finishes"
    );
    assert_eq!(status(email_bomb.id), "dead");
    assert_eq!(status(unknown.id), "dead");

    let schema = validator("dead-letter.schema.json");
    let max_payload = env.broker.client().server_info().max_payload;
    for stored in &letters {
        let value = serde_json::to_value(&stored.letter).unwrap();
        assert_valid(&schema, &value);
        assert!(serde_json::to_vec(&value).unwrap().len() <= max_payload);
    }
    for (subject, body, reason, words) in &raw_cases {
        let stored = letter_of(&letters, body)
            .unwrap_or_else(|| panic!("no dead letter for the {reason} case on {subject}"));
        let letter = &stored.letter;
        assert_eq!(letter.reason, *reason, "{subject}: {}", letter.error);
        assert!(
            letter.error.contains(words),
            "{reason}: {:?} lacks {words:?}",
            letter.error
        );
        assert_eq!(letter.raw.as_ref().unwrap().size, body.len());
    }
    let control = letters
        .iter()
        .find(|s| {
            s.letter
                .raw
                .as_ref()
                .is_some_and(|r| r.size == 900 * 1024 + 1)
        })
        .unwrap();
    assert!(control.letter.truncated, "a letter over max_payload is cut");
    assert_eq!(
        control.letter.original_sizes.get("raw.body"),
        Some(&(900 * 1024 + 1))
    );
    let deep = letter_of(&letters, &deep_msgpack).expect("deep MessagePack dead-lettered");
    assert_eq!(deep.letter.reason, DeadReason::BadInput);
    assert!(
        deep.letter.error.contains("deeper than 64"),
        "{}",
        deep.letter.error
    );
    let bomb = letters
        .iter()
        .find(|s| s.letter.id == email_bomb.id)
        .unwrap();
    assert_eq!(bomb.letter.reason, DeadReason::PermanentError);
    assert!(
        bomb.letter.error.contains("exceed"),
        "{}",
        bomb.letter.error
    );
    assert!(bomb.letter.envelope_is_whole());

    assert_eq!(counts.completed(), 21);
    env.assert_stream_drains("nothing hostile is left waiting")
        .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_database_refuses_cost_their_own_message_only() {
    let env = TestEnv::new().await;
    // This test's schema refuses two kinds of value, as a real database refuses a value it
    // cannot store: one at claim (the task's data), one at settle (the task's result).
    sqlx::query(
        "ALTER TABLE tasks
            ADD CONSTRAINT refuse_claim CHECK (data->>'refuse' IS DISTINCT FROM 'claim'),
            ADD CONSTRAINT refuse_result CHECK (result->>'refuse' IS DISTINCT FROM 'result')",
    )
    .execute(env.store.primary())
    .await
    .unwrap();
    let mut tasks: Vec<TaskEnvelope> = (0..40)
        .map(|i| TaskEnvelope::new("echo", json!({"i": i})))
        .collect();
    let at_claim = TaskEnvelope::new("echo", json!({"refuse": "claim"}));
    let at_settle = TaskEnvelope::new("echo", json!({"refuse": "result"}));
    tasks.insert(13, at_claim.clone());
    tasks.insert(29, at_settle.clone());
    for task in &tasks {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    let worker =
        env.spawn(env.worker_with(|s| {
            s.worker.concurrency = swarm_director::config::Concurrency::Fixed(64)
        }));
    let good: Vec<uuid::Uuid> = tasks
        .iter()
        .filter(|t| t.id != at_claim.id)
        .map(|t| t.id)
        .collect();
    let rows = env.wait_finished(&good, Duration::from_secs(20)).await;
    let letters = env.wait_dead_letters(2, Duration::from_secs(20)).await;
    let counts = worker.stop().await;

    for row in &rows {
        let expected = if row.id == at_settle.id {
            "dead"
        } else {
            "completed"
        };
        assert_eq!(row.status, expected, "{}", row.id);
    }
    let settled = rows.iter().find(|r| r.id == at_settle.id).unwrap();
    assert!(
        settled
            .last_error
            .as_deref()
            .unwrap()
            .contains("refuse_result"),
        "{:?}",
        settled.last_error
    );
    assert!(env.store.tasks().get(at_claim.id).await.unwrap().is_none());
    for refused in [&at_claim, &at_settle] {
        let stored = letters
            .iter()
            .find(|s| s.letter.id == refused.id)
            .expect("a dead letter for the refused task");
        assert_eq!(stored.letter.reason, DeadReason::Unstorable);
        assert_eq!(stored.letter.envelope.as_ref(), Some(refused));
    }
    assert_eq!(counts.completed(), 40);
    assert_eq!(counts.store_failures(), 0, "no transient hold");
    env.assert_stream_drains("the refused rows do not hold their batches")
        .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_broker_refuses_does_not_hold_its_batch() {
    let env = TestEnv::new().await;
    let dead_letters = env.dead_letters();
    dead_letters.ensure().await.unwrap();
    // The dead-letter stream takes records of at most 600 bytes: a letter with a long
    // error is refused by the server itself (JetStream error 10054).
    let mut stream = env
        .broker
        .jetstream()
        .get_stream(dead_letters.name())
        .await
        .unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = 600;
    env.broker.jetstream().update_stream(&config).await.unwrap();

    let doomed = TaskEnvelope::new("fail", json!({"permanent": true, "pad": "p".repeat(2000)}));
    let mut tasks: Vec<TaskEnvelope> = (0..30)
        .map(|i| TaskEnvelope::new("echo", json!({"i": i})))
        .collect();
    tasks.insert(10, doomed.clone());
    for task in &tasks {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    let worker = env.spawn(env.worker());
    let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(20)).await;
    let counts = worker.stop().await;
    for row in &rows {
        let expected = if row.id == doomed.id {
            "dead"
        } else {
            "completed"
        };
        assert_eq!(row.status, expected);
    }
    assert_eq!(counts.completed(), 30);
    assert_eq!(counts.store_failures(), 0, "the refusal was not retried");
    env.assert_stream_drains("the refused letter's message is terminated")
        .await;
    env.cleanup().await;
}
