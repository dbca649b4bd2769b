//! Fire times of a cron expression in a time zone, with the daylight-saving rules written
//! down: the expression matches *local* wall-clock times; a local time that does not exist
//! (clocks jump forward) fires once, at the first instant after the gap; a local time that
//! occurs twice (clocks fall back) fires once, at its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed cron expression (in any form [`super::cron_syntax`] reads) and the zone it is
/// read in.
#[derive(Debug, Clone)]
pub struct CronTimes {
    /// The crate's expressions whose fire times together are the user's (two when both day
    /// fields are restricted).
    expressions: Vec<cron::Schedule>,
    zone: Tz,
}

/// Local times are scanned from this long before an instant: enough to see a repeated
/// hour (or a whole gap) from either side of it.
const LOOK_BACK: Duration = Duration::hours(3);

impl CronTimes {
    /// Fails with a readable reason on an expression or zone it cannot read.
    pub fn new(expression: &str, zone: &str) -> Result<Self, String> {
        let expressions = super::cron_syntax::to_crate_expressions(expression)?
            .iter()
            .map(|written| {
                cron::Schedule::from_str(written)
                    .map_err(|e| format!("cron expression {expression:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let zone = Tz::from_str(zone)
            .map_err(|_| format!("unknown time zone {zone:?} (e.g. Europe/Berlin)"))?;
        Ok(Self { expressions, zone })
    }

    /// Fire instants strictly after `after`, earliest first, each once.
    pub fn after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let local_start = after.with_timezone(&self.zone).naive_local() - LOOK_BACK;
        // The crate walks wall-clock fields: give it local time dressed as UTC.
        let local_start = Utc.from_utc_datetime(&local_start);
        let mut last = after;
        merged(
            self.expressions
                .iter()
                .map(|expression| expression.after(&local_start))
                .collect(),
        )
        .map(|local| self.instant_of(local.naive_utc()))
        .filter(move |instant| {
            let fresh = *instant > last;
            if fresh {
                last = *instant;
            }
            fresh
        })
    }
}

/// The times of several ascending sequences, in ascending order (a time in two is given
/// twice; the caller's filter drops the copy).
fn merged<I: Iterator<Item = DateTime<Utc>>>(
    sequences: Vec<I>,
) -> impl Iterator<Item = DateTime<Utc>> {
    let mut sequences: Vec<std::iter::Peekable<I>> =
        sequences.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        let earliest = sequences
            .iter_mut()
            .enumerate()
            .filter_map(|(index, sequence)| sequence.peek().map(|time| (*time, index)))
            .min()?;
        sequences[earliest.1].next()
    })
}

impl CronTimes {
    /// The instant a local time stands for, by the rules above.
    fn instant_of(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(at) => at.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => {
                // In a gap: the first local minute that exists again is where it ends.
                let mut probe = local;
                loop {
                    probe += Duration::minutes(1);
                    if let Some(at) = self.zone.from_local_datetime(&probe).earliest() {
                        let gap_end = at - Duration::seconds(probe.and_utc().timestamp() % 60);
                        return gap_end.with_timezone(&Utc);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_local_time_that_does_not_exist_fires_once_when_the_gap_ends() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let daily = CronTimes::new("0 30 2 * * *", "Europe/Berlin").unwrap();
        let fires: Vec<_> = daily.after(utc("2026-03-27T12:00:00Z")).take(3).collect();
        assert_eq!(
            fires,
            [
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // no 02:30: the gap ends at 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
        // Every 15 minutes through the gap: 02:00-02:45 do not exist, one fire at 03:00.
        let quarter = CronTimes::new("0 */15 * * * *", "Europe/Berlin").unwrap();
        let fires: Vec<_> = quarter.after(utc("2026-03-29T00:40:00Z")).take(3).collect();
        assert_eq!(
            fires,
            [
                utc("2026-03-29T00:45:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T01:15:00Z")
            ]
        );
    }

    #[test]
    fn a_local_time_that_occurs_twice_fires_once() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let daily = CronTimes::new("0 30 2 * * *", "Europe/Berlin").unwrap();
        let fires: Vec<_> = daily.after(utc("2026-10-24T12:00:00Z")).take(2).collect();
        assert_eq!(
            fires,
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // Asked from inside the repeated hour, after its first 02:30: not again.
        let fires: Vec<_> = daily.after(utc("2026-10-25T01:10:00Z")).take(1).collect();
        assert_eq!(fires, [utc("2026-10-26T01:30:00Z")]);
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_a_reason() {
        assert!(
            CronTimes::new("every day", "UTC")
                .unwrap_err()
                .contains("cron expression")
        );
        assert!(
            CronTimes::new("0 * * * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("time zone")
        );
    }

    #[test]
    fn crontab_lines_fire_when_crontab_would() {
        // 2026-12-06 is a Sunday. `1` is Monday, as in crontab.
        let monday = CronTimes::new("0 9 * * 1", "UTC").unwrap();
        let fires: Vec<_> = monday.after(utc("2026-12-06T12:00:00Z")).take(2).collect();
        assert_eq!(
            fires,
            [utc("2026-12-07T09:00:00Z"), utc("2026-12-14T09:00:00Z")]
        );
        // Both days restricted: the 1st and 15th, and every Monday.
        let either = CronTimes::new("0 0 1,15 * 1", "UTC").unwrap();
        let fires: Vec<_> = either.after(utc("2026-12-06T12:00:00Z")).take(5).collect();
        assert_eq!(
            fires,
            [
                utc("2026-12-07T00:00:00Z"),
                utc("2026-12-14T00:00:00Z"),
                utc("2026-12-15T00:00:00Z"),
                utc("2026-12-21T00:00:00Z"),
                utc("2026-12-28T00:00:00Z"),
            ]
        );
        // A day in both sequences fires once (2027-02-01 is a Monday).
        let fires: Vec<_> = either.after(utc("2027-01-30T00:00:00Z")).take(2).collect();
        assert_eq!(
            fires,
            [utc("2027-02-01T00:00:00Z"), utc("2027-02-08T00:00:00Z")]
        );
        let every_five = CronTimes::new("*/5 * * * *", "UTC").unwrap();
        let fires: Vec<_> = every_five
            .after(utc("2026-12-07T10:03:00Z"))
            .take(2)
            .collect();
        assert_eq!(
            fires,
            [utc("2026-12-07T10:05:00Z"), utc("2026-12-07T10:10:00Z")]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Across DST changes of several zones: fire times strictly increase, each matches
        /// the expression in local time or ends a gap, and a period's fires are evenly
        /// spread where the clock does not jump.
        #[test]
        fn fire_times_increase_and_match_local_time(
            start in 1_767_225_600i64..1_830_297_600i64, // 2026-01-01 .. 2028-01-01
            zone in prop::sample::select(vec!["Europe/Berlin", "America/New_York",
                                               "Australia/Sydney", "Asia/Kolkata", "UTC"]),
            minute in 0u32..60,
            hour in 0u32..24,
        ) {
            let times = CronTimes::new(&format!("0 {minute} {hour} * * *"), zone).unwrap();
            let from = DateTime::from_timestamp(start, 0).unwrap();
            let fires: Vec<_> = times.after(from).take(40).collect();
            prop_assert!(fires.first().is_some_and(|f| *f > from));
            let tz: Tz = zone.parse().unwrap();
            for pair in fires.windows(2) {
                prop_assert!(pair[0] < pair[1]);
                // Daily: between 22 and 26 hours apart whatever the clocks do.
                let gap = (pair[1] - pair[0]).num_hours();
                prop_assert!((22..=26).contains(&gap), "{pair:?}");
            }
            for fire in &fires {
                let local = fire.with_timezone(&tz).naive_local();
                let exact = local.format("%H:%M").to_string() == format!("{hour:02}:{minute:02}");
                // Otherwise it ends a gap: a minute before it, local time did not exist.
                let ended_gap = tz.from_local_datetime(&(local - Duration::minutes(1))).earliest()
                    .is_none_or(|before| before.with_timezone(&Utc) != *fire - Duration::minutes(1));
                prop_assert!(exact || ended_gap, "{fire} is {local} in {zone}");
            }
        }
    }
}
