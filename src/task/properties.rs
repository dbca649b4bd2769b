//! Property tests of the wire contract: what `validate` accepts round-trips through both
//! codecs unchanged; a NUL or too deep a nesting anywhere is refused; no byte sequence makes
//! decoding panic.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{Codec, EnvelopeError, MAX_DATA_DEPTH, TaskEnvelope};

/// JSON values of every kind, strings from all of Unicode (NUL included, sometimes).
fn json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn envelope() -> impl Strategy<Value = TaskEnvelope> {
    (
        "[A-Za-z0-9_-]{1,64}",
        json(4),
        0u8..=9,
        1u32..=100,
        prop::option::of(0.001f64..=86_400.0),
        prop::option::of("[^\u{0}]{0,64}"),
    )
        .prop_map(|(agent, data, priority, attempts, timeout, key)| {
            let mut task = TaskEnvelope::new(agent, data)
                .with_priority(priority)
                .with_max_attempts(attempts);
            task.timeout = timeout;
            task.idempotency_key = key;
            task
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_envelopes_round_trip_in_both_codecs(task in envelope()) {
        prop_assume!(!holds_nul(&task.data));
        prop_assert_eq!(task.validate(), Ok(()));
        for codec in [Codec::Json, Codec::MessagePack] {
            let bytes = codec.encode(&task).unwrap();
            let back = codec.decode(&bytes).unwrap();
            prop_assert_eq!(back.validate(), Ok(()));
            // Floats may take another path through JSON text; compare as JSON.
            prop_assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&task).unwrap()
            );
        }
    }

    #[test]
    fn a_nul_anywhere_is_refused(task in envelope()) {
        let result = task.validate();
        if holds_nul(&task.data) {
            prop_assert!(matches!(result, Err(EnvelopeError::Nul(_))), "{:?}", result);
        } else {
            prop_assert_eq!(result, Ok(()));
        }
    }

    #[test]
    fn nesting_past_the_limit_is_refused(extra in 1usize..8, inner in json(1)) {
        let deep = (0..MAX_DATA_DEPTH + extra).fold(inner, |v, _| Value::Array(vec![v]));
        let task = TaskEnvelope::new("echo", deep);
        prop_assert_eq!(task.validate(), Err(EnvelopeError::TooDeep));
    }

    #[test]
    fn no_bytes_make_decoding_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for codec in [Codec::Json, Codec::MessagePack] {
            if let Ok(task) = codec.decode(&bytes) {
                let _ = task.validate();
            }
            let _ = codec.is_well_formed(&bytes);
        }
    }
}
