//! A JetStream message becomes either a valid task or a rejection with a clear reason,
//! keeping the raw bytes so nothing is lost.

use std::collections::BTreeMap;

use async_nats::jetstream;
use serde_json::Value;

use crate::{
    broker::{Subjects, headers},
    store::Rejected,
    task::{Codec, TaskEnvelope},
};

/// Where a message came from, read off its JetStream metadata.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    pub stream: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u32,
    pub subject: String,
}

impl DeliveryInfo {
    /// Reads the metadata JetStream puts in the reply subject.
    pub fn of(message: &jetstream::Message) -> Self {
        let subject = message.subject.to_string();
        match message.info() {
            Ok(info) => Self {
                stream: info.stream.to_string(),
                stream_sequence: info.stream_sequence,
                delivered: info.delivered.clamp(1, i64::from(u32::MAX)) as u32,
                subject,
            },
            Err(_) => Self {
                stream: String::new(),
                stream_sequence: 0,
                delivered: 1,
                subject,
            },
        }
    }
}

/// Decodes and checks a message body against its headers and subject.
///
/// Fails with a reason fit for an operator when the content type is unknown, the body does
/// not decode, the envelope breaks the contract, or the subject disagrees with it.
pub fn decode(
    subjects: &Subjects,
    subject: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TaskEnvelope, String> {
    let codec = Codec::for_message(content_type, body).map_err(|e| e.to_string())?;
    let task = codec.decode(body).map_err(|e| e.to_string())?;
    task.validate()
        .map_err(|e| format!("envelope breaks the contract: {e}"))?;
    match subjects.parse_task(subject) {
        Some((priority, agent_type))
            if priority == task.priority && agent_type == task.agent_type =>
        {
            Ok(task)
        }
        _ => Err(format!(
            "subject {subject:?} does not match the envelope (priority {}, agent_type {:?}); \
             expected {:?}",
            task.priority,
            task.agent_type,
            subjects.task(task.priority, &task.agent_type)
        )),
    }
}

/// The record kept for a message that could not become a task.
pub fn rejection(info: &DeliveryInfo, message: &jetstream::Message, reason: String) -> Rejected {
    let headers: BTreeMap<String, Value> = message
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .map(|(name, values)| {
            let values: Vec<Value> = values.iter().map(|v| Value::from(v.as_str())).collect();
            (name.to_string(), Value::from(values))
        })
        .collect();
    Rejected {
        stream: info.stream.clone(),
        stream_sequence: info.stream_sequence,
        subject: info.subject.clone(),
        headers: serde_json::to_value(headers).unwrap_or_default(),
        body: message.payload.to_vec(),
        reason,
    }
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
        assert!(decode(&subjects, "swarm.tasks.p3.echo", None, &body).is_ok());
        let err = decode(&subjects, "swarm.tasks.p9.echo", None, &body).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn garbage_gets_a_reason() {
        let subjects = Subjects::new("swarm");
        let err = decode(&subjects, "swarm.tasks.p5.echo", None, b"\xc1garbage").unwrap_err();
        assert!(err.contains("MessagePack"), "{err}");
        let err = decode(&subjects, "swarm.tasks.p5.echo", Some("text/csv"), b"a,b").unwrap_err();
        assert!(err.contains("content type"), "{err}");
        let err = decode(&subjects, "swarm.tasks.p5.echo", None, br#"{"id": 1}"#).unwrap_err();
        assert!(err.contains("JSON"), "{err}");
    }
}
