//! Generated envelopes through the real database: whatever `validate` accepts can be
//! claimed and settled, and reads back as it was sent (decode → validate → claim → settle).

use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use serde_json::{Map, Value};
use swarm_director::{
    store::{Claim, Origin, Settled, SettledStatus},
    task::{Codec, TaskEnvelope},
};

use crate::support::TestEnv;

/// JSON values of every kind, strings from all of Unicode (NUL included, sometimes).
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z\u{0}\u{1}é\u{10FFFF}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_validates_is_stored_and_read_back_unchanged() {
    let env = TestEnv::new().await;
    let mut runner = TestRunner::new(Config::with_cases(200));
    let strategy = (json(), "[A-Za-z0-9_-]{1,64}", any::<bool>());
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..200 {
        let (data, agent, msgpack) = strategy.new_tree(&mut runner).unwrap().current();
        let task = TaskEnvelope::new(agent, data);
        let codec = if msgpack {
            Codec::MessagePack
        } else {
            Codec::Json
        };
        let decoded = codec.decode(&codec.encode(&task).unwrap()).unwrap();
        if decoded.validate().is_err() {
            refused += 1;
            continue;
        }
        accepted += 1;
        let claim = Claim {
            task: &decoded,
            attempt: 1,
            trace_id: None,
        };
        let claimed = env.store.tasks().claim(&[claim], "prop").await;
        let claimed = claimed.unwrap_or_else(|e| panic!("claim refused {}: {e}", decoded.data));
        assert!(claimed.contains_key(&decoded.id));
        let settled = Settled {
            id: decoded.id,
            attempt: 1,
            status: SettledStatus::Completed,
            result: Some(decoded.data.clone()),
            result_ref: None,
            error: None,
            cancelled_by: None,
            origin: Origin::of(
                std::sync::Arc::new(decoded.clone()),
                None,
                chrono::Utc::now(),
            ),
        };
        let applied = env.store.tasks().settle(&[&settled], "prop").await;
        let applied = applied.unwrap_or_else(|e| panic!("settle refused {}: {e}", decoded.data));
        assert!(applied.contains(&decoded.id));
        let row = env.store.tasks().get(decoded.id).await.unwrap().unwrap();
        assert_eq!(row.agent_type, decoded.agent_type);
        // PostgreSQL's jsonb keeps numbers as numeric: compare through their JSON text.
        assert_eq!(normal(&row.data), normal(&decoded.data), "data");
        assert_eq!(
            normal(row.result.as_ref().unwrap()),
            normal(&decoded.data),
            "result"
        );
    }
    println!("{accepted} generated envelopes stored and read back, {refused} refused by validate");
    assert!(accepted > 100 && refused > 0, "{accepted} / {refused}");
    env.cleanup().await;
}

/// A value with every number as f64 and object keys sorted: what jsonb is free to change.
fn normal(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => Value::Array(items.iter().map(normal).collect()),
        Value::Object(map) => {
            let sorted: std::collections::BTreeMap<_, _> =
                map.iter().map(|(k, v)| (k.clone(), normal(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        other => other.clone(),
    }
}
