//! Claim checks: data and results too large for a message or a row travel through the
//! JetStream Object Store, referenced from the envelope and the row; agents and readers
//! see them whole.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use swarm_director::task::{Codec, PayloadRef, TaskEnvelope};

use crate::{
    api::{app, call, get},
    support::TestEnv,
};

/// A JSON value whose text is about `bytes` long.
fn blob(bytes: usize, tag: &str) -> Value {
    json!({ "tag": tag, "text": "x".repeat(bytes) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_input_and_a_4_mib_result_travel_by_claim_check() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    // `echo` answers its input: 8 MiB in and out, and 4 MiB in and out.
    let big = TaskEnvelope::new("echo", blob(8 << 20, "eight"));
    let medium = TaskEnvelope::new("echo", blob(4 << 20, "four"));
    for task in [&big, &medium] {
        env.broker.publish(task, Codec::MessagePack).await.unwrap();
    }
    let rows = env
        .wait_finished(&[big.id, medium.id], Duration::from_secs(60))
        .await;
    worker.stop().await;
    let bucket = env.broker.payloads().bucket();
    for (task, row) in [(&big, &rows[0]), (&medium, &rows[1])] {
        let row = if row.id == task.id {
            row
        } else {
            rows.iter().find(|r| r.id == task.id).unwrap()
        };
        assert_eq!(row.status, "completed", "{:?}", row.last_error);
        // The row holds references, not megabytes.
        assert_eq!(row.data, Value::Null);
        assert_eq!(row.result, None);
        let data_ref = row.data_ref.clone().expect("data by claim check");
        assert_eq!(
            (data_ref.bucket.as_str(), data_ref.name.clone()),
            (bucket.as_str(), format!("{}.data", task.id))
        );
        let result_ref = row.result_ref.clone().expect("result by claim check");
        assert_eq!(result_ref.name, format!("{}.result", task.id));
        assert_eq!(
            result_ref.size,
            serde_json::to_vec(&task.data).unwrap().len() as u64
        );
        // A reader gets the result whole.
        assert_eq!(
            env.broker.payloads().get(&result_ref).await.unwrap(),
            task.data
        );
    }
    let app = app(&env, Some("claim-token"));
    let (status, body) = call(&app, get(format!("/v1/tasks/{}", medium.id))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], medium.data, "answered whole over HTTP");
    assert_eq!(body["result_ref"]["name"], format!("{}.result", medium.id));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_check_whose_object_is_gone_becomes_a_dead_letter_and_the_rest_flows() {
    let env = TestEnv::new().await;
    let worker = env.spawn(env.worker());
    let mut lost = TaskEnvelope::new("echo", Value::Null);
    lost.data_ref = Some(PayloadRef {
        bucket: env.broker.payloads().bucket(),
        name: "never-stored.data".into(),
        size: 10,
    });
    // A reference into another bucket, with a size no one could allocate: not read.
    let mut elsewhere = TaskEnvelope::new("echo", Value::Null);
    elsewhere.data_ref = Some(PayloadRef {
        bucket: "SOMEONE_ELSES_BUCKET".into(),
        name: "secrets.data".into(),
        size: u64::MAX,
    });
    let fine = TaskEnvelope::new("echo", json!("fine"));
    for task in [&lost, &elsewhere, &fine] {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let rows = env
        .wait_finished(&[lost.id, elsewhere.id, fine.id], Duration::from_secs(30))
        .await;
    worker.stop().await;
    for id in [lost.id, elsewhere.id] {
        let row = rows.iter().find(|r| r.id == id).unwrap();
        assert_eq!(row.status, "dead");
        assert!(
            row.last_error.as_deref().unwrap().contains("missing"),
            "{:?}",
            row.last_error
        );
    }
    assert_eq!(
        rows.iter().find(|r| r.id == fine.id).unwrap().status,
        "completed"
    );
    let letters = swarm_director::dlq::DeadLetterStream::of(&env.broker)
        .page(&Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(letters.letters.len(), 2);
    assert!(
        letters
            .letters
            .iter()
            .all(|s| s.letter.reason.as_str() == "payload_missing")
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_never_made_is_told_apart_from_an_unreachable_one_by_its_error_code() {
    use swarm_director::{broker::PayloadError, fault::Classify};
    let env = TestEnv::new().await;
    let reference = PayloadRef {
        bucket: env.broker.payloads().bucket(),
        name: "x.data".into(),
        size: 1,
    };
    // As on a fleet where `swarmd migrate` never ran: the test's bucket removed.
    async_nats::jetstream::new(env.broker.client().clone())
        .delete_object_store(&reference.bucket)
        .await
        .unwrap();
    let error = env.broker.payloads().get(&reference).await.unwrap_err();
    assert!(
        matches!(&error, PayloadError::NoBucket(bucket) if *bucket == reference.bucket),
        "{error:?}"
    );
    assert!(error.to_string().contains("swarmd migrate"), "{error}");
    assert_eq!(error.fault(), swarm_director::fault::Fault::Transient);
    env.cleanup().await;
}
