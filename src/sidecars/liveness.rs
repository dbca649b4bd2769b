//! Does this worker still make progress? A worker can be connected to everything and still
//! be stuck: a batch held for minutes, a pull loop that no longer turns. `/ready` turns
//! unready (so an orchestrator restarts the worker) and a gauge says so, once either lasts
//! longer than the configured stall time.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The batches a worker holds now, by when each began to wait.
#[derive(Debug, Default)]
pub struct HeldBatches {
    next_id: AtomicU64,
    since: Mutex<BTreeMap<u64, Instant>>,
}

impl HeldBatches {
    /// How long the oldest held batch has waited; zero when none is held.
    pub fn oldest_age(&self) -> Duration {
        let since = self.since.lock().expect("held-batch board poisoned");
        since
            .values()
            .min()
            .map_or(Duration::ZERO, Instant::elapsed)
    }

    /// How many batches are held now.
    pub fn count(&self) -> usize {
        self.since.lock().expect("held-batch board poisoned").len()
    }

    /// Puts a batch on the board; the id takes it off.
    pub(crate) fn enter(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut since = self.since.lock().expect("held-batch board poisoned");
        since.insert(id, Instant::now());
        id
    }

    pub(crate) fn leave(&self, id: u64) {
        self.since
            .lock()
            .expect("held-batch board poisoned")
            .remove(&id);
    }
}

/// What the worker's probes read about its progress.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds since `origin` when the pull loop last turned.
    turned_ms: AtomicU64,
    /// True while the pull loop waits for a slot to free (legitimately idle: its tasks run).
    waiting_for_slots: AtomicBool,
    /// Milliseconds since `origin` when a batch was last settled.
    settled_ms: AtomicU64,
    /// The pull loop has drained its lanes once and listens for new publishes.
    listening: AtomicBool,
    held: Arc<HeldBatches>,
    stall_after: Duration,
}

impl Liveness {
    /// Progress read against `stall_after`, with `held` the worker's held-batch board.
    pub fn new(held: Arc<HeldBatches>, stall_after: Duration) -> Self {
        Self {
            origin: Instant::now(),
            turned_ms: AtomicU64::new(0),
            waiting_for_slots: AtomicBool::new(false),
            settled_ms: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            held,
            stall_after,
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The pull loop turned (pulled, or heard the doorbell, or timed out waiting for it).
    pub fn turned(&self) {
        self.turned_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The pull loop starts (`true`) or stops (`false`) waiting for a free slot.
    pub fn waiting_for_slots(&self, waiting: bool) {
        self.waiting_for_slots.store(waiting, Ordering::Relaxed);
        self.turned();
    }

    /// The pull loop found its lanes empty and listens for new publishes (the doorbell).
    pub fn listening(&self) {
        self.listening.store(true, Ordering::Relaxed);
    }

    /// Whether the worker has set up, drained what was waiting and now hears new publishes
    /// at once: from here a task published is picked up without a rescan.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// A batch was settled.
    pub fn touch(&self) {
        self.settled_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The batches held now.
    pub fn held(&self) -> &HeldBatches {
        &self.held
    }

    /// Why the worker counts as stalled, if it does: a batch held longer than the stall
    /// time, or a pull loop that has not turned for that long while it had free slots.
    pub fn stall(&self) -> Option<String> {
        let held = self.held.oldest_age();
        if held > self.stall_after {
            return Some(format!(
                "a batch has been held for {} s (transient fault not recovering)",
                held.as_secs()
            ));
        }
        let idle = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.turned_ms.load(Ordering::Relaxed)),
        );
        if !self.waiting_for_slots.load(Ordering::Relaxed) && idle > self.stall_after {
            return Some(format!(
                "the pull loop has not turned for {} s",
                idle.as_secs()
            ));
        }
        None
    }

    /// Seconds since a batch was last settled.
    pub fn since_settled(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.settled_ms.load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_worker_is_not_stalled() {
        let liveness = Liveness::new(Arc::default(), Duration::from_millis(50));
        liveness.turned();
        assert_eq!(liveness.stall(), None);
        liveness.waiting_for_slots(true);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            liveness.stall(),
            None,
            "its slots are busy with running tasks"
        );
        liveness.waiting_for_slots(false);
        assert_eq!(liveness.stall(), None);
        std::thread::sleep(Duration::from_millis(80));
        let stall = liveness.stall().expect("the loop stopped turning");
        assert!(stall.contains("pull loop"), "{stall}");
        liveness.touch();
        assert!(liveness.since_settled() < Duration::from_millis(50));
    }
}
