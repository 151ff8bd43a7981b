//! The process's open-file limit. Each HTTP connection, worker link, log and
//! library holds a descriptor; at the common soft limit of 1,024 a busy
//! master would fail to accept, so it raises the soft limit to the hard one.

use std::io;

/// The open-file limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub was: u64,
    pub now: u64,
}

/// Raises the soft open-file limit to the hard limit.
pub fn raise_limit() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(OpenFiles {
        was,
        now: limit.rlim_cur,
    })
}

/// Raises the limit and says what it is, in one log line.
pub fn raise_and_log() {
    match raise_limit() {
        Ok(OpenFiles { was, now }) if was < now => {
            tracing::info!("open-file limit raised from {was} to {now}");
        }
        Ok(OpenFiles { now, .. }) => tracing::info!("open-file limit: {now}"),
        Err(error) => tracing::warn!("cannot raise the open-file limit: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let raised = raise_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(raised.now, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert!(raised.was <= raised.now);
    }
}
