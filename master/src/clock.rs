//! Time as the master stores and shows it: whole seconds since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in epoch seconds with their fraction: for what is scheduled to the
/// second or finer, such as the outbox's retries.
pub fn now_precise() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// Now, in epoch seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
