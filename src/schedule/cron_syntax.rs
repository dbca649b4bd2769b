//! Cron as people write it, read into what the `cron` crate runs.
//!
//! - 5 fields, as crontab, Kubernetes CronJobs, Sidekiq-cron and Celery beat take them:
//!   `minute hour day-of-month month day-of-week` (`*/5 * * * *`);
//! - 6 fields with seconds first, 7 with a year last (`0 30 2 * * *`);
//! - `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
//!
//! In every form a day of the week is 0–7 with 0 and 7 Sunday (or `SUN`–`SAT`), months are
//! 1–12 (or `JAN`–`DEC`), and when both the day of the month and the day of the week are
//! restricted a day matching either fires, as in crontab. The crate numbers weekdays from 1
//! (Sunday) and requires both days to match: this module translates, so the crate never sees
//! the user's text. An error names the field at fault and the forms expected.

use std::collections::BTreeSet;

/// The forms an expression may take, for error messages.
pub const FORMS: &str = "5 fields (minute hour day-of-month month day-of-week, e.g. \
     \"*/5 * * * *\"), 6 with seconds first, 7 with a year last, or @hourly, @daily, @weekly, \
     @monthly, @yearly";

/// One field: its name, range and the names its values may go by (the first name is `min`).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// `?` is allowed (days only: "no restriction").
    days: bool,
}

const SECOND: Field = plain("second", 0, 59);
const MINUTE: Field = plain("minute", 0, 59);
const HOUR: Field = plain("hour", 0, 23);
const DAY_OF_MONTH: Field = Field {
    days: true,
    ..plain("day-of-month", 1, 31)
};
const MONTH: Field = Field {
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    ..plain("month", 1, 12)
};
const DAY_OF_WEEK: Field = Field {
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    days: true,
    ..plain("day-of-week", 0, 7)
};
const YEAR: Field = plain("year", 1970, 2099);

const fn plain(name: &'static str, min: u32, max: u32) -> Field {
    Field {
        name,
        min,
        max,
        names: &[],
        days: false,
    }
}

/// A field read: `None` when it restricts nothing (`*` or `?`), else the values it names.
type Values = Option<BTreeSet<u32>>;

/// Reads `expression` into the `cron` crate's 7-field expressions whose fire times together
/// are the expression's (two when both days are restricted: one per day field).
pub fn to_crate_expressions(expression: &str) -> Result<Vec<String>, String> {
    let fail = |why: String| format!("cron expression {expression:?}: {why}; expected {FORMS}");
    let text = expression.trim();
    let expanded = match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other if other.starts_with('@') => return Err(fail(format!("unknown shorthand {text:?}"))),
        _ => text,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let (second, rest, year) = match fields.len() {
        5 => ("0", &fields[..], None),
        6 => (fields[0], &fields[1..], None),
        7 => (fields[0], &fields[1..6], Some(fields[6])),
        n => return Err(fail(format!("it has {n} fields"))),
    };
    let read = |field: &Field, text: &str| read_field(field, text).map_err(fail);
    let second = read(&SECOND, second)?;
    let minute = read(&MINUTE, rest[0])?;
    let hour = read(&HOUR, rest[1])?;
    let day_of_month = read(&DAY_OF_MONTH, rest[2])?;
    let month = read(&MONTH, rest[3])?;
    let day_of_week = read(&DAY_OF_WEEK, rest[4])?.map(|days| {
        // 0 and 7 are Sunday; the crate counts Sunday as 1.
        days.into_iter()
            .map(|day| day % 7 + 1)
            .collect::<BTreeSet<_>>()
    });
    let year = year.map(|text| read(&YEAR, text)).transpose()?.flatten();
    let render = |dom: &Values, dow: &Values| {
        [&second, &minute, &hour, dom, &month, dow, &year]
            .iter()
            .map(|values| list(values))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(match (&day_of_month, &day_of_week) {
        (Some(_), Some(_)) => vec![render(&day_of_month, &None), render(&None, &day_of_week)],
        _ => vec![render(&day_of_month, &day_of_week)],
    })
}

fn list(values: &Values) -> String {
    match values {
        None => "*".into(),
        Some(values) => values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn read_field(field: &Field, text: &str) -> Result<Values, String> {
    let whole = |why: &str| format!("the {} field {text:?} {why}", field.name);
    if text == "*" || (field.days && text == "?") {
        return Ok(None);
    }
    let mut values = BTreeSet::new();
    for element in text.split(',') {
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| whole("has a step that is not a positive number"))?;
                (range, Some(step))
            }
            None => (element, None),
        };
        let (low, high) = if range == "*" || (field.days && range == "?") {
            (field.min, field.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(field, low, text)?, value(field, high, text)?)
        } else {
            let low = value(field, range, text)?;
            // `5/15`: from 5 to the end, every 15.
            (low, if step.is_some() { field.max } else { low })
        };
        if low > high {
            return Err(whole(&format!("has a range from {low} down to {high}")));
        }
        values.extend((low..=high).step_by(step.unwrap_or(1) as usize));
    }
    Ok(Some(values))
}

fn value(field: &Field, text: &str, whole: &str) -> Result<u32, String> {
    let named = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
        .map(|index| field.min + index as u32);
    let number = named.or_else(|| text.parse().ok()).ok_or_else(|| {
        let names = match field.names {
            [] => String::new(),
            names => format!(" or {}–{}", names[0], names[names.len() - 1]),
        };
        format!(
            "the {} field {whole:?} has {text:?}, not a number{names}",
            field.name
        )
    })?;
    if !(field.min..=field.max).contains(&number) {
        return Err(format!(
            "the {} field {whole:?} has {number}, out of range {}–{}",
            field.name, field.min, field.max
        ));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_form(expression: &str) -> Vec<String> {
        to_crate_expressions(expression).unwrap()
    }

    #[test]
    fn five_fields_are_crontab_with_seconds_at_zero() {
        assert_eq!(
            crate_form("*/5 * * * *"),
            ["0 0,5,10,15,20,25,30,35,40,45,50,55 * * * * *"]
        );
        assert_eq!(crate_form("30 2 * * *"), ["0 30 2 * * * *"]);
        // Weekdays as crontab numbers them (1 = Monday), given to the crate from 1 = Sunday.
        assert_eq!(crate_form("0 9 * * 1-5"), ["0 0 9 * * 2,3,4,5,6 *"]);
        assert_eq!(crate_form("0 9 * * 0"), crate_form("0 9 * * 7"));
        assert_eq!(crate_form("0 9 * * mon-fri"), crate_form("0 9 * * 1-5"));
        assert_eq!(crate_form("0 0 1 jan *"), ["0 0 0 1 1 * *"]);
    }

    #[test]
    fn six_and_seven_fields_have_seconds_first_and_a_year_last() {
        assert_eq!(crate_form("0 30 2 * * *"), ["0 30 2 * * * *"]);
        assert_eq!(crate_form("*/20 * * * * *"), ["0,20,40 * * * * * *"]);
        assert_eq!(crate_form("0 0 12 * * ? 2027"), ["0 0 12 * * * 2027"]);
    }

    #[test]
    fn shorthands_are_their_crontab_lines() {
        assert_eq!(crate_form("@hourly"), crate_form("0 * * * *"));
        assert_eq!(crate_form("@daily"), crate_form("0 0 * * *"));
        assert_eq!(crate_form("@midnight"), crate_form("0 0 * * *"));
        assert_eq!(crate_form("@weekly"), crate_form("0 0 * * 0"));
        assert_eq!(crate_form("@monthly"), crate_form("0 0 1 * *"));
        assert_eq!(crate_form("@yearly"), crate_form("@annually"));
    }

    #[test]
    fn both_days_restricted_fire_on_either_as_in_crontab() {
        assert_eq!(
            crate_form("0 0 1,15 * 1"),
            ["0 0 0 1,15 * * *", "0 0 0 * * 2 *"]
        );
    }

    #[test]
    fn errors_name_the_field_at_fault_and_the_forms_expected() {
        for (expression, words) in [
            (
                "0 24 * * *",
                "the hour field \"24\" has 24, out of range 0–23",
            ),
            (
                "61 * * * *",
                "the minute field \"61\" has 61, out of range 0–59",
            ),
            (
                "* * * * 8",
                "day-of-week field \"8\" has 8, out of range 0–7",
            ),
            (
                "* * * foo *",
                "the month field \"foo\" has \"foo\", not a number or JAN–DEC",
            ),
            ("*/0 * * * *", "step that is not a positive number"),
            ("5-1 * * * *", "range from 5 down to 1"),
            ("* * * *", "it has 4 fields"),
            ("@reboot", "unknown shorthand"),
            ("", "it has 0 fields"),
            ("? * * * *", "the minute field \"?\""),
        ] {
            let error = to_crate_expressions(expression).unwrap_err();
            assert!(error.contains(words), "{expression:?}: {error}");
            assert!(error.contains("5 fields (minute hour"), "{error}");
        }
    }

    #[test]
    fn every_form_it_writes_the_crate_reads() {
        use std::str::FromStr;
        for expression in [
            "*/5 * * * *",
            "0 9 * * 1-5",
            "0 0 1,15 * 1",
            "@yearly",
            "0 0 12 * * ? 2027",
            "15/20 * * * * *",
        ] {
            for written in crate_form(expression) {
                cron::Schedule::from_str(&written)
                    .unwrap_or_else(|e| panic!("{expression:?} → {written:?}: {e}"));
            }
        }
    }
}
