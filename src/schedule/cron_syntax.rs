//! Cron as people write it, read into what the `cron` crate runs.
//!
//! - 5 fields, as crontab, Kubernetes CronJobs, Sidekiq-cron and Celery beat take them:
//!   `minute hour day-of-month month day-of-week` (`*/5 * * * *`);
//! - 6 fields with seconds first, 7 with a year last (`0 30 2 * * *`);
//! - `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
//!
//! In every form a day of the week is 0–7 with 0 and 7 Sunday (or `SUN`–`SAT`), months are
//! 1–12 (or `JAN`–`DEC`), and when both the day of the month and the day of the week are
//! restricted a day matching either fires, as in crontab. A range whose end is below its start
//! wraps past the field's end (`22-2` in hours: 22, 23, 0, 1, 2; `FRI-MON`), as Quartz
//! reads it. Numbers are plain digits. The crate numbers weekdays from 1
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
    let text = expression.trim_matches(|c: char| c.is_ascii_whitespace());
    let expanded = match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other if other.starts_with('@') => return Err(fail(format!("unknown shorthand {text:?}"))),
        _ => text,
    };
    let fields: Vec<&str> = expanded.split_ascii_whitespace().collect();
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
                let step = digits(step)
                    .filter(|s| (1..=field.max).contains(s))
                    .ok_or_else(|| {
                        whole(&format!("has a step that is not a number 1–{}", field.max))
                    })?;
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
        // A range ending below its start wraps past the field's end.
        let width = field.max - field.min + 1;
        let span = (high + width - low) % width;
        values.extend(
            (0..=span)
                .step_by(step.unwrap_or(1) as usize)
                .map(|offset| field.min + (low - field.min + offset) % width),
        );
    }
    Ok(Some(values))
}

fn value(field: &Field, text: &str, whole: &str) -> Result<u32, String> {
    let named = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
        .map(|index| field.min + index as u32);
    let number = named.or_else(|| digits(text)).ok_or_else(|| {
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

/// A number written in plain digits (leading zeros allowed; no sign, no space).
fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An ECMA-262 regular expression (JSON Schema's `pattern`) that matches exactly the
/// expressions [`to_crate_expressions`] reads: what the OpenAPI document promises for a
/// schedule's `cron`, checked against the reader in this module's tests.
pub fn pattern() -> String {
    const SPACE: &str = "[\\t\\n\\f\\r ]";
    let shorthands = [
        "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly",
    ]
    .map(caseless)
    .join("|");
    let field = |f: &Field| field_pattern(f);
    let five = [&MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &DAY_OF_WEEK]
        .map(field)
        .join(&format!("{SPACE}+"));
    let (second, year) = (field(&SECOND), field(&YEAR));
    format!(
        "^{SPACE}*(?:@(?:{shorthands})|{five}|{second}{SPACE}+{five}(?:{SPACE}+{year})?){SPACE}*$"
    )
}

/// One field's elements, comma-separated: `*`, `?` (days), a value or a range of values,
/// each with an optional step.
fn field_pattern(field: &Field) -> String {
    let names = field.names.iter().map(|name| caseless(name));
    let value = std::iter::once(format!("0*{}", numbers(field.min, field.max)))
        .chain(names)
        .collect::<Vec<_>>()
        .join("|");
    let any = if field.days { "[*?]" } else { "\\*" };
    let step = format!("0*{}", numbers(1, field.max));
    let element = format!("(?:{any}|(?:{value})(?:-(?:{value}))?)(?:/{step})?");
    format!("(?:{element}(?:,{element})*)")
}

/// `word` in any ASCII case.
fn caseless(word: &str) -> String {
    word.chars()
        .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
        .collect()
}

/// The decimal numbers `low..=high` without leading zeros, as an alternation: blocks of
/// `10^k` numbers sharing a prefix, taken greedily, neighbours merged into a digit class
/// (`0..59`: `[0-9]|[1-5][0-9]`).
fn numbers(low: u32, high: u32) -> String {
    // (prefix, k): the numbers prefix·10^k to prefix·10^k + 10^k - 1.
    let mut blocks: Vec<(u32, u32)> = Vec::new();
    let mut start = low;
    while start <= high {
        let mut k = 0;
        while start.is_multiple_of(10u32.pow(k + 1)) && start + 10u32.pow(k + 1) - 1 <= high {
            k += 1;
        }
        blocks.push((start / 10u32.pow(k), k));
        start += 10u32.pow(k);
    }
    let mut parts = Vec::new();
    let mut rest = blocks.as_slice();
    while let Some(&(first, k)) = rest.first() {
        // Neighbours with the same width and all but the last digit of the prefix.
        let run = rest
            .iter()
            .zip(first..)
            .take_while(|((prefix, width), expected)| {
                *width == k && prefix == expected && prefix / 10 == first / 10 && first > 0
            })
            .count()
            .max(1);
        let last = rest[run - 1].0;
        let tail = "[0-9]".repeat(k as usize);
        parts.push(match (first, k) {
            (0, 0) => "0".to_string(),
            // 0..10^k: every number of up to k digits.
            (0, k) => format!("[0-9]{{1,{k}}}"),
            _ if run == 1 => format!("{first}{tail}"),
            _ => {
                let head = if first >= 10 {
                    (first / 10).to_string()
                } else {
                    String::new()
                };
                format!("{head}[{}-{}]{tail}", first % 10, last % 10)
            }
        });
        rest = &rest[run..];
    }
    format!("(?:{})", parts.join("|"))
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
            ("*/0 * * * *", "step that is not a number 1–59"),
            ("*/60 * * * *", "step that is not a number 1–59"),
            ("+5 * * * *", "has \"+5\", not a number"),
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

    #[test]
    fn numbers_are_digit_classes() {
        assert_eq!(numbers(0, 59), "(?:[0-9]{1,1}|[1-5][0-9])");
        assert_eq!(numbers(1, 12), "(?:[1-9]|1[0-2])");
        assert_eq!(numbers(0, 7), "(?:0|[1-7])");
        assert_eq!(numbers(1970, 2099), "(?:19[7-9][0-9]|20[0-9][0-9])");
    }

    #[test]
    fn a_range_ending_below_its_start_wraps_past_the_fields_end() {
        assert_eq!(crate_form("0 22-2 * * *"), ["0 0 0,1,2,22,23 * * * *"]);
        assert_eq!(crate_form("0 22-2/2 * * *"), ["0 0 0,2,22 * * * *"]);
        // Friday to Monday: 5, 6, 7 (Sunday) and 1, as the crate counts them 6, 7, 1, 2.
        assert_eq!(crate_form("0 0 * * fri-mon"), ["0 0 0 * * 1,2,6,7 *"]);
        assert_eq!(crate_form("0 0 30-2 * *"), ["0 0 0 1,2,30,31 * * *"]);
        assert_eq!(crate_form("0 0 * nov-feb *"), ["0 0 0 * 1,2,11,12 * *"]);
    }

    /// Expressions built from pieces that are each valid somewhere, invalid elsewhere.
    fn expressions() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        // Mostly pieces valid in every field, so that many whole expressions are valid.
        let common = prop::sample::select(vec!["*", "1", "01", "5", "1-5", "*/5", "5/2", "3"]);
        let rare = prop::sample::select(vec![
            "?",
            "0",
            "7",
            "8",
            "12",
            "13",
            "23",
            "24",
            "31",
            "32",
            "59",
            "60",
            "1970",
            "2027",
            "2100",
            "22-2",
            "5-1",
            "*/0",
            "*/59",
            "*/60",
            "/2",
            "-",
            ",",
            "MON",
            "fri",
            "Jan",
            "dec",
            "sun-sat",
            "x",
            "+5",
            "@daily",
            "@HOURLY",
            "@reboot",
            "99999999999",
            "é",
        ]);
        let piece = prop_oneof![6 => common, 1 => rare];
        let pieces = prop::collection::vec(piece, 1..3);
        let field = prop_oneof![
            3 => pieces.clone().prop_map(|p| p.join(",")),
            1 => pieces.prop_map(|p| p.concat()),
        ]
        .boxed();
        let space = prop::sample::select(vec![" ", " ", " ", "  ", "\t", "\n", "\u{a0}"]);
        let count = prop_oneof![4 => 5..8usize, 1 => 1..10usize];
        count
            .prop_flat_map(move |n| prop::collection::vec((field.clone(), space.clone()), n))
            .prop_map(|fields| {
                fields
                    .into_iter()
                    .map(|(field, space)| format!("{field}{space}"))
                    .collect::<String>()
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn the_pattern_matches_exactly_what_is_read(expression in expressions()) {
            static PATTERN: std::sync::LazyLock<regex::Regex> =
                std::sync::LazyLock::new(|| regex::Regex::new(&pattern()).unwrap());
            proptest::prop_assert_eq!(
                PATTERN.is_match(&expression),
                to_crate_expressions(&expression).is_ok(),
                "{:?}: {:?}", expression, to_crate_expressions(&expression)
            );
        }
    }

    #[test]
    fn the_pattern_takes_the_documented_forms() {
        let pattern = regex::Regex::new(&pattern()).unwrap();
        for good in [
            "*/5 * * * *",
            "30 2 * * 1-5",
            "0 30 2 * * *",
            "0 0 12 * * ? 2027",
            "@daily",
            " @Weekly ",
            "0 22-2 * * fri-mon",
            "05 4 1,15 JAN-jun 0",
            "0 0 0 1 1 * 2099",
        ] {
            assert!(pattern.is_match(good), "{good}");
            assert!(to_crate_expressions(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "0 0 12 * * ? 1969",
            "@every 5m",
            "1,,2 * * * *",
        ] {
            assert!(!pattern.is_match(bad), "{bad}");
            assert!(to_crate_expressions(bad).is_err(), "{bad}");
        }
    }
}
