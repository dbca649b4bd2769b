//! What happened to one delivery, and the single place where that decides the row's new
//! state and the broker's action. Every path ends here: nothing acks on its own.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use serde_json::Value;
use uuid::Uuid;

use crate::store::{Settled, SettledStatus};

/// The result of running (or refusing to run) one delivery of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The agent returned a result.
    Completed(Value),
    /// This attempt failed; the task runs again after `delay`.
    Retry { error: String, delay: Duration },
    /// No attempt will follow: permanent error, attempts exhausted or unknown agent.
    Dead { error: String },
    /// The task's result was already committed: acknowledge without running the agent.
    Duplicate,
    /// The worker stopped before the attempt finished: hand the task back untouched.
    Abandoned,
}

impl Outcome {
    /// The row update this outcome commits before the broker hears of it, if any.
    pub fn settled(&self, id: Uuid, attempt: u32) -> Option<Settled> {
        let (status, result, error) = match self {
            Outcome::Completed(result) => (SettledStatus::Completed, Some(result.clone()), None),
            Outcome::Retry { error, .. } => (SettledStatus::Failed, None, Some(error.clone())),
            Outcome::Dead { error } => (SettledStatus::Dead, None, Some(error.clone())),
            Outcome::Duplicate | Outcome::Abandoned => return None,
        };
        Some(Settled {
            id,
            attempt,
            status,
            result,
            error,
        })
    }

    /// What the broker is told once the row is committed.
    pub fn ack_kind(&self) -> AckKind {
        match self {
            Outcome::Completed(_) | Outcome::Duplicate => AckKind::Ack,
            Outcome::Retry { delay, .. } => AckKind::Nak(Some(*delay)),
            Outcome::Dead { .. } => AckKind::Term,
            Outcome::Abandoned => AckKind::Nak(None),
        }
    }

    /// Short name for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Completed(_) => "completed",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Duplicate => "duplicate",
            Outcome::Abandoned => "abandoned",
        }
    }
}
