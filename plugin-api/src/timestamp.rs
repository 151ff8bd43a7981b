//! Dates and times as webhook providers write them, read into epoch seconds.
//!
//! Providers all write ISO 8601, each a little differently: GitHub
//! `2008-02-15T14:57:17-08:00` and `…Z`, GitLab `2019-07-04 18:30:15 UTC` and
//! `…T18:30:15.987+02:00`, Bitbucket `2020-02-14 09:15:00+00:00`, older senders
//! `… -0700`. [`parse`] reads all of them, so that a dialect needs no date
//! library.
//!
//! ```
//! use buildmaster_plugin_api::timestamp;
//!
//! assert_eq!(timestamp::parse("2008-02-15T14:57:17-08:00"), Ok(1_203_116_237));
//! assert_eq!(timestamp::parse("2008-02-15 22:57:17.25 UTC"), Ok(1_203_116_237));
//! let error = timestamp::parse("last Tuesday").unwrap_err();
//! assert_eq!(error.to_string(), "not an ISO 8601 date and time");
//! ```

use std::fmt;

/// The error of [`parse`]: the text is not a date and time it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTimestamp;

impl fmt::Display for InvalidTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an ISO 8601 date and time")
    }
}

impl std::error::Error for InvalidTimestamp {}

/// The epoch seconds of `text`: a date `YYYY-MM-DD`, `T` (or `t`) or a space, a
/// time `HH:MM:SS`, an optional fraction of a second (dropped) and an optional
/// zone: `Z`, `UTC`, `GMT`, `+02:00`, `+0200` or `+02`, with or without a space
/// before it. A time without a zone is UTC. Blanks around the text are ignored.
pub fn parse(text: &str) -> Result<i64, InvalidTimestamp> {
    epoch_seconds(text.trim()).ok_or(InvalidTimestamp)
}

fn epoch_seconds(text: &str) -> Option<i64> {
    let days = days_since_epoch(text.get(..10)?)?;
    let rest = text.get(10..)?.strip_prefix(['T', 't', ' '])?;
    let seconds = seconds_of_day(rest.get(..8)?)?;
    let mut zone = rest.get(8..)?;
    if let Some(fraction) = zone.strip_prefix(['.', ',']) {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        zone = fraction.get(digits..).filter(|_| digits > 0)?;
    }
    Some(days * 86_400 + seconds - utc_offset(zone.trim_start())?)
}

/// A run of exactly `len` ASCII digits.
fn number(text: &str, len: usize) -> Option<i64> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DD` as days since 1970-01-01.
fn days_since_epoch(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4)?;
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_length = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    // There is no year 0: 1 BC is followed by AD 1.
    if year == 0 || parts.next().is_some() || !(1..=month_length).contains(&day) {
        return None;
    }
    // Count from 1 March so that the leap day ends the year.
    let (year, month) = if month > 2 {
        (year, month - 3)
    } else {
        (year - 1, month + 9)
    };
    let day_of_year = (153 * month + 2) / 5 + day - 1;
    let day_of_era = year * 365 + year / 4 - year / 100 + year / 400 + day_of_year;
    // 719 468 days lie between 0000-03-01 and 1970-01-01.
    Some(day_of_era - 719_468)
}

/// `HH:MM:SS` as seconds since midnight.
fn seconds_of_day(time: &str) -> Option<i64> {
    let mut parts = time.split(':');
    let hours = number(parts.next()?, 2)?;
    let minutes = number(parts.next()?, 2)?;
    let seconds = number(parts.next()?, 2)?;
    (hours < 24 && minutes < 60 && seconds < 60 && parts.next().is_none())
        .then_some(hours * 3600 + minutes * 60 + seconds)
}

/// The zone's offset from UTC in seconds.
fn utc_offset(zone: &str) -> Option<i64> {
    let (sign, digits) = match zone {
        "" | "Z" | "z" | "UTC" | "GMT" => return Some(0),
        _ if zone.starts_with('+') => (1, zone.get(1..)?),
        _ if zone.starts_with('-') => (-1, zone.get(1..)?),
        _ => return None,
    };
    let (hours, minutes) = match digits.split_once(':') {
        Some(pair) => pair,
        None if digits.len() == 2 => (digits, "00"),
        None => digits.split_at_checked(2)?,
    };
    let (hours, minutes) = (number(hours, 2)?, number(minutes, 2)?);
    (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::{parse, InvalidTimestamp};

    #[test]
    fn zones_and_separators() {
        // 2019-07-04 18:30:15 UTC
        let utc = 1_562_265_015;
        for text in [
            "2019-07-04T18:30:15Z",
            "2019-07-04T18:30:15",
            "2019-07-04 18:30:15 UTC",
            "2019-07-04t18:30:15.987654z",
            "2019-07-04T20:30:15+02:00",
            "2019-07-04 20:30:15+0200",
            "2019-07-04T20:30:15+02",
            "2019-07-04 11:30:15 -0700",
            "2019-07-04T11:30:15.5-07:00",
            "  2019-07-04T18:30:15,5 GMT ",
        ] {
            assert_eq!(parse(text), Ok(utc), "{text}");
        }
    }

    #[test]
    fn what_github_sends() {
        // Push commits carry the committer's offset, pull requests UTC.
        assert_eq!(parse("2008-02-15T14:57:17-08:00"), Ok(1_203_116_237));
        assert_eq!(parse("2014-10-10T00:09:50Z"), Ok(1_412_899_790));
        assert_eq!(parse("2014-10-10T00:09:50.75+00:00"), Ok(1_412_899_790));
        assert_eq!(parse("2014-10-10T00:09:50"), Ok(1_412_899_790));
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(parse("2000-02-29T00:00:00Z"), Ok(951_782_400));
        assert_eq!(parse("2024-03-01T00:00:00+00:00"), Ok(1_709_251_200));
        assert_eq!(parse("2038-01-19T03:14:08Z"), Ok(2_147_483_648));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "yesterday",
            "2019-07-04",
            "2019-07-04T18:30",
            "2019-13-04T18:30:15Z",
            "2019-02-29T18:30:15Z",
            "1900-02-29T18:30:15Z",
            "2019-07-00T18:30:15Z",
            "2019-07-04T24:00:00Z",
            "2019-07-04T18:60:15Z",
            "2019-07-04T18:30:60Z",
            "2019-07-04X18:30:15Z",
            "2019-07-04T18:30:15.Z",
            "2019-07-04T18:30:15+2",
            "2019-07-04T18:30:15+24:00",
            "2019-07-04T18:30:15+02:60",
            "2019-07-04T18:30:15 CEST",
            "2019-07-04T18:30:15Z junk",
            "+019-07-04T18:30:15Z",
            "0000-03-01T00:00:00Z",
            "2019-07-04T18:30:15+é0",
            "2019-07-04T18:3é:15Z",
            "2019-07-04T18:30:15+0é",
        ] {
            assert_eq!(parse(text), Err(InvalidTimestamp), "{text}");
        }
    }
}
