//! A task delivered before its `not_before` — published straight to its task subject, or a
//! clock ahead of the mover's — never runs early: a moment's wait is waited out, a longer
//! one holds it again (no attempt spent) until it is due.

use super::{Executor, Outcome};
use crate::{
    broker::Broker,
    task::{TaskEnvelope, WAIT_OUT_UP_TO},
};

/// Whether `task` is too early to wait out: it is held again instead, without being shown
/// `processing` in between.
pub(super) fn is_early(task: &TaskEnvelope, executor: &Executor) -> bool {
    let now = executor.clock().now();
    task.not_before
        .is_some_and(|due| due - now > WAIT_OUT_UP_TO)
}

/// Holds `task` again until it is due (no attempt spent); a failure to do so is a failed
/// attempt, retried as any other.
pub(super) async fn hold_again(
    broker: &Broker,
    executor: &Executor,
    task: &TaskEnvelope,
    attempt: u32,
) -> Outcome {
    match broker.delays().defer(task).await {
        Ok(()) => Outcome::Deferred,
        Err(error) => executor.failed_attempt(task, attempt, error.to_string()),
    }
}

/// `Ok` once `task` is due: a short wait is slept through.
pub(super) async fn wait_until_due(
    broker: &Broker,
    executor: &Executor,
    task: &TaskEnvelope,
    attempt: u32,
) -> Result<(), Outcome> {
    let Some(due) = task.not_before else {
        return Ok(());
    };
    let left = due - executor.clock().now();
    if left <= chrono::Duration::zero() {
        return Ok(());
    }
    if left <= WAIT_OUT_UP_TO {
        tokio::time::sleep(left.to_std().unwrap_or_default()).await;
        return Ok(());
    }
    Err(hold_again(broker, executor, task, attempt).await)
}
