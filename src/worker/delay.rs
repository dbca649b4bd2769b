//! A task delivered before its `not_before` — published straight to its task subject, or a
//! clock ahead of the mover's — never runs early: a moment's wait is waited out, a longer
//! one sends it to the delay stream (no attempt spent), from where it comes back when due.

use chrono::Utc;

use super::{Executor, Outcome};
use crate::{broker::Broker, task::TaskEnvelope};

/// Waits shorter than this are slept through rather than sent round the delay stream.
const SHORT_WAIT: chrono::Duration = chrono::Duration::milliseconds(50);

/// `Ok` once `task` is due.
pub(super) async fn wait_until_due(
    broker: &Broker,
    executor: &Executor,
    task: &TaskEnvelope,
    attempt: u32,
) -> Result<(), Outcome> {
    let Some(due) = task.not_before else {
        return Ok(());
    };
    let left = due - Utc::now();
    if left <= chrono::Duration::zero() {
        return Ok(());
    }
    if left <= SHORT_WAIT {
        tokio::time::sleep(left.to_std().unwrap_or_default()).await;
        return Ok(());
    }
    match broker.defer(task).await {
        Ok(()) => Err(Outcome::Deferred),
        Err(error) => Err(executor.failed_attempt(task, attempt, error.to_string())),
    }
}
