//! Commits outcomes in batches and only then tells the broker.
//!
//! Outcomes arrive on a channel; the settler gathers up to `commit_batch` of them — waiting
//! at most `commit_linger` for company, and only while another commit is in flight — and
//! stores each batch while earlier batches may still be in flight (up to
//! `commit_parallelism`), so one slow commit does not stall the rest.
//! Storing a batch is: dead letters published (and confirmed) to the dead-letter stream,
//! then every row updated in one statement. Only then is each message acknowledged, nak'd or
//! terminated. If storing fails transiently (PostgreSQL or NATS away), the batch is held
//! ([`Hold`]): retried with growing pauses while its leases are kept alive, so nothing is
//! acknowledged without its record and no finished work is thrown away; at the end of the
//! shutdown grace a batch still failing is handed back. A failure that is permanent for one
//! message never holds the batch: the database refusing a row splits the batch until that
//! row is found, and its task becomes a dead letter (`unstorable`); a dead letter the broker
//! refuses is logged and counted, and its message terminated all the same.
//!
//! Longer than most modules: batching, commit, bisection of refused rows and acks are one
//! sequence whose order is the invariant (nothing acknowledged before its record), kept in
//! one file so it reads top to bottom. What each outcome stores and acks is decided in
//! `outcome` and `settlement`, not here.

use std::{collections::HashSet, ops::Range, sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, message::Acker};
use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinSet,
};
use tracing::Instrument;

use uuid::Uuid;

use super::{
    Outcome,
    alarm::RetryAlarms,
    ending::{self, Cause, Refused},
    hold::Hold,
    outcome::{Label, Record},
    settlement::Settlement,
};
use crate::{
    broker::{Announcement, Broker},
    dlq::{DeadLetter, DeadLetterStream},
    fault::{RangeWrite, isolate},
    metrics::Metrics,
    mirror::Mirror,
    sidecars::{HeldBatches, Liveness},
    store::{Settled, SettledStatus, Store, StoreError},
};

impl Settlement {
    /// The database refused this outcome: the task ends dead with reason `unstorable`, its
    /// envelope and the refusal in a dead letter, and its message is terminated.
    fn become_unstorable(&mut self, worker_id: &str) {
        let refusal = self.unstorable.take().unwrap_or_default();
        let outcome = ending::decide(Cause::Unstorable {
            what: Refused::Outcome,
            refusal,
        });
        self.decide(&outcome, worker_id);
        self.letter_published = false;
        self.row_stored = false;
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
    pub metrics: &'static Metrics,
    /// Turns true when the grace period is over: stop retrying, hand everything back.
    pub abandon: watch::Receiver<bool>,
    /// Told of every delayed nak, so the worker wakes when the task is due again.
    pub alarms: RetryAlarms,
    /// The legacy Redis mirror, when enabled.
    pub mirror: Option<Mirror>,
    /// Batches held through a transient fault.
    pub held: Arc<HeldBatches>,
    /// Told of every settled batch.
    pub progress: Arc<Liveness>,
    /// Announces final outcomes once committed, when enabled (`nats.announce_outcomes`).
    pub announcer: Option<Broker>,
    /// Tells live viewers (the dashboard) what each batch settled, on core NATS.
    pub viewers: Option<Broker>,
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
        // A batch going to commit frees its slots: the pull loop refills while PostgreSQL
        // works. Still bounded — at most `parallelism` batches commit at once (a held one
        // keeps its leases alive), and the next waits above with its slots held.
        for settlement in &mut batch {
            settlement.slot = None;
        }
        let sinks = sinks.clone();
        running.spawn(async move {
            settle_batch(&sinks, batch).await;
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

async fn settle_batch(sinks: &Sinks, mut batch: Vec<Settlement>) {
    // One commit span per task, all covering the shared batch commit.
    let commit_spans: Vec<tracing::Span> = batch
        .iter()
        .map(|s| tracing::debug_span!(parent: &s.span, "db.commit", batch.size = batch.len()))
        .collect();
    let mut hold = Hold::new(sinks.held.clone());
    let mut abandon = sinks.abandon.clone();
    // Dead letters first, so a row marked dead always has its letter.
    let Some(()) = publish_letters(sinks, &mut batch, &mut hold, &mut abandon).await else {
        return hand_back(batch).await;
    };
    let Some(mut applied) = store_rows(sinks, &mut batch, &mut hold, &mut abandon).await else {
        return hand_back(batch).await;
    };
    // Outcomes the database refused for their values end as dead letters of their own.
    let unstorable: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].unstorable.is_some())
        .collect();
    if !unstorable.is_empty() {
        for &i in &unstorable {
            batch[i].become_unstorable(&sinks.worker_id);
        }
        let Some(()) = publish_letters(sinks, &mut batch, &mut hold, &mut abandon).await else {
            return hand_back(batch).await;
        };
        let Some(more) = store_rows(sinks, &mut batch, &mut hold, &mut abandon).await else {
            return hand_back(batch).await;
        };
        applied.extend(more);
    }
    drop(hold);
    drop(commit_spans);
    end_fenced_by_a_cancel(sinks, &mut batch, &mut applied).await;
    let mut settled = Vec::new();
    for mut settlement in batch {
        let row = match &settlement.record {
            Record::Task(settled) | Record::Dead(settled, _) => Some(settled),
            _ => None,
        };
        if let Some(settled) = row
            && settlement.unstorable.is_none()
            && !applied.contains(&settled.id)
        {
            // A newer attempt owns the row, or it is already final: leave this delivery
            // alone; if nobody acks it, its redelivery is recognised as a duplicate at claim.
            sinks.metrics.duplicate_executions.inc();
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
        let ack_span =
            tracing::debug_span!(parent: &settlement.span, "ack", kind = ?settlement.ack);
        // A retry's nak waits for the server's reply: the server counts the delay from when
        // it got the nak, so the alarm that wakes this worker for the retry counts from the
        // reply (a nak sent and forgotten reached a loaded server late, and the retry waited
        // for the backstop rescan). Retries are few; every other ack is sent and forgotten.
        let (acker, ack) = (&settlement.acker, settlement.ack);
        let told = if let AckKind::Nak(Some(_)) = ack {
            acker.double_ack_with(ack).instrument(ack_span).await
        } else {
            acker.ack_with(ack).instrument(ack_span).await
        };
        if let Err(error) = told {
            tracing::warn!(%error, "could not tell the broker; the message will be redelivered");
        }
        if let AckKind::Nak(Some(delay)) = settlement.ack {
            sinks.alarms.set(delay);
        }
        if let Some(broker) = &sinks.announcer {
            announce(broker, &settlement).await;
        }
        record_metrics(&settlement, sinks.metrics);
        if let Some(settled_row) = row_of(&settlement.record) {
            settled.push((settled_row.id, settlement.label));
        }
    }
    sinks.progress.touch();
    if let (Some(broker), false) = (&sinks.viewers, settled.is_empty()) {
        tell_viewers(broker, &settled).await;
    }
}

fn row_of(record: &Record) -> Option<&crate::store::Settled> {
    match record {
        Record::Task(settled) | Record::Dead(settled, _) => Some(settled),
        _ => None,
    }
}

/// One `settled` event per batch: `{"tasks": [[id, outcome], ...]}` (a few bytes per task;
/// nobody pays more when nobody watches).
async fn tell_viewers(broker: &Broker, settled: &[(uuid::Uuid, Label)]) {
    let tasks: Vec<(String, &str)> = settled
        .iter()
        .map(|(id, label)| (id.to_string(), label.as_str()))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "tasks": tasks }))
        .expect("a settled event serialises");
    let subject = broker.subjects().worker_event("settled");
    if let Err(error) = broker.client().publish(subject, body.into()).await {
        tracing::debug!(%error, "cannot tell viewers of a settled batch");
    }
}

/// Outcomes fenced off because their task was cancelled meanwhile (the cancel committed
/// between the agent's answer and this commit): the delivery ends as cancelled — legacy
/// keys, acknowledgement, counts and announcement agree with the row.
async fn end_fenced_by_a_cancel(
    sinks: &Sinks,
    batch: &mut [Settlement],
    applied: &mut HashSet<uuid::Uuid>,
) {
    let fenced: Vec<uuid::Uuid> = batch
        .iter()
        .filter_map(|s| match &s.record {
            Record::Task(settled) | Record::Dead(settled, _)
                if s.unstorable.is_none() && !applied.contains(&settled.id) =>
            {
                Some(settled.id)
            }
            _ => None,
        })
        .collect();
    if fenced.is_empty() {
        return;
    }
    let cancelled = match sinks.store.cancellations().cancelled_among(&fenced).await {
        Ok(cancelled) => cancelled,
        Err(error) => {
            // Left fenced: the redelivery is recognised as finished at claim.
            tracing::debug!(%error, "cannot tell cancelled tasks from late outcomes");
            return;
        }
    };
    for settlement in batch.iter_mut() {
        let Some(delivery) = settlement.delivery.clone() else {
            continue;
        };
        let Some(by) = cancelled.get(&delivery.task.id) else {
            continue;
        };
        settlement.decide(&Outcome::Cancelled { by: by.clone() }, &sinks.worker_id);
        applied.insert(delivery.task.id);
    }
}

/// Tells waiters a final outcome now stored, when its producer asked (a retry is not final:
/// nothing is announced).
async fn announce(broker: &Broker, settlement: &Settlement) {
    if !settlement.delivery.as_ref().is_some_and(|d| d.announce) {
        return;
    }
    let (settled, status) = match &settlement.record {
        Record::Task(settled) if settled.status == SettledStatus::Completed => {
            (settled, "completed")
        }
        Record::Dead(settled, _) => (settled, "dead"),
        Record::Task(settled) if settled.status == SettledStatus::Cancelled => {
            (settled, "cancelled")
        }
        _ => return,
    };
    let announcement = Announcement {
        id: settled.id,
        status,
        attempts: settled.attempt,
        result: settled.result.as_ref(),
        result_ref: settled.result_ref.as_ref(),
        error: settled.error.as_deref(),
        completed_at: chrono::Utc::now(),
    };
    if let Err(error) = broker.outcomes().announce(&announcement).await {
        // Waiters read the store at their deadline: a lost announcement delays, never loses.
        tracing::debug!(task_id = %settled.id, %error, "cannot announce an outcome");
    }
}

/// Publishes the batch's dead letters, holding the batch through transient faults. A letter
/// the broker refuses for good is logged, counted and dropped: its message is still
/// terminated, so it never holds the rest. `None` when told to stop while holding.
async fn publish_letters(
    sinks: &Sinks,
    batch: &mut [Settlement],
    hold: &mut Hold,
    abandon: &mut watch::Receiver<bool>,
) -> Option<()> {
    let mut places: Vec<usize> = Vec::new();
    let mut letters: Vec<DeadLetter> = Vec::new();
    for (i, settlement) in batch.iter_mut().enumerate() {
        if settlement.letter_published {
            continue;
        }
        if let Record::Dead(_, letter) | Record::Rejected(letter) = &settlement.record {
            places.push(i);
            letters.push(letter.as_ref().clone());
        }
    }
    if letters.is_empty() {
        return Some(());
    }
    let refused = loop {
        match sinks.dead_letters.publish(&mut letters).await {
            Ok(refused) => break refused,
            Err(error) => {
                note_store_failure(sinks, &error, batch.len());
                let ackers: Vec<&Acker> = batch.iter().map(|s| &s.acker).collect();
                if !hold.wait(ackers, abandon).await {
                    return None;
                }
            }
        }
    };
    hold.recovered();
    for (id, error) in refused {
        sinks.metrics.dead_letters_refused.inc();
        tracing::error!(task_id = %id, %error,
            "the broker refuses this dead letter; terminating its message without it");
    }
    for i in places {
        batch[i].letter_published = true;
    }
    Some(())
}

/// Stores the batch's rows not yet stored, splitting the batch around rows the database
/// refuses for their values (marked `unstorable`) and holding it through transient faults.
/// Returns the ids applied; `None` when told to stop while holding.
async fn store_rows(
    sinks: &Sinks,
    batch: &mut [Settlement],
    hold: &mut Hold,
    abandon: &mut watch::Receiver<bool>,
) -> Option<HashSet<Uuid>> {
    let mut places: Vec<usize> = Vec::new();
    let mut rows: Vec<&Settled> = Vec::new();
    for (i, settlement) in batch.iter().enumerate() {
        if settlement.row_stored || settlement.unstorable.is_some() {
            continue;
        }
        if let Record::Task(settled) | Record::Dead(settled, _) = &settlement.record {
            places.push(i);
            rows.push(settled);
        }
    }
    let mut write = RowWrite {
        sinks,
        ackers: batch.iter().map(|s| &s.acker).collect(),
        rows: &rows,
        batch_len: batch.len(),
        hold,
        abandon,
    };
    let found = isolate(&mut write, rows.len()).await?;
    let applied: HashSet<Uuid> = found.done.into_iter().flat_map(|(_, ids)| ids).collect();
    let mut refused: Vec<(usize, String)> = Vec::new();
    for (i, error) in found.refused {
        tracing::error!(task_id = %rows[i].id, %error,
            "the database refuses this outcome; dead-lettering the task");
        sinks.metrics.unstorable.inc();
        refused.push((places[i], error.to_string()));
    }
    drop(rows);
    for (place, why) in refused {
        batch[place].unstorable = Some(why);
    }
    for i in places {
        batch[i].row_stored = batch[i].unstorable.is_none();
    }
    Some(applied)
}

/// A batch's rows stored through [`isolate`], held through the database's outages.
struct RowWrite<'a> {
    sinks: &'a Sinks,
    ackers: Vec<&'a Acker>,
    rows: &'a [&'a Settled],
    batch_len: usize,
    hold: &'a mut Hold,
    abandon: &'a mut watch::Receiver<bool>,
}

impl RangeWrite for RowWrite<'_> {
    type Done = HashSet<Uuid>;
    type Error = StoreError;

    async fn try_range(&mut self, range: Range<usize>) -> Result<HashSet<Uuid>, StoreError> {
        let ids = self
            .sinks
            .store
            .tasks()
            .settle(&self.rows[range], &self.sinks.worker_id)
            .await?;
        self.hold.recovered();
        Ok(ids)
    }

    async fn wait(&mut self, error: StoreError) -> bool {
        note_store_failure(self.sinks, &error, self.batch_len);
        self.hold.wait(self.ackers.clone(), self.abandon).await
    }
}

fn note_store_failure(sinks: &Sinks, error: &dyn std::fmt::Display, size: usize) {
    sinks.metrics.store_failures.inc();
    tracing::error!(%error, size, "cannot store outcomes; holding the batch");
}

/// Shutting down with the batch unstored: every message goes back to the stream.
async fn hand_back(batch: Vec<Settlement>) {
    tracing::warn!(
        size = batch.len(),
        "shutting down: handing an unstored batch back"
    );
    for settlement in batch {
        let _ = settlement.acker.ack_with(AckKind::Nak(None)).await;
    }
}

/// Counts one settled delivery: its outcome, its end-to-end time, its dead letter.
fn record_metrics(settlement: &Settlement, metrics: &Metrics) {
    let letter = match &settlement.record {
        Record::Dead(_, letter) | Record::Rejected(letter) => Some(letter),
        _ => None,
    };
    let agent_type = settlement.agent_label;
    if let Some(letter) = letter {
        metrics
            .dead_letters
            .with_label_values(&[agent_type, letter.reason.as_str()])
            .inc();
    }
    metrics
        .agent_tasks
        .with_label_values(&[agent_type, settlement.label.as_str()])
        .inc();
    if let Some(task) = settlement.delivery.as_ref().map(|d| &d.task)
        && matches!(settlement.label, Label::Completed | Label::Dead)
    {
        let elapsed = (chrono::Utc::now() - task.created_at)
            .num_microseconds()
            .unwrap_or(0);
        metrics
            .end_to_end
            .with_label_values(&[
                agent_type,
                PRIORITY_LABELS[usize::from(task.priority.min(9))],
            ])
            .observe(elapsed.max(0) as f64 / 1e6);
    }
}

const PRIORITY_LABELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
