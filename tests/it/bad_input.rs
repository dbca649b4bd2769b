//! Garbage in never stops the fleet: each bad message is kept with a clear reason and the
//! worker goes on with the good ones.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::json;
use swarm_director::task::{Codec, TaskEnvelope};

use crate::support::{TestEnv, count};

fn headers(content_type: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
    if let Some(content_type) = content_type {
        headers.insert("Content-Type", content_type);
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_recorded_and_the_worker_goes_on() {
    let env = TestEnv::new().await;
    let subjects = env.broker.subjects().clone();
    let echo_subject = subjects.task(5, "echo");
    let mut schema_breaker = serde_json::to_value(TaskEnvelope::new("echo", json!(1))).unwrap();
    schema_breaker["max_attempts"] = json!(0);
    let wrong_subject = Codec::Json
        .encode(&TaskEnvelope::new("echo", json!(1)).with_priority(2))
        .unwrap();
    let bad: [(&str, Option<&str>, Bytes, &str); 5] = [
        (
            "undecodable",
            Some("application/msgpack"),
            Bytes::from_static(b"\xc1\xc1\xc1"),
            "MessagePack",
        ),
        (
            "not json",
            Some("application/json"),
            Bytes::from_static(b"{not json"),
            "JSON",
        ),
        (
            "content type",
            Some("text/plain"),
            Bytes::from_static(b"hello"),
            "unknown content type",
        ),
        (
            "schema",
            Some("application/json"),
            serde_json::to_vec(&schema_breaker).unwrap().into(),
            "max_attempts 0",
        ),
        (
            "subject",
            Some("application/json"),
            wrong_subject,
            "does not match",
        ),
    ];
    for (_, content_type, body, _) in &bad {
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

    let worker = env.spawn(env.worker());
    let rows = env
        .wait_finished(&[unknown_agent.id, good.id], Duration::from_secs(10))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&worker.counts.rejected) < bad.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every bad message was settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = worker.stop().await;

    let good_row = rows.iter().find(|r| r.id == good.id).unwrap();
    assert_eq!(good_row.status, "completed");
    let unknown_row = rows.iter().find(|r| r.id == unknown_agent.id).unwrap();
    assert_eq!(unknown_row.status, "dead");
    assert_eq!(unknown_row.attempts, 1, "an unknown agent is not retried");
    assert!(
        unknown_row
            .last_error
            .as_deref()
            .unwrap()
            .contains("unknown agent type \"nonesuch\"")
    );

    let rejected = env.store.rejected(100).await.unwrap();
    assert_eq!(rejected.len(), bad.len());
    for (what, _, _, expected) in &bad {
        assert!(
            rejected
                .iter()
                .any(|(_, _, reason)| reason.contains(expected)),
            "{what}: no reason mentions {expected:?} in {rejected:?}"
        );
    }
    let (bodies,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rejected_messages WHERE length(body) > 0")
            .fetch_one(env.store.primary())
            .await
            .unwrap();
    assert_eq!(bodies, bad.len() as i64, "raw bytes are kept");
    assert_eq!(count(&counts.rejected), bad.len() as u64);
    assert_eq!(
        env.stream_messages().await,
        0,
        "bad messages do not block the stream"
    );
    env.cleanup().await;
}
