//! The Nightly scheduler's timetable: which minutes of local time it fires at.
//!
//! The search walks forward from a moment, breaking each candidate into local
//! civil time and skipping to the start of the next month, day, hour or minute
//! when the coarsest mismatching field rules the rest of that unit out. Local
//! days are not always 24 hours long, so every jump is checked: a jump that does
//! not land on the start of its unit is retried with the next finer unit, which
//! never skips a time the timetable could match.

use serde::Deserialize;

/// One timetable field as written: "*" (any), an integer, or a list of integers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CronField {
    Any(String),
    One(i64),
    Many(Vec<i64>),
}

/// When a Nightly scheduler fires, in local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    minute: Allowed,
    hour: Allowed,
    day_of_month: Allowed,
    month: Allowed,
    day_of_week: Allowed,
}

/// The values one field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    /// Written as "*": not restricted.
    Any,
    /// Bit `v` is set when value `v` is accepted; every range fits below 64.
    Only(u64),
}

/// A moment broken into local civil time. `weekday` is 0 for Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    weekday: i64,
}

/// A span of civil time the search can skip to the end of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Minute,
    Hour,
    Day,
    Month,
}

/// The search gives up after this long without a match.
const HORIZON_SECONDS: i64 = 1827 * 86_400;

/// Far more steps than five years need (about one per day plus a few per month
/// and per clock change); a bound against surprises in the local-time function.
const MAX_STEPS: usize = 20_000;

impl Timetable {
    /// Buildbot's Nightly defaults: minute 0, every other field any. Ranges: minute 0-59, hour 0-23,
    /// day_of_month 1-31, month 1-12, day_of_week 0-6 where 0 is Monday (Buildbot's convention, not
    /// cron's). Errors name the field: "hour: 24 is out of range 0-23", "minute: expected \"*\", an
    /// integer or a list of integers" (for a string other than "*"), "day_of_week: the list is empty".
    pub fn new(
        minute: Option<&CronField>,
        hour: Option<&CronField>,
        day_of_month: Option<&CronField>,
        month: Option<&CronField>,
        day_of_week: Option<&CronField>,
    ) -> Result<Timetable, String> {
        Ok(Timetable {
            minute: parse_field(minute, "minute", 0, 59, Allowed::Only(1))?,
            hour: parse_field(hour, "hour", 0, 23, Allowed::Any)?,
            day_of_month: parse_field(day_of_month, "day_of_month", 1, 31, Allowed::Any)?,
            month: parse_field(month, "month", 1, 12, Allowed::Any)?,
            day_of_week: parse_field(day_of_week, "day_of_week", 0, 6, Allowed::Any)?,
        })
    }

    /// The first whole minute strictly after `after` (epoch seconds) that the timetable matches, in the
    /// machine's local time zone (libc `localtime_r`, so TZ is honoured); None if no time matches within
    /// five years (e.g. day_of_month 31 with month 2).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        self.search(after, local_civil)
    }

    /// `next_after` with the given way of breaking a moment into civil time.
    fn search(&self, after: i64, to_civil: impl Fn(i64) -> Option<Civil>) -> Option<i64> {
        let limit = after.saturating_add(HORIZON_SECONDS);
        let mut t = after.checked_add(1)?;
        let mut civil = to_civil(t)?;
        for _ in 0..MAX_STEPS {
            if t > limit {
                return None;
            }
            match self.mismatch(&civil) {
                None => return Some(t),
                Some(unit) => (t, civil) = skip(t, &civil, unit, &to_civil)?,
            }
        }
        None
    }

    /// The coarsest unit whose remainder cannot match, or None when `civil` matches.
    fn mismatch(&self, civil: &Civil) -> Option<Unit> {
        if !self.month.contains(civil.month) {
            Some(Unit::Month)
        } else if !self.day_matches(civil) {
            Some(Unit::Day)
        } else if !self.hour.contains(civil.hour) {
            Some(Unit::Hour)
        } else if !self.minute.contains(civil.minute) || civil.second != 0 {
            Some(Unit::Minute)
        } else {
            None
        }
    }

    /// Cron's rule: when both day fields are restricted either may match;
    /// otherwise each restricted one must.
    fn day_matches(&self, civil: &Civil) -> bool {
        let by_date = self.day_of_month.contains(civil.day);
        let by_weekday = self.day_of_week.contains(civil.weekday);
        match (self.day_of_month, self.day_of_week) {
            (Allowed::Only(_), Allowed::Only(_)) => by_date || by_weekday,
            _ => by_date && by_weekday,
        }
    }
}

impl Allowed {
    fn contains(self, value: i64) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(bits) => (0..64).contains(&value) && bits & (1 << value) != 0,
        }
    }
}

impl Unit {
    /// The unit to fall back to when a jump over this one lands off its start.
    fn finer(self) -> Option<Unit> {
        match self {
            Unit::Month => Some(Unit::Day),
            Unit::Day => Some(Unit::Hour),
            Unit::Hour => Some(Unit::Minute),
            Unit::Minute => None,
        }
    }

    /// Seconds from `civil` to the start of the next unit, assuming no clock change.
    fn seconds_left(self, civil: &Civil) -> i64 {
        let into_minute = civil.second;
        let into_hour = civil.minute * 60 + into_minute;
        let into_day = civil.hour * 3600 + into_hour;
        match self {
            Unit::Minute => 60 - into_minute,
            Unit::Hour => 3600 - into_hour,
            Unit::Day => 86_400 - into_day,
            Unit::Month => {
                let days_after_today = days_in_month(civil.year, civil.month) - civil.day;
                days_after_today * 86_400 + 86_400 - into_day
            }
        }
    }

    fn starts_at(self, civil: &Civil) -> bool {
        let at_minute = civil.second == 0;
        let at_hour = at_minute && civil.minute == 0;
        let at_day = at_hour && civil.hour == 0;
        match self {
            Unit::Minute => at_minute,
            Unit::Hour => at_hour,
            Unit::Day => at_day,
            Unit::Month => at_day && civil.day == 1,
        }
    }
}

/// Moves from `t` to the start of the next `unit`. A landing off the unit's
/// start means the clock changed on the way, which may have stepped past times
/// that match; the jump is then redone with a finer unit.
fn skip(
    t: i64,
    civil: &Civil,
    unit: Unit,
    to_civil: &impl Fn(i64) -> Option<Civil>,
) -> Option<(i64, Civil)> {
    let next = t.checked_add(unit.seconds_left(civil))?;
    let landed = to_civil(next)?;
    match unit.finer() {
        Some(finer) if !unit.starts_at(&landed) => skip(t, civil, finer, to_civil),
        _ => Some((next, landed)),
    }
}

fn parse_field(
    field: Option<&CronField>,
    name: &str,
    min: i64,
    max: i64,
    default: Allowed,
) -> Result<Allowed, String> {
    let bit = |value: i64| {
        if (min..=max).contains(&value) {
            Ok(1u64 << value)
        } else {
            Err(format!("{name}: {value} is out of range {min}-{max}"))
        }
    };
    match field {
        None => Ok(default),
        Some(CronField::Any(text)) if text == "*" => Ok(Allowed::Any),
        Some(CronField::Any(_)) => Err(format!(
            "{name}: expected \"*\", an integer or a list of integers"
        )),
        Some(CronField::One(value)) => bit(*value).map(Allowed::Only),
        Some(CronField::Many(values)) if values.is_empty() => {
            Err(format!("{name}: the list is empty"))
        }
        Some(CronField::Many(values)) => values
            .iter()
            .try_fold(0, |bits, value| Ok(bits | bit(*value)?))
            .map(Allowed::Only),
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Breaks `t` into the machine's local time with `localtime_r`.
fn local_civil(t: i64) -> Option<Civil> {
    let time = libc::time_t::try_from(t).ok()?;
    // SAFETY: `tm` is plain old data, so all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call and
    // `localtime_r` writes only into `tm`.
    let result = unsafe { libc::localtime_r(&time, &mut tm) };
    if result.is_null() {
        return None;
    }
    Some(Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: i64::from(tm.tm_mon) + 1,
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
        // `tm_wday` counts from Sunday.
        weekday: (i64::from(tm.tm_wday) + 6) % 7,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let month_from_march = (month + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    fn utc(t: i64) -> Option<Civil> {
        let days = t.div_euclid(86_400);
        let seconds = t.rem_euclid(86_400);
        let (year, month, day) = crate::clock::civil_from_days(days);
        Some(Civil {
            year,
            month,
            day,
            hour: seconds / 3600,
            minute: seconds % 3600 / 60,
            second: seconds % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 3).rem_euclid(7),
        })
    }

    /// Epoch seconds of a UTC date and time.
    fn at(year: i64, month: i64, day: i64, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60
    }

    #[derive(Default)]
    struct Fields {
        minute: Option<CronField>,
        hour: Option<CronField>,
        day_of_month: Option<CronField>,
        month: Option<CronField>,
        day_of_week: Option<CronField>,
    }

    impl Fields {
        fn build(&self) -> Result<Timetable, String> {
            Timetable::new(
                self.minute.as_ref(),
                self.hour.as_ref(),
                self.day_of_month.as_ref(),
                self.month.as_ref(),
                self.day_of_week.as_ref(),
            )
        }

        fn timetable(&self) -> Timetable {
            self.build().expect("valid timetable")
        }
    }

    fn any() -> Option<CronField> {
        Some(CronField::Any("*".into()))
    }

    fn one(value: i64) -> Option<CronField> {
        Some(CronField::One(value))
    }

    fn many(values: &[i64]) -> Option<CronField> {
        Some(CronField::Many(values.to_vec()))
    }

    fn next_utc(timetable: &Timetable, after: i64) -> Option<i64> {
        timetable.search(after, utc)
    }

    #[test]
    fn utc_breakdown_agrees_with_known_dates() {
        let monday = utc(at(2026, 11, 23, 13, 45)).expect("in range");
        assert_eq!(
            monday,
            Civil {
                year: 2026,
                month: 11,
                day: 23,
                hour: 13,
                minute: 45,
                second: 0,
                weekday: 0
            }
        );
        assert_eq!(at(2000, 3, 1, 0, 0), 951_868_800);
        assert_eq!(
            crate::clock::civil_from_days(days_from_civil(2028, 2, 29)),
            (2028, 2, 29)
        );
    }

    #[test]
    fn defaults_fire_at_the_next_full_hour() {
        let timetable = Fields::default().timetable();
        let after = at(2026, 5, 4, 10, 17) + 33;
        assert_eq!(next_utc(&timetable, after), Some(at(2026, 5, 4, 11, 0)));
        let late = at(2026, 12, 31, 23, 59);
        assert_eq!(next_utc(&timetable, late), Some(at(2027, 1, 1, 0, 0)));
    }

    #[test]
    fn a_match_at_after_itself_gives_the_next_one() {
        let timetable = Fields::default().timetable();
        let on_the_hour = at(2026, 5, 4, 11, 0);
        assert_eq!(
            next_utc(&timetable, on_the_hour),
            Some(at(2026, 5, 4, 12, 0))
        );
        assert_eq!(next_utc(&timetable, on_the_hour - 1), Some(on_the_hour));
    }

    #[test]
    fn daily_at_half_past_two() {
        let timetable = Fields {
            minute: one(30),
            hour: one(2),
            ..Fields::default()
        }
        .timetable();
        let before = at(2026, 5, 4, 1, 0);
        assert_eq!(next_utc(&timetable, before), Some(at(2026, 5, 4, 2, 30)));
        let after = at(2026, 5, 4, 2, 30);
        assert_eq!(next_utc(&timetable, after), Some(at(2026, 5, 5, 2, 30)));
        let month_end = at(2026, 4, 30, 3, 0);
        assert_eq!(next_utc(&timetable, month_end), Some(at(2026, 5, 1, 2, 30)));
    }

    #[test]
    fn lists_give_each_listed_time() {
        let timetable = Fields {
            minute: many(&[15, 45]),
            hour: many(&[9, 17]),
            ..Fields::default()
        }
        .timetable();
        let mut t = at(2026, 5, 4, 0, 0);
        let mut seen = Vec::new();
        for _ in 0..5 {
            t = next_utc(&timetable, t).expect("a match");
            seen.push(t);
        }
        let expected = [
            at(2026, 5, 4, 9, 15),
            at(2026, 5, 4, 9, 45),
            at(2026, 5, 4, 17, 15),
            at(2026, 5, 4, 17, 45),
            at(2026, 5, 5, 9, 15),
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn every_minute_when_minute_is_any() {
        let timetable = Fields {
            minute: any(),
            ..Fields::default()
        }
        .timetable();
        let after = at(2026, 5, 4, 10, 17) + 59;
        assert_eq!(next_utc(&timetable, after), Some(at(2026, 5, 4, 10, 18)));
    }

    #[test]
    fn weekday_zero_is_monday() {
        let timetable = Fields {
            hour: one(3),
            day_of_week: one(0),
            ..Fields::default()
        }
        .timetable();
        // 2026-11-19 is a Thursday; the following Monday is the 23rd.
        let thursday = at(2026, 11, 19, 12, 0);
        assert_eq!(next_utc(&timetable, thursday), Some(at(2026, 11, 23, 3, 0)));
        let sunday = Fields {
            hour: one(3),
            day_of_week: one(6),
            ..Fields::default()
        }
        .timetable();
        assert_eq!(next_utc(&sunday, thursday), Some(at(2026, 11, 22, 3, 0)));
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        let timetable = Fields {
            day_of_month: one(1),
            day_of_week: one(0),
            ..Fields::default()
        }
        .timetable();
        // Tuesday 2026-12-01 matches by date, Monday 2026-12-07 by weekday.
        let friday = at(2026, 11, 27, 0, 0);
        assert_eq!(next_utc(&timetable, friday), Some(at(2026, 11, 30, 0, 0)));
        let monday_night = at(2026, 11, 30, 23, 0);
        assert_eq!(
            next_utc(&timetable, monday_night),
            Some(at(2026, 12, 1, 0, 0))
        );
        let tuesday = at(2026, 12, 1, 23, 0);
        assert_eq!(next_utc(&timetable, tuesday), Some(at(2026, 12, 7, 0, 0)));
    }

    #[test]
    fn one_restricted_day_field_must_match_alone() {
        let by_date = Fields {
            day_of_month: one(1),
            day_of_week: any(),
            ..Fields::default()
        }
        .timetable();
        let friday = at(2026, 11, 27, 0, 0);
        assert_eq!(next_utc(&by_date, friday), Some(at(2026, 12, 1, 0, 0)));
        let month_and_weekday = Fields {
            month: one(12),
            day_of_week: one(4),
            ..Fields::default()
        }
        .timetable();
        assert_eq!(
            next_utc(&month_and_weekday, friday),
            Some(at(2026, 12, 4, 0, 0))
        );
    }

    #[test]
    fn february_29th_is_found_in_the_next_leap_year() {
        let timetable = Fields {
            day_of_month: one(29),
            month: one(2),
            ..Fields::default()
        }
        .timetable();
        let after = at(2025, 3, 1, 0, 0);
        assert_eq!(next_utc(&timetable, after), Some(at(2028, 2, 29, 0, 0)));
        let century = at(2100, 1, 1, 0, 0);
        assert_eq!(next_utc(&timetable, century), Some(at(2104, 2, 29, 0, 0)));
    }

    #[test]
    fn impossible_dates_give_none() {
        for (day, month) in [(31, 2), (30, 2), (31, 4), (31, 11)] {
            let timetable = Fields {
                day_of_month: one(day),
                month: one(month),
                ..Fields::default()
            }
            .timetable();
            assert_eq!(next_utc(&timetable, at(2026, 1, 1, 0, 0)), None);
        }
    }

    /// UTC with one hour added from the instant `change` on, so that the local
    /// day containing `change` is 23 hours long.
    fn utc_springing_forward_at(change: i64) -> impl Fn(i64) -> Option<Civil> {
        move |t| utc(if t >= change { t + 3600 } else { t })
    }

    #[test]
    fn a_short_day_does_not_skip_the_next_midnight() {
        // Local time jumps from 02:00 to 03:00 on 2026-03-29; the next day's
        // midnight is 22 hours after 01:00, not 23.
        let change = at(2026, 3, 29, 2, 0);
        let timetable = Fields {
            minute: one(30),
            hour: one(0),
            day_of_month: one(30),
            ..Fields::default()
        }
        .timetable();
        let fired = timetable
            .search(at(2026, 3, 29, 1, 0), utc_springing_forward_at(change))
            .expect("a match");
        // 00:30 local on the 30th is 23:30 UTC on the 29th.
        assert_eq!(fired, at(2026, 3, 29, 23, 30));
    }

    #[test]
    fn a_short_month_end_does_not_skip_the_first() {
        let change = at(2026, 3, 29, 2, 0);
        let timetable = Fields {
            month: one(4),
            ..Fields::default()
        }
        .timetable();
        let fired = timetable
            .search(at(2026, 3, 10, 12, 0), utc_springing_forward_at(change))
            .expect("a match");
        assert_eq!(fired, at(2026, 3, 31, 23, 0));
    }

    #[test]
    fn range_and_shape_errors_name_the_field() {
        let cases = [
            (
                Fields {
                    hour: one(24),
                    ..Fields::default()
                },
                "hour: 24 is out of range 0-23",
            ),
            (
                Fields {
                    minute: many(&[0, 60]),
                    ..Fields::default()
                },
                "minute: 60 is out of range 0-59",
            ),
            (
                Fields {
                    day_of_month: one(0),
                    ..Fields::default()
                },
                "day_of_month: 0 is out of range 1-31",
            ),
            (
                Fields {
                    month: one(13),
                    ..Fields::default()
                },
                "month: 13 is out of range 1-12",
            ),
            (
                Fields {
                    day_of_week: one(-1),
                    ..Fields::default()
                },
                "day_of_week: -1 is out of range 0-6",
            ),
            (
                Fields {
                    day_of_week: many(&[]),
                    ..Fields::default()
                },
                "day_of_week: the list is empty",
            ),
            (
                Fields {
                    minute: Some(CronField::Any("*/5".into())),
                    ..Fields::default()
                },
                "minute: expected \"*\", an integer or a list of integers",
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(fields.build(), Err(expected.to_owned()));
        }
    }

    #[test]
    fn fields_deserialize_from_star_integer_or_list() {
        let parse = |value| serde_json::from_value::<CronField>(value);
        assert_eq!(
            parse(serde_json::json!("*")).ok(),
            Some(CronField::Any("*".into()))
        );
        assert_eq!(parse(serde_json::json!(7)).ok(), Some(CronField::One(7)));
        assert_eq!(
            parse(serde_json::json!([1, 2])).ok(),
            Some(CronField::Many(vec![1, 2]))
        );
        assert!(parse(serde_json::json!(1.5)).is_err());
    }

    #[test]
    fn local_time_agrees_with_itself() {
        let timetable = Fields {
            minute: any(),
            ..Fields::default()
        }
        .timetable();
        let after = at(2026, 5, 4, 10, 17);
        let next = timetable.next_after(after).expect("a match");
        assert!(next > after && next - after <= 120, "{next} after {after}");
        let civil = local_civil(next).expect("in range");
        assert_eq!(civil.second, 0);
    }
}
