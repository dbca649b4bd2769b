//! Holding work through a transient fault: the batch keeps its leases (in-progress acks, so
//! no delivery is used up and no other worker takes it), waits a growing pause, and tries
//! again — until it succeeds or the worker is told to stop. Every held batch is on the
//! [`HeldBatches`] board while it waits, so `/ready` and `/metrics` see a worker that holds
//! work for too long.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, message::Acker};
use tokio::sync::watch;

use super::raised;
use crate::{backoff::Backoff, sidecars::HeldBatches};

/// First and longest pause between tries.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// One batch's patience through a transient fault.
pub(super) struct Hold {
    board: Arc<HeldBatches>,
    /// Set while the batch is on the board.
    entry: Option<u64>,
    pause: Backoff,
}

impl Hold {
    pub(super) fn new(board: Arc<HeldBatches>) -> Self {
        Self {
            board,
            entry: None,
            pause: Backoff::new(FIRST_PAUSE, LONGEST_PAUSE),
        }
    }

    /// Renews the leases of `ackers`, then waits the next pause. Returns false, at once,
    /// when `stop` is raised first: the caller hands the batch back.
    pub(super) async fn wait<'a>(
        &mut self,
        ackers: impl IntoIterator<Item = &'a Acker>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        if self.entry.is_none() {
            self.entry = Some(self.board.enter());
        }
        for acker in ackers {
            let _ = acker.ack_with(AckKind::Progress).await;
        }
        let pause = self.pause.next_pause();
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = raised(stop) => false,
        }
    }

    /// The last try succeeded: the next fault starts again from the first pause.
    pub(super) fn recovered(&mut self) {
        if let Some(id) = self.entry.take() {
            self.board.leave(id);
        }
        self.pause.reset();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.recovered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_held_batch_is_on_the_board_until_it_recovers() {
        let board = Arc::new(HeldBatches::default());
        let (_tx, mut stop) = watch::channel(false);
        let mut hold = Hold::new(board.clone());
        assert_eq!((board.count(), board.oldest_age()), (0, Duration::ZERO));
        let started = tokio::time::Instant::now();
        assert!(hold.wait([], &mut stop).await);
        assert!(hold.wait([], &mut stop).await);
        assert!(hold.wait([], &mut stop).await);
        assert_eq!(started.elapsed(), Duration::from_millis(100 + 200 + 400));
        assert_eq!(board.count(), 1);
        hold.recovered();
        assert_eq!(board.count(), 0);
        assert!(hold.wait([], &mut stop).await);
        assert_eq!(started.elapsed(), Duration::from_millis(800));
        drop(hold);
        assert_eq!(board.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_to_five_seconds_and_stop_ends_the_wait() {
        let board = Arc::new(HeldBatches::default());
        let (tx, mut stop) = watch::channel(false);
        let mut hold = Hold::new(board);
        for _ in 0..10 {
            hold.wait([], &mut stop).await;
        }
        assert_eq!(hold.pause.peek(), LONGEST_PAUSE);
        tx.send(true).unwrap();
        let before = tokio::time::Instant::now();
        assert!(!hold.wait([], &mut stop).await);
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
