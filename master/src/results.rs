//! Buildbot's result codes, shared by steps, builds, build requests and buildsets.

use std::fmt;

/// A result, with Buildbot's numeric codes (the REST API and the database use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Results {
    Success = 0,
    Warnings = 1,
    Failure = 2,
    Skipped = 3,
    Exception = 4,
    Retry = 5,
    Cancelled = 6,
}

impl Results {
    pub fn from_code(code: i64) -> Option<Results> {
        Some(match code {
            0 => Results::Success,
            1 => Results::Warnings,
            2 => Results::Failure,
            3 => Results::Skipped,
            4 => Results::Exception,
            5 => Results::Retry,
            6 => Results::Cancelled,
            _ => return None,
        })
    }

    /// The lower-case name Buildbot shows ("success", "failure", …).
    pub fn name(self) -> &'static str {
        match self {
            Results::Success => "success",
            Results::Warnings => "warnings",
            Results::Failure => "failure",
            Results::Skipped => "skipped",
            Results::Exception => "exception",
            Results::Retry => "retry",
            Results::Cancelled => "cancelled",
        }
    }

    /// How bad a result is when combining: Buildbot's `worst_status` order,
    /// from SKIPPED (any other result wins) up to CANCELLED.
    fn severity(self) -> u8 {
        match self {
            Results::Skipped => 0,
            Results::Success => 1,
            Results::Warnings => 2,
            Results::Failure => 3,
            Results::Exception => 4,
            Results::Retry => 5,
            Results::Cancelled => 6,
        }
    }
}

impl fmt::Display for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The worse of two results.
pub fn worst(a: Results, b: Results) -> Results {
    if b.severity() > a.severity() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for code in 0..=6 {
            assert_eq!(Results::from_code(code).unwrap() as i64, code);
        }
        assert_eq!(Results::from_code(7), None);
        assert_eq!(Results::from_code(-1), None);
    }

    #[test]
    fn worst_follows_buildbots_order() {
        use Results::*;
        assert_eq!(worst(Skipped, Success), Success);
        assert_eq!(worst(Success, Warnings), Warnings);
        assert_eq!(worst(Failure, Warnings), Failure);
        assert_eq!(worst(Failure, Exception), Exception);
        assert_eq!(worst(Retry, Exception), Retry);
        assert_eq!(worst(Retry, Cancelled), Cancelled);
        assert_eq!(worst(Skipped, Skipped), Skipped);
    }
}
