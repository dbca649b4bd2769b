//! Periodic schedules: a named task fired every N seconds, by whichever worker takes the
//! schedule's row first (`FOR UPDATE SKIP LOCKED`: no leader election). Each fire is a task
//! whose id (UUIDv5 of the name and fire time) and creation time derive from the fire, so a
//! fire published twice — two workers, a retry after a failed commit — is one task:
//! JetStream drops the copy within its duplicate window, and the row is keyed by both.
//! On NATS ≥ 2.12 the server's own message schedules say when ([`alarm`]); on older
//! servers every worker's ticker looks five times a second.

pub mod alarm;
pub mod cron_syntax;
mod cron_times;
mod store;
mod ticker;

pub use cron_times::CronTimes;

pub use ticker::run as run_ticker;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::task::{DEFAULT_MAX_ATTEMPTS, TaskEnvelope};

/// What happens to a fire while the previous fire's task has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is dropped.
    Skip,
    /// The fire runs beside it.
    Allow,
}

/// Which fires missed while no worker ran are made up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None: the schedule resumes at its next fire time.
    None,
    /// The latest missed fire only.
    One,
    /// Every missed fire (at most [`MAX_CATCH_UP`]).
    All,
}

/// Longest interval of an `every` schedule: a year.
pub const MAX_EVERY_SECS: u32 = 366 * 86_400;
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
    /// Fires every this many seconds, on a grid from the Unix epoch; or
    pub every_secs: Option<u32>,
    /// fires at the local times a cron expression names in `time_zone` (5 fields as
    /// crontab, 6–7 with seconds first: [`cron_syntax`]).
    pub cron: Option<String>,
    pub time_zone: String,
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
    /// The first fire time after `now`.
    pub fn first_after(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, DefinitionError> {
        match (&self.cron, self.every_secs) {
            (Some(expression), _) => CronTimes::new(expression, &self.time_zone)
                .map_err(DefinitionError::Invalid)?
                .after(now)
                .next()
                .ok_or_else(|| {
                    DefinitionError::NeverFires(format!(
                        "cron expression {expression:?} names no time after now"
                    ))
                }),
            (None, Some(secs)) => Ok(next_aligned(now, secs)),
            (None, None) => Err(DefinitionError::Invalid(
                "a schedule needs an interval or a cron expression".into(),
            )),
        }
    }

    /// The fires due at `now` and the fire time after them. Missed fires (late by more
    /// than [`ON_TIME`]) are made up for as `catch_up` says (at most [`MAX_CATCH_UP`], from
    /// the last day); the next fire is the first fire time after `now`.
    pub fn due(&self, now: DateTime<Utc>) -> Result<(Vec<DateTime<Utc>>, DateTime<Utc>), String> {
        if self.next_fire > now {
            return Ok((Vec::new(), self.next_fire));
        }
        let (missed, next) = match (&self.cron, self.every_secs) {
            (Some(expression), _) => {
                let times = CronTimes::new(expression, &self.time_zone)?;
                let oldest = now - Duration::days(1);
                let mut missed = std::collections::VecDeque::new();
                if self.next_fire >= oldest {
                    missed.push_back(self.next_fire);
                }
                let mut next = None;
                for at in times.after(self.next_fire.max(oldest)) {
                    if at > now {
                        next = Some(at);
                        break;
                    }
                    if missed.len() as i64 == MAX_CATCH_UP {
                        missed.pop_front();
                    }
                    missed.push_back(at);
                }
                let next = next.ok_or_else(|| format!("{expression:?} never fires again"))?;
                (Vec::from(missed), next)
            }
            (None, Some(secs)) => {
                let every = Duration::seconds(i64::from(secs.max(1)));
                // Arithmetic, not stepping: after a month down, a 1 s schedule has millions
                // of fires.
                let behind = (now - self.next_fire).num_milliseconds() / every.num_milliseconds();
                let latest = self.next_fire + every * i32::try_from(behind).unwrap_or(i32::MAX);
                let count = (behind + 1).min(MAX_CATCH_UP);
                let missed = (0..count)
                    .rev()
                    .map(|back| latest - every * i32::try_from(back).unwrap_or(0))
                    .collect();
                (missed, latest + every)
            }
            (None, None) => return Err("a schedule needs an interval or a cron expression".into()),
        };
        let latest = missed.last().copied();
        let fires = match self.catch_up {
            CatchUp::All => missed,
            CatchUp::One => latest.into_iter().collect(),
            CatchUp::None => latest
                .filter(|at| now - *at <= ON_TIME)
                .into_iter()
                .collect(),
        };
        Ok((fires, next))
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

/// Why a definition cannot become a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// It breaks a rule: a bad name, both or neither of an interval and an expression, an
    /// unreadable expression or zone, a fire that would not be a valid task.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but no fire time is left after now (`0 0 30 2 *`, a year gone by).
    #[error("{0}")]
    NeverFires(String),
}

/// A schedule as an operator defines it (CLI flags, `POST /v1/schedules`): exactly one of
/// `every_secs` and `cron`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    pub agent_type: String,
    #[serde(default)]
    pub data: Value,
    // Integers, or JSON numbers with no fraction (`60.0`), as JSON Schema's `integer`.
    #[serde(default, deserialize_with = "crate::task::integral::de_option_u8")]
    pub priority: Option<u8>,
    #[serde(default, deserialize_with = "crate::task::integral::de_option_u32")]
    pub every_secs: Option<u32>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub overlap: Option<Overlap>,
    #[serde(default)]
    pub catch_up: Option<CatchUp>,
}

impl Definition {
    /// The schedule this defines, first firing after `now`.
    ///
    /// Fails with a reason fit for the operator ([`DefinitionError`]).
    pub fn schedule(self, now: DateTime<Utc>) -> Result<Schedule, DefinitionError> {
        let invalid = DefinitionError::Invalid;
        if !valid_name(&self.name) {
            return Err(invalid(format!(
                "schedule name {:?} must be 1-64 letters, digits, '_' or '-'",
                self.name
            )));
        }
        match (&self.cron, self.every_secs) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "give either every_secs or cron, not both or neither".into(),
                ));
            }
            (None, Some(secs)) if !(1..=MAX_EVERY_SECS).contains(&secs) => {
                return Err(invalid(format!(
                    "every_secs must be 1 to {MAX_EVERY_SECS} (a year)"
                )));
            }
            _ => {}
        }
        if self.cron.is_none() && self.time_zone.is_some() {
            return Err(invalid("time_zone goes with cron".into()));
        }
        let mut schedule = Schedule {
            name: self.name,
            agent_type: self.agent_type,
            data: self.data,
            priority: self.priority.unwrap_or(crate::task::DEFAULT_PRIORITY),
            every_secs: self.every_secs,
            cron: self.cron,
            time_zone: self.time_zone.unwrap_or_else(|| "UTC".into()),
            overlap: self.overlap.unwrap_or(Overlap::Allow),
            catch_up: self.catch_up.unwrap_or(CatchUp::One),
            paused: false,
            next_fire: now,
            last_fire: None,
            last_task: None,
        };
        schedule.next_fire = schedule.first_after(now)?;
        // Each fire must be a valid task: checked once here rather than at every fire.
        schedule
            .fire(schedule.next_fire)
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(schedule)
    }
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
            every_secs: Some(secs),
            cron: None,
            time_zone: "UTC".into(),
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

    fn define(body: serde_json::Value) -> Result<Schedule, DefinitionError> {
        serde_json::from_value::<Definition>(body)
            .unwrap()
            .schedule(at(0))
    }

    #[test]
    fn a_definition_is_invalid_or_never_fires_or_a_schedule() {
        let defined = define(serde_json::json!({
            "name": "n", "agent_type": "echo", "every_secs": 60.0, "priority": 7.0
        }))
        .unwrap();
        assert_eq!((defined.every_secs, defined.priority), (Some(60), 7));
        for never in ["0 0 30 2 *", "0 0 0 1 1 * 1999"] {
            let error =
                define(serde_json::json!({"name": "n", "agent_type": "echo", "cron": never}));
            assert!(
                matches!(error, Err(DefinitionError::NeverFires(_))),
                "{never}: {error:?}"
            );
        }
        for invalid in [
            serde_json::json!({"name": "n", "agent_type": "echo", "cron": "0 24 * * *"}),
            serde_json::json!({"name": "n", "agent_type": "echo", "cron": "* * * * *", "time_zone": "Mars/Olympus"}),
            serde_json::json!({"name": "n", "agent_type": "echo"}),
            serde_json::json!({"name": "n", "agent_type": "echo", "every_secs": 1, "cron": "@daily"}),
            serde_json::json!({"name": "n", "agent_type": "echo", "every_secs": 1, "data": "a\u{0}"}),
        ] {
            let error = define(invalid.clone());
            assert!(
                matches!(error, Err(DefinitionError::Invalid(_))),
                "{invalid}: {error:?}"
            );
        }
    }

    #[test]
    fn an_on_time_tick_fires_once_and_moves_to_the_next_period() {
        for catch_up in [CatchUp::None, CatchUp::One, CatchUp::All] {
            let (fires, next) = every(10, catch_up, at(0))
                .due(at(0) + Duration::milliseconds(150))
                .unwrap();
            assert_eq!((fires, next), (vec![at(0)], at(10)), "{catch_up:?}");
        }
        let (fires, next) = every(10, CatchUp::One, at(10)).due(at(5)).unwrap();
        assert_eq!((fires, next), (vec![], at(10)), "not due yet");
    }

    #[test]
    fn missed_fires_are_made_up_for_as_configured() {
        // Down from 0 to 25 s on a 10 s schedule: fires at 0, 10, 20 were missed.
        let now = at(25);
        assert_eq!(
            every(10, CatchUp::None, at(0)).due(now),
            Ok((vec![], at(30)))
        );
        assert_eq!(
            every(10, CatchUp::One, at(0)).due(now),
            Ok((vec![at(20)], at(30)))
        );
        assert_eq!(
            every(10, CatchUp::All, at(0)).due(now),
            Ok((vec![at(0), at(10), at(20)], at(30)))
        );
        // A month down on a 1 s schedule: bounded, and quick.
        let (fires, next) = every(1, CatchUp::All, at(0))
            .due(at(30 * 86_400) + Duration::milliseconds(1))
            .unwrap();
        assert_eq!(fires.len() as i64, MAX_CATCH_UP);
        assert_eq!(fires.last(), Some(&at(30 * 86_400)));
        assert_eq!(next, at(30 * 86_400 + 1));
    }

    #[test]
    fn a_cron_schedule_makes_up_for_missed_local_times() {
        // Every 15 minutes in Berlin, down from 00:40 to 01:20 UTC on the spring-forward
        // night: 00:45 (01:45 CET), 01:00 (03:00 CEST, where the gap ends) and 01:15 missed.
        let mut schedule = every(
            1,
            CatchUp::All,
            DateTime::parse_from_rfc3339("2026-03-29T00:45:00Z")
                .unwrap()
                .into(),
        );
        schedule.every_secs = None;
        schedule.cron = Some("0 */15 * * * *".into());
        schedule.time_zone = "Europe/Berlin".into();
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-03-29T01:20:00Z")
            .unwrap()
            .into();
        let (fires, next) = schedule.due(now).unwrap();
        let utc = |t: &str| -> DateTime<Utc> { DateTime::parse_from_rfc3339(t).unwrap().into() };
        assert_eq!(
            fires,
            [
                utc("2026-03-29T00:45:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T01:15:00Z")
            ]
        );
        assert_eq!(next, utc("2026-03-29T01:30:00Z"));
        schedule.catch_up = CatchUp::One;
        assert_eq!(schedule.due(now).unwrap().0, [utc("2026-03-29T01:15:00Z")]);
        schedule.catch_up = CatchUp::None;
        assert!(schedule.due(now).unwrap().0.is_empty());
        assert_eq!(schedule.first_after(now), Ok(utc("2026-03-29T01:30:00Z")));
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
