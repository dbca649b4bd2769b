//! Garbage in never stops the fleet: each bad message goes to the dead-letter stream with a
//! specific reason and its bytes, and the worker goes on with the good ones.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::json;
use swarm_director::{
    dlq::DeadReason,
    task::{Codec, TaskEnvelope},
};

use crate::support::{
    TestEnv,
    schemas::{assert_valid, validator},
};

fn headers(content_type: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
    if let Some(content_type) = content_type {
        headers.insert("Content-Type", content_type);
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_message_is_dead_lettered_with_its_reason() {
    let env = TestEnv::new().await;
    let echo_subject = env.broker.subjects().task(5, "echo");
    let mut schema_breaker = serde_json::to_value(TaskEnvelope::new("echo", json!(1))).unwrap();
    schema_breaker["max_attempts"] = json!(0);
    let mut mistyped = serde_json::to_value(TaskEnvelope::new("echo", json!(1))).unwrap();
    mistyped["priority"] = json!("high");
    let wrong_subject = Codec::Json
        .encode(&TaskEnvelope::new("echo", json!(1)).with_priority(2))
        .unwrap();
    let oversized = Codec::Json
        .encode(&TaskEnvelope::new("echo", json!("x".repeat(5000))))
        .unwrap();
    let binary = Bytes::from_static(b"\xc1\xc1\xc1\xff");
    let cases: Vec<(Option<&str>, Bytes, DeadReason, &str)> = vec![
        (
            Some("application/msgpack"),
            binary.clone(),
            DeadReason::Undecodable,
            "MessagePack",
        ),
        (
            Some("application/json"),
            Bytes::from_static(b"{not json"),
            DeadReason::Undecodable,
            "JSON",
        ),
        (
            Some("text/plain"),
            Bytes::from_static(b"hello"),
            DeadReason::UnknownContentType,
            "text/plain",
        ),
        (
            Some("application/json"),
            serde_json::to_vec(&schema_breaker).unwrap().into(),
            DeadReason::SchemaViolation,
            "max_attempts 0",
        ),
        (
            Some("application/json"),
            serde_json::to_vec(&mistyped).unwrap().into(),
            DeadReason::SchemaViolation,
            "priority",
        ),
        (
            Some("application/json"),
            wrong_subject,
            DeadReason::SubjectMismatch,
            "does not match",
        ),
        (
            Some("application/json"),
            oversized,
            DeadReason::PayloadTooLarge,
            "4096-byte limit",
        ),
    ];
    for (content_type, body, _, _) in &cases {
        env.broker
            .publish_raw(echo_subject.clone(), headers(*content_type), body.clone())
            .await
            .unwrap();
    }
    let unknown_agent = TaskEnvelope::new("nonesuch", json!({}));
    let good = TaskEnvelope::new("echo", json!({"still": "working"}));
    env.broker
        .publish(&unknown_agent, Codec::Json)
        .await
        .unwrap();
    env.broker.publish(&good, Codec::Json).await.unwrap();

    let worker = env.spawn(env.worker_with(|s| s.worker.max_payload_bytes = 4096));
    let rows = env
        .wait_finished(&[unknown_agent.id, good.id], Duration::from_secs(10))
        .await;
    let letters = env
        .wait_dead_letters(cases.len() + 1, Duration::from_secs(10))
        .await;
    let counts = worker.stop().await;

    let good_row = rows.iter().find(|r| r.id == good.id).unwrap();
    assert_eq!(good_row.status, "completed", "the worker went on");
    let unknown_row = rows.iter().find(|r| r.id == unknown_agent.id).unwrap();
    assert_eq!(unknown_row.status, "dead");
    assert_eq!(unknown_row.attempts, 1, "an unknown agent is not retried");

    let schema = validator("dead-letter.schema.json");
    for stored in &letters {
        assert_valid(&schema, &serde_json::to_value(&stored.letter).unwrap());
    }
    let unknown_letter = letters
        .iter()
        .find(|s| s.letter.id == unknown_agent.id)
        .expect("unknown agent dead-lettered");
    assert_eq!(unknown_letter.letter.reason, DeadReason::UnknownAgent);
    assert_eq!(
        unknown_letter.letter.envelope.as_ref(),
        Some(&unknown_agent)
    );
    assert!(
        unknown_letter
            .letter
            .error
            .contains("unknown agent type \"nonesuch\"")
    );

    for (content_type, body, reason, words) in &cases {
        let stored = letters
            .iter()
            .find(|s| {
                s.letter
                    .raw
                    .as_ref()
                    .is_some_and(|raw| raw.bytes() == body.as_ref())
            })
            .unwrap_or_else(|| panic!("no dead letter keeps the body of the {reason} case"));
        let letter = &stored.letter;
        assert_eq!(letter.reason, *reason, "{}", letter.error);
        assert!(
            letter.error.contains(words),
            "{reason}: {:?} lacks {words:?}",
            letter.error
        );
        assert_eq!(letter.agent_type, "echo", "taken from the subject");
        let raw = letter.raw.as_ref().unwrap();
        assert_eq!(raw.size, body.len());
        if let Some(content_type) = content_type {
            assert_eq!(raw.headers["Content-Type"], json!([content_type]));
        }
    }
    let binary_letter = letters
        .iter()
        .find(|s| {
            s.letter
                .raw
                .as_ref()
                .is_some_and(|r| r.bytes() == binary.as_ref())
        })
        .unwrap();
    assert!(
        binary_letter
            .letter
            .raw
            .as_ref()
            .unwrap()
            .body_base64
            .is_some()
    );

    assert_eq!(counts.rejected(), cases.len() as u64);
    env.assert_stream_drains("bad messages do not block the stream")
        .await;
    env.cleanup().await;
}
