//! Whether a first delivery could be a task that already finished.
//!
//! A first delivery is not a redelivery, but it can still carry a finished task: a producer
//! that published the same task again. Such a copy must not run again, so it used to be
//! looked up in PostgreSQL — a third of the database's work per task. JetStream rules most
//! copies out by itself: a message with `Nats-Msg-Id` = the task id is dropped when the same
//! id was stored within the stream's duplicate window, so a copy that got through was stored
//! at least one window after the first. The first was stored after the producer created the
//! task, so a message stored less than a window after its task's `created_at` is the only
//! copy there is — however long it then waited in the stream. `created_at` comes from the
//! producer's clock: [`CLOCK_SKEW`] of it running ahead of the server's is allowed for.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How far a producer's clock may run ahead of the NATS server's without a re-published
/// task slipping past the check.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// What JetStream and the envelope say about one first delivery.
#[derive(Debug, Clone, Copy)]
pub struct FirstDelivery {
    /// When the stream stored the message (server clock), when known.
    pub stored_at: Option<DateTime<Utc>>,
    /// The task's creation time (producer clock).
    pub created_at: DateTime<Utc>,
    /// The message's `Nats-Msg-Id` is the task id, so the stream de-duplicated it.
    pub deduplicated_by_id: bool,
}

impl FirstDelivery {
    /// True when an earlier copy of this task may exist (and may have finished), so the task
    /// must be looked up before it runs. `window` is the stream's duplicate window.
    pub fn may_repeat_an_earlier_copy(&self, window: Duration) -> bool {
        let Some(stored_at) = self.stored_at else {
            return true;
        };
        if !self.deduplicated_by_id {
            return true;
        }
        let Some(trusted) = window.checked_sub(CLOCK_SKEW) else {
            return true;
        };
        let (Ok(trusted), Ok(skew)) = (
            chrono::Duration::from_std(trusted),
            chrono::Duration::from_std(CLOCK_SKEW),
        ) else {
            return true;
        };
        let stored_after_creation = stored_at - self.created_at;
        // Stored "before" creation by more than the skew: a clock is far off; trust nothing.
        !(stored_after_creation >= -skew && stored_after_creation < trusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    fn delivery(stored_after_secs: i64) -> FirstDelivery {
        let created_at = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        FirstDelivery {
            stored_at: Some(created_at + chrono::Duration::seconds(stored_after_secs)),
            created_at,
            deduplicated_by_id: true,
        }
    }

    #[test]
    fn a_task_stored_soon_after_its_creation_is_the_only_copy() {
        assert!(!delivery(0).may_repeat_an_earlier_copy(WINDOW));
        assert!(!delivery(89).may_repeat_an_earlier_copy(WINDOW));
        // A producer clock up to the allowed skew ahead of the server's.
        assert!(!delivery(-30).may_repeat_an_earlier_copy(WINDOW));
    }

    #[test]
    fn a_task_stored_later_may_be_a_copy_published_after_the_window() {
        assert!(delivery(90).may_repeat_an_earlier_copy(WINDOW));
        assert!(delivery(3600).may_repeat_an_earlier_copy(WINDOW));
        assert!(delivery(-31).may_repeat_an_earlier_copy(WINDOW));
    }

    #[test]
    fn without_de_duplication_or_a_storage_time_every_copy_is_looked_up() {
        let mut no_id = delivery(1);
        no_id.deduplicated_by_id = false;
        assert!(no_id.may_repeat_an_earlier_copy(WINDOW));
        let mut unknown = delivery(1);
        unknown.stored_at = None;
        assert!(unknown.may_repeat_an_earlier_copy(WINDOW));
        // A window shorter than the allowed skew proves nothing.
        assert!(delivery(1).may_repeat_an_earlier_copy(Duration::from_secs(20)));
    }
}
