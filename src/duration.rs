//! The one way the fleet reads a length of time, wherever one is written — command-line
//! flags, settings, API query parameters: a number and a unit (`500ms`, `30s`, `5m`, `2h`,
//! `7d`), several in a row as Go and systemd write them (`1h30m`), or a bare number in the
//! setting's own unit (seconds unless said otherwise: `1.5`). Where an instant is meant it is
//! an RFC 3339 time, or an age back from now in the same grammar (`--since 2h`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What a duration or instant may look like, for error messages.
pub const FORM: &str = "a number and a unit (500ms, 30s, 5m, 2h, 7d; combined as 1h30m)";

/// A length of time or an instant that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration: expected {FORM}")]
    Malformed(String),
    #[error("{text:?}: unknown unit {unit:?}; use ms, s, m, h or d")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is too long a duration")]
    TooLong(String),
    #[error(
        "{0:?} is neither an RFC 3339 time (2026-12-07T09:30:00Z) nor an age such as 30m, 2h or 7d"
    )]
    NotAnInstant(String),
}

/// The unit a bare number is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareUnit {
    Seconds,
    Millis,
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    })
}

/// Reads `text`; a bare number is in seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_bare_in(text, BareUnit::Seconds)
}

/// Reads `text`; a bare number is in `bare` units.
pub fn parse_bare_in(text: &str, bare: BareUnit) -> Result<Duration, DurationError> {
    // Exact: no spaces inside or around (the API's schema says so; settings trim first).
    let trimmed = text;
    let malformed = || DurationError::Malformed(text.to_string());
    if trimmed.is_empty() {
        return Err(malformed());
    }
    let number_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len())
    };
    let mut rest = trimmed;
    let mut seconds = 0.0f64;
    let mut parts = 0;
    while !rest.is_empty() {
        let end = number_end(rest);
        let (number, after) = rest.split_at(end);
        // At most nine digits on either side of the point (nanoseconds; 31 years of
        // seconds), as the API's schema says.
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        if !(1..=9).contains(&whole.len()) || !(1..=9).contains(&fraction.len()) {
            return Err(malformed());
        }
        let value: f64 = number.parse().map_err(|_| malformed())?;
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = if unit.is_empty() {
            // A bare number stands alone.
            if parts > 0 || !next.is_empty() {
                return Err(malformed());
            }
            match bare {
                BareUnit::Seconds => 1.0,
                BareUnit::Millis => 0.001,
            }
        } else {
            unit_seconds(unit).ok_or_else(|| DurationError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            })?
        };
        seconds += value * scale;
        parts += 1;
        rest = next;
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| DurationError::TooLong(text.to_string()))
}

/// Whole seconds of `text` (a bare number is seconds), for settings kept in seconds.
pub fn whole_seconds(text: &str) -> Result<u64, DurationError> {
    let duration = parse(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(DurationError::Malformed(format!(
            "{text} (whole seconds only)"
        )));
    }
    Ok(duration.as_secs())
}

/// Whole milliseconds of `text` (a bare number is milliseconds), for settings kept in ms.
pub fn whole_millis(text: &str) -> Result<u64, DurationError> {
    let duration = parse_bare_in(text, BareUnit::Millis)?;
    u64::try_from(duration.as_millis()).map_err(|_| DurationError::TooLong(text.to_string()))
}

/// The instant `text` names: an RFC 3339 time, or an age back from `now` (`2h`: two hours
/// ago).
pub fn instant_or_age(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, DurationError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = parse(text).map_err(|_| DurationError::NotAnInstant(text.to_string()))?;
    // An age past the earliest time kept means "since ever".
    Ok(chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .map_or_else(earliest, |at| at.max(earliest())))
}

/// The earliest instant an age reaches: 1 January 4000 BC, within what PostgreSQL stores
/// (from 4713 BC) and long before any task, so "since ever" is a time the database takes.
pub fn earliest() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(-3999, 1, 1)
        .expect("a valid date")
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// [`instant_or_age`] from the clock's now, for command-line flags.
pub fn instant_or_age_from_now(text: &str) -> Result<DateTime<Utc>, DurationError> {
    instant_or_age(text, Utc::now())
}

/// Serde, for query parameters: an optional instant as [`instant_or_age`] reads it; empty
/// or absent is `None` (a form left blank).
pub fn deserialize_instant_or_age<'de, D>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    match text.as_deref() {
        Some("") => Ok(None),
        _ => instant_or_age_in_body(text),
    }
}

/// Serde, for JSON bodies: an optional instant as [`instant_or_age`] reads it; `null` or
/// absent is `None`, an empty string is refused.
pub fn deserialize_instant_or_age_strictly<'de, D>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    instant_or_age_in_body(serde::Deserialize::deserialize(deserializer)?)
}

fn instant_or_age_in_body<E: serde::de::Error>(
    text: Option<String>,
) -> Result<Option<DateTime<Utc>>, E> {
    match text.as_deref() {
        None => Ok(None),
        Some(text) => instant_or_age(text, Utc::now())
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_combination_reads_as_people_write_it() {
        let s = Duration::from_secs;
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", s(30)),
            ("5m", s(300)),
            ("2h", s(7200)),
            ("7d", s(7 * 86_400)),
            ("1h30m", s(5400)),
            ("1d12h", s(36 * 3600)),
            ("1.5", Duration::from_millis(1500)),
            ("1.5h", s(5400)),
            ("0", s(0)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_refused_naming_the_grammar() {
        for bad in [
            "", " 10s", "s", "-1s", "NaNs", "1e400", "1.s", ".5s", "5 m", "10x", "1h 30", "30s5",
        ] {
            let error = parse(bad).expect_err(bad).to_string();
            assert!(
                error.contains("ms, s") || error.contains("30s, 5m"),
                "{bad:?}: {error}"
            );
        }
        assert!(parse("1000000000s").is_err(), "ten digits");
        assert_eq!(
            parse("999999999d"),
            Ok(Duration::from_secs(999_999_999 * 86_400))
        );
    }

    #[test]
    fn settings_read_bare_numbers_in_their_own_unit() {
        assert_eq!(whole_seconds("30"), Ok(30));
        assert_eq!(whole_seconds("5m"), Ok(300));
        assert!(whole_seconds("1500ms").is_err(), "not whole seconds");
        assert_eq!(whole_millis("250"), Ok(250));
        assert_eq!(whole_millis("2s"), Ok(2000));
    }

    #[test]
    fn instants_are_rfc_3339_or_an_age_back_from_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            instant_or_age("2h", now).unwrap(),
            now - chrono::Duration::hours(2)
        );
        assert_eq!(
            instant_or_age("7d", now).unwrap(),
            now - chrono::Duration::days(7)
        );
        assert_eq!(
            instant_or_age("2026-12-01T00:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-30T23:00:00+00:00"
        );
        // Past what chrono counts, or only past what PostgreSQL stores: since ever.
        for far in ["999999999d", "946502521h"] {
            assert_eq!(instant_or_age(far, now).unwrap(), earliest(), "{far}");
        }
        assert_eq!(earliest().to_rfc3339(), "-3999-01-01T00:00:00+00:00");
        let error = instant_or_age("yesterday", now).unwrap_err().to_string();
        assert!(
            error.contains("RFC 3339") && error.contains("2h"),
            "{error}"
        );
    }
}
