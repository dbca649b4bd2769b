//! The line protocol between a worker and a process agent (`schemas/agent-protocol.md`):
//! one JSON object per line each way, on the process's stdin and stdout. The worker sends
//! `task` and `cancel`; the process answers `ready` once, then per task any number of
//! `progress` and one `result` or `error`. Anything else is a protocol error with a reason.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The protocol's version, sent in `ready` by the process.
pub const VERSION: u64 = 1;

/// A task for the process (worker → agent).
#[derive(Debug, Serialize)]
pub struct TaskMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: Uuid,
    pub agent_type: &'a str,
    pub data: &'a Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub checkpoint: Option<&'a Value>,
    /// When the worker stops waiting for this attempt.
    pub deadline: DateTime<Utc>,
    /// The same, as milliseconds left when the task was sent (clock-independent).
    pub timeout_ms: u64,
    /// W3C trace context of the attempt, when there is a trace.
    pub traceparent: Option<String>,
}

impl<'a> TaskMessage<'a> {
    /// The line for the attempt `context` describes of a task of `agent_type` on `input`.
    pub fn of_attempt(
        agent_type: &'a str,
        input: &'a Value,
        context: &'a crate::agent::AgentContext,
    ) -> Self {
        let left = context
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        Self {
            kind: "task",
            id: context.task_id,
            agent_type,
            data: input,
            attempt: context.attempt,
            max_attempts: context.max_attempts,
            checkpoint: context.checkpoint.as_ref(),
            deadline: chrono::Utc::now()
                + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::zero()),
            timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            traceparent: current_traceparent(),
        }
    }
}

/// The W3C trace context of the span this runs in, when it belongs to a trace.
pub(crate) fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    crate::telemetry::traceparent(&tracing::Span::current().context())
}

/// Stop the task `id` (worker → agent).
#[derive(Debug, Serialize)]
pub struct CancelMessage {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: Uuid,
}

impl CancelMessage {
    pub fn new(id: Uuid) -> Self {
        Self { kind: "cancel", id }
    }
}

/// What a process may say (agent → worker).
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMessage {
    Ready {
        protocol: u64,
    },
    Result {
        id: Uuid,
        result: Value,
    },
    Error {
        id: Uuid,
        message: String,
        retryable: bool,
        /// Seconds until the next attempt may run.
        retry_after: Option<f64>,
    },
    Progress {
        id: Uuid,
        fraction: f64,
        detail: Value,
    },
}

impl AgentMessage {
    /// The task the message is about (`None` for `ready`).
    pub fn task_id(&self) -> Option<Uuid> {
        match self {
            AgentMessage::Ready { .. } => None,
            AgentMessage::Result { id, .. }
            | AgentMessage::Error { id, .. }
            | AgentMessage::Progress { id, .. } => Some(*id),
        }
    }
}

#[derive(Deserialize)]
struct Ready {
    protocol: u64,
}

#[derive(Deserialize)]
struct Answer {
    id: Uuid,
    result: Value,
}

#[derive(Deserialize)]
struct Failure {
    id: Uuid,
    message: String,
    #[serde(default = "yes")]
    retryable: bool,
    #[serde(default)]
    retry_after: Option<f64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Report {
    id: Uuid,
    fraction: f64,
    #[serde(default)]
    detail: Value,
}

/// Reads one line the process wrote; the error says what is wrong with it.
pub fn parse(line: &[u8]) -> Result<AgentMessage, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        format!(
            "a line that is not JSON ({e}): {}",
            preview(&String::from_utf8_lossy(line))
        )
    })?;
    let Value::Object(object) = &value else {
        return Err(format!(
            "a line that is not a JSON object: {}",
            preview(&value.to_string())
        ));
    };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a line without a `type`: {}", preview(&value.to_string())))?
        .to_string();
    let field_error = |e: serde_json::Error| format!("a `{kind}` line: {e}");
    match kind.as_str() {
        "ready" => {
            let ready: Ready = serde_json::from_value(value).map_err(field_error)?;
            Ok(AgentMessage::Ready {
                protocol: ready.protocol,
            })
        }
        "result" => {
            let answer: Answer = serde_json::from_value(value).map_err(field_error)?;
            Ok(AgentMessage::Result {
                id: answer.id,
                result: answer.result,
            })
        }
        "error" => {
            let failure: Failure = serde_json::from_value(value).map_err(field_error)?;
            if failure
                .retry_after
                .is_some_and(|s| !(s.is_finite() && s >= 0.0))
            {
                return Err("an `error` line: retry_after must be a number of seconds ≥ 0".into());
            }
            Ok(AgentMessage::Error {
                id: failure.id,
                message: failure.message,
                retryable: failure.retryable,
                retry_after: failure.retry_after,
            })
        }
        "progress" => {
            let report: Report = serde_json::from_value(value).map_err(field_error)?;
            Ok(AgentMessage::Progress {
                id: report.id,
                fraction: report.fraction,
                detail: report.detail,
            })
        }
        other => Err(format!(
            "a line of unknown type {:?} (ready, result, error or progress)",
            preview(other)
        )),
    }
}

/// The start of a long text, for an error message.
fn preview(text: &str) -> String {
    const SHOWN: usize = 200;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "0193e0a0-0000-7000-8000-000000000001";

    #[test]
    fn every_message_of_an_agent_is_read() {
        let id: Uuid = ID.parse().unwrap();
        assert_eq!(
            parse(br#"{"type": "ready", "protocol": 1, "agents": ["x"]}"#),
            Ok(AgentMessage::Ready { protocol: 1 })
        );
        assert_eq!(
            parse(format!(r#"{{"type":"result","id":"{ID}","result":{{"n":1}}}}"#).as_bytes()),
            Ok(AgentMessage::Result {
                id,
                result: json!({"n": 1})
            })
        );
        assert_eq!(
            parse(format!(r#"{{"type":"error","id":"{ID}","message":"down"}}"#).as_bytes()),
            Ok(AgentMessage::Error {
                id,
                message: "down".into(),
                retryable: true,
                retry_after: None
            })
        );
        assert_eq!(
            parse(
                format!(r#"{{"type":"error","id":"{ID}","message":"no","retryable":false,"retry_after":2.5}}"#)
                    .as_bytes()
            ),
            Ok(AgentMessage::Error {
                id,
                message: "no".into(),
                retryable: false,
                retry_after: Some(2.5)
            })
        );
        assert_eq!(
            parse(format!(r#"{{"type":"progress","id":"{ID}","fraction":0.5}}"#).as_bytes()),
            Ok(AgentMessage::Progress {
                id,
                fraction: 0.5,
                detail: Value::Null
            })
        );
    }

    #[test]
    fn hostile_lines_are_refused_with_a_reason() {
        for (line, words) in [
            (&b"hello"[..], "not JSON"),
            (b"\0\0", "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (b"{\"id\": 1}", "without a `type`"),
            (b"{\"type\": \"shout\"}", "unknown type"),
            (b"{\"type\": \"result\", \"result\": 1}", "missing field `id`"),
            (b"{\"type\": \"result\", \"id\": \"nope\", \"result\": 1}", "a `result` line"),
            (
                b"{\"type\": \"error\", \"id\": \"0193e0a0-0000-7000-8000-000000000001\", \"message\": \"x\", \"retry_after\": -1}",
                "retry_after",
            ),
        ] {
            let error = parse(line).unwrap_err();
            assert!(error.contains(words), "{line:?}: {error}");
        }
        let long = format!("{{\"x\": \"{}\"", "y".repeat(10_000));
        let error = parse(long.as_bytes()).unwrap_err();
        assert!(
            error.len() < 400,
            "a long line is cut in the error: {error}"
        );
    }
}
