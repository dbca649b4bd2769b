//! Progress an agent reports while it runs: `context.progress.report(fraction, detail)`.
//! Reports are cheap (kept in memory, the latest per task); a writer stores them in batches
//! a few times a second (`tasks.progress`), so a chatty agent costs the database nothing
//! more. After a retry the last stored report is the next attempt's `checkpoint`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use uuid::Uuid;

/// How often reports are written.
pub const WRITE_EVERY: Duration = Duration::from_millis(250);
/// A report whose task has no row yet is tried again until it is this old.
const KEEP_UNAPPLIED: Duration = Duration::from_secs(10);

/// Reports waiting to be written, the latest per task.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    latest: Mutex<HashMap<Uuid, (Value, Instant)>>,
}

impl ProgressBoard {
    /// The reports to write now (taken off the board).
    pub fn take(&self) -> Vec<(Uuid, Value)> {
        let mut latest = self.latest.lock().expect("progress lock");
        latest
            .drain()
            .map(|(id, (report, _))| (id, report))
            .collect()
    }

    /// Puts back reports whose task had no row yet (it gets one within a second), unless a
    /// newer report came meanwhile or they are too old.
    pub fn put_back(&self, unapplied: Vec<(Uuid, Value)>, first_taken: Instant) {
        if first_taken.elapsed() > KEEP_UNAPPLIED {
            return;
        }
        let mut latest = self.latest.lock().expect("progress lock");
        for (id, report) in unapplied {
            latest.entry(id).or_insert((report, first_taken));
        }
    }
}

/// An agent's handle to report progress on its task.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    task_id: Uuid,
    board: Option<Arc<ProgressBoard>>,
}

impl Progress {
    /// Reports on `task_id` go to `board`.
    pub fn new(task_id: Uuid, board: Arc<ProgressBoard>) -> Self {
        Self {
            task_id,
            board: Some(board),
        }
    }

    /// Reports how far the task is (`fraction`, clamped to 0..=1) and anything the agent
    /// wants to see again after a retry (`detail`). The latest report wins.
    pub fn report(&self, fraction: f64, detail: Value) {
        let Some(board) = &self.board else {
            return;
        };
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let report = json!({
            "fraction": fraction,
            "detail": detail,
            "at": chrono::Utc::now(),
        });
        board
            .latest
            .lock()
            .expect("progress lock")
            .insert(self.task_id, (report, Instant::now()));
    }
}
