//! Wake-ups for redeliveries this worker scheduled itself. A task nak'd with a delay comes
//! back without a publish, so it rings no doorbell; the alarm wakes the idle worker when the
//! delay is over, so a retry runs on time instead of at the next backstop rescan.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// Pending wake-up times, earliest first.
#[derive(Clone, Default)]
pub struct RetryAlarms {
    due: Arc<Mutex<BinaryHeap<Reverse<Instant>>>>,
    changed: Arc<Notify>,
}

/// Slack after the delay, so the message is available when we ask for it: the server
/// counts the delay from when the nak reaches it, which on a loaded machine can be some
/// milliseconds after it was sent (with 5 ms, a retry under load waited for the backstop
/// rescan instead).
const MARGIN: Duration = Duration::from_millis(25);

impl RetryAlarms {
    /// Schedules a wake-up `after` from now.
    pub fn set(&self, after: Duration) {
        self.due
            .lock()
            .expect("alarm lock")
            .push(Reverse(Instant::now() + after + MARGIN));
        self.changed.notify_one();
    }

    /// Sleeps until the earliest alarm is due (and clears every due alarm), or `limit`.
    pub async fn wait(&self, limit: Duration) {
        let give_up = Instant::now() + limit;
        loop {
            let next = self.due.lock().expect("alarm lock").peek().map(|r| r.0);
            let until = next.map_or(give_up, |next| next.min(give_up));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = self.changed.notified() => {}
            }
        }
        let now = Instant::now();
        let mut due = self.due.lock().expect("alarm lock");
        while due.peek().is_some_and(|r| r.0 <= now) {
            due.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wakes_at_the_earliest_alarm() {
        let alarms = RetryAlarms::default();
        alarms.set(Duration::from_millis(300));
        alarms.set(Duration::from_millis(100));
        let start = Instant::now();
        alarms.wait(Duration::from_secs(10)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(125));
        alarms.wait(Duration::from_secs(10)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(325));
        alarms.wait(Duration::from_secs(1)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1325));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_earlier_alarm_cuts_the_wait_short() {
        let alarms = RetryAlarms::default();
        let waiter = alarms.clone();
        let start = Instant::now();
        let handle = tokio::spawn(async move { waiter.wait(Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        alarms.set(Duration::from_millis(50));
        handle.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(125));
    }
}
