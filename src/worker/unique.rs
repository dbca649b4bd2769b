//! Unique tasks at the worker: a task with an `idempotency_key` runs only while it holds its
//! key. The API and `swarmd publish` take keys before publishing; a producer publishing
//! straight to NATS has its copies caught by JetStream within the duplicate window (the key
//! as `Nats-Msg-Id`) and by this check after it.

use super::{Executor, Outcome};
use crate::{store::Store, task::TaskEnvelope};

/// `Ok` when `task` may run: it has no key, or it holds its key (taking it if free). A task
/// whose key another live task holds ends as a duplicate: acknowledged, never run.
pub(super) async fn holds_its_key(
    store: &Store,
    executor: &Executor,
    task: &TaskEnvelope,
    attempt: u32,
) -> Result<(), Outcome> {
    if task.idempotency_key.is_none() {
        return Ok(());
    }
    match store.keys().take(&[task]).await {
        Ok(holders) => match holders.get(&task.id) {
            Some(holder) if *holder != task.id => {
                tracing::info!(task_id = %task.id, %holder,
                    "not run: another task holds its idempotency key");
                Err(Outcome::Duplicate)
            }
            _ => Ok(()),
        },
        Err(error) => Err(executor.failed_attempt(task, attempt, error.to_string())),
    }
}
