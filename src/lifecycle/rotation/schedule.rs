//! Rotation schedules: when the next rotation window of a secret opens.
//!
//! Secrets Manager's `RotationRules` are read exactly as AWS documents them, in UTC:
//!
//! - `AutomaticallyAfterDays: N` (1 to 1000) is `rate(N days)`.
//! - `rate(N days)`: the window opens at midnight UTC, N days after the day of the last
//!   rotation; by default it closes at the end of that day.
//! - `rate(N hours)` (4 to 24): windows open every N hours from midnight UTC (00:00, 00:00 + N,
//!   ...; the count restarts each day); by default a window lasts one hour.
//! - `cron(minutes hours day-of-month month day-of-week year)`: AWS's six-field form. Fields
//!   take `*`, single values, `a-b` ranges, `a/s` or `a-b/s` steps and comma lists; months
//!   `1-12` or `JAN-DEC`, days of week `1-7` or `SUN-SAT` (1 is Sunday), years 1970-2199.
//!   Exactly one of day-of-month and day-of-week is `?`. Day-of-month also takes `L` (last
//!   day), `LW` (last weekday) and `nW` (the weekday nearest day n, within the month);
//!   day-of-week takes `nL` (the last day n of the month) and `n#k` (the k-th day n). By
//!   default a window lasts one hour when the expression names hours, else to the end of the
//!   day.
//! - `Duration: "Nh"` (1 to 24) sets the window's length; like AWS, a window may not reach into
//!   the next UTC day or the next window.
//!
//! arca rotates when a window opens (AWS picks a moment inside it; starting at the opening is
//! deterministic and testable). [`next_rotation`] returns that moment: the scheduler
//! persists it, so a window missed while arca was down is caught up at the next start, even
//! after it closed (the brief's `checkMissedRotations`), rather than skipped.

use time::{Date, Month, OffsetDateTime, Weekday};

use crate::lifecycle::{RotationRules, SecretsError};

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;
const FIRST_YEAR: i32 = 1970;
const LAST_YEAR: i32 = 2199;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Schedule {
    Days(u64),
    Hours(u64),
    Cron(Box<Cron>),
}

/// The start of the next rotation window strictly after `after` (unix seconds), or `None`
/// when `rules` set no schedule.
///
/// # Errors
/// [`SecretsError::InvalidParameter`] for both `AutomaticallyAfterDays` and
/// `ScheduleExpression`, an expression or duration that does not parse or is out of range, or a
/// window that would reach into the next day or the next window.
pub fn next_rotation(rules: &RotationRules, after: u64) -> Result<Option<u64>, SecretsError> {
    let Some(schedule) = parse_rules(rules)? else {
        return Ok(None);
    };
    Ok(match schedule {
        Schedule::Days(days) => Some((after / DAY + days) * DAY),
        Schedule::Hours(hours) => Some(next_hourly(hours, after)),
        Schedule::Cron(cron) => cron.next_after(after),
    })
}

/// Checks `rules` without computing a time: what `RotateSecret` does before saving them.
///
/// # Errors
/// As [`next_rotation`].
pub fn validate_rules(rules: &RotationRules) -> Result<(), SecretsError> {
    parse_rules(rules).map(|_| ())
}

fn invalid(message: impl Into<String>) -> SecretsError {
    SecretsError::InvalidParameter(message.into())
}

fn parse_rules(rules: &RotationRules) -> Result<Option<Schedule>, SecretsError> {
    let schedule = match (rules.automatically_after_days, &rules.schedule_expression) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "You can't specify both AutomaticallyAfterDays and ScheduleExpression.",
            ));
        }
        (Some(days), None) => {
            if !(1..=1000).contains(&days) {
                return Err(invalid(
                    "AutomaticallyAfterDays must be between 1 and 1000.",
                ));
            }
            Schedule::Days(u64::from(days))
        }
        (None, Some(expression)) => parse_expression(expression.trim())?,
        (None, None) => {
            if rules.duration.is_some() {
                return Err(invalid(
                    "Duration needs a ScheduleExpression or AutomaticallyAfterDays.",
                ));
            }
            return Ok(None);
        }
    };
    if let Some(duration) = &rules.duration {
        let hours = parse_duration(duration)?;
        check_window(&schedule, hours)?;
    }
    Ok(Some(schedule))
}

fn parse_expression(expression: &str) -> Result<Schedule, SecretsError> {
    if let Some(inner) = expression
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        let mut words = inner.split_whitespace();
        let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(invalid(format!(
                "Invalid rate expression {expression:?}: use rate(N days) or rate(N hours)."
            )));
        };
        let count: u64 = count
            .parse()
            .map_err(|_| invalid(format!("Invalid rate expression {expression:?}.")))?;
        return match unit {
            "day" | "days" if (1..=1000).contains(&count) => Ok(Schedule::Days(count)),
            "hour" | "hours" if (4..=24).contains(&count) => Ok(Schedule::Hours(count)),
            "day" | "days" => Err(invalid("A rate in days must be between 1 and 1000 days.")),
            "hour" | "hours" => Err(invalid("A rate in hours must be between 4 and 24 hours.")),
            _ => Err(invalid(format!(
                "Invalid rate expression {expression:?}: the unit is days or hours."
            ))),
        };
    }
    if let Some(inner) = expression
        .strip_prefix("cron(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return Ok(Schedule::Cron(Box::new(Cron::parse(inner)?)));
    }
    Err(invalid(format!(
        "Invalid ScheduleExpression {expression:?}: use rate(...) or cron(...)."
    )))
}

fn parse_duration(text: &str) -> Result<u64, SecretsError> {
    text.strip_suffix('h')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=24).contains(n))
        .ok_or_else(|| invalid("Duration must be between 1h and 24h, for example 3h."))
}

/// A window of `hours` may not run into the next window or the next UTC day.
fn check_window(schedule: &Schedule, hours: u64) -> Result<(), SecretsError> {
    let too_long = || {
        invalid(
            "The rotation window can't extend into the next rotation window or the next UTC day.",
        )
    };
    match schedule {
        Schedule::Days(_) => Ok(()),
        Schedule::Hours(every) => {
            if hours > *every {
                return Err(too_long());
            }
            // The last window of the day opens at the largest multiple of `every` below 24.
            let last_start = (23 / every) * every;
            if last_start + hours > 24 {
                return Err(too_long());
            }
            Ok(())
        }
        Schedule::Cron(cron) => {
            let starts: Vec<u64> = cron.minutes_of_day().collect();
            let window = hours * 60;
            if starts.iter().any(|&start| start + window > 24 * 60) {
                return Err(too_long());
            }
            if starts.windows(2).any(|pair| pair[1] - pair[0] < window) {
                return Err(too_long());
            }
            Ok(())
        }
    }
}

fn next_hourly(every: u64, after: u64) -> u64 {
    let day = after / DAY;
    for candidate_day in [day, day + 1] {
        let mut offset = 0;
        while offset < 24 {
            let start = candidate_day * DAY + offset * HOUR;
            if start > after {
                return start;
            }
            offset += every;
        }
    }
    // Unreachable: the next day's midnight is always later than `after`.
    (day + 1) * DAY
}

/// Day-of-month rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Any,
    Days(Vec<bool>),
    Last,
    LastWeekday,
    NearestWeekday(u8),
}

/// Day-of-week rule (1 = Sunday ... 7 = Saturday).
#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    Days(Vec<bool>),
    Last(u8),
    Nth(u8, u8),
}

/// An AWS six-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    day_of_month: DayOfMonth,
    months: Vec<bool>,
    day_of_week: DayOfWeek,
    years: Vec<bool>,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    fn parse(text: &str) -> Result<Self, SecretsError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minutes, hours, dom, months, dow, years] = fields[..] else {
            return Err(invalid(format!(
                "Invalid cron expression cron({text}): it needs six fields (minutes hours \
                 day-of-month month day-of-week year)."
            )));
        };
        let bad = |field: &str, why: &str| {
            invalid(format!(
                "Invalid cron expression cron({text}): {field}: {why}"
            ))
        };
        let minutes = parse_set(minutes, 0, 59, &[]).map_err(|why| bad("minutes", &why))?;
        let hours = parse_set(hours, 0, 23, &[]).map_err(|why| bad("hours", &why))?;
        let months = parse_set(months, 1, 12, &MONTH_NAMES).map_err(|why| bad("month", &why))?;
        let years = parse_set(years, FIRST_YEAR as u32, LAST_YEAR as u32, &[])
            .map_err(|why| bad("year", &why))?;
        let day_of_month = parse_day_of_month(dom).map_err(|why| bad("day-of-month", &why))?;
        let day_of_week = parse_day_of_week(dow).map_err(|why| bad("day-of-week", &why))?;
        match (&day_of_month, &day_of_week, dom, dow) {
            (_, _, "?", "?") => {
                return Err(bad(
                    "day-of-month and day-of-week",
                    "only one of them may be ?",
                ));
            }
            (_, _, "?", _) | (_, _, _, "?") => {}
            _ => {
                return Err(bad(
                    "day-of-month and day-of-week",
                    "one of them must be ? (both can't be specified)",
                ));
            }
        }
        Ok(Self {
            minutes,
            hours,
            day_of_month,
            months,
            day_of_week,
            years,
        })
    }

    /// The minutes of the day (0..1440) at which the expression fires, ascending.
    fn minutes_of_day(&self) -> impl Iterator<Item = u64> + '_ {
        (0..24u64)
            .filter(|&h| self.hours[h as usize])
            .flat_map(move |h| {
                (0..60u64)
                    .filter(|&m| self.minutes[m as usize])
                    .map(move |m| h * 60 + m)
            })
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = date.day();
        let last = date.month().length(date.year());
        let dom_ok = match &self.day_of_month {
            DayOfMonth::Any => true,
            DayOfMonth::Days(days) => days[usize::from(day)],
            DayOfMonth::Last => day == last,
            DayOfMonth::LastWeekday => Some(day) == nearest_weekday(date, last, last),
            DayOfMonth::NearestWeekday(n) => Some(day) == nearest_weekday(date, *n, last),
        };
        let weekday = date.weekday().number_from_sunday();
        let dow_ok = match &self.day_of_week {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days[usize::from(weekday)],
            DayOfWeek::Last(n) => weekday == *n && day + 7 > last,
            DayOfWeek::Nth(n, k) => weekday == *n && (day - 1) / 7 + 1 == *k,
        };
        dom_ok && dow_ok
    }

    /// The first firing strictly after `after`, minute-aligned; `None` past year 2199.
    fn next_after(&self, after: u64) -> Option<u64> {
        let from = (after / 60 + 1) * 60;
        let start = OffsetDateTime::from_unix_timestamp(i64::try_from(from).ok()?).ok()?;
        let first_minute = u64::from(start.hour()) * 60 + u64::from(start.minute());
        let mut date = start.date();
        let mut same_day = true;
        loop {
            let year = date.year();
            if year > LAST_YEAR {
                return None;
            }
            let year_index = usize::try_from(year).ok()?;
            if year < FIRST_YEAR || !self.years[year_index] {
                date = Date::from_calendar_date(year + 1, Month::January, 1).ok()?;
                same_day = false;
                continue;
            }
            if !self.months[usize::from(u8::from(date.month()))] {
                date = first_of_next_month(date)?;
                same_day = false;
                continue;
            }
            if self.day_matches(date) {
                let floor = if same_day { first_minute } else { 0 };
                if let Some(minute) = self.minutes_of_day().find(|&m| m >= floor) {
                    let midnight = date.midnight().assume_utc().unix_timestamp();
                    return u64::try_from(midnight).ok().map(|m| m + minute * 60);
                }
            }
            date = date.next_day()?;
            same_day = false;
        }
    }
}

fn first_of_next_month(date: Date) -> Option<Date> {
    let (year, month) = if date.month() == Month::December {
        (date.year() + 1, Month::January)
    } else {
        (date.year(), date.month().next())
    };
    Date::from_calendar_date(year, month, 1).ok()
}

/// The weekday (Monday to Friday) nearest day `n` of `date`'s month, without leaving the month;
/// `None` when the month has no day `n`.
fn nearest_weekday(date: Date, n: u8, last: u8) -> Option<u8> {
    if n > last {
        return None;
    }
    let target = date.replace_day(n).ok()?;
    Some(match target.weekday() {
        Weekday::Saturday if n == 1 => 3,
        Weekday::Saturday => n - 1,
        Weekday::Sunday if n == last => n - 2,
        Weekday::Sunday => n + 1,
        _ => n,
    })
}

/// A value, or a name from `names` (index 0 is `min`).
fn parse_value(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(index) = names.iter().position(|n| *n == upper) {
        return Ok(min + u32::try_from(index).map_err(|_| "bad name".to_owned())?);
    }
    let value: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(min..=max).contains(&value) {
        return Err(format!("{value} is outside {min}-{max}"));
    }
    Ok(value)
}

/// A comma list of `*`, `v`, `a-b`, `*/s`, `v/s`, `a-b/s` as a membership table indexed by
/// value (`max + 1` entries).
fn parse_set(text: &str, min: u32, max: u32, names: &[&str]) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| format!("bad step in {item:?}"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                parse_value(a, min, max, names)?,
                parse_value(b, min, max, names)?,
            );
            if a > b {
                return Err(format!("the range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let start = parse_value(range, min, max, names)?;
            // `v/s` runs from v to the end of the field.
            (start, if item.contains('/') { max } else { start })
        };
        let mut value = low;
        while value <= high {
            set[value as usize] = true;
            value += step;
        }
    }
    Ok(set)
}

fn parse_day_of_month(text: &str) -> Result<DayOfMonth, String> {
    match text {
        "?" | "*" => Ok(DayOfMonth::Any),
        "L" => Ok(DayOfMonth::Last),
        "LW" => Ok(DayOfMonth::LastWeekday),
        _ => {
            if let Some(day) = text.strip_suffix('W') {
                let day = parse_value(day, 1, 31, &[])?;
                return Ok(DayOfMonth::NearestWeekday(
                    u8::try_from(day).map_err(|e| e.to_string())?,
                ));
            }
            parse_set(text, 1, 31, &[]).map(DayOfMonth::Days)
        }
    }
}

fn parse_day_of_week(text: &str) -> Result<DayOfWeek, String> {
    let day = |t: &str| -> Result<u8, String> {
        u8::try_from(parse_value(t, 1, 7, &DAY_NAMES)?).map_err(|e| e.to_string())
    };
    match text {
        "?" | "*" => Ok(DayOfWeek::Any),
        "L" => Ok(DayOfWeek::Days({
            let mut days = vec![false; 8];
            days[7] = true;
            days
        })),
        _ => {
            if let Some((n, k)) = text.split_once('#') {
                let k: u8 = k
                    .parse()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .ok_or_else(|| format!("bad occurrence in {text:?} (1 to 5)"))?;
                return Ok(DayOfWeek::Nth(day(n)?, k));
            }
            if let Some(n) = text.strip_suffix('L') {
                return Ok(DayOfWeek::Last(day(n)?));
            }
            parse_set(text, 1, 7, &DAY_NAMES).map(DayOfWeek::Days)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> u64 {
        let format = time::format_description::well_known::Rfc3339;
        u64::try_from(
            OffsetDateTime::parse(text, &format)
                .unwrap()
                .unix_timestamp(),
        )
        .unwrap()
    }

    fn show(unix: u64) -> String {
        let format = time::format_description::well_known::Rfc3339;
        OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap())
            .unwrap()
            .format(&format)
            .unwrap()
    }

    fn expression(text: &str) -> RotationRules {
        RotationRules {
            schedule_expression: Some(text.into()),
            ..RotationRules::default()
        }
    }

    fn next(text: &str, after: &str) -> Option<String> {
        next_rotation(&expression(text), at(after))
            .unwrap()
            .map(show)
    }

    #[test]
    fn days_open_at_midnight() {
        let rules = RotationRules {
            automatically_after_days: Some(30),
            ..RotationRules::default()
        };
        let after = at("2026-03-10T15:42:00Z");
        assert_eq!(
            show(next_rotation(&rules, after).unwrap().unwrap()),
            "2026-04-09T00:00:00Z"
        );
        assert_eq!(
            next("rate(1 day)", "2026-12-31T23:59:59Z").as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_rotation(&RotationRules::default(), after).unwrap(),
            None
        );
    }

    #[test]
    fn hours_restart_each_day() {
        assert_eq!(
            next("rate(6 hours)", "2026-03-10T07:30:00Z").as_deref(),
            Some("2026-03-10T12:00:00Z")
        );
        assert_eq!(
            next("rate(6 hours)", "2026-03-10T18:00:00Z").as_deref(),
            Some("2026-03-11T00:00:00Z")
        );
        assert_eq!(
            next("rate(5 hours)", "2026-03-10T21:00:00Z").as_deref(),
            Some("2026-03-11T00:00:00Z")
        );
        assert_eq!(
            next("rate(24 hours)", "2026-03-10T00:00:00Z").as_deref(),
            Some("2026-03-11T00:00:00Z")
        );
    }

    #[test]
    fn cron_expressions_as_aws_reads_them() {
        // 16:00 on the 1st and 15th.
        assert_eq!(
            next("cron(0 16 1,15 * ? *)", "2026-03-01T16:00:00Z").as_deref(),
            Some("2026-03-15T16:00:00Z")
        );
        // Every Monday at 08:30 (MON = 2).
        assert_eq!(
            next("cron(30 8 ? * MON *)", "2026-03-10T09:00:00Z").as_deref(),
            Some("2026-03-16T08:30:00Z")
        );
        // Last day of the month, and February of a leap year.
        assert_eq!(
            next("cron(0 0 L * ? *)", "2028-02-03T00:00:00Z").as_deref(),
            Some("2028-02-29T00:00:00Z")
        );
        // The second Tuesday, the last Friday.
        assert_eq!(
            next("cron(0 10 ? * 3#2 *)", "2026-03-01T00:00:00Z").as_deref(),
            Some("2026-03-10T10:00:00Z")
        );
        assert_eq!(
            next("cron(0 10 ? * 6L *)", "2026-03-01T00:00:00Z").as_deref(),
            Some("2026-03-27T10:00:00Z")
        );
        // The weekday nearest the 1st: 2026-08-01 is a Saturday, so Monday the 3rd.
        assert_eq!(
            next("cron(0 4 1W * ? *)", "2026-07-02T00:00:00Z").as_deref(),
            Some("2026-08-03T04:00:00Z")
        );
        // Steps, ranges, months by name, a year list.
        assert_eq!(
            next(
                "cron(0 */6 ? JAN-MAR,DEC MON-FRI 2027)",
                "2026-03-10T00:00:00Z"
            )
            .as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next("cron(15 1/12 * * ? *)", "2026-03-10T01:15:00Z").as_deref(),
            Some("2026-03-10T13:15:00Z")
        );
        // A year that has passed never fires again.
        assert_eq!(next("cron(0 0 1 1 ? 2020)", "2026-03-10T00:00:00Z"), None);
    }

    #[test]
    fn bad_rules_are_refused() {
        let bad = [
            "rate(0 days)",
            "rate(1001 days)",
            "rate(3 hours)",
            "rate(25 hours)",
            "rate(2 weeks)",
            "rate(days)",
            "cron(0 0 * * * *)",
            "cron(0 0 ? * ? *)",
            "cron(0 0 1 * ?)",
            "cron(60 0 1 * ? *)",
            "cron(0 24 1 * ? *)",
            "cron(0 0 32 * ? *)",
            "cron(0 0 ? * 8 *)",
            "cron(0 0 ? * 2#6 *)",
            "cron(0 0 5-1 * ? *)",
            "cron(0 0 1 * ? 2200)",
            "every day",
        ];
        for text in bad {
            assert!(
                matches!(
                    next_rotation(&expression(text), 0),
                    Err(SecretsError::InvalidParameter(_))
                ),
                "{text} was accepted"
            );
        }
        let both = RotationRules {
            automatically_after_days: Some(1),
            schedule_expression: Some("rate(1 days)".into()),
            duration: None,
        };
        assert!(validate_rules(&both).is_err());
    }

    #[test]
    fn windows_stay_within_the_day_and_the_interval() {
        let with = |text: &str, duration: &str| RotationRules {
            schedule_expression: Some(text.into()),
            duration: Some(duration.into()),
            automatically_after_days: None,
        };
        assert!(validate_rules(&with("rate(10 days)", "3h")).is_ok());
        assert!(validate_rules(&with("rate(10 days)", "24h")).is_ok());
        assert!(validate_rules(&with("rate(10 days)", "25h")).is_err());
        assert!(validate_rules(&with("rate(10 days)", "3")).is_err());
        assert!(validate_rules(&with("rate(6 hours)", "6h")).is_ok());
        assert!(validate_rules(&with("rate(6 hours)", "7h")).is_err());
        // rate(5 hours): the last window opens at 20:00, so 5h would cross midnight.
        assert!(validate_rules(&with("rate(5 hours)", "4h")).is_ok());
        assert!(validate_rules(&with("rate(5 hours)", "5h")).is_err());
        assert!(validate_rules(&with("cron(0 20 * * ? *)", "4h")).is_ok());
        assert!(validate_rules(&with("cron(0 20 * * ? *)", "5h")).is_err());
        assert!(validate_rules(&with("cron(0 8,10 * * ? *)", "3h")).is_err());
        let duration_alone = RotationRules {
            duration: Some("2h".into()),
            ..RotationRules::default()
        };
        assert!(validate_rules(&duration_alone).is_err());
    }
}
