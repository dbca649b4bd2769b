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
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Instant>>,
    /// Follow-ups spent since a fetch after an alarm last found something.
    misses: usize,
}

/// What ended a [`RetryAlarms::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    Alarm,
    Limit,
}

/// When a fetch after an alarm finds nothing, look again after these before leaving the
/// retry to the 10 s backstop rescan. The alarm is set once the server confirmed the nak
/// (the settler waits for its reply), so this is for a redelivery the server makes late on
/// a loaded machine, not the usual path.
const FOLLOW_UPS: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(800),
];

/// Slack after the delay, so the message is available when we ask for it: the server's
/// redelivery timer fires a little after the delay on a loaded machine.
const MARGIN: Duration = Duration::from_millis(25);

impl RetryAlarms {
    /// Schedules a wake-up `after` from now.
    pub fn set(&self, after: Duration) {
        self.lock()
            .due
            .push(Reverse(Instant::now() + after + MARGIN));
        self.changed.notify_one();
    }

    /// The fetch after an alarm found nothing: the redelivery may not be due at the server
    /// yet, so a follow-up alarm is set (a few, each later) before the backstop takes over.
    pub fn missed(&self) {
        let mut state = self.lock();
        if let Some(&after) = FOLLOW_UPS.get(state.misses) {
            state.misses += 1;
            state.due.push(Reverse(Instant::now() + after));
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A fetch found messages: the next miss starts the follow-ups afresh.
    pub fn found(&self) {
        self.lock().misses = 0;
    }

    /// Sleeps until the earliest alarm is due (and clears every due alarm), or `limit`.
    pub async fn wait(&self, limit: Duration) -> Woke {
        let give_up = Instant::now() + limit;
        loop {
            let next = self.lock().due.peek().map(|r| r.0);
            let until = next.map_or(give_up, |next| next.min(give_up));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = self.changed.notified() => {}
            }
        }
        let now = Instant::now();
        let mut state = self.lock();
        let mut woke = Woke::Limit;
        while state.due.peek().is_some_and(|r| r.0 <= now) {
            state.due.pop();
            woke = Woke::Alarm;
        }
        woke
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("alarm lock")
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
        assert_eq!(alarms.wait(Duration::from_secs(1)).await, Woke::Limit);
        assert_eq!(start.elapsed(), Duration::from_millis(1325));
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_that_found_nothing_is_followed_up_a_few_times() {
        let alarms = RetryAlarms::default();
        alarms.set(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(alarms.wait(Duration::from_secs(10)).await, Woke::Alarm);
        let mut rang_at = vec![];
        for _ in 0..4 {
            alarms.missed();
            let before = Instant::now();
            if alarms.wait(Duration::from_secs(10)).await == Woke::Alarm {
                rang_at.push(before.elapsed().as_millis());
            }
        }
        assert_eq!(rang_at, [50, 200, 800], "then the backstop");
        assert_eq!(start.elapsed(), Duration::from_millis(125 + 1050 + 10_000));
        alarms.found();
        alarms.missed();
        assert_eq!(alarms.wait(Duration::from_secs(10)).await, Woke::Alarm);
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
