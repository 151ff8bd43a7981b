//! Runs one build-step command as a child process: streams its output line by line, enforces the
//! no-output `timeout` and the overall `max_time`, and kills its whole process group when it has to
//! stop, so that nothing a step started outlives it (Buildbot's worker semantics).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest piece of a line that is sent at once; longer lines are cut so memory stays bounded.
const MAX_PIECE: usize = 64 * 1024;
/// Size of one read from a pipe.
const READ_CHUNK: usize = 8 * 1024;
/// How long the pipes may stay open after the main process ended by itself.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long to collect what killed processes left in the pipes.
const FLUSH_AFTER_KILL: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Program and arguments; the program is looked up in PATH. Never empty (an empty argv is an
    /// `InvalidInput` error from `run`).
    pub argv: Vec<String>,
    /// Working directory; created (with parents) if missing.
    pub workdir: std::path::PathBuf,
    /// Changes on top of the master's own environment: Some(value) sets, None removes.
    pub env: Vec<(String, Option<String>)>,
    /// Kill the command after this long without output (Buildbot's `timeout`).
    pub timeout: Option<Duration>,
    /// Kill the command after this long in all (Buildbot's `max_time`).
    pub max_time: Option<Duration>,
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// Killed by a signal it was not sent by us (number).
    Signalled(i32),
    /// Killed after `timeout` without output.
    TimedOut(Duration),
    /// Killed after `max_time`.
    MaxTimeExceeded(Duration),
    /// Killed because `stop` was signalled.
    Cancelled,
}

/// How the command ended and how long it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub ending: Ending,
    pub elapsed: Duration,
}

/// Runs `command`, sending each output line (without its newline, invalid UTF-8 replaced; a last line
/// without newline is sent too) to `output` as it arrives, stdout and stderr each in their own order.
/// `stop` becoming true kills the command. Err only when it cannot be started (workdir cannot be
/// created, program not found…): the io::Error's message says what failed.
pub async fn run(
    command: Command,
    output: mpsc::Sender<(Stream, String)>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<Finished> {
    let Some((program, args)) = command.argv.split_first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot run an empty command",
        ));
    };
    if *stop.borrow() {
        return Ok(Finished {
            ending: Ending::Cancelled,
            elapsed: Duration::ZERO,
        });
    }
    tokio::fs::create_dir_all(&command.workdir)
        .await
        .map_err(|e| {
            let dir = command.workdir.display();
            with_context(e, &format!("cannot create working directory '{dir}'"))
        })?;

    let start = Instant::now();
    let (mut child, group) = spawn(&command, program, args)
        .map_err(|e| with_context(e, &format!("cannot run '{program}'")))?;
    let clock = OutputClock::new(start);
    let mut pumps = start_pumps(&mut child, &output, &clock);
    let ending = supervise(&mut child, &group, &command, &clock, &mut stop)
        .await
        .map_err(|e| with_context(e, &format!("cannot wait for '{program}'")))?;
    finish_output(&mut pumps, group, &mut stop).await;
    Ok(Finished {
        ending,
        elapsed: start.elapsed(),
    })
}

/// Prefixes an error's message with what was being attempted, keeping its kind.
fn with_context(error: io::Error, context: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

/// Starts the program in a process group of its own, with stdin from /dev/null and piped output.
fn spawn(command: &Command, program: &str, args: &[String]) -> io::Result<(Child, ProcessGroup)> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&command.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, value) in &command.env {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    let child = cmd.spawn()?;
    // The id is only missing once the child has been waited for, which cannot have happened yet.
    let pid = child
        .id()
        .and_then(|id| libc::pid_t::try_from(id).ok())
        .ok_or_else(|| io::Error::other("the started process has no id"))?;
    Ok((child, ProcessGroup(pid)))
}

/// The command's process group. Dropping it kills the group, so an abandoned `run` (its future
/// dropped) leaves nothing running either.
struct ProcessGroup(libc::pid_t);

impl ProcessGroup {
    /// Sends SIGKILL to every process in the group, grandchildren included.
    fn kill(&self) {
        // SAFETY: killpg only sends a signal. Failure means the group is already gone.
        unsafe { libc::killpg(self.0, libc::SIGKILL) };
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// When either pipe last produced output; shared by the pumps and the no-output timer.
#[derive(Clone)]
struct OutputClock {
    start: Instant,
    last_nanos: Arc<AtomicU64>,
}

impl OutputClock {
    fn new(start: Instant) -> Self {
        Self {
            start,
            last_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed))
    }
}

/// Starts one task per pipe forwarding its lines to `output`.
fn start_pumps(
    child: &mut Child,
    output: &mpsc::Sender<(Stream, String)>,
    clock: &OutputClock,
) -> JoinSet<()> {
    let mut pumps = JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.spawn(pump(stdout, Stream::Stdout, output.clone(), clock.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.spawn(pump(stderr, Stream::Stderr, output.clone(), clock.clone()));
    }
    pumps
}

/// Forwards the lines of one pipe until it reaches EOF.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    output: mpsc::Sender<(Stream, String)>,
    clock: OutputClock,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0; READ_CHUNK];
    loop {
        // A read error on a pipe means nothing more can come from it, just like EOF.
        let n = match pipe.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        clock.touch();
        for line in splitter.push(&buf[..n]) {
            deliver(&output, stream, line, &clock).await;
        }
    }
    if let Some(line) = splitter.finish() {
        deliver(&output, stream, line, &clock).await;
    }
}

/// Sends one line. A dropped receiver only means nobody wants the output: the command keeps running.
async fn deliver(
    output: &mpsc::Sender<(Stream, String)>,
    stream: Stream,
    line: String,
    clock: &OutputClock,
) {
    let _ = output.send((stream, line)).await;
    // Time spent waiting for a slow receiver is not silence of the command.
    clock.touch();
}

/// Cuts a byte stream into lines, and lines longer than `MAX_PIECE` into pieces.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next bytes and returns the lines (or pieces) they complete.
    fn push(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..newline]);
            self.cut_long(&mut lines);
            lines.push(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
            data = &data[newline + 1..];
        }
        self.pending.extend_from_slice(data);
        self.cut_long(&mut lines);
        lines
    }

    /// The last line when the stream did not end with a newline.
    fn finish(self) -> Option<String> {
        (!self.pending.is_empty()).then(|| String::from_utf8_lossy(&self.pending).into_owned())
    }

    /// Moves pieces out of `pending` until at most `MAX_PIECE` bytes are left, so that a line of
    /// exactly `MAX_PIECE` bytes is not followed by an empty piece.
    fn cut_long(&mut self, lines: &mut Vec<String>) {
        while self.pending.len() > MAX_PIECE {
            let end = piece_end(&self.pending);
            lines.push(String::from_utf8_lossy(&self.pending[..end]).into_owned());
            self.pending.drain(..end);
        }
    }
}

/// Where to cut a piece off `bytes` (longer than `MAX_PIECE`): at `MAX_PIECE`, or up to three bytes
/// before it so that a UTF-8 character is not split in two.
fn piece_end(bytes: &[u8]) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    (MAX_PIECE - 3..=MAX_PIECE)
        .rev()
        .find(|&i| !is_continuation(bytes[i]))
        .unwrap_or(MAX_PIECE)
}

/// Waits for the main process to end; if it must be stopped first, kills its group and reaps it.
async fn supervise(
    child: &mut Child,
    group: &ProcessGroup,
    command: &Command,
    clock: &OutputClock,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<Ending> {
    let reason = tokio::select! {
        status = child.wait() => return status.map(ending_of),
        () = stopped(stop) => Ending::Cancelled,
        timeout = silence(command.timeout, clock) => Ending::TimedOut(timeout),
        max_time = expiry(command.max_time, clock.start) => Ending::MaxTimeExceeded(max_time),
    };
    group.kill();
    child.wait().await?;
    Ok(reason)
}

fn ending_of(status: ExitStatus) -> Ending {
    match status.code() {
        Some(code) => Ending::Exited(code),
        // Waiting reports only exits and deaths by signal, so without a code there is a signal.
        None => Ending::Signalled(status.signal().unwrap_or(0)),
    }
}

/// Completes once `stop` is true; never if its sender is gone while it is false.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes with `timeout` once no output has arrived for that long; never without a timeout.
async fn silence(timeout: Option<Duration>, clock: &OutputClock) -> Duration {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let Some(deadline) = clock.last().checked_add(timeout) else {
            return std::future::pending().await;
        };
        if Instant::now() >= deadline {
            return timeout;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Completes with `max_time` once that long has passed since `start`; never without a max time.
async fn expiry(max_time: Option<Duration>, start: Instant) -> Duration {
    let Some(max_time) = max_time else {
        return std::future::pending().await;
    };
    let Some(deadline) = start.checked_add(max_time) else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(deadline).await;
    max_time
}

/// Lets the pumps read to EOF for a while after the main process ended (a background process may
/// still hold the pipes), then kills the group so that nothing the step started outlives it.
async fn finish_output(
    pumps: &mut JoinSet<()>,
    group: ProcessGroup,
    stop: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::timeout(DRAIN_GRACE, all_done(pumps)) => {}
        () = stopped(stop) => {}
    }
    drop(group);
    // Killed holders close the pipes at once, and what they wrote (a partial last line included)
    // still arrives. Pumps still running after this are fed by processes that left the group; they
    // are aborted when `pumps` is dropped.
    let _ = tokio::time::timeout(FLUSH_AFTER_KILL, all_done(pumps)).await;
}

async fn all_done(pumps: &mut JoinSet<()>) {
    while pumps.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Once;

    fn command(argv: &[&str]) -> Command {
        Command {
            argv: argv.iter().map(|arg| arg.to_string()).collect(),
            workdir: std::env::temp_dir(),
            env: Vec::new(),
            timeout: None,
            max_time: None,
        }
    }

    fn sh(script: &str) -> Command {
        command(&["sh", "-c", script])
    }

    /// Runs `command` to the end and returns how it finished and everything it printed.
    async fn collect(command: Command) -> (Finished, Vec<(Stream, String)>) {
        let (tx, mut rx) = mpsc::channel(16);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(command, tx, stop_rx));
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        (task.await.unwrap().unwrap(), lines)
    }

    fn of(lines: &[(Stream, String)], stream: Stream) -> Vec<String> {
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// A fresh directory path for one test, not yet created.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("process-rs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Makes this test process adopt orphaned grandchildren so that `assert_gone` can reap them
    /// itself instead of waiting for init, which may reap only now and then.
    fn adopt_orphans() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: changes only how this process is treated by the kernel.
            let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
            assert_eq!(result, 0, "cannot become a subreaper");
        });
    }

    async fn assert_gone(pid: libc::pid_t) {
        for _ in 0..100 {
            // SAFETY: reaps `pid` if it is our zombie, then probes whether it still exists.
            let alive = unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
                libc::kill(pid, 0) == 0
            };
            if !alive {
                let errno = io::Error::last_os_error().raw_os_error();
                assert_eq!(errno, Some(libc::ESRCH));
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("process {pid} is still running");
    }

    #[tokio::test]
    async fn lines_arrive_tagged_by_stream() {
        let (finished, lines) =
            collect(sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2")).await;
        assert_eq!(finished.ending, Ending::Exited(0));
        assert_eq!(of(&lines, Stream::Stdout), ["out1", "out2"]);
        assert_eq!(of(&lines, Stream::Stderr), ["err1", "err2"]);
    }

    #[tokio::test]
    async fn exit_codes_are_reported() {
        assert_eq!(
            collect(command(&["true"])).await.0.ending,
            Ending::Exited(0)
        );
        assert_eq!(collect(sh("exit 3")).await.0.ending, Ending::Exited(3));
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let (finished, _) = collect(sh("kill -TERM $$")).await;
        assert_eq!(finished.ending, Ending::Signalled(libc::SIGTERM));
    }

    #[tokio::test]
    async fn env_changes_set_and_remove_variables() {
        assert!(
            std::env::var_os("HOME").is_some(),
            "the test needs HOME set"
        );
        let mut cmd = sh(r#"echo "${PROCESS_RS_TEST-unset}"; echo "${HOME-unset}""#);
        cmd.env = vec![
            ("PROCESS_RS_TEST".to_string(), Some("set here".to_string())),
            ("HOME".to_string(), None),
        ];
        let (_, lines) = collect(cmd).await;
        assert_eq!(of(&lines, Stream::Stdout), ["set here", "unset"]);
    }

    #[tokio::test]
    async fn missing_workdir_is_created() {
        let base = scratch_dir("workdir");
        let mut cmd = sh("pwd -P");
        cmd.workdir = base.join("a").join("b");
        let (finished, lines) = collect(cmd.clone()).await;
        assert_eq!(finished.ending, Ending::Exited(0));
        let real = cmd.workdir.canonicalize().unwrap();
        assert_eq!(of(&lines, Stream::Stdout), [real.to_str().unwrap()]);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[tokio::test]
    async fn uncreatable_workdir_is_an_error() {
        let base = scratch_dir("file-in-the-way");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("file"), "").unwrap();
        let mut cmd = command(&["true"]);
        cmd.workdir = base.join("file").join("sub");
        let (tx, _rx) = mpsc::channel(1);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let error = run(cmd.clone(), tx, stop_rx).await.unwrap_err();
        let expected = format!(
            "cannot create working directory '{}': ",
            cmd.workdir.display()
        );
        assert!(error.to_string().starts_with(&expected), "{error}");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[tokio::test]
    async fn missing_program_is_an_error_naming_it() {
        let (tx, _rx) = mpsc::channel(1);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let error = run(command(&["nosuchprog"]), tx, stop_rx)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            error.to_string(),
            "cannot run 'nosuchprog': No such file or directory (os error 2)"
        );
    }

    #[tokio::test]
    async fn empty_argv_is_invalid_input() {
        let (tx, _rx) = mpsc::channel(1);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let error = run(command(&[]), tx, stop_rx).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn silence_times_out() {
        let mut cmd = command(&["sleep", "5"]);
        cmd.timeout = Some(Duration::from_millis(200));
        let (finished, _) = collect(cmd).await;
        assert_eq!(
            finished.ending,
            Ending::TimedOut(Duration::from_millis(200))
        );
        assert!(finished.elapsed >= Duration::from_millis(200));
        assert!(finished.elapsed < Duration::from_secs(5), "{finished:?}");
    }

    #[tokio::test]
    async fn output_restarts_the_silence_timer() {
        // Gaps far below the timeout, a total well above it.
        let mut cmd = sh("for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.2; done");
        cmd.timeout = Some(Duration::from_secs(1));
        let (finished, lines) = collect(cmd).await;
        assert_eq!(finished.ending, Ending::Exited(0));
        assert_eq!(lines.len(), 8);
    }

    #[tokio::test]
    async fn partial_output_restarts_the_silence_timer() {
        let mut cmd = sh("for i in 1 2 3 4 5 6 7 8; do printf .; sleep 0.2; done");
        cmd.timeout = Some(Duration::from_secs(1));
        let (finished, lines) = collect(cmd).await;
        assert_eq!(finished.ending, Ending::Exited(0));
        assert_eq!(of(&lines, Stream::Stdout), [".".repeat(8)]);
    }

    #[tokio::test]
    async fn max_time_kills_a_chatty_command() {
        let mut cmd = sh("while :; do echo tick; sleep 0.05; done");
        cmd.timeout = Some(Duration::from_secs(1));
        cmd.max_time = Some(Duration::from_millis(200));
        let (finished, _) = collect(cmd).await;
        assert_eq!(
            finished.ending,
            Ending::MaxTimeExceeded(Duration::from_millis(200))
        );
        assert!(finished.elapsed >= Duration::from_millis(200));
        assert!(finished.elapsed < Duration::from_secs(5), "{finished:?}");
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group() {
        adopt_orphans();
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(sh("sleep 30 & echo $!; wait"), tx, stop_rx));
        let (_, line) = rx.recv().await.unwrap();
        let grandchild: libc::pid_t = line.parse().unwrap();
        stop_tx.send(true).unwrap();
        let finished = task.await.unwrap().unwrap();
        assert_eq!(finished.ending, Ending::Cancelled);
        assert!(finished.elapsed < Duration::from_secs(5), "{finished:?}");
        assert_gone(grandchild).await;
    }

    #[tokio::test]
    async fn stop_before_start_runs_nothing() {
        let mut cmd = command(&["nosuchprog"]);
        cmd.workdir = scratch_dir("never-created");
        let (tx, _rx) = mpsc::channel(1);
        let (_stop_tx, stop_rx) = watch::channel(true);
        let finished = run(cmd.clone(), tx, stop_rx).await.unwrap();
        assert_eq!(finished.ending, Ending::Cancelled);
        assert!(!cmd.workdir.exists());
    }

    #[tokio::test]
    async fn dropped_stop_sender_never_stops() {
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        drop(stop_tx);
        let finished = run(sh("sleep 0.1; echo done"), tx, stop_rx).await.unwrap();
        assert_eq!(finished.ending, Ending::Exited(0));
        assert_eq!(rx.recv().await, Some((Stream::Stdout, "done".to_string())));
    }

    #[tokio::test]
    async fn dropped_output_receiver_keeps_running() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let finished = run(sh("seq 1 10000; exit 4"), tx, stop_rx).await.unwrap();
        assert_eq!(finished.ending, Ending::Exited(4));
    }

    #[tokio::test]
    async fn background_holder_of_stdout_is_killed_after_grace() {
        adopt_orphans();
        let (finished, lines) = collect(sh("sleep 30 & echo $!; printf tail")).await;
        assert_eq!(finished.ending, Ending::Exited(0));
        assert!(finished.elapsed >= DRAIN_GRACE, "{finished:?}");
        assert!(finished.elapsed < Duration::from_secs(3), "{finished:?}");
        let stdout = of(&lines, Stream::Stdout);
        assert_eq!(stdout[1..], ["tail"]);
        assert_gone(stdout[0].parse().unwrap()).await;
    }

    #[tokio::test]
    async fn dropping_run_kills_the_group() {
        adopt_orphans();
        let (tx, mut rx) = mpsc::channel(16);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let mut running = Box::pin(run(sh("sleep 30 & echo $!; wait"), tx, stop_rx));
        let line = tokio::select! {
            line = rx.recv() => line.unwrap().1,
            ended = &mut running => panic!("ended early: {ended:?}"),
        };
        drop(running);
        assert_gone(line.parse().unwrap()).await;
    }

    #[tokio::test]
    async fn last_line_without_newline_arrives() {
        let (_, lines) = collect(command(&["printf", "a\\nb"])).await;
        assert_eq!(of(&lines, Stream::Stdout), ["a", "b"]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let (_, lines) = collect(command(&["printf", "ok\\377x\\n"])).await;
        assert_eq!(of(&lines, Stream::Stdout), ["ok\u{FFFD}x"]);
    }

    #[tokio::test]
    async fn long_line_is_split_into_pieces() {
        let (_, lines) = collect(sh(
            "head -c 150000 /dev/zero | tr '\\0' x; echo; echo after",
        ))
        .await;
        let stdout = of(&lines, Stream::Stdout);
        let lengths: Vec<usize> = stdout.iter().map(String::len).collect();
        assert_eq!(lengths, [MAX_PIECE, MAX_PIECE, 150_000 - 2 * MAX_PIECE, 5]);
        assert!(stdout[..3]
            .iter()
            .all(|piece| piece.bytes().all(|b| b == b'x')));
        assert_eq!(stdout[3], "after");
    }

    #[test]
    fn line_of_exactly_the_limit_is_one_piece() {
        let mut data = vec![b'y'; MAX_PIECE];
        data.push(b'\n');
        let lines = LineSplitter::default().push(&data);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_PIECE);
    }

    #[test]
    fn pieces_keep_characters_whole() {
        let mut data = vec![b'a'; MAX_PIECE - 1];
        data.extend_from_slice("é\n".as_bytes());
        let lines = LineSplitter::default().push(&data);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_PIECE - 1);
        assert_eq!(lines[1], "é");
    }

    #[test]
    fn lines_and_characters_span_reads() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(b"ab").is_empty());
        assert_eq!(splitter.push(b"c\nd\xC3"), ["abc"]);
        assert_eq!(splitter.push(b"\xA9\n"), ["d\u{e9}"]);
        assert_eq!(splitter.finish(), None);
    }
}
