//! One move of one task in the legacy keys, built from what the worker knows (live) or
//! from its PostgreSQL row (catch-up, rebuild, check).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::legacy_json::LegacyTask;
use crate::{
    store::TaskRecord,
    task::{AttemptError, TaskEnvelope},
};

/// Where a move puts the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `scheduled_tasks`, scored by when it is due: a delayed task not due yet.
    Scheduled,
    /// `agent_tasks`, scored by priority.
    Waiting,
    Processing,
    Completed,
    /// `failed_tasks`: given up.
    Failed,
}

impl Place {
    /// The key of `keys` that shows a task in this place.
    pub fn key(self, keys: &super::LegacyKeys) -> &str {
        match self {
            Place::Scheduled => &keys.scheduled_tasks,
            Place::Waiting => &keys.agent_tasks,
            Place::Processing => &keys.processing_tasks,
            Place::Completed => &keys.completed_tasks,
            Place::Failed => &keys.failed_tasks,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Place::Scheduled => "scheduled",
            Place::Waiting => "waiting",
            Place::Processing => "processing",
            Place::Completed => "completed",
            Place::Failed => "failed",
        }
    }
}

/// One attempt of a task as the mirror shows it: plain task data, whoever ran it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub task: &'a TaskEnvelope,
    /// 1 on the first delivery.
    pub number: u32,
    /// Errors of earlier attempts, as stored in the task's row.
    pub previous_errors: &'a [AttemptError],
    pub worker_id: &'a str,
    pub started: DateTime<Utc>,
}

/// A task's new place and JSON. `rank` orders the states of one task (waiting before
/// delivery d = 2d, processing delivery d = 2d + 1), so a late move never undoes a newer one.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorEvent {
    pub id: String,
    pub place: Place,
    pub rank: u64,
    pub priority: i64,
    /// Its score in a sorted set: the priority in `agent_tasks`, the due time (Unix
    /// seconds) in `scheduled_tasks`.
    pub score: f64,
    pub json: String,
    /// When the fleet made the move, for the mirror-lag measure.
    pub at: DateTime<Utc>,
}

fn rank(delivery: u32, processing: bool) -> u64 {
    u64::from(delivery) * 2 + u64::from(processing)
}

impl MirrorEvent {
    fn new(place: Place, rank: u64, task: &LegacyTask) -> Self {
        Self {
            id: task.id.clone(),
            place,
            rank,
            priority: task.priority,
            score: task.priority as f64,
            json: task.to_python_json(),
            at: Utc::now(),
        }
    }

    /// A delayed task, due at `due`: shown in `scheduled_tasks` until it waits on its lane
    /// (rank 1: any later move of the task replaces it).
    pub fn scheduled(task: &TaskEnvelope, due: DateTime<Utc>) -> Self {
        Self {
            score: due.timestamp_micros() as f64 / 1e6,
            ..Self::new(Place::Scheduled, 1, &LegacyTask::waiting(task))
        }
    }

    /// A newly published task, waiting for its first delivery.
    pub fn published(task: &TaskEnvelope) -> Self {
        Self::new(Place::Waiting, rank(1, false), &LegacyTask::waiting(task))
    }

    fn taken(attempt: &Attempt) -> LegacyTask {
        LegacyTask::waiting(attempt.task)
            .with_history(attempt.previous_errors)
            .taken(attempt.worker_id, attempt.started)
    }

    /// A worker took the task for this attempt.
    pub fn processing(attempt: &Attempt) -> Self {
        let task = Self::taken(attempt);
        Self::new(Place::Processing, rank(attempt.number, true), &task)
    }

    /// The attempt succeeded.
    pub fn completed(attempt: &Attempt, result: &Value) -> Self {
        let task = Self::taken(attempt).completed(result.clone(), Utc::now());
        Self::new(Place::Completed, u64::MAX, &task)
    }

    /// The attempt failed: back to `agent_tasks` for the next delivery, or to
    /// `failed_tasks` when `final_failure`.
    pub fn failed(attempt: &Attempt, error: &str, final_failure: bool) -> Self {
        let task = Self::taken(attempt).failed(error, Utc::now());
        if final_failure {
            Self::new(Place::Failed, u64::MAX, &task)
        } else {
            Self::new(Place::Waiting, rank(attempt.number + 1, false), &task)
        }
    }

    /// Where the row says the task is, or `None` for a status the mirror does not show
    /// (`queued`).
    pub fn from_row(row: &TaskRecord) -> Option<Self> {
        let envelope = TaskEnvelope {
            id: row.id,
            agent_type: row.agent_type.clone(),
            data: row.data.clone(),
            priority: row.priority.clamp(0, 9) as u8,
            created_at: row.created_at,
            max_attempts: row.max_attempts.max(1) as u32,
            timeout: None,
            idempotency_key: row.idempotency_key.clone(),
            replay_of: row.replay_of,
            data_ref: row.data_ref.clone(),
            expires_at: None,
            unique_for_secs: None,
            not_before: None,
        };
        let errors: Vec<AttemptError> =
            serde_json::from_value(row.errors.clone()).unwrap_or_default();
        let delivery = row.attempts.max(1) as u32;
        let mut task = LegacyTask::waiting(&envelope).with_history(&errors);
        if let (Some(worker), Some(started)) = (&row.worker_id, row.started_at) {
            task = task.taken(worker, started);
        }
        let (place, rank) = match row.status.as_str() {
            "scheduled" => {
                let due = row.not_before.unwrap_or(row.created_at);
                return Some(Self::scheduled(&envelope, due));
            }
            "processing" => (Place::Processing, rank(delivery, true)),
            "failed" => (Place::Waiting, rank(delivery + 1, false)),
            "completed" => {
                let at = row.completed_at.unwrap_or(row.created_at);
                // A claim-checked result is shown where it is, as the live move shows it.
                let result = match (&row.result, &row.result_ref) {
                    (Some(result), _) => result.clone(),
                    (None, Some(reference)) => shown_by_ref(reference),
                    (None, None) => Value::Null,
                };
                task = task.completed(result, at);
                (Place::Completed, u64::MAX)
            }
            "dead" => (Place::Failed, u64::MAX),
            // As the seed shows a task given up, `cancelled` as its last error (the row's).
            "cancelled" => (Place::Failed, u64::MAX),
            _ => return None,
        };
        Some(Self::new(place, rank, &task))
    }
}

/// How the legacy keys show a result kept by claim check: where it is, as the row does.
pub fn shown_by_ref(reference: &crate::task::PayloadRef) -> Value {
    serde_json::json!({ "result_ref": reference })
}

/// A move for unit tests of the writer and its hold: `json` names the task and rank.
#[cfg(test)]
pub(super) fn test_move(id: &str, place: Place, rank: u64, at: DateTime<Utc>) -> MirrorEvent {
    MirrorEvent {
        id: id.into(),
        place,
        rank,
        priority: 5,
        score: 5.0,
        json: format!("{id}:{rank}"),
        at,
    }
}
