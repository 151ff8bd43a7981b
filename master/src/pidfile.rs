//! The pid file of a running master, and what the command line asks of it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The pid file inside a basedir.
pub const PID_FILE: &str = "buildmaster.pid";

/// Removes the pid file when the master ends, however it ends.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes the pid of this process, refusing when another live master
    /// already holds the file.
    pub fn create(basedir: &Path) -> anyhow::Result<PidFile> {
        let path = basedir.join(PID_FILE);
        if let Some(pid) = read_pid(&path) {
            if process_alive(pid) {
                anyhow::bail!(
                    "a master is already running in {} (pid {pid})",
                    basedir.display()
                );
            }
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pid recorded in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process with this pid is running. A zombie (exited, not yet reaped
/// by its parent) counts as stopped.
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state != Some('Z')
}
