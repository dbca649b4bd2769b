//! The dead-letter record (`schemas/dead-letter.schema.json`).
//!
//! Over 400 lines with its unit tests; the code itself is under 300.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::task::{AttemptError, TaskEnvelope};

/// Why a message ended in the dead-letter stream. Stable codes for scripts and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
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
    /// The task's content breaks the rules every entry applies (a NUL character, nesting
    /// too deep).
    BadInput,
    /// The database refused to store the task or its outcome for the values it carries.
    Unstorable,
    /// The subject is not `<prefix>.tasks.p<N>.<agent_type>`, so no lane serves it.
    BadSubject,
    /// The task's data travelled by claim check and the object is gone (expired with the
    /// retention period, or never stored).
    PayloadMissing,
    /// No attempt had begun by the task's `expires_at`.
    Expired,
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
            DeadReason::BadInput => "bad_input",
            DeadReason::Unstorable => "unstorable",
            DeadReason::BadSubject => "bad_subject",
            DeadReason::PayloadMissing => "payload_missing",
            DeadReason::Expired => "expired",
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
    /// True when parts of the record were cut to fit one broker message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The size in bytes of each part that was cut (`record`, `error`, `attempts`,
    /// `envelope.data`, `raw.body`, `raw.headers`), before cutting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub original_sizes: BTreeMap<String, usize>,
}

/// Room kept for the headers of a dead-letter message beside its body.
pub const HEADER_ROOM: usize = 1024;

impl DeadLetter {
    /// The record as JSON, cut to at most `max_bytes`: first the texts (final error, each
    /// attempt's error), the raw body (kept as base64, which JSON does not escape) and the
    /// envelope's `data` (kept as the start of its JSON text) are cut to a budget that
    /// halves until the record fits; as a last resort they are emptied. Marks the record
    /// `truncated` with the original sizes. `None` only when even the emptied record is
    /// larger than `max_bytes`.
    pub fn encode_within(&mut self, max_bytes: usize) -> Option<Vec<u8>> {
        let whole = serde_json::to_vec(self).ok()?;
        if whole.len() <= max_bytes {
            return Some(whole);
        }
        let original = self.clone();
        let mut sizes = BTreeMap::from([("record".to_string(), whole.len())]);
        let mut budget = max_bytes / 2;
        loop {
            *self = original.clone();
            self.cut_to(budget, &mut sizes);
            self.truncated = true;
            self.original_sizes = sizes.clone();
            let body = serde_json::to_vec(self).ok()?;
            if body.len() <= max_bytes {
                return Some(body);
            }
            if budget == 0 {
                return None;
            }
            budget = if budget < 64 { 0 } else { budget / 2 };
        }
    }

    /// Cuts every large part of the record to about `budget` bytes, noting original sizes.
    fn cut_to(&mut self, budget: usize, sizes: &mut BTreeMap<String, usize>) {
        let mut note = |part: &str, size: usize| {
            sizes.insert(part.to_string(), size);
        };
        let error_budget = budget / 4;
        if self.error.len() > error_budget {
            note("error", self.error.len());
            self.error = cut_text(&self.error, error_budget);
        }
        let attempts_size: usize = self.attempts.iter().map(|a| a.error.len()).sum();
        let per_attempt = budget / 4 / self.attempts.len().max(1);
        if attempts_size > budget / 4 {
            note("attempts", attempts_size);
            for attempt in &mut self.attempts {
                attempt.error = cut_text(&attempt.error, per_attempt);
            }
            if budget == 0 {
                self.attempts.clear();
            }
        }
        if let Some(envelope) = &mut self.envelope {
            let text = envelope.data.to_string();
            if text.len() > budget / 2 {
                note("envelope.data", text.len());
                envelope.data = Value::String(cut_text(&text, budget / 2));
            }
        }
        if let Some(raw) = &mut self.raw {
            let kept = raw.bytes();
            let encoded = raw.body.as_ref().or(raw.body_base64.as_ref());
            if encoded.map_or(0, String::len) > budget / 2 || raw.truncated {
                note("raw.body", raw.size);
                let cut = &kept[..kept.len().min(budget / 2 / 4 * 3)];
                raw.body = None;
                raw.body_base64 = Some(base64::engine::general_purpose::STANDARD.encode(cut));
                raw.truncated = true;
            }
            let headers = raw.headers.to_string().len();
            if headers > budget / 4 {
                note("raw.headers", headers);
                raw.headers = Value::Object(Default::default());
            }
        }
    }

    /// Whether the original task can be rebuilt from this record.
    pub fn envelope_is_whole(&self) -> bool {
        self.envelope.is_some() && !self.original_sizes.contains_key("envelope.data")
    }

    /// The de-duplication id: a redelivered message dead-lettered twice is stored once. A
    /// record of something that had no position in a stream (a legacy member, a message
    /// without JetStream metadata) shares it with nothing: its own id.
    pub fn message_id(&self) -> String {
        match &self.envelope {
            Some(task) => format!("dlq-{}", task.id),
            None if self.source.stream_sequence == 0 => format!("dlq-{}", self.id),
            None => format!("dlq-{}-{}", self.source.stream, self.source.stream_sequence),
        }
    }
}

/// The first at most `max_bytes` of `text`, cut at a character boundary.
fn cut_text(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
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

    fn letter(data: Value, raw: Option<RawMessage>) -> DeadLetter {
        let envelope = raw.is_none().then(|| TaskEnvelope::new("echo", data));
        DeadLetter {
            id: Uuid::new_v4(),
            agent_type: "echo".into(),
            reason: DeadReason::AttemptsExhausted,
            error: "e".repeat(10_000),
            attempts: (1..=3)
                .map(|attempt| AttemptError {
                    attempt,
                    error: "x".repeat(5_000),
                    at: Utc::now(),
                })
                .collect(),
            envelope,
            raw,
            source: Source {
                stream: "S".into(),
                stream_sequence: 1,
                subject: "swarm.tasks.p5.echo".into(),
                delivered: 3,
            },
            worker_id: "w".into(),
            dead_at: Utc::now(),
            trace_id: None,
            traceparent: None,
            truncated: false,
            original_sizes: BTreeMap::new(),
        }
    }

    #[test]
    fn a_letter_that_fits_is_kept_whole() {
        let mut small = letter(Value::from("data"), None);
        let before = small.clone();
        let body = small.encode_within(1 << 20).unwrap();
        assert_eq!(small, before);
        assert!(!small.truncated && small.original_sizes.is_empty());
        assert_eq!(serde_json::from_slice::<DeadLetter>(&body).unwrap(), before);
        assert!(small.envelope_is_whole());
        // Exactly at the limit still fits.
        let mut exact = before.clone();
        assert!(exact.encode_within(body.len()).is_some());
        assert!(!exact.truncated);
    }

    #[test]
    fn an_envelope_too_large_is_cut_to_fit_and_says_so() {
        let data = Value::from("d".repeat(200_000));
        let mut big = letter(data, None);
        let whole = serde_json::to_vec(&big).unwrap().len();
        let body = big.encode_within(20_000).unwrap();
        assert!(body.len() <= 20_000, "{}", body.len());
        let read: DeadLetter = serde_json::from_slice(&body).unwrap();
        assert!(read.truncated);
        assert_eq!(read.original_sizes["record"], whole);
        assert_eq!(read.original_sizes["envelope.data"], 200_002);
        assert_eq!(read.original_sizes["error"], 10_000);
        assert_eq!(read.original_sizes["attempts"], 15_000);
        assert!(!read.envelope_is_whole());
        assert_eq!(
            read.attempts.len(),
            3,
            "every attempt is kept, its text cut"
        );
        assert!(read.error.starts_with("eee"));
        let kept = read.envelope.unwrap().data;
        assert!(kept.as_str().unwrap().starts_with("\"ddd"), "{kept}");
    }

    #[test]
    fn control_characters_in_a_raw_body_cannot_blow_the_limit() {
        // Every byte escapes to six in JSON: the body is kept as base64 instead.
        let mut body = vec![b'{'];
        body.extend(std::iter::repeat_n(1u8, 100_000));
        let raw = RawMessage::new(Value::Null, &body, usize::MAX);
        assert!(raw.body.is_some() && !raw.truncated);
        let mut dead = letter(Value::Null, Some(raw));
        let encoded = dead.encode_within(30_000).unwrap();
        assert!(encoded.len() <= 30_000);
        let raw = dead.raw.as_ref().unwrap();
        assert!(raw.truncated && raw.body.is_none());
        assert_eq!(raw.size, body.len());
        assert!(body.starts_with(&raw.bytes()));
        assert!(raw.bytes().len() > 1000, "keeps what fits, not nothing");
        assert_eq!(dead.original_sizes["raw.body"], body.len());
    }

    #[test]
    fn huge_headers_are_dropped_and_a_hopeless_limit_says_none() {
        let headers = serde_json::json!({ "X-Big": ["h".repeat(50_000)] });
        let raw = RawMessage::new(headers, b"body", usize::MAX);
        let mut dead = letter(Value::Null, Some(raw));
        let encoded = dead.encode_within(8_000).unwrap();
        assert!(encoded.len() <= 8_000);
        assert_eq!(dead.raw.as_ref().unwrap().headers, serde_json::json!({}));
        assert!(dead.original_sizes["raw.headers"] > 50_000);
        let mut hopeless = letter(Value::Null, None);
        assert_eq!(hopeless.encode_within(10), None);
    }

    #[test]
    fn cut_text_respects_characters() {
        assert_eq!(cut_text("héllo", 2), "h");
        assert_eq!(cut_text("héllo", 3), "hé");
        assert_eq!(cut_text("abc", 10), "abc");
        assert_eq!(cut_text("abc", 0), "");
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
