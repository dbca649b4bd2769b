//! The task envelope: the fields every producer sends, and the rules they must obey.
//!
//! Over 400 lines with its unit tests; the code itself is about 300.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::PayloadRef;

/// Priority when a producer gives none (the seed's default).
pub const DEFAULT_PRIORITY: u8 = 5;
/// Highest priority; priorities run 0..=9 and higher runs first.
pub const MAX_PRIORITY: u8 = 9;
/// Attempts when a producer gives none (the seed's default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Upper bound on `max_attempts`, so a typo cannot make a task retry for days.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest `timeout` a producer may ask for, in seconds (24 h).
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// Deepest nesting of arrays and objects allowed in `data`.
pub const MAX_DATA_DEPTH: usize = 64;
/// Longest `unique_for_secs`: a year.
pub const MAX_UNIQUE_FOR_SECS: u32 = 366 * 86_400;
/// Longest `idempotency_key`, in characters (JSON Schema's `maxLength` counts characters).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;

/// One unit of work, as published to `<prefix>.tasks.p<priority>.<agent_type>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    /// Task id; also the `Nats-Msg-Id` header, so re-publishing it is de-duplicated.
    pub id: Uuid,
    /// Name of the agent that runs the task (letters, digits, `_`, `-`).
    pub agent_type: String,
    /// The agent's input: any JSON value.
    pub data: serde_json::Value,
    /// 0..=9, higher first.
    #[serde(default = "default_priority", deserialize_with = "integral::de_u8")]
    pub priority: u8,
    /// When the producer created the task (UTC, RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Attempts before the task is given up.
    #[serde(
        default = "default_max_attempts",
        deserialize_with = "integral::de_u32"
    )]
    pub max_attempts: u32,
    /// Seconds one attempt may run; the worker's default applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// A producer's own key for the task, stored with the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Set on a replay of a dead letter: the id of the task it replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<Uuid>,
    /// Claim check: `data` is too large for a message and was put in the Object Store;
    /// `data` is then `null` and the worker reads it from here before the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_ref: Option<PayloadRef>,
    /// No attempt begins after this instant (UTC, RFC 3339): a task still waiting then ends
    /// `dead` with reason `expired` instead of running late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// No attempt begins before this instant (UTC, RFC 3339): the task is held until then
    /// (see `broker::delayed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// How long `idempotency_key` stays taken: absent, until the task holding it finishes
    /// (`until_finished`); a number of seconds, that long after it was taken (`ttl`),
    /// finished or not. A task published while another holds its key is that task.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral::de_option_u32"
    )]
    pub unique_for_secs: Option<u32>,
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

/// Why an envelope breaks the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("agent_type {0:?} must be 1-64 letters, digits, '_' or '-'")]
    AgentType(String),
    #[error("priority {0} is outside 0..=9")]
    Priority(u8),
    #[error("max_attempts {0} is outside 1..=100")]
    MaxAttempts(u32),
    #[error("timeout {0} must be a number of seconds above 0 and at most 86400 (24 h)")]
    Timeout(f64),
    #[error("idempotency_key is longer than 256 characters")]
    IdempotencyKey,
    /// PostgreSQL cannot store U+0000 in text or jsonb, so no task may carry one.
    #[error("{0} holds a NUL character (\\u0000), which cannot be stored")]
    Nul(String),
    #[error("data nests arrays and objects deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
    #[error("data_ref must name a bucket and an object, and data must then be null")]
    DataRef,
    #[error("unique_for_secs must be 1 to {MAX_UNIQUE_FOR_SECS} (a year)")]
    UniqueFor,
}

impl EnvelopeError {
    /// True when the fault lies in the task's content (`data`, keys) rather than in one of
    /// the envelope's own fields.
    pub fn is_content(&self) -> bool {
        matches!(self, EnvelopeError::Nul(_) | EnvelopeError::TooDeep)
    }
}

/// Whether `name` can be an agent type, and so a subject token.
pub fn valid_agent_type(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A task delivered at most this long before its `not_before` waits it out where it is;
/// one earlier is held again until due.
pub const WAIT_OUT_UP_TO: chrono::Duration = chrono::Duration::milliseconds(50);

impl TaskEnvelope {
    /// A new task with a fresh id, the default priority and attempts, created now.
    pub fn new(agent_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            agent_type: agent_type.into(),
            data,
            priority: DEFAULT_PRIORITY,
            created_at: Utc::now(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: None,
            idempotency_key: None,
            replay_of: None,
            data_ref: None,
            expires_at: None,
            not_before: None,
            unique_for_secs: None,
        }
    }

    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Checks the rules serde cannot: ranges, the agent type's spelling, and what `data`
    /// may hold (no NUL in any string or key, nesting at most [`MAX_DATA_DEPTH`]). The same
    /// rules hold at every entry: publishing, the HTTP API, a worker's decode, legacy intake.
    ///
    /// Fails with the first rule broken, naming the field.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if !valid_agent_type(&self.agent_type) {
            return Err(EnvelopeError::AgentType(self.agent_type.clone()));
        }
        if self.priority > MAX_PRIORITY {
            return Err(EnvelopeError::Priority(self.priority));
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(EnvelopeError::MaxAttempts(self.max_attempts));
        }
        if let Some(timeout) = self.timeout
            && !(timeout > 0.0 && timeout <= MAX_TIMEOUT_SECS)
        {
            return Err(EnvelopeError::Timeout(timeout));
        }
        if let Some(key) = &self.idempotency_key {
            if key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(EnvelopeError::IdempotencyKey);
            }
            if key.contains('\0') {
                return Err(EnvelopeError::Nul("idempotency_key".into()));
            }
        }
        if let Some(secs) = self.unique_for_secs
            && !(1..=MAX_UNIQUE_FOR_SECS).contains(&secs)
        {
            return Err(EnvelopeError::UniqueFor);
        }
        if let Some(data_ref) = &self.data_ref
            && !(data_ref.is_well_formed() && self.data.is_null())
        {
            return Err(EnvelopeError::DataRef);
        }
        check_value(&self.data)
    }
}

/// Checks a JSON value (task data, an agent's result) against what the fleet can store:
/// no NUL in a string or a key, nesting at most [`MAX_DATA_DEPTH`]. Walks without recursion,
/// since a hostile document may be deep.
///
/// Fails with the first rule broken.
pub fn check_value(data: &Value) -> Result<(), EnvelopeError> {
    let mut stack: Vec<(&Value, usize)> = vec![(data, 0)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::String(text) if text.contains('\0') => {
                return Err(EnvelopeError::Nul("a string in data".into()));
            }
            Value::Array(items) => {
                if depth >= MAX_DATA_DEPTH {
                    return Err(EnvelopeError::TooDeep);
                }
                stack.extend(items.iter().map(|item| (item, depth + 1)));
            }
            Value::Object(fields) => {
                if depth >= MAX_DATA_DEPTH {
                    return Err(EnvelopeError::TooDeep);
                }
                for (key, item) in fields {
                    if key.contains('\0') {
                        return Err(EnvelopeError::Nul("a key in data".into()));
                    }
                    stack.push((item, depth + 1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Integer fields that also accept a JSON number with no fraction (`94.0`): JSON Schema's
/// `integer` allows it, and so do producers in languages without an integer type.
pub mod integral {
    use serde::{Deserialize, Deserializer, de};

    struct Integral<const MAX: u64>;

    impl<const MAX: u64> de::Visitor<'_> for Integral<MAX> {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an integer from 0 to {MAX}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if v <= MAX {
                Ok(v)
            } else {
                Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && (0.0..=MAX as f64).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }

    pub fn de_u8<'de, D: Deserializer<'de>>(de: D) -> Result<u8, D::Error> {
        de.deserialize_any(Integral::<{ u8::MAX as u64 }>)
            .map(|v| v as u8)
    }

    pub fn de_u32<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
        de.deserialize_any(Integral::<{ u32::MAX as u64 }>)
            .map(|v| v as u32)
    }

    /// An optional field read like [`de_u8`]; `null` is `None`.
    pub fn de_option_u8<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u8>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "de_u8")] u8);
        Ok(Option::<Wrapped>::deserialize(de)?.map(|Wrapped(v)| v))
    }

    /// An optional field read like [`de_u32`]; `null` is `None`.
    pub fn de_option_u32<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "de_u32")] u32);
        Ok(Option::<Wrapped>::deserialize(de)?.map(|Wrapped(v)| v))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task() -> TaskEnvelope {
        TaskEnvelope::new("echo", json!({}))
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, i| {
            if i % 2 == 0 {
                json!([inner])
            } else {
                json!({ "k": inner })
            }
        })
    }

    #[test]
    fn defaults_follow_the_seed() {
        let task = task();
        assert_eq!(task.priority, 5);
        assert_eq!(task.max_attempts, 3);
        assert_eq!(task.validate(), Ok(()));
        let decoded: TaskEnvelope = serde_json::from_value(json!({
            "id": task.id, "agent_type": "echo", "data": null,
            "created_at": "2026-11-30T12:00:00Z"
        }))
        .unwrap();
        assert_eq!((decoded.priority, decoded.max_attempts), (5, 3));
        assert_eq!(default_priority(), DEFAULT_PRIORITY);
        assert_eq!(default_max_attempts(), DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn priority_and_attempts_bounds() {
        assert_eq!(task().with_priority(9).validate(), Ok(()));
        assert_eq!(task().with_priority(0).validate(), Ok(()));
        assert_eq!(
            task().with_priority(10).validate(),
            Err(EnvelopeError::Priority(10))
        );
        assert_eq!(task().with_max_attempts(1).validate(), Ok(()));
        assert_eq!(task().with_max_attempts(100).validate(), Ok(()));
        assert_eq!(
            task().with_max_attempts(0).validate(),
            Err(EnvelopeError::MaxAttempts(0))
        );
        assert_eq!(
            task().with_max_attempts(101).validate(),
            Err(EnvelopeError::MaxAttempts(101))
        );
    }

    #[test]
    fn agent_type_spelling() {
        for good in ["a", "email", "A-b_9", &"x".repeat(64)] {
            assert!(valid_agent_type(good), "{good}");
        }
        for bad in ["", "a.b", "a b", "a*", ">", "é", &"x".repeat(65)] {
            assert!(!valid_agent_type(bad), "{bad}");
            let task = TaskEnvelope::new(bad, json!({}));
            assert_eq!(
                task.validate(),
                Err(EnvelopeError::AgentType(bad.to_string()))
            );
        }
    }

    #[test]
    fn timeout_bounds() {
        let with = |t: f64| TaskEnvelope {
            timeout: Some(t),
            ..task()
        };
        assert_eq!(with(0.001).validate(), Ok(()));
        assert_eq!(with(MAX_TIMEOUT_SECS).validate(), Ok(()));
        for bad in [
            0.0,
            -1.0,
            MAX_TIMEOUT_SECS + 0.5,
            1e20,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert!(
                matches!(with(bad).validate(), Err(EnvelopeError::Timeout(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn idempotency_key_bounds() {
        let with = |k: String| TaskEnvelope {
            idempotency_key: Some(k),
            ..task()
        };
        assert_eq!(with("k".repeat(256)).validate(), Ok(()));
        assert_eq!(
            with("é".repeat(256)).validate(),
            Ok(()),
            "characters, not bytes"
        );
        assert_eq!(
            with("é".repeat(257)).validate(),
            Err(EnvelopeError::IdempotencyKey)
        );
        assert_eq!(
            with("k".repeat(257)).validate(),
            Err(EnvelopeError::IdempotencyKey)
        );
        assert_eq!(
            with("a\0b".into()).validate(),
            Err(EnvelopeError::Nul("idempotency_key".into()))
        );
    }

    #[test]
    fn nul_anywhere_in_data_is_refused() {
        let cases = [
            (json!("a\u{0}b"), "a string in data"),
            (json!({"s": "a\u{0}b"}), "a string in data"),
            (json!([1, ["x", "\u{0}"]]), "a string in data"),
            (json!({"a\u{0}": 1}), "a key in data"),
            (json!({"ok": {"k\u{0}": null}}), "a key in data"),
        ];
        for (data, field) in cases {
            let task = TaskEnvelope::new("echo", data.clone());
            let error = task.validate().unwrap_err();
            assert_eq!(error, EnvelopeError::Nul(field.into()), "{data}");
            assert!(error.is_content());
        }
        let fine = TaskEnvelope::new("echo", json!({"s": "a\u{1}b", "k": ["\u{e9}"]}));
        assert_eq!(fine.validate(), Ok(()));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = TaskEnvelope::new("echo", nested(MAX_DATA_DEPTH));
        assert_eq!(ok.validate(), Ok(()));
        let deep = TaskEnvelope::new("echo", nested(MAX_DATA_DEPTH + 1));
        assert_eq!(deep.validate(), Err(EnvelopeError::TooDeep));
        let deep_object = TaskEnvelope::new("echo", nested(MAX_DATA_DEPTH + 2));
        assert_eq!(deep_object.validate(), Err(EnvelopeError::TooDeep));
        assert!(EnvelopeError::TooDeep.is_content());
        assert!(!EnvelopeError::Priority(10).is_content());
        assert!(!EnvelopeError::Timeout(0.0).is_content());
    }

    #[test]
    fn unique_for_is_one_second_to_a_year() {
        let with = |secs: u32| TaskEnvelope {
            unique_for_secs: Some(secs),
            ..task()
        };
        assert_eq!(MAX_UNIQUE_FOR_SECS, 31_622_400, "366 days of 86,400 s");
        assert_eq!(with(1).validate(), Ok(()));
        assert_eq!(with(MAX_UNIQUE_FOR_SECS).validate(), Ok(()));
        for bad in [0, MAX_UNIQUE_FOR_SECS + 1, u32::MAX] {
            assert_eq!(with(bad).validate(), Err(EnvelopeError::UniqueFor), "{bad}");
        }
        assert_eq!(task().validate(), Ok(()), "absent: no uniqueness");
    }

    #[test]
    fn data_ref_needs_a_well_formed_reference_and_null_data() {
        let reference = |bucket: &str, name: &str| PayloadRef {
            bucket: bucket.into(),
            name: name.into(),
            size: 10,
        };
        let with = |data_ref: PayloadRef, data: Value| TaskEnvelope {
            data_ref: Some(data_ref),
            ..TaskEnvelope::new("echo", data)
        };
        let good = reference("FLEET_PAYLOADS", "id.data");
        assert_eq!(with(good.clone(), Value::Null).validate(), Ok(()));
        // Each half of the rule alone is refused: data beside the reference, or a
        // reference that names no object.
        assert_eq!(
            with(good, json!({"also": "inline"})).validate(),
            Err(EnvelopeError::DataRef)
        );
        for bad in [
            reference("", "id.data"),
            reference("a.b", "id.data"),
            reference("B", ""),
        ] {
            assert_eq!(
                with(bad.clone(), Value::Null).validate(),
                Err(EnvelopeError::DataRef),
                "{bad:?}"
            );
        }
        assert_eq!(
            with(reference("", ""), json!(1)).validate(),
            Err(EnvelopeError::DataRef)
        );
    }

    #[test]
    fn integral_floats_are_integers() {
        let id = uuid::Uuid::new_v4();
        let read = |priority: Value, attempts: Value| {
            serde_json::from_value::<TaskEnvelope>(json!({
                "id": id, "agent_type": "echo", "data": 1, "priority": priority,
                "max_attempts": attempts, "created_at": "2026-11-30T12:00:00Z"
            }))
        };
        let task = read(json!(7.0), json!(94.0)).unwrap();
        assert_eq!((task.priority, task.max_attempts), (7, 94));
        let task = read(json!(255), json!(4294967295u64)).unwrap();
        assert_eq!((task.priority, task.max_attempts), (255, u32::MAX));
        for (priority, attempts) in [
            (json!(7.5), json!(3)),
            (json!(3), json!(2.25)),
            (json!(-1), json!(3)),
            (json!(256), json!(3)),
            (json!(3), json!(4294967296u64)),
            (json!(3), json!(-3.0)),
            (json!(256.0), json!(3)),
            (json!("5"), json!(3)),
        ] {
            assert!(
                read(priority.clone(), attempts.clone()).is_err(),
                "{priority} {attempts}"
            );
        }
        let packed = rmp_serde::to_vec_named(&json!({
            "id": id.to_string(), "agent_type": "echo", "data": 1, "priority": 2.0,
            "max_attempts": 4, "created_at": "2026-11-30T12:00:00Z"
        }))
        .unwrap();
        let mut de = rmp_serde::Deserializer::from_read_ref(&packed).with_human_readable();
        let task = TaskEnvelope::deserialize(&mut de).unwrap();
        assert_eq!((task.priority, task.max_attempts), (2, 4));
        let error = read(json!(2.5), json!(3)).unwrap_err().to_string();
        assert!(error.contains("an integer from 0 to 255"), "{error}");
    }

    #[test]
    fn optional_integral_fields() {
        #[derive(Debug, Deserialize)]
        struct Fields {
            #[serde(default, deserialize_with = "integral::de_option_u8")]
            small: Option<u8>,
            #[serde(default, deserialize_with = "integral::de_option_u32")]
            large: Option<u32>,
        }
        let read = |value: Value| serde_json::from_value::<Fields>(value);
        let both = read(json!({"small": 9.0, "large": 94.0})).unwrap();
        assert_eq!((both.small, both.large), (Some(9), Some(94)));
        let nulls = read(json!({"small": null, "large": null})).unwrap();
        assert_eq!((nulls.small, nulls.large), (None, None));
        let absent = read(json!({})).unwrap();
        assert_eq!((absent.small, absent.large), (None, None));
        assert!(read(json!({"small": 256})).is_err());
        assert!(read(json!({"large": 1.5})).is_err());
        assert!(read(json!({"large": -1})).is_err());
    }
}
