//! The dead-letter record (`schemas/dead-letter.schema.json`).

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::task::TaskEnvelope;

/// Why a message ended in the dead-letter stream. Stable codes for scripts and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// The agent said the input can never succeed.
    PermanentError,
    /// Every attempt failed with a retryable error.
    AttemptsExhausted,
    /// No agent of this type is registered.
    UnknownAgent,
    /// Delivered too often without an outcome: it crashes or hangs the worker.
    MaxDeliveries,
    /// The body is not a JSON / MessagePack envelope.
    Undecodable,
    /// The `Content-Type` header names neither JSON nor MessagePack.
    UnknownContentType,
    /// The envelope decodes but breaks the contract (ranges, names).
    SchemaViolation,
    /// The subject's priority or agent type disagrees with the envelope.
    SubjectMismatch,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::PermanentError => "permanent_error",
            DeadReason::AttemptsExhausted => "attempts_exhausted",
            DeadReason::UnknownAgent => "unknown_agent",
            DeadReason::MaxDeliveries => "max_deliveries",
            DeadReason::Undecodable => "undecodable",
            DeadReason::UnknownContentType => "unknown_content_type",
            DeadReason::SchemaViolation => "schema_violation",
            DeadReason::SubjectMismatch => "subject_mismatch",
            DeadReason::PayloadTooLarge => "payload_too_large",
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeadReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(Value::from(s)).map_err(|_| format!("unknown reason {s:?}"))
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// The message as it arrived, for messages that never decoded into an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawMessage {
    pub headers: Value,
    /// The body when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in standard base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Size of the original body in bytes.
    pub size: usize,
    /// True when the body was cut to fit a NATS message; `size` tells the original length.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl RawMessage {
    /// Keeps `body` whole when it fits in `max_bytes` once encoded, else its first part.
    pub fn new(headers: Value, body: &[u8], max_bytes: usize) -> Self {
        let size = body.len();
        let (kept, truncated) = match std::str::from_utf8(body) {
            Ok(_) if size <= max_bytes => (body, false),
            Err(_) if size.div_ceil(3) * 4 <= max_bytes => (body, false),
            // Base64 grows bytes by 4/3: keep what fits either way.
            _ => (&body[..size.min(max_bytes / 4 * 3)], true),
        };
        match std::str::from_utf8(kept) {
            Ok(text) => Self {
                headers,
                body: Some(text.to_string()),
                body_base64: None,
                size,
                truncated,
            },
            Err(_) => Self {
                headers,
                body: None,
                body_base64: Some(base64::engine::general_purpose::STANDARD.encode(kept)),
                size,
                truncated,
            },
        }
    }

    /// The original bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// Where the dead message came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub stream: String,
    pub stream_sequence: u64,
    pub subject: String,
    /// How many times JetStream had delivered it.
    pub delivered: u32,
}

/// A dead letter: the original task (or raw message), every attempt's error, and why it
/// stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The task id, or a fresh id for a message that never decoded.
    pub id: Uuid,
    /// The agent type, or the subject's last token, or `unknown`.
    pub agent_type: String,
    pub reason: DeadReason,
    /// The final error, in words.
    pub error: String,
    /// Every failed attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptError>,
    /// The original envelope, when the message decoded into one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<TaskEnvelope>,
    /// The message as it arrived, when it did not decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawMessage>,
    pub source: Source,
    pub worker_id: String,
    pub dead_at: DateTime<Utc>,
    /// The trace the task belongs to (32 hex digits), when it was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The producer's W3C `traceparent`: a replay continues this trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl DeadLetter {
    /// The de-duplication id: a redelivered message dead-lettered twice is stored once.
    pub fn message_id(&self) -> String {
        match &self.envelope {
            Some(task) => format!("dlq-{}", task.id),
            None => format!("dlq-{}-{}", self.source.stream, self.source.stream_sequence),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bodies_keep_their_bytes() {
        let text = RawMessage::new(Value::Null, b"plain", 100);
        assert_eq!(text.body.as_deref(), Some("plain"));
        let binary = RawMessage::new(Value::Null, b"\xc1\xff\x00", 100);
        assert!(binary.body.is_none());
        assert_eq!(binary.bytes(), b"\xc1\xff\x00");
        let cut = RawMessage::new(Value::Null, &[b'x'; 1000], 100);
        assert!(cut.truncated);
        assert_eq!((cut.size, cut.bytes().len()), (1000, 75));
    }

    #[test]
    fn reasons_have_stable_codes() {
        assert_eq!(DeadReason::MaxDeliveries.as_str(), "max_deliveries");
        assert_eq!(
            "payload_too_large".parse::<DeadReason>(),
            Ok(DeadReason::PayloadTooLarge)
        );
        assert_eq!(
            serde_json::to_value(DeadReason::UnknownAgent).unwrap(),
            Value::from("unknown_agent")
        );
    }
}
