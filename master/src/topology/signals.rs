//! The signals a master answers: `SIGTERM` and `SIGINT` stop it, `SIGHUP`
//! reloads its configuration, `SIGUSR1` starts a clean shutdown (as
//! Buildbot's, which `buildmaster stop --clean` sends).

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Stop(&'static str),
    Reload,
    CleanShutdown,
}

/// The handlers, installed first thing at start-up so that an early
/// `SIGHUP` asks for a reload instead of ending the process.
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    user1: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            terminate: signal(SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt())
                .context("cannot install the SIGINT handler")?,
            user1: signal(SignalKind::user_defined1())
                .context("cannot install the SIGUSR1 handler")?,
        })
    }

    /// The next signal received.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.terminate.recv() => Asked::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Asked::Stop("SIGINT"),
            _ = self.hangup.recv() => Asked::Reload,
            _ = self.user1.recv() => Asked::CleanShutdown,
        }
    }
}
