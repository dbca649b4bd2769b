//! Waiting for tasks' outcomes, as the seed's `ParallelAgentExecutor` handed a batch's
//! results back: announcements first (no database polling per waiter), the store once at
//! the end for whatever was not announced — so an outcome committed before the wait began,
//! or an announcement lost on the way, is still reported — and unfinished tasks reported
//! with their current status rather than the whole batch failing at the deadline.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use uuid::Uuid;

use crate::{
    broker::{OutcomeWatch, TaskOutcome},
    store::{Store, StoreError},
};

/// The outcomes of awaited tasks, in the order they were asked for.
#[derive(Debug, Clone)]
pub struct Awaited {
    pub outcomes: Vec<TaskOutcome>,
}

impl Awaited {
    /// Whether every task reached a final state.
    pub fn complete(&self) -> bool {
        self.outcomes.iter().all(TaskOutcome::is_final)
    }

    /// Ids of the tasks not final at the deadline.
    pub fn pending(&self) -> Vec<Uuid> {
        self.outcomes
            .iter()
            .filter(|o| !o.is_final())
            .map(|o| o.id)
            .collect()
    }
}

/// When to read the store besides the end of the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The tasks were just published (and their announcements subscribed to before): only
    /// what was not announced by the deadline is read.
    AtTheEnd,
    /// Some tasks may have finished before the watch began (a read of an existing task, a
    /// duplicate publish): the store is read once first as well.
    FirstAndAtTheEnd,
}

/// Waits up to `patience` for the outcomes of `ids`, which `watch` listens to. Reads of the
/// store go to the primary: a replica behind it would report a finished task unfinished.
pub async fn await_outcomes(
    mut watch: OutcomeWatch,
    store: &Store,
    ids: &[Uuid],
    patience: Duration,
    look: Look,
) -> Result<Awaited, StoreError> {
    let deadline = tokio::time::Instant::now() + patience;
    // A batch may name one id twice (a client's retry): it is awaited once.
    let distinct = ids.iter().collect::<HashSet<_>>().len();
    let mut known: HashMap<Uuid, TaskOutcome> = HashMap::with_capacity(distinct);
    if look == Look::FirstAndAtTheEnd {
        known.extend(read_final(store, ids).await?);
    }
    while known.len() < distinct {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match watch.next(left).await {
            Some(outcome) => {
                known.insert(outcome.id, outcome);
            }
            None => break,
        }
    }
    drop(watch);
    let unannounced: Vec<Uuid> = ids
        .iter()
        .filter(|id| !known.contains_key(id))
        .copied()
        .collect();
    let mut current: HashMap<Uuid, TaskOutcome> = HashMap::new();
    if !unannounced.is_empty() {
        for record in store.tasks().by_ids(&unannounced).await? {
            current.insert(record.id, record.into());
        }
    }
    let outcomes = ids
        .iter()
        .map(|id| {
            known
                .get(id)
                .or_else(|| current.get(id))
                .cloned()
                // Published (the stream took it) but not picked up yet: no row so far.
                .unwrap_or_else(|| TaskOutcome {
                    id: *id,
                    status: "queued".into(),
                    attempts: 0,
                    result: None,
                    result_ref: None,
                    error: None,
                    completed_at: None,
                })
        })
        .collect();
    Ok(Awaited { outcomes })
}

/// The final outcomes already stored among `ids`.
async fn read_final(
    store: &Store,
    ids: &[Uuid],
) -> Result<impl Iterator<Item = (Uuid, TaskOutcome)>, StoreError> {
    let records = store.tasks().by_ids(ids).await?;
    Ok(records
        .into_iter()
        .map(TaskOutcome::from)
        .filter(TaskOutcome::is_final)
        .map(|outcome| (outcome.id, outcome)))
}
