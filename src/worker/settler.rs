//! Commits outcomes in batches and only then tells the broker.
//!
//! Outcomes arrive on a channel; the settler gathers up to `commit_batch` of them, waiting at
//! most `commit_linger` for company, and commits each batch in one statement while earlier
//! batches may still be in flight (up to `commit_parallelism`), so one slow commit does not
//! stall the rest. A message is acknowledged only after the batch holding it committed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{AckKind, message::Acker};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};

use crate::store::{Rejected, Settled, Store};

/// How long a batch whose commit failed waits before JetStream redelivers it.
const COMMIT_FAILURE_REDELIVERY: Duration = Duration::from_secs(1);

/// One delivery's settlement: what to store, then what to tell the broker.
pub struct Settlement {
    pub acker: Acker,
    pub record: Record,
    pub ack: AckKind,
    /// Counted under this label once the broker was told.
    pub label: &'static str,
    /// The worker's in-flight slot, freed once the message is settled.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// What a settlement stores before the ack.
pub enum Record {
    Task(Settled),
    Rejected(Rejected),
    Nothing,
}

/// Running totals of settled deliveries, by outcome.
#[derive(Debug, Default)]
pub struct WorkerCounts {
    pub completed: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub abandoned: AtomicU64,
    /// Outcomes a newer attempt had already overtaken (not applied, not acked).
    pub fenced: AtomicU64,
    pub commit_failures: AtomicU64,
}

impl WorkerCounts {
    fn count(&self, label: &str) {
        let counter = match label {
            "completed" => &self.completed,
            "retry" => &self.retried,
            "dead" => &self.dead,
            "duplicate" => &self.duplicates,
            "rejected" => &self.rejected,
            "abandoned" => &self.abandoned,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries that reached a final state here (completed, dead or rejected).
    pub fn finished(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
            + self.dead.load(Ordering::Relaxed)
            + self.rejected.load(Ordering::Relaxed)
    }
}

/// Batching knobs of the settler.
#[derive(Debug, Clone, Copy)]
pub struct SettlerConfig {
    pub batch: usize,
    pub linger: Duration,
    pub parallelism: usize,
}

/// Starts the settler; it runs until every sender is dropped and all batches committed.
pub fn spawn(
    store: Store,
    worker_id: String,
    config: SettlerConfig,
    counts: Arc<WorkerCounts>,
) -> (mpsc::Sender<Settlement>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.batch.max(1) * 4);
    let handle = tokio::spawn(run(rx, store, worker_id, config, counts));
    (tx, handle)
}

async fn run(
    mut rx: mpsc::Receiver<Settlement>,
    store: Store,
    worker_id: String,
    config: SettlerConfig,
    counts: Arc<WorkerCounts>,
) {
    let commits = Arc::new(Semaphore::new(config.parallelism.max(1)));
    let worker_id: Arc<str> = worker_id.into();
    let mut running = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(config.batch);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => batch.push(more),
                Ok(None) | Err(_) => break,
            }
        }
        let permit = commits
            .clone()
            .acquire_owned()
            .await
            .expect("the commit semaphore is never closed");
        let (store, worker_id, counts) = (store.clone(), worker_id.clone(), counts.clone());
        running.spawn(async move {
            commit_then_ack(&store, &worker_id, batch, &counts).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

async fn commit_then_ack(
    store: &Store,
    worker_id: &str,
    batch: Vec<Settlement>,
    counts: &WorkerCounts,
) {
    let mut tasks = Vec::new();
    let mut rejected = Vec::new();
    for settlement in &batch {
        match &settlement.record {
            Record::Task(settled) => tasks.push(settled.clone()),
            Record::Rejected(r) => rejected.push(r.clone()),
            Record::Nothing => {}
        }
    }
    let committed = async {
        store.record_rejected(&rejected).await?;
        store.settle(&tasks, worker_id).await
    }
    .await;
    let applied = match committed {
        Ok(applied) => applied,
        Err(error) => {
            counts.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, size = batch.len(), "commit failed; the batch will be redelivered");
            for settlement in batch {
                let _ = settlement
                    .acker
                    .ack_with(AckKind::Nak(Some(COMMIT_FAILURE_REDELIVERY)))
                    .await;
            }
            return;
        }
    };
    for settlement in batch {
        if let Record::Task(settled) = &settlement.record
            && !applied.contains(&settled.id)
        {
            // A newer attempt owns the row (or it is already final): leave this delivery
            // alone; if nobody acks it, its redelivery is recognised as a duplicate at claim.
            counts.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(task_id = %settled.id, attempt = settled.attempt, "late outcome fenced off");
            continue;
        }
        if let Err(error) = settlement.acker.ack_with(settlement.ack).await {
            tracing::warn!(%error, "could not tell the broker; the message will be redelivered");
        }
        counts.count(settlement.label);
    }
}
