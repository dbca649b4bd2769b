//! The mirror writer: task moves are queued without waiting and written to Redis in
//! pipelined batches by a background task. Redis being slow or down never holds up a worker:
//! a failed batch is retried with backoff while new moves queue up; if the queue overflows,
//! moves are dropped and, once Redis answers again, everything PostgreSQL changed since the
//! first drop is written again from the rows (catch-up).

use std::{
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::{LegacyKeys, MirrorEvent, event::Place, held::HeldMoves, scripts};
use crate::{
    backoff::Backoff,
    fault::{RangeWrite, isolate},
    metrics::Metrics,
    store::Store,
};

/// Moves waiting to be written; beyond this the mirror drops and catches up later.
const QUEUE: usize = 100_000;
/// Bytes of task JSON waiting to be written; beyond this the mirror drops and catches up
/// later. Tasks may be up to 1 MiB each, so a count alone would not bound memory.
const QUEUE_BYTES: usize = 64 * 1024 * 1024;
const BATCH: usize = 512;
/// Moves per script call: one call per move cost Redis more than the moves; a call holds
/// Redis (single-threaded) for its duration, so not a whole batch either.
const MOVES_PER_CALL: usize = 64;
const LINGER: Duration = Duration::from_millis(2);
/// How long a `waiting` or `processing` move waits for a later move of the same task to
/// replace it: most tasks finish within it, and then only their final move is written.
const HOLD_PASSING: Duration = Duration::from_millis(50);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A handle to queue legacy-key moves; cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    tx: mpsc::Sender<MirrorEvent>,
    /// Bytes of task JSON queued now.
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    /// Where drops, refusals and the lag are recorded.
    metrics: &'static Metrics,
    /// Time of the first dropped move not yet caught up.
    dropped_since: Arc<Mutex<Option<DateTime<Utc>>>>,
}

impl Mirror {
    /// Starts the writer. It ends when every handle is dropped and the queue is written.
    pub fn spawn(
        redis: ConnectionManager,
        keys: LegacyKeys,
        store: Store,
        metrics: &'static Metrics,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        Self::spawn_with_queue(redis, keys, store, QUEUE, metrics)
    }

    /// [`Mirror::spawn`] with room for `queue` unwritten moves.
    pub fn spawn_with_queue(
        redis: ConnectionManager,
        keys: LegacyKeys,
        store: Store,
        queue: usize,
        metrics: &'static Metrics,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let mirror = Self {
            tx,
            queued_bytes: Arc::default(),
            max_queued_bytes: QUEUE_BYTES,
            metrics,
            dropped_since: Arc::default(),
        };
        let writer = Writer {
            redis,
            keys,
            store,
            metrics,
            failures: 0,
            dropped_since: mirror.dropped_since.clone(),
            queued_bytes: mirror.queued_bytes.clone(),
        };
        (mirror, tokio::spawn(writer.run(rx)))
    }

    /// Limits the bytes of task JSON queued at once (tests; the default is 64 MiB).
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Queues a move without waiting; drops it (to be caught up from PostgreSQL) when the
    /// queue is full by count or by bytes.
    pub fn record(&self, event: MirrorEvent) {
        let size = event.json.len();
        let queued = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        let refused = queued + size > self.max_queued_bytes;
        if refused || self.tx.try_send(event).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.metrics.mirror_dropped.inc();
            let mut since = self.dropped_since.lock().expect("mirror lock");
            since.get_or_insert_with(|| Utc::now() - chrono::Duration::seconds(1));
        }
    }

    /// Moves dropped so far (a full queue, or refused by Redis for good): the legacy keys
    /// catch up from PostgreSQL.
    pub fn dropped(&self) -> u64 {
        self.metrics.mirror_dropped.get()
    }
}

struct Writer {
    redis: ConnectionManager,
    keys: LegacyKeys,
    store: Store,
    metrics: &'static Metrics,
    /// Failed writes so far (every 20th is logged).
    failures: u64,
    dropped_since: Arc<Mutex<Option<DateTime<Utc>>>>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<MirrorEvent>) {
        // `waiting` and `processing` moves younger than HOLD_PASSING, kept back: most tasks
        // finish within it, and their final move then replaces them (one or two script calls
        // less per task). A held move written after another process wrote the task's final
        // move is refused by the script (final states are never left).
        let mut held = HeldMoves::new(HOLD_PASSING);
        loop {
            let first: Option<MirrorEvent> = match held.next_due() {
                None => rx.recv().await,
                // Timed out: no new move, but the oldest held one is due.
                Some(due) => {
                    let wait = (due - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::timeout(wait, rx.recv())
                        .await
                        .unwrap_or_default()
                }
            };
            if first.is_none() && held.next_due().is_none() {
                return;
            }
            let mut batch: Vec<MirrorEvent> = first.into_iter().collect();
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(event)) => batch.push(event),
                    Ok(None) | Err(_) => break,
                }
            }
            let counted = held.bytes() + batch.iter().map(|e| e.json.len()).sum::<usize>();
            // Closing: nothing is held back any more.
            let may_hold = !rx.is_closed();
            let mut due = Vec::with_capacity(batch.len());
            for event in batch {
                held.offer(event, may_hold, &mut due);
            }
            due.extend(held.take_due(Utc::now(), !may_hold));
            let due = coalesce(due);
            let oldest = due.iter().map(|e| e.at).min();
            self.write_until_done(&due).await;
            // Counted until written (or replaced), so queue and batch stay within the bound.
            self.queued_bytes
                .fetch_sub(counted - held.bytes(), Ordering::Relaxed);
            if let Some(oldest) = oldest {
                let lag = (Utc::now() - oldest).num_milliseconds().max(0) as u64;
                self.metrics.mirror_lag_ms.set(lag as i64);
            }
            self.catch_up_if_needed().await;
        }
    }

    /// Writes `batch`, retrying transient failures with backoff. A move Redis refuses for
    /// good (a script error, a key of the wrong type) is found by splitting the batch and
    /// dropped alone, counted and logged (`mirror check` shows it), so it never holds the
    /// mirror.
    async fn write_until_done(&mut self, batch: &[MirrorEvent]) {
        let mut moves = Moves {
            writer: self,
            batch,
            backoff: Backoff::new(RETRY_FIRST, RETRY_MAX),
        };
        let found = isolate(&mut moves, batch.len())
            .await
            .expect("the mirror waits out every transient fault");
        for (i, error) in found.refused {
            self.metrics.mirror_dropped.inc();
            tracing::warn!(task_id = %batch[i].id, %error,
                "Redis refuses this legacy-key move; dropped");
        }
    }

    /// After drops, rewrites every row PostgreSQL changed since the first drop.
    async fn catch_up_if_needed(&mut self) {
        let Some(since) = *self.dropped_since.lock().expect("mirror lock") else {
            return;
        };
        match self.store.tasks().changed_since(since).await {
            Ok(rows) => {
                let events: Vec<MirrorEvent> =
                    rows.iter().filter_map(MirrorEvent::from_row).collect();
                for chunk in events.chunks(BATCH) {
                    self.write_until_done(chunk).await;
                }
                let mut guard = self.dropped_since.lock().expect("mirror lock");
                // Drops that happened during the catch-up need another one.
                if *guard == Some(since) {
                    *guard = None;
                }
                tracing::info!(
                    rows = events.len(),
                    "legacy mirror caught up from PostgreSQL"
                );
            }
            Err(error) => tracing::warn!(%error, "legacy mirror catch-up failed; will retry"),
        }
    }
}

/// Keeps one move per task: the one of highest rank (the latest of the later ones when
/// ranks tie). Moves are monotonic, so writing only the newest leaves the keys as writing
/// all of them in order would: a task that finished within one batch goes straight from
/// wherever it was to `completed_tasks`, one script call instead of three.
pub fn coalesce(batch: Vec<MirrorEvent>) -> Vec<MirrorEvent> {
    let mut newest: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(batch.len());
    for (i, event) in batch.iter().enumerate() {
        match newest.get(&event.id) {
            Some(&kept) if batch[kept].rank > event.rank => {}
            _ => {
                newest.insert(event.id.clone(), i);
            }
        }
    }
    if newest.len() == batch.len() {
        return batch;
    }
    let keep: std::collections::HashSet<usize> = newest.into_values().collect();
    batch
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, event)| event)
        .collect()
}

/// Writes `events` in one pipeline. `force` ignores ranks and finality (rebuild).
///
/// Fails when Redis does not answer or refuses a script.
pub async fn write(
    redis: &mut ConnectionManager,
    keys: &LegacyKeys,
    events: &[MirrorEvent],
    force: bool,
) -> redis::RedisResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let script = &*scripts::TRANSITION;
    let mut pipe = redis::pipe();
    for moves in events.chunks(MOVES_PER_CALL) {
        let call = pipe
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(7)
            .arg(&keys.agent_tasks)
            .arg(&keys.processing_tasks)
            .arg(&keys.completed_tasks)
            .arg(&keys.failed_tasks)
            .arg(&keys.mirrored_waiting)
            .arg(&keys.mirror_state)
            .arg(&keys.scheduled_tasks)
            .arg(if force { "1" } else { "0" });
        for event in moves {
            let kind = match event.place {
                // Recorded (the task left wherever it was), shown nowhere.
                Place::Waiting if !keys.show_waiting => "hidden",
                place => place.as_str(),
            };
            call.arg(&event.id)
                .arg(kind)
                .arg(event.rank)
                .arg(&event.json)
                .arg(event.score);
        }
        call.ignore();
    }
    match pipe.query_async::<()>(redis).await {
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(scripts::TRANSITION_CODE)
                .query_async::<String>(redis)
                .await?;
            pipe.query_async::<()>(redis).await
        }
        other => other,
    }
}

/// One batch of moves written through [`isolate`], waiting out Redis's outages.
struct Moves<'a> {
    writer: &'a mut Writer,
    batch: &'a [MirrorEvent],
    backoff: Backoff,
}

impl RangeWrite for Moves<'_> {
    type Done = ();
    type Error = redis::RedisError;

    async fn try_range(&mut self, range: Range<usize>) -> Result<(), redis::RedisError> {
        let writer = &mut *self.writer;
        write(
            &mut writer.redis,
            &writer.keys,
            &self.batch[range.clone()],
            false,
        )
        .await?;
        self.backoff.reset();
        Ok(())
    }

    async fn wait(&mut self, error: redis::RedisError) -> bool {
        let failures = self.writer.failures;
        self.writer.failures += 1;
        if failures.is_multiple_of(20) {
            tracing::warn!(%error, "legacy mirror cannot write to Redis; retrying");
        }
        self.backoff.wait().await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::event::Place;

    fn event(id: &str, place: Place, rank: u64) -> MirrorEvent {
        crate::mirror::event::test_move(id, place, rank, Utc::now())
    }

    #[test]
    fn one_move_per_task_the_newest() {
        let batch = vec![
            event("a", Place::Waiting, 2),
            event("b", Place::Waiting, 2),
            event("a", Place::Processing, 3),
            event("a", Place::Completed, u64::MAX),
            event("c", Place::Processing, 5),
            event("c", Place::Waiting, 4),
        ];
        let kept = coalesce(batch);
        let summary: Vec<(&str, u64)> = kept.iter().map(|e| (e.id.as_str(), e.rank)).collect();
        assert_eq!(summary, vec![("b", 2), ("a", u64::MAX), ("c", 5)]);
    }

    #[test]
    fn equal_ranks_keep_the_later_and_distinct_tasks_stay_in_order() {
        let mut first = event("a", Place::Waiting, 2);
        first.json = "first".into();
        let mut second = event("a", Place::Waiting, 2);
        second.json = "second".into();
        let kept = coalesce(vec![first, event("b", Place::Waiting, 2), second]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].id, "b");
        assert_eq!(kept[1].json, "second");
        let distinct = vec![event("x", Place::Waiting, 2), event("y", Place::Waiting, 2)];
        assert_eq!(coalesce(distinct.clone()), distinct);
    }
}
