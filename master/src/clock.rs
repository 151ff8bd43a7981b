//! Time as the master stores and shows it: whole seconds since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in epoch seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
