//! Periodic schedules: a named task fired every N seconds, by whichever worker takes the
//! schedule's row first (`FOR UPDATE SKIP LOCKED`: no leader election). Each fire is a task
//! whose id (UUIDv5 of the name and fire time) and creation time derive from the fire, so a
//! fire published twice — two workers, a retry after a failed commit — is one task:
//! JetStream drops the copy within its duplicate window, and the row is keyed by both.

mod store;
mod ticker;

pub use ticker::run as run_ticker;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::task::{DEFAULT_MAX_ATTEMPTS, TaskEnvelope};

/// What happens to a fire while the previous fire's task has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is dropped.
    Skip,
    /// The fire runs beside it.
    Allow,
}

/// Which fires missed while no worker ran are made up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None: the schedule resumes at its next fire time.
    None,
    /// The latest missed fire only.
    One,
    /// Every missed fire (at most [`MAX_CATCH_UP`]).
    All,
}

/// Most missed fires made up for at once (`catch_up = all`).
pub const MAX_CATCH_UP: i64 = 1000;
/// A fire this late is on time (ticks come every 200 ms); later, it was missed.
pub const ON_TIME: Duration = Duration::seconds(1);

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub name: String,
    pub agent_type: String,
    pub data: Value,
    pub priority: u8,
    pub every_secs: u32,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    pub next_fire: DateTime<Utc>,
    pub last_fire: Option<DateTime<Utc>>,
    pub last_task: Option<Uuid>,
}

/// The namespace of fire ids (UUIDv5): a fixed, random UUID of this project.
const FIRE_NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_2a61_8f3e_4b7a_9c11_2e6f_40a8_d3b7);

impl Schedule {
    fn every(&self) -> Duration {
        Duration::seconds(i64::from(self.every_secs.max(1)))
    }

    /// The fires due at `now` and the fire time after them. Missed fires (late by more
    /// than [`ON_TIME`]) are made up for as `catch_up` says; the next fire is the first
    /// fire time after `now`.
    pub fn due(&self, now: DateTime<Utc>) -> (Vec<DateTime<Utc>>, DateTime<Utc>) {
        if self.next_fire > now {
            return (Vec::new(), self.next_fire);
        }
        let every = self.every();
        // Arithmetic, not stepping: after a month down, a 1 s schedule has millions of fires.
        let behind = (now - self.next_fire).num_milliseconds() / every.num_milliseconds();
        let latest = self.next_fire + every * i32::try_from(behind).unwrap_or(i32::MAX);
        let next = latest + every;
        let on_time = now - latest <= ON_TIME;
        let fires = match self.catch_up {
            CatchUp::All => {
                let count = (behind + 1).min(MAX_CATCH_UP);
                (0..count)
                    .rev()
                    .map(|back| latest - every * i32::try_from(back).unwrap_or(0))
                    .collect()
            }
            CatchUp::One => vec![latest],
            CatchUp::None if on_time => vec![latest],
            CatchUp::None => Vec::new(),
        };
        (fires, next)
    }

    /// The task of the fire at `at`: the same id and creation time however often made.
    pub fn fire(&self, at: DateTime<Utc>) -> TaskEnvelope {
        let key = format!(
            "{}@{}",
            self.name,
            at.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
        let mut task = TaskEnvelope::new(self.agent_type.clone(), self.data.clone())
            .with_priority(self.priority)
            .with_max_attempts(DEFAULT_MAX_ATTEMPTS);
        task.id = Uuid::new_v5(&FIRE_NAMESPACE, key.as_bytes());
        task.created_at = at;
        task
    }
}

/// The first fire time after `now` on a grid of `every_secs` from the Unix epoch: the same
/// whichever process computes it, so fire ids agree.
pub fn next_aligned(now: DateTime<Utc>, every_secs: u32) -> DateTime<Utc> {
    let every = i64::from(every_secs.max(1)) * 1000;
    let millis = now.timestamp_millis();
    let next = (millis.div_euclid(every) + 1) * every;
    DateTime::from_timestamp_millis(next).unwrap_or(now)
}

/// Whether `name` may name a schedule (as an agent type may: letters, digits, `_`, `-`).
pub fn valid_name(name: &str) -> bool {
    crate::task::valid_agent_type(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(secs: u32, catch_up: CatchUp, next_fire: DateTime<Utc>) -> Schedule {
        Schedule {
            name: "report".into(),
            agent_type: "echo".into(),
            data: Value::Null,
            priority: 5,
            every_secs: secs,
            overlap: Overlap::Allow,
            catch_up,
            paused: false,
            next_fire,
            last_fire: None,
            last_task: None,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn an_on_time_tick_fires_once_and_moves_to_the_next_period() {
        for catch_up in [CatchUp::None, CatchUp::One, CatchUp::All] {
            let (fires, next) = every(10, catch_up, at(0)).due(at(0) + Duration::milliseconds(150));
            assert_eq!((fires, next), (vec![at(0)], at(10)), "{catch_up:?}");
        }
        let (fires, next) = every(10, CatchUp::One, at(10)).due(at(5));
        assert_eq!((fires, next), (vec![], at(10)), "not due yet");
    }

    #[test]
    fn missed_fires_are_made_up_for_as_configured() {
        // Down from 0 to 25 s on a 10 s schedule: fires at 0, 10, 20 were missed.
        let now = at(25);
        assert_eq!(every(10, CatchUp::None, at(0)).due(now), (vec![], at(30)));
        assert_eq!(
            every(10, CatchUp::One, at(0)).due(now),
            (vec![at(20)], at(30))
        );
        assert_eq!(
            every(10, CatchUp::All, at(0)).due(now),
            (vec![at(0), at(10), at(20)], at(30))
        );
        // A month down on a 1 s schedule: bounded, and quick.
        let (fires, next) =
            every(1, CatchUp::All, at(0)).due(at(30 * 86_400) + Duration::milliseconds(1));
        assert_eq!(fires.len() as i64, MAX_CATCH_UP);
        assert_eq!(fires.last(), Some(&at(30 * 86_400)));
        assert_eq!(next, at(30 * 86_400 + 1));
    }

    #[test]
    fn a_fire_is_the_same_task_however_often_it_is_made() {
        let schedule = every(10, CatchUp::One, at(0));
        let (a, b) = (schedule.fire(at(10)), schedule.fire(at(10)));
        assert_eq!((a.id, a.created_at), (b.id, b.created_at));
        assert_ne!(a.id, schedule.fire(at(20)).id);
        let mut other = schedule.clone();
        other.name = "other".into();
        assert_ne!(a.id, other.fire(at(10)).id);
        assert!(a.validate().is_ok());
    }
}
