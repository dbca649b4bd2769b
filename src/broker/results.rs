//! Outcomes announced once committed: after a task's final row is stored (and its message
//! acknowledged) the worker publishes its outcome on core NATS, `<prefix>.results.<id>`, so a
//! producer can wait for it without polling the database. Announcements are not stored: a
//! waiter subscribes before it publishes, and one that comes later reads the store instead
//! (see [`crate::waiter`]).

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, stream::SelectAll};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Broker, BrokerError};
use crate::{
    store::{TaskRecord, TaskStatus},
    task::PayloadRef,
};

/// A task's outcome as announced, and as a waiter reports it (`status` is then whatever the
/// store says for a task not yet final: `queued`, `processing`, `failed` between attempts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub id: Uuid,
    pub status: String,
    /// Attempts made so far (the final one included).
    pub attempts: u32,
    /// The agent's result, when `completed`.
    #[serde(default)]
    pub result: Option<Value>,
    /// Where the result is when it was too large for the row (claim check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<PayloadRef>,
    /// The last attempt's error, when it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// When the final outcome was committed.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl TaskOutcome {
    /// Whether no attempt will follow (`completed` or `dead`).
    pub fn is_final(&self) -> bool {
        TaskStatus::names_final(&self.status)
    }
}

impl From<TaskRecord> for TaskOutcome {
    fn from(record: TaskRecord) -> Self {
        Self {
            id: record.id,
            status: record.status,
            attempts: u32::try_from(record.attempts).unwrap_or(0),
            result: record.result,
            result_ref: record.result_ref,
            error: record.last_error,
            completed_at: record.completed_at,
        }
    }
}

/// Most subscriptions one watch makes (one per task).
const SUBSCRIPTIONS_PER_WATCH: usize = 1000;

/// An outcome to announce, borrowing from the settlement (the result is not copied).
#[derive(Debug, Serialize)]
pub struct Announcement<'a> {
    pub id: Uuid,
    pub status: &'a str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<&'a PayloadRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub completed_at: DateTime<Utc>,
}

concern_handle! {
    /// Outcomes announced on core NATS, and waiting for them.
    pub struct Outcomes for Broker, outcomes
}

impl Outcomes<'_> {
    /// Announces a committed outcome. Core NATS: nobody listening costs the server one
    /// lookup; a lost announcement costs a waiter one store read at its deadline.
    pub async fn announce(&self, outcome: &Announcement<'_>) -> Result<(), BrokerError> {
        let payload = serde_json::to_vec(outcome).expect("an outcome serialises");
        self.client()
            .publish(self.subjects().result(&outcome.id), payload.into())
            .await
            .map_err(|e| BrokerError::Request(format!("cannot announce an outcome: {e}").into()))
    }

    /// Listens for the outcomes of `ids`. Subscribe before publishing the tasks: an
    /// announcement made before the subscription is not seen.
    pub async fn watch(&self, ids: &[Uuid]) -> Result<OutcomeWatch, BrokerError> {
        // A subscription per task up to a point; past it one for all outcomes, filtered here.
        let subjects: Vec<String> = if ids.len() <= SUBSCRIPTIONS_PER_WATCH {
            ids.iter().map(|id| self.subjects().result(id)).collect()
        } else {
            vec![self.subjects().all_results()]
        };
        let mut messages = SelectAll::new();
        for subject in subjects {
            let subscriber = self
                .client()
                .subscribe(subject.clone())
                .await
                .map_err(|e| {
                    BrokerError::Request(format!("cannot subscribe to {subject}: {e}").into())
                })?;
            messages.push(subscriber);
        }
        // The server has every subscription once the flush returns: a task published on
        // another connection and finished at once is still announced to us.
        self.client().flush().await.map_err(|e| {
            BrokerError::Request(format!("cannot subscribe to outcomes: {e}").into())
        })?;
        Ok(OutcomeWatch {
            messages,
            awaited: ids.iter().copied().collect(),
        })
    }
}

/// The announcements of some tasks' outcomes, as they come.
pub struct OutcomeWatch {
    messages: SelectAll<async_nats::Subscriber>,
    awaited: HashSet<Uuid>,
}

impl OutcomeWatch {
    /// The next announced outcome of an awaited task, or `None` once every one came or
    /// `patience` passed. An announcement that does not parse is skipped (logged): the
    /// store is read for that task at the end.
    pub async fn next(&mut self, patience: Duration) -> Option<TaskOutcome> {
        let deadline = tokio::time::Instant::now() + patience;
        while !self.awaited.is_empty() {
            let message = tokio::time::timeout_at(deadline, self.messages.next())
                .await
                .ok()??;
            match serde_json::from_slice::<TaskOutcome>(&message.payload) {
                Ok(outcome) if self.awaited.remove(&outcome.id) => return Some(outcome),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(subject = %message.subject, %error, "an unreadable outcome announcement");
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_reads_back_as_the_outcome_it_announced() {
        let result = serde_json::json!({ "score": 0.9 });
        let announced = Announcement {
            id: Uuid::now_v7(),
            status: "completed",
            attempts: 2,
            result: Some(&result),
            result_ref: None,
            error: None,
            completed_at: Utc::now(),
        };
        let read: TaskOutcome =
            serde_json::from_slice(&serde_json::to_vec(&announced).unwrap()).unwrap();
        assert_eq!(read.id, announced.id);
        assert_eq!(read.result.as_ref(), Some(&result));
        assert_eq!(read.attempts, 2);
        assert!(read.is_final() && read.error.is_none());
        assert_eq!(read.completed_at, Some(announced.completed_at));
    }
}
