//! The shapes of task rows: statuses, the key of a row, what a claim and a settlement carry,
//! and a row as read back.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::task::{AttemptError, PayloadRef, TaskEnvelope};

/// Lifecycle of a task row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Queued,
    /// Recorded with a `not_before` still ahead: waiting in the delay stream.
    Scheduled,
    Processing,
    Completed,
    /// The last attempt failed and another is scheduled.
    Failed,
    /// No attempt will follow: given up, or permanently invalid.
    Dead,
    /// Cancelled on request (`cancelled_by` says who): no attempt follows.
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Processing => "processing",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether no attempt follows (`completed`, `dead` or `cancelled`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled
        )
    }

    /// Whether a status as stored or announced names a final one.
    pub fn names_final(status: &str) -> bool {
        status.parse().is_ok_and(TaskStatus::is_final)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => TaskStatus::Queued,
            "scheduled" => TaskStatus::Scheduled,
            "processing" => TaskStatus::Processing,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "dead" => TaskStatus::Dead,
            "cancelled" => TaskStatus::Cancelled,
            other => return Err(format!("unknown task status {other:?}")),
        })
    }
}

/// What identifies a task's row: its id and its creation time (the partition key), both
/// carried by every delivery of the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

impl RowKey {
    pub fn of(task: &TaskEnvelope) -> Self {
        Self {
            id: task.id,
            created_at: task.created_at,
        }
    }
}

/// One delivery about to run.
pub struct Claim<'a> {
    pub task: &'a TaskEnvelope,
    /// JetStream's delivery count: 1 on the first delivery.
    pub attempt: u32,
    /// The producer's trace id, when the task is traced.
    pub trace_id: Option<String>,
}

/// What a claim tells about a task that may run.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Errors of its earlier attempts, oldest first.
    pub previous_errors: Vec<AttemptError>,
    /// When this claim was stored.
    pub started_at: DateTime<Utc>,
    /// The last progress an earlier attempt reported.
    pub checkpoint: Option<Value>,
}

/// The final word of one attempt, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettledStatus {
    Completed,
    Failed,
    Dead,
    Cancelled,
}

impl SettledStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SettledStatus::Completed => TaskStatus::Completed.as_str(),
            SettledStatus::Failed => TaskStatus::Failed.as_str(),
            SettledStatus::Dead => TaskStatus::Dead.as_str(),
            SettledStatus::Cancelled => TaskStatus::Cancelled.as_str(),
        }
    }
}

/// One attempt's outcome to store.
#[derive(Debug, Clone)]
pub struct Settled {
    pub id: Uuid,
    pub attempt: u32,
    pub status: SettledStatus,
    pub result: Option<Value>,
    /// Where the result was put when too large for the row (`result` is then `None`).
    pub result_ref: Option<PayloadRef>,
    pub error: Option<String>,
    /// Who cancelled the task, for a `cancelled` outcome.
    pub cancelled_by: Option<String>,
    /// The row to create when this outcome is the task's first write.
    pub origin: Origin,
}

/// What a task's row holds besides its outcome: a first delivery is not claimed, so its
/// outcome may be the row's first write (one statement per task on the hot path).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The task as delivered, shared with the delivery (not copied).
    pub task: std::sync::Arc<TaskEnvelope>,
    pub trace_id: Option<String>,
    /// When this attempt began.
    pub started_at: DateTime<Utc>,
}

impl Origin {
    pub fn of(
        task: std::sync::Arc<TaskEnvelope>,
        trace_id: Option<String>,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            task,
            trace_id,
            started_at,
        }
    }
}

/// A task row as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRecord {
    pub id: Uuid,
    pub agent_type: String,
    pub priority: i16,
    pub data: Value,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub errors: Value,
    pub worker_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub replay_of: Option<Uuid>,
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Where `data` was put when too large for a message (it is then null).
    #[sqlx(json(nullable))]
    pub data_ref: Option<PayloadRef>,
    /// Where the result was put when too large for a row (it is then null).
    #[sqlx(json(nullable))]
    pub result_ref: Option<PayloadRef>,
    /// The agent's latest progress report (`{"fraction", "detail", "at"}`).
    pub progress: Option<Value>,
    /// Who cancelled the task (status `cancelled`; `completed_at` says when).
    pub cancelled_by: Option<String>,
    /// When a delayed task is due (set for tasks recorded `scheduled`).
    pub not_before: Option<DateTime<Utc>>,
}

/// Per-agent totals and latency (creation to commit) over a set of tasks.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentSummary {
    pub agent_type: String,
    pub completed: i64,
    pub dead: i64,
    pub unfinished: i64,
    pub retried: i64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}
