//! What happened to one delivery, and the single place where that decides what is stored
//! (row, dead letter), what the legacy keys show, what the broker is told and what it is
//! counted as. Every path ends here: nothing acks on its own (see `settlement`).

use std::time::Duration;

use async_nats::jetstream::AckKind;
use serde_json::Value;

use crate::delivery::TaskDelivery;
use crate::{
    dlq::{DeadLetter, DeadReason},
    mirror::MirrorEvent,
    store::{Origin, Settled, SettledStatus},
    task::PayloadRef,
};

/// What a settled delivery is counted as (worker counts, metrics, logs, viewers' events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Completed,
    Retry,
    Dead,
    Duplicate,
    Deferred,
    Abandoned,
    Cancelled,
    /// A message that never became a task (undecodable, over the size limit, ...).
    Rejected,
    /// Handed back unrun: a second copy in one batch, or a batch unclaimed at shutdown.
    Requeued,
}

impl Label {
    pub const fn as_str(self) -> &'static str {
        match self {
            Label::Completed => "completed",
            Label::Retry => "retry",
            Label::Dead => "dead",
            Label::Duplicate => "duplicate",
            Label::Deferred => "deferred",
            Label::Abandoned => "abandoned",
            Label::Cancelled => "cancelled",
            Label::Rejected => "rejected",
            Label::Requeued => "requeued",
        }
    }
}

/// The last error of a cancelled task, in its row and the legacy mirror.
pub const CANCELLED: &str = "cancelled";

/// The result of running (or refusing to run) one delivery of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The agent returned a result.
    Completed(Value),
    /// The agent returned a result too large for the row, put in the Object Store.
    CompletedByRef(PayloadRef),
    /// This attempt failed; the task runs again after `delay`.
    Retry { error: String, delay: Duration },
    /// No attempt will follow.
    Dead { reason: DeadReason, error: String },
    /// The task's result was already committed: acknowledge without running the agent.
    Duplicate,
    /// The worker stopped before the attempt finished: hand the task back at once.
    Abandoned,
    /// Not due yet: held until its `not_before`; no attempt was spent.
    Deferred,
    /// Cancelled on request (`by`): it did not run, or its agent was stopped.
    Cancelled { by: String },
}

/// What a settlement stores before the broker hears of it.
#[derive(Debug, Clone)]
pub enum Record {
    /// A row update.
    Task(Settled),
    /// A dead letter, then the row marked `dead`.
    Dead(Settled, Box<DeadLetter>),
    /// A dead letter of a message that never became a task (it has no row).
    Rejected(Box<DeadLetter>),
    Nothing,
}

/// Error texts come from agents and remote services: a NUL in one would make PostgreSQL
/// refuse the row, so it is replaced (U+FFFD) rather than lose the outcome.
fn storable_text(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_string()
    }
}

impl Outcome {
    /// What to store for this outcome of `delivery`, before the broker is told.
    pub fn record(&self, delivery: &TaskDelivery, worker_id: &str) -> Record {
        let settled = |status, result: Option<&Value>, error: Option<&String>| Settled {
            id: delivery.task.id,
            attempt: delivery.attempt(),
            status,
            result: result.cloned(),
            result_ref: None,
            error: error.map(|e| storable_text(e)),
            cancelled_by: None,
            origin: Origin::of(
                delivery.task.clone(),
                crate::telemetry::trace_id(&delivery.trace),
                delivery.started_at,
            ),
        };
        match self {
            Outcome::Completed(result) => {
                Record::Task(settled(SettledStatus::Completed, Some(result), None))
            }
            Outcome::CompletedByRef(reference) => Record::Task(Settled {
                result_ref: Some(reference.clone()),
                ..settled(SettledStatus::Completed, None, None)
            }),
            Outcome::Retry { error, .. } => {
                Record::Task(settled(SettledStatus::Failed, None, Some(error)))
            }
            Outcome::Dead { reason, error } => Record::Dead(
                settled(SettledStatus::Dead, None, Some(error)),
                Box::new(delivery.dead_letter(*reason, error, worker_id)),
            ),
            Outcome::Cancelled { by } => Record::Task(Settled {
                cancelled_by: Some(storable_text(by)),
                ..settled(SettledStatus::Cancelled, None, Some(&CANCELLED.to_string()))
            }),
            Outcome::Duplicate | Outcome::Abandoned | Outcome::Deferred => Record::Nothing,
        }
    }

    /// How the legacy Redis keys show this outcome, if it moves the task there.
    pub fn mirror_event(&self, delivery: &TaskDelivery, worker_id: &str) -> Option<MirrorEvent> {
        let attempt = delivery.mirror_attempt(worker_id);
        match self {
            Outcome::Completed(result) => Some(MirrorEvent::completed(&attempt, result)),
            Outcome::CompletedByRef(reference) => Some(MirrorEvent::completed(
                &attempt,
                &crate::mirror::shown_by_ref(reference),
            )),
            Outcome::Retry { error, .. } => Some(MirrorEvent::failed(&attempt, error, false)),
            Outcome::Dead { error, .. } => Some(MirrorEvent::failed(&attempt, error, true)),
            // As the seed shows a task given up, with `cancelled` as its last error.
            Outcome::Cancelled { .. } => Some(MirrorEvent::failed(&attempt, CANCELLED, true)),
            Outcome::Duplicate | Outcome::Abandoned | Outcome::Deferred => None,
        }
    }

    /// What the broker is told once the record is stored.
    pub fn ack_kind(&self) -> AckKind {
        match self {
            Outcome::Completed(_)
            | Outcome::CompletedByRef(_)
            | Outcome::Duplicate
            | Outcome::Deferred => AckKind::Ack,
            Outcome::Retry { delay, .. } => AckKind::Nak(Some(*delay)),
            Outcome::Dead { .. } | Outcome::Cancelled { .. } => AckKind::Term,
            Outcome::Abandoned => AckKind::Nak(None),
        }
    }

    /// What this outcome is counted as.
    pub fn label(&self) -> Label {
        match self {
            Outcome::Completed(_) | Outcome::CompletedByRef(_) => Label::Completed,
            Outcome::Retry { .. } => Label::Retry,
            Outcome::Dead { .. } => Label::Dead,
            Outcome::Duplicate => Label::Duplicate,
            Outcome::Deferred => Label::Deferred,
            Outcome::Abandoned => Label::Abandoned,
            Outcome::Cancelled { .. } => Label::Cancelled,
        }
    }
}
