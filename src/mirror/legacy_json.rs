//! The seed's task JSON, byte for byte: Python's `json.dumps` layout (`", "` and `": "`
//! separators, non-ASCII escaped), its field order, and `datetime.utcnow().isoformat()`
//! timestamps (no zone; microseconds unless they are zero).

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::{AttemptError, TaskEnvelope};

/// A task as the seed's `DistributedTaskQueue` stores it. Fields appear in the order the
/// seed's dict gains them; absent ones are left out, as Python would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyTask {
    pub id: String,
    pub data: Value,
    pub priority: i64,
    pub created_at: String,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl LegacyTask {
    /// The task as `enqueue_task` writes it: `data` is `{"agent_type": ..., "data": ...}`,
    /// the shape the seed's executor reads.
    pub fn waiting(task: &TaskEnvelope) -> Self {
        let mut data = serde_json::Map::new();
        data.insert("agent_type".into(), Value::from(task.agent_type.as_str()));
        data.insert("data".into(), task.data.clone());
        Self {
            id: task.id.to_string(),
            data: Value::Object(data),
            priority: i64::from(task.priority),
            created_at: python_timestamp(task.created_at),
            attempts: 0,
            max_attempts: task.max_attempts,
            worker_id: None,
            processing_started: None,
            last_error: None,
            failed_at: None,
            result: None,
            completed_at: None,
        }
    }

    /// Carries the failures of earlier attempts, as the seed's `fail_task` leaves them.
    pub fn with_history(mut self, errors: &[AttemptError]) -> Self {
        self.attempts = errors.len() as u32;
        if let Some(last) = errors.last() {
            self.last_error = Some(last.error.clone());
            self.failed_at = Some(python_timestamp(last.at));
        }
        self
    }

    /// As `dequeue_task` leaves it in `processing_tasks`.
    pub fn taken(mut self, worker_id: &str, at: DateTime<Utc>) -> Self {
        self.worker_id = Some(worker_id.to_string());
        self.processing_started = Some(python_timestamp(at));
        self
    }

    /// As `complete_task` moves it to `completed_tasks`.
    pub fn completed(mut self, result: Value, at: DateTime<Utc>) -> Self {
        self.result = Some(result);
        self.completed_at = Some(python_timestamp(at));
        self
    }

    /// As `fail_task` leaves it, back in `agent_tasks` or in `failed_tasks`.
    pub fn failed(mut self, error: &str, at: DateTime<Utc>) -> Self {
        self.attempts += 1;
        self.last_error = Some(error.to_string());
        self.failed_at = Some(python_timestamp(at));
        self
    }

    /// The JSON text, exactly as Python's `json.dumps` would write it.
    pub fn to_python_json(&self) -> String {
        python_json(self)
    }
}

/// `datetime.utcnow().isoformat()` of `time`.
pub fn python_timestamp(time: DateTime<Utc>) -> String {
    // Written out by hand: chrono's strftime parser was 3 % of a worker's CPU.
    let naive = time.naive_utc();
    let (date, clock) = (naive.date(), naive.time());
    let mut text = String::with_capacity(26);
    let mut digits = |value: u32, width: usize, before: Option<char>| {
        text.extend(before);
        let mut place = 10u32.pow(width as u32 - 1);
        while place > 0 {
            text.push(char::from(b'0' + (value / place % 10) as u8));
            place /= 10;
        }
    };
    digits(date.year().clamp(0, 9999) as u32, 4, None);
    digits(date.month(), 2, Some('-'));
    digits(date.day(), 2, Some('-'));
    digits(clock.hour(), 2, Some('T'));
    digits(clock.minute(), 2, Some(':'));
    digits(clock.second(), 2, Some(':'));
    // A leap second's nanoseconds run past 10^9; Python has no such second.
    match clock.nanosecond().min(999_999_999) / 1000 {
        0 => {}
        micros => digits(micros, 6, Some('.')),
    }
    text
}

/// Reads a seed timestamp (naive, taken as UTC) or an RFC 3339 one.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// Serialises `value` the way Python's `json.dumps` does by default.
pub fn python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut serializer)
        .expect("serialising to memory cannot fail");
    String::from_utf8(out).expect("the formatter writes ASCII")
}

/// `json.dumps` defaults: `", "` between items, `": "` after keys, `ensure_ascii=True`.
struct PythonFormatter;

/// `", "` before every item of an array or object but the first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        // ASCII runs are written whole; each other character as its UTF-16 escapes.
        let mut rest = fragment;
        while let Some(at) = rest.find(|c: char| !c.is_ascii()) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_follow_isoformat() {
        let with_micros = DateTime::parse_from_rfc3339("2026-11-27T06:10:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(python_timestamp(with_micros), "2026-11-27T06:10:00.123456");
        let whole = DateTime::parse_from_rfc3339("2026-11-27T06:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(python_timestamp(whole), "2026-11-27T06:10:00");
        assert_eq!(
            parse_timestamp("2026-11-27T06:10:00.123456"),
            Some(with_micros.with_nanosecond(123_456_000).unwrap())
        );
        assert_eq!(parse_timestamp("2026-11-27T06:10:00"), Some(whole));
    }

    #[test]
    fn json_matches_python_json_dumps() {
        // json.dumps({'id': 'x', 'data': {'agent_type': 'email', 'data': {'to': 'é', 'n': [1, 2.5]}}})
        let value = json!({"id": "x", "data": {"agent_type": "email", "data": {"to": "é😀 x\"é", "n": [1, 2.5, null, true]}}});
        assert_eq!(
            python_json(&value),
            r#"{"id": "x", "data": {"agent_type": "email", "data": {"to": "\u00e9\ud83d\ude00 x\"\u00e9", "n": [1, 2.5, null, true]}}}"#
        );
    }

    #[test]
    fn fields_appear_in_the_seeds_order() {
        let task = TaskEnvelope::new("email", json!({"b": 1, "a": 2}));
        let at = task.created_at;
        let json = LegacyTask::waiting(&task)
            .taken("w1", at)
            .failed("boom", at)
            .to_python_json();
        let keys: Vec<&str> = json
            .split("\", \"")
            .filter_map(|part| part.split("\": ").next())
            .collect();
        let order = [
            "id",
            "data",
            "priority",
            "created_at",
            "attempts",
            "max_attempts",
            "worker_id",
            "processing_started",
            "last_error",
            "failed_at",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| json.find(&format!("\"{k}\": ")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json} {keys:?}");
        assert!(
            json.contains(r#""data": {"agent_type": "email", "data": {"b": 1, "a": 2}}"#),
            "{json}"
        );
        assert!(json.contains(r#""attempts": 1"#));
    }
}
