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

    /// Drops the report of a task that ended: nothing will read it as a checkpoint, and a
    /// short task that never had an unfinished row would otherwise be retried for seconds.
    pub fn forget(&self, task_id: &Uuid) {
        self.latest.lock().expect("progress lock").remove(task_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_report_wins_and_an_ended_task_is_forgotten() {
        let board = Arc::new(ProgressBoard::default());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (progress_a, progress_b) = (
            Progress::new(a, board.clone()),
            Progress::new(b, board.clone()),
        );
        progress_a.report(0.2, json!(1));
        progress_a.report(7.0, json!(2)); // clamped
        progress_b.report(f64::NAN, json!(3));
        board.forget(&b);
        let taken = board.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, a);
        assert_eq!(taken[0].1["fraction"], 1.0);
        assert_eq!(taken[0].1["detail"], 2);
        assert!(board.take().is_empty(), "taken off the board");
        // Not applied (no row yet): back on the board, unless a newer report came.
        progress_a.report(0.5, json!("newer"));
        board.put_back(taken, Instant::now());
        assert_eq!(board.take()[0].1["detail"], "newer");
        // A handle without a board reports nowhere.
        Progress::default().report(0.5, json!(null));
    }
}
