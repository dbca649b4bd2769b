//! A JetStream message becomes either a valid task or a dead letter with a clear reason,
//! keeping the raw bytes so nothing is lost.

use std::collections::BTreeMap;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    broker::{Subjects, headers},
    dlq::{DeadLetter, DeadReason, RawMessage, Source},
    task::AttemptError,
    task::{Codec, TaskEnvelope, valid_agent_type},
};

/// Why a message cannot become a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: DeadReason,
    pub error: String,
}

impl Rejection {
    fn new(reason: DeadReason, error: impl Into<String>) -> Self {
        Self {
            reason,
            error: error.into(),
        }
    }
}

/// A decoded task with what its delivery tells about it.
#[derive(Debug, Clone)]
pub struct TaskDelivery {
    /// Shared with the outcome's row (no copy of the task's data per settlement).
    pub task: std::sync::Arc<TaskEnvelope>,
    pub info: DeliveryInfo,
    /// Errors of earlier attempts, as stored in its row.
    pub previous_errors: Vec<AttemptError>,
    /// When this delivery was claimed.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The producer's span context, from the message headers.
    pub trace: opentelemetry::Context,
    /// The producer asked for the final outcome to be announced (`Swarm-Announce: outcome`).
    pub announce: bool,
    /// The last progress an earlier attempt reported, when this is a redelivery.
    pub checkpoint: Option<serde_json::Value>,
}

impl TaskDelivery {
    /// JetStream's delivery count: 1 on the first delivery.
    pub fn attempt(&self) -> u32 {
        self.info.delivered
    }

    /// This attempt as the legacy mirror shows it.
    pub fn mirror_attempt<'a>(&'a self, worker_id: &'a str) -> crate::mirror::Attempt<'a> {
        crate::mirror::Attempt {
            task: &self.task,
            number: self.attempt(),
            previous_errors: &self.previous_errors,
            worker_id,
            started: self.started_at,
        }
    }

    /// The dead letter of this task, with every attempt's error.
    pub fn dead_letter(&self, reason: DeadReason, error: &str, worker_id: &str) -> DeadLetter {
        let mut attempts = self.previous_errors.clone();
        if !matches!(reason, DeadReason::MaxDeliveries) {
            attempts.push(AttemptError {
                attempt: self.attempt(),
                error: error.to_string(),
                at: chrono::Utc::now(),
            });
        }
        DeadLetter {
            id: self.task.id,
            agent_type: self.task.agent_type.clone(),
            reason,
            error: error.to_string(),
            attempts,
            envelope: Some(self.task.as_ref().clone()),
            raw: None,
            source: self.info.source(),
            worker_id: worker_id.to_string(),
            dead_at: chrono::Utc::now(),
            trace_id: crate::telemetry::trace_id(&self.trace),
            traceparent: crate::telemetry::traceparent(&self.trace),
            truncated: false,
            original_sizes: Default::default(),
        }
    }
}

/// Where a message came from, read off its JetStream metadata.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    pub stream: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u32,
    pub subject: String,
    /// When the stream stored the message (server clock), when the metadata says.
    pub stored_at: Option<DateTime<Utc>>,
}

impl DeliveryInfo {
    pub fn source(&self) -> Source {
        Source {
            stream: self.stream.clone(),
            stream_sequence: self.stream_sequence,
            subject: self.subject.clone(),
            delivered: self.delivered,
        }
    }

    /// Reads the metadata JetStream puts in the reply subject.
    pub fn of(message: &jetstream::Message) -> Self {
        let subject = message.subject.to_string();
        match message.info() {
            Ok(info) => Self {
                stream: info.stream.to_string(),
                stream_sequence: info.stream_sequence,
                delivered: info.delivered.clamp(1, i64::from(u32::MAX)) as u32,
                subject,
                stored_at: DateTime::from_timestamp(
                    info.published.unix_timestamp(),
                    info.published.nanosecond(),
                ),
            },
            Err(_) => Self {
                stream: String::new(),
                stream_sequence: 0,
                delivered: 1,
                subject,
                stored_at: None,
            },
        }
    }
}

/// Decodes and checks a message body against its headers, subject and size limit.
///
/// Fails with a reason code and words fit for an operator when the body is too large, the
/// content type unknown, the body undecodable, the envelope against the contract, or the
/// subject disagrees with it.
pub fn decode(
    subjects: &Subjects,
    subject: &str,
    content_type: Option<&str>,
    body: &[u8],
    max_payload_bytes: usize,
) -> Result<TaskEnvelope, Rejection> {
    if body.len() > max_payload_bytes {
        return Err(Rejection::new(
            DeadReason::PayloadTooLarge,
            format!(
                "body of {} bytes is over the {max_payload_bytes}-byte limit",
                body.len()
            ),
        ));
    }
    let codec = Codec::for_message(content_type, body)
        .map_err(|e| Rejection::new(DeadReason::UnknownContentType, e.to_string()))?;
    let task = codec.decode(body).map_err(|e| {
        // Only on this error path: is it a well-formed document with the wrong shape?
        let reason = if codec.is_well_formed(body) {
            DeadReason::SchemaViolation
        } else {
            DeadReason::Undecodable
        };
        Rejection::new(reason, e.to_string())
    })?;
    task.validate().map_err(|e| {
        let reason = if e.is_content() {
            DeadReason::BadInput
        } else {
            DeadReason::SchemaViolation
        };
        Rejection::new(reason, format!("envelope breaks the contract: {e}"))
    })?;
    match subjects.parse_task(subject) {
        Some((priority, agent_type))
            if priority == task.priority && agent_type == task.agent_type =>
        {
            Ok(task)
        }
        None => Err(Rejection::new(
            DeadReason::BadSubject,
            format!(
                "subject {subject:?} is not <prefix>.tasks.p<0-9>.<agent_type>; expected {:?}",
                subjects.task(task.priority, &task.agent_type)
            ),
        )),
        Some(_) => Err(Rejection::new(
            DeadReason::SubjectMismatch,
            format!(
                "subject {subject:?} does not match the envelope (priority {}, agent_type {:?}); \
                 expected {:?}",
                task.priority,
                task.agent_type,
                subjects.task(task.priority, &task.agent_type)
            ),
        )),
    }
}

/// The dead letter of a message that never became a task, keeping its bytes (cut to
/// `max_body_bytes` if need be).
pub fn rejected_letter(
    subjects: &Subjects,
    info: &DeliveryInfo,
    message: &jetstream::Message,
    rejection: Rejection,
    worker_id: &str,
    max_body_bytes: usize,
) -> DeadLetter {
    let headers: BTreeMap<String, Value> = message
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .map(|(name, values)| {
            let values: Vec<Value> = values.iter().map(|v| Value::from(v.as_str())).collect();
            (name.to_string(), Value::from(values))
        })
        .collect();
    let agent_type = subjects
        .parse_task(&info.subject)
        .map(|(_, agent)| agent)
        .filter(|agent| valid_agent_type(agent))
        .unwrap_or("unknown")
        .to_string();
    DeadLetter {
        id: uuid::Uuid::now_v7(),
        agent_type,
        reason: rejection.reason,
        error: rejection.error,
        attempts: Vec::new(),
        envelope: None,
        raw: Some(RawMessage::new(
            serde_json::to_value(headers).unwrap_or_default(),
            &message.payload,
            max_body_bytes,
        )),
        source: info.source(),
        worker_id: worker_id.to_string(),
        dead_at: chrono::Utc::now(),
        trace_id: None,
        traceparent: None,
        truncated: false,
        original_sizes: Default::default(),
    }
}

/// Whether the producer asked for the outcome to be announced.
pub fn asks_for_announcement(message: &jetstream::Message) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::ANNOUNCE))
        .is_some_and(|v| v.as_str() == headers::ANNOUNCE_OUTCOME)
}

/// The `Content-Type` header of a message, if any.
pub fn content_type(message: &jetstream::Message) -> Option<&str> {
    message
        .headers
        .as_ref()?
        .get(headers::CONTENT_TYPE)
        .map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn subject_must_match_the_envelope() {
        let subjects = Subjects::new("swarm");
        let task = TaskEnvelope::new("echo", json!(1)).with_priority(3);
        let body = Codec::Json.encode(&task).unwrap();
        assert!(decode(&subjects, "swarm.tasks.p3.echo", None, &body, 1024).is_ok());
        let err = decode(&subjects, "swarm.tasks.p9.echo", None, &body, 1024).unwrap_err();
        assert_eq!(err.reason, DeadReason::SubjectMismatch);
        assert!(err.error.contains("does not match"), "{err:?}");
        let err = decode(&subjects, "swarm.tasks.p3.echo", None, &body, 10).unwrap_err();
        assert_eq!(err.reason, DeadReason::PayloadTooLarge);
    }

    #[test]
    fn garbage_gets_a_reason() {
        let subjects = Subjects::new("swarm");
        let subject = "swarm.tasks.p5.echo";
        let err = decode(&subjects, subject, None, b"\xc1garbage", 1024).unwrap_err();
        assert_eq!(err.reason, DeadReason::Undecodable);
        assert!(err.error.contains("MessagePack"), "{err:?}");
        let err = decode(&subjects, subject, Some("text/csv"), b"a,b", 1024).unwrap_err();
        assert_eq!(err.reason, DeadReason::UnknownContentType);
        let err = decode(&subjects, subject, None, b"{not json", 1024).unwrap_err();
        assert_eq!(err.reason, DeadReason::Undecodable);
        let err = decode(&subjects, subject, None, br#"{"id": 1}"#, 1024).unwrap_err();
        assert_eq!(err.reason, DeadReason::SchemaViolation);
        assert!(err.error.contains("JSON"), "{err:?}");
    }
}
