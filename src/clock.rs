//! The wall clock, injected: what decides whether a schedule's fire is due, whether a
//! delayed task is due and whether a task has expired asks a [`Clock`] rather than the
//! system. A worker runs on the system's; a test hands it a manual one and moves it, so
//! "an hour later" takes no hour and no fixed sleep.
//!
//! Only those decisions read it. Monotonic time (the retry alarms, linger and refill waits,
//! deadlines) is tokio's clock, which tests pause and advance (`start_paused`, as the retry
//! alarms' tests do). The broker's own waits (a nak's delay, a server-held message) and the
//! database's clock are the servers': no test moves them.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A source of the current time: the system's, or a manual one that moves when told.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<Mutex<DateTime<Utc>>>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `at` until moved ([`Clock::advance`], [`Clock::set`]).
    pub fn manual(at: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(Mutex::new(at))),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(at) => *at.lock().expect("clock poisoned"),
        }
    }

    /// Moves a manual clock forward by `by`.
    ///
    /// # Panics
    /// On the system clock, which only time moves.
    pub fn advance(&self, by: Duration) {
        let mut at = self.hand();
        *at += by;
    }

    /// Sets a manual clock to `to` (never back: a clock that runs backwards is a bug).
    ///
    /// # Panics
    /// On the system clock, or when `to` is earlier than the clock's time.
    pub fn set(&self, to: DateTime<Utc>) {
        let mut at = self.hand();
        assert!(to >= *at, "a clock set back from {} to {to}", *at);
        *at = to;
    }

    fn hand(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        self.manual
            .as_ref()
            .expect("only a manual clock is moved by hand")
            .lock()
            .expect("clock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_until_moved_and_its_copies_move_with_it() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let clock = Clock::manual(start);
        let copy = clock.clone();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::seconds(90));
        assert_eq!(copy.now(), start + Duration::seconds(90));
        copy.set(start + Duration::hours(1));
        assert_eq!(clock.now(), start + Duration::hours(1));
    }

    #[test]
    #[should_panic(expected = "set back")]
    fn a_manual_clock_never_goes_back() {
        let clock = Clock::manual(Utc::now());
        clock.set(Utc::now() - Duration::days(1));
    }

    #[test]
    fn the_system_clock_is_the_systems() {
        let before = Utc::now();
        let now = Clock::system().now();
        assert!(now >= before && now <= Utc::now());
    }
}
