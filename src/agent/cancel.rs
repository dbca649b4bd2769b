//! Cancellation as agents and the runtime see it. The worker keeps a [`CancelBoard`]: the
//! ids it must not run (with who asked) and a signal per running task. An agent reads its
//! [`Cancellation`] (`context.cancellation`) to stop early; one that does not is abandoned
//! after the worker's grace period.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

/// What this worker knows of cancellations.
#[derive(Debug, Default)]
pub struct CancelBoard {
    /// Cancelled ids, with who asked and when (kept for the retention period).
    cancelled: Mutex<HashMap<Uuid, (String, DateTime<Utc>)>>,
    /// Tasks running now: their agent's signal.
    running: Mutex<HashMap<Uuid, watch::Sender<Option<String>>>>,
}

impl CancelBoard {
    /// Records that `id` was cancelled by `by` at `at`, telling its agent if it runs here.
    pub fn cancel(&self, id: Uuid, by: &str, at: DateTime<Utc>) {
        self.cancelled
            .lock()
            .expect("cancel lock")
            .entry(id)
            .or_insert_with(|| (by.to_string(), at));
        if let Some(signal) = self.running.lock().expect("cancel lock").get(&id) {
            signal.send_replace(Some(by.to_string()));
        }
    }

    /// Who cancelled `id`, if anybody did.
    pub fn cancelled_by(&self, id: &Uuid) -> Option<String> {
        let cancelled = self.cancelled.lock().expect("cancel lock");
        cancelled.get(id).map(|(by, _)| by.clone())
    }

    /// Forgets cancellations made before `cutoff`.
    pub fn forget_before(&self, cutoff: DateTime<Utc>) {
        let mut cancelled = self.cancelled.lock().expect("cancel lock");
        cancelled.retain(|_, (_, at)| *at >= cutoff);
    }

    /// How many cancelled ids are known.
    pub fn len(&self) -> usize {
        self.cancelled.lock().expect("cancel lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The signal of task `id` while it runs; the board forgets it when the returned guard
    /// drops. Already signalled when the task was cancelled before.
    pub fn watch(self: &Arc<Self>, id: Uuid) -> (Cancellation, RunningGuard) {
        let (signal, receiver) = watch::channel(self.cancelled_by(&id));
        self.running.lock().expect("cancel lock").insert(id, signal);
        // A cancel between the look above and the insert: signalled now.
        if let Some(by) = self.cancelled_by(&id)
            && let Some(signal) = self.running.lock().expect("cancel lock").get(&id)
        {
            signal.send_replace(Some(by));
        }
        let guard = RunningGuard {
            board: self.clone(),
            id,
        };
        (
            Cancellation {
                receiver: Some(receiver),
            },
            guard,
        )
    }
}

/// Removes a task's signal when its attempt ends.
#[derive(Debug)]
pub struct RunningGuard {
    board: Arc<CancelBoard>,
    id: Uuid,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.board
            .running
            .lock()
            .expect("cancel lock")
            .remove(&self.id);
    }
}

/// An agent's view of its task's cancellation.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    receiver: Option<watch::Receiver<Option<String>>>,
}

impl Cancellation {
    /// Whether the task was cancelled: the agent should stop and return.
    pub fn is_cancelled(&self) -> bool {
        self.receiver
            .as_ref()
            .is_some_and(|receiver| receiver.borrow().is_some())
    }

    /// Who cancelled the task, if it was by now.
    pub fn cancelled_by(&self) -> Option<String> {
        self.receiver
            .as_ref()
            .and_then(|receiver| receiver.borrow().clone())
    }

    /// Completes with who cancelled the task, when it is; never without a board.
    pub async fn cancelled(&self) -> String {
        let Some(mut receiver) = self.receiver.clone() else {
            return std::future::pending().await;
        };
        let by = match receiver.wait_for(Option::is_some).await {
            Ok(by) => by.clone(),
            // The worker dropped the signal: the attempt is over anyway.
            Err(_) => None,
        };
        match by {
            Some(by) => by,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_running_task_hears_its_cancel_and_a_later_one_starts_cancelled() {
        let board = Arc::new(CancelBoard::default());
        let id = Uuid::now_v7();
        let (cancellation, guard) = board.watch(id);
        assert!(!cancellation.is_cancelled());
        let waiting = tokio::spawn({
            let cancellation = cancellation.clone();
            async move { cancellation.cancelled().await }
        });
        board.cancel(id, "ops", Utc::now());
        assert_eq!(waiting.await.unwrap(), "ops");
        assert!(cancellation.is_cancelled());
        drop(guard);
        assert!(
            board.running.lock().unwrap().is_empty(),
            "forgotten once over"
        );
        let (again, _guard) = board.watch(id);
        assert!(again.is_cancelled(), "a later attempt starts cancelled");
        assert_eq!(board.cancelled_by(&id).as_deref(), Some("ops"));
        board.forget_before(Utc::now() + chrono::Duration::seconds(1));
        assert!(board.is_empty());
    }
}
