//! Commits outcomes in batches and only then tells the broker.
//!
//! Outcomes arrive on a channel; the settler gathers up to `commit_batch` of them — waiting
//! at most `commit_linger` for company, and only while another commit is in flight — and
//! stores each batch while earlier batches may still be in flight (up to
//! `commit_parallelism`), so one slow commit does not stall the rest.
//! Storing a batch is: dead letters published (and confirmed) to the dead-letter stream,
//! then every row updated in one statement. Only then is each message acknowledged, nak'd or
//! terminated. If storing fails (PostgreSQL or NATS away), the batch is retried with growing
//! pauses while its leases are kept alive, so nothing is acknowledged without its record and
//! no finished work is thrown away; at shutdown a batch still failing is handed back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{AckKind, message::Acker};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    task::JoinSet,
};
use tracing::Instrument;

use super::{alarm::RetryAlarms, outcome::Record, raised};
use crate::{
    dlq::DeadLetterStream,
    metrics::Metrics,
    mirror::{Mirror, MirrorEvent},
    store::{Settled, Store},
};

/// First and longest pause between attempts to store a batch.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// One delivery's settlement: what to store, then what to tell the broker.
pub struct Settlement {
    pub acker: Acker,
    pub record: Record,
    pub ack: AckKind,
    /// Counted under this label once the broker was told.
    pub label: &'static str,
    /// The worker's in-flight slot, freed once the message is settled.
    pub slot: Option<OwnedSemaphorePermit>,
    /// The legacy-key move to make once the record is stored.
    pub mirror: Option<MirrorEvent>,
    /// What the metrics need to know of the task, when it decoded.
    pub meta: Option<TaskMeta>,
    /// The task's `process` span: parent of the commit, mirror and ack spans.
    pub span: tracing::Span,
}

/// The labels and clock of a task, for its metrics.
#[derive(Debug, Clone)]
pub struct TaskMeta {
    pub agent_type: String,
    pub priority: u8,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl TaskMeta {
    pub fn of(task: &crate::task::TaskEnvelope) -> Self {
        Self {
            agent_type: task.agent_type.clone(),
            priority: task.priority,
            created_at: task.created_at,
        }
    }
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
    /// Late outcomes of an attempt that another worker overtook: the agent ran twice, the
    /// first commit won and this one was not applied (duplicate executions).
    pub fenced: AtomicU64,
    /// Failed attempts to store a batch (each retried).
    pub store_failures: AtomicU64,
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
}

/// Batching knobs of the settler.
#[derive(Debug, Clone, Copy)]
pub struct SettlerConfig {
    pub batch: usize,
    pub linger: Duration,
    pub parallelism: usize,
}

/// Where settlements are stored.
#[derive(Clone)]
pub struct Sinks {
    pub store: Store,
    pub dead_letters: DeadLetterStream,
    pub worker_id: Arc<str>,
    pub counts: Arc<WorkerCounts>,
    /// Turns true when the grace period is over: stop retrying, hand everything back.
    pub abandon: watch::Receiver<bool>,
    /// Told of every delayed nak, so the worker wakes when the task is due again.
    pub alarms: RetryAlarms,
    /// The legacy Redis mirror, when enabled.
    pub mirror: Option<Mirror>,
}

/// Starts the settler; it runs until every sender is dropped and all batches are settled.
pub fn spawn(
    sinks: Sinks,
    config: SettlerConfig,
) -> (mpsc::Sender<Settlement>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.batch.max(1) * 4);
    let handle = tokio::spawn(run(rx, sinks, config));
    (tx, handle)
}

async fn run(mut rx: mpsc::Receiver<Settlement>, sinks: Sinks, config: SettlerConfig) {
    let commits = Arc::new(Semaphore::new(config.parallelism.max(1)));
    let mut running = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(config.batch);
        batch.push(first);
        // Take what is already queued. Linger for more only while another commit is in
        // flight (group commit): an idle settler commits at once, a busy one fills batches.
        while batch.len() < config.batch {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let busy = commits.available_permits() < config.parallelism.max(1);
        let deadline = tokio::time::Instant::now() + config.linger;
        while busy && batch.len() < config.batch {
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
        let sinks = sinks.clone();
        running.spawn(async move {
            settle_batch(&sinks, batch).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

async fn settle_batch(sinks: &Sinks, batch: Vec<Settlement>) {
    let mut rows: Vec<Settled> = Vec::new();
    let mut letters = Vec::new();
    for settlement in &batch {
        match &settlement.record {
            Record::Task(settled) => rows.push(settled.clone()),
            Record::Dead(settled, letter) => {
                rows.push(settled.clone());
                letters.push(letter.as_ref().clone());
            }
            Record::Rejected(letter) => letters.push(letter.as_ref().clone()),
            Record::Nothing => {}
        }
    }
    // One commit span per task, all covering the shared batch commit.
    let commit_spans: Vec<tracing::Span> = batch
        .iter()
        .map(|s| tracing::debug_span!(parent: &s.span, "db.commit", batch.size = batch.len()))
        .collect();
    let mut pause = STORE_RETRY_FIRST;
    let mut abandon = sinks.abandon.clone();
    let applied = loop {
        let stored = async {
            sinks.dead_letters.publish(&letters).await?;
            sinks
                .store
                .settle(&rows, &sinks.worker_id)
                .await
                .map_err(StoreFailure::from)
        }
        .await;
        match stored {
            Ok(applied) => break applied,
            Err(error) => {
                sinks.counts.store_failures.fetch_add(1, Ordering::Relaxed);
                Metrics::global().store_failures.inc();
                tracing::error!(%error, size = batch.len(), retry_in_ms = pause.as_millis() as u64,
                    "cannot store outcomes; holding the batch");
            }
        }
        // Keep the leases while we wait, so no other worker takes these tasks meanwhile.
        for settlement in &batch {
            let _ = settlement.acker.ack_with(AckKind::Progress).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = raised(&mut abandon) => {
                tracing::warn!(size = batch.len(), "shutting down: handing an unstored batch back");
                for settlement in batch {
                    let _ = settlement.acker.ack_with(AckKind::Nak(None)).await;
                }
                return;
            }
        }
        pause = (pause * 2).min(STORE_RETRY_MAX);
    };
    drop(commit_spans);
    for mut settlement in batch {
        let row = match &settlement.record {
            Record::Task(settled) | Record::Dead(settled, _) => Some(settled),
            _ => None,
        };
        if let Some(settled) = row
            && !applied.contains(&settled.id)
        {
            // A newer attempt owns the row, or it is already final: leave this delivery
            // alone; if nobody acks it, its redelivery is recognised as a duplicate at claim.
            sinks.counts.fenced.fetch_add(1, Ordering::Relaxed);
            Metrics::global().duplicate_executions.inc();
            // Logged in the task's span, so the line carries its trace id.
            let _in_task = settlement.span.enter();
            tracing::warn!(task_id = %settled.id, attempt = settled.attempt,
                "late outcome fenced off: another attempt committed first");
            continue;
        }
        if let (Some(mirror), Some(event)) = (&sinks.mirror, settlement.mirror.take()) {
            let _mirror = tracing::debug_span!(parent: &settlement.span, "mirror.write").entered();
            mirror.record(event);
        }
        if let AckKind::Nak(Some(delay)) = settlement.ack {
            sinks.alarms.set(delay);
        }
        let ack_span =
            tracing::debug_span!(parent: &settlement.span, "ack", kind = ?settlement.ack);
        if let Err(error) = settlement
            .acker
            .ack_with(settlement.ack)
            .instrument(ack_span)
            .await
        {
            tracing::warn!(%error, "could not tell the broker; the message will be redelivered");
        }
        sinks.counts.count(settlement.label);
        record_metrics(&settlement);
    }
}

/// Counts one settled delivery: its outcome, its end-to-end time, its dead letter.
fn record_metrics(settlement: &Settlement) {
    let metrics = Metrics::global();
    let letter = match &settlement.record {
        Record::Dead(_, letter) | Record::Rejected(letter) => Some(letter),
        _ => None,
    };
    if let Some(letter) = letter {
        metrics
            .dead_letters
            .with_label_values(&[letter.agent_type.as_str(), letter.reason.as_str()])
            .inc();
    }
    let agent_type = match (&settlement.meta, letter) {
        (Some(meta), _) => meta.agent_type.as_str(),
        (None, Some(letter)) => letter.agent_type.as_str(),
        (None, None) => "unknown",
    };
    metrics
        .agent_tasks
        .with_label_values(&[agent_type, settlement.label])
        .inc();
    if let Some(meta) = &settlement.meta
        && matches!(settlement.label, "completed" | "dead")
    {
        let elapsed = (chrono::Utc::now() - meta.created_at)
            .num_microseconds()
            .unwrap_or(0);
        metrics
            .end_to_end
            .with_label_values(&[
                agent_type,
                PRIORITY_LABELS[usize::from(meta.priority.min(9))],
            ])
            .observe(elapsed.max(0) as f64 / 1e6);
    }
}

const PRIORITY_LABELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Either half of storing a batch failed.
#[derive(Debug, thiserror::Error)]
enum StoreFailure {
    #[error(transparent)]
    DeadLetters(#[from] crate::dlq::DlqError),
    #[error(transparent)]
    Database(#[from] crate::store::StoreError),
}
