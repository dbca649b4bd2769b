//! What the fleet publishes obeys the JSON Schemas in `schemas/`, in both codecs.

use serde_json::{Value, json};
use swarm_director::task::{Codec, TaskEnvelope};

use crate::support::{
    TestEnv,
    schemas::{assert_valid, validator},
};

#[tokio::test]
async fn published_envelopes_match_the_schema_in_both_codecs() {
    let env = TestEnv::new().await;
    let envelope_schema = validator("task-envelope.schema.json");
    for (codec, content_type) in [
        (Codec::Json, "application/json"),
        (Codec::MessagePack, "application/msgpack"),
    ] {
        let mut task = TaskEnvelope::new("email", json!({"to": "a@example.org", "n": [1, 2.5]}))
            .with_priority(7);
        task.timeout = Some(2.5);
        task.idempotency_key = Some("order-17".into());
        let receipt = env.broker.publish(&task, codec).await.expect("publish");

        let stream = env.stream().await;
        let stored = stream.get_raw_message(receipt.sequence).await.unwrap();
        assert_eq!(
            stored.subject.as_str(),
            env.broker.subjects().task(7, "email")
        );
        let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_string());
        assert_eq!(header("Nats-Msg-Id"), Some(task.id.to_string()));
        assert_eq!(header("Content-Type"), Some(content_type.to_string()));

        // Read the body the way another language would: as a generic document.
        let body: Value = match codec {
            Codec::Json => serde_json::from_slice(&stored.payload).unwrap(),
            Codec::MessagePack => rmp_serde::from_slice(&stored.payload).unwrap(),
        };
        assert_valid(&envelope_schema, &body);
        assert_eq!(body["id"], json!(task.id.to_string()));
        assert_eq!(codec.decode(&stored.payload).unwrap(), task);
    }
    env.cleanup().await;
}

#[test]
fn the_schema_refuses_what_the_worker_refuses() {
    let schema = validator("task-envelope.schema.json");
    let good = serde_json::to_value(TaskEnvelope::new("echo", json!(null))).unwrap();
    assert_valid(&schema, &good);
    let breakages = [
        ("priority", json!(10)),
        ("agent_type", json!("a.b")),
        ("id", json!("not-a-uuid")),
        ("max_attempts", json!(0)),
        ("created_at", json!("yesterday")),
    ];
    for (field, value) in breakages {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert!(!schema.is_valid(&bad), "schema accepted {field} = {value}");
        // The worker's own decoding refuses it too.
        let bytes = serde_json::to_vec(&bad).unwrap();
        let decoded = Codec::Json
            .decode(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| t.validate().map_err(|e| e.to_string()));
        assert!(decoded.is_err(), "worker accepted {field} = {value}");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("agent_type");
    assert!(!schema.is_valid(&missing));
}

#[tokio::test]
async fn task_rows_match_the_record_schema() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let task = TaskEnvelope::new("fail", json!({"succeed_on_attempt": 2}));
    env.broker.publish(&task, Codec::Json).await.unwrap();
    env.wait_finished(&[task.id], std::time::Duration::from_secs(20))
        .await;
    worker.stop().await;
    let (row,): (Value,) = sqlx::query_as("SELECT to_jsonb(t) FROM tasks t WHERE id = $1")
        .bind(task.id)
        .fetch_one(env.store.primary())
        .await
        .unwrap();
    assert_valid(&validator("task-record.schema.json"), &row);
    assert_eq!(row["errors"].as_array().map(Vec::len), Some(1));
    env.cleanup().await;
}
