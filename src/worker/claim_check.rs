//! The worker's side of claim checks: a task whose `data` was put in the Object Store is
//! given its data before the agent runs, and a result too large for the row is put there
//! after (the row and the outcome then carry a reference).

use std::sync::Arc;

use super::{
    Executor, Outcome,
    ending::{Cause, decide},
    executor::json_size,
};
use crate::{
    broker::{Broker, PayloadError},
    fault::{Classify, Fault},
    task::TaskEnvelope,
};

/// The task as its agent must see it: with its data read back when it travelled by claim
/// check. An object that is gone ends the task (`payload_missing`); a broker that cannot
/// be reached costs an attempt, as any transient failure does.
pub(super) async fn with_data(
    broker: &Broker,
    executor: &Executor,
    task: &Arc<TaskEnvelope>,
    attempt: u32,
) -> Result<Arc<TaskEnvelope>, Outcome> {
    let Some(reference) = &task.data_ref else {
        return Ok(task.clone());
    };
    match broker.payloads().get(reference).await {
        Ok(data) => Ok(Arc::new(TaskEnvelope {
            data,
            data_ref: None,
            ..task.as_ref().clone()
        })),
        Err(error) => Err(failed(executor, task, attempt, &error)),
    }
}

/// `outcome`, with a result larger than the claim-check size put in the Object Store.
pub(super) async fn with_large_result_stored(
    broker: &Broker,
    executor: &Executor,
    task: &TaskEnvelope,
    attempt: u32,
    outcome: Outcome,
) -> Outcome {
    let Outcome::Completed(result) = &outcome else {
        return outcome;
    };
    if json_size(result) <= broker.payloads().claim_check_bytes() {
        return outcome;
    }
    let json = serde_json::to_vec(result).expect("a JSON value serialises");
    match broker
        .payloads()
        .put(format!("{}.result", task.id), &json)
        .await
    {
        Ok(reference) => Outcome::CompletedByRef(reference),
        Err(error) => failed(executor, task, attempt, &error),
    }
}

fn failed(executor: &Executor, task: &TaskEnvelope, attempt: u32, error: &PayloadError) -> Outcome {
    match error.fault() {
        Fault::Permanent => decide(Cause::PayloadMissing(error.to_string())),
        Fault::Transient => executor.failed_attempt(task, attempt, error.to_string()),
    }
}
