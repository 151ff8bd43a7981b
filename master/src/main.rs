//! The `buildmaster` command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use buildmaster::config::{Config, CONFIG_FILE, STARTER};
use buildmaster::plugins::Loader;
use buildmaster::reconfig::{ReloadResult, Status};
use buildmaster::{native_worker, pidfile, registry, systemd, topology};

mod new_plugin;

#[derive(Parser)]
#[command(
    name = "buildmaster",
    version,
    about = "A continuous-integration build master"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a basedir with a master.toml to edit: a local worker, a builder,
    /// a scheduler on `main` and a force scheduler.
    CreateMaster {
        /// The directory to create. An existing master.toml in it is left as it is.
        dir: PathBuf,
    },
    /// Validate a configuration: parse it, load its plugins, construct its dialects.
    Checkconfig {
        /// A basedir or a configuration file.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Run a master (in the foreground unless --daemon).
    Start {
        /// The basedir (holding master.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Detach and log to DIR/buildmaster.log; returns once the master listens.
        #[arg(long)]
        daemon: bool,
    },
    /// Stop the master running in a basedir.
    Stop {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Start no new build and stop once the running builds have ended
        /// (Buildbot's clean shutdown, SIGUSR1); waits for it.
        #[arg(long)]
        clean: bool,
    },
    /// Make the running master reload master.toml and its plugins, and say
    /// how it went: applied, unchanged, or the errors (the old configuration
    /// then stays).
    Reconfig {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Send a change to a master's `base` change hook.
    Sendchange(Box<Sendchange>),
    /// Send a kept change hook delivery through its dialect again (see
    /// GET /api/v2/hooks/deliveries): the master's own stored copy, so a
    /// signed hook still verifies.
    Replay {
        /// The delivery's id.
        delivery: i64,
        /// The master's web address: HOST:PORT or a URL.
        #[arg(short, long, default_value = "localhost:8010")]
        master: String,
        /// USER:PASSWORD of a [www.auth] user allowed to replay.
        #[arg(short, long, conflicts_with = "token")]
        auth: Option<String>,
        /// A [www.auth] bearer token (better from BUILDMASTER_TOKEN).
        #[arg(long, env = "BUILDMASTER_TOKEN")]
        token: Option<String>,
    },
    /// A worker on this machine that connects to a master's worker port
    /// (protocol msgpack_experimental_v7), as buildbot-worker does.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Write a new plugin crate: a dialect or a reporter with typed options,
    /// a test and a README, ready for `cargo build`.
    NewPlugin {
        kind: new_plugin::Kind,
        /// The kind's name in master.toml, e.g. `forgejo`.
        name: String,
        /// The directory to create.
        dir: PathBuf,
        /// The plugin SDK's source directory (default: the one this master
        /// was built from, if present).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Create a worker directory: its master, name and password.
    Create {
        dir: PathBuf,
        /// The master's worker port, HOST:PORT.
        #[arg(long)]
        master: String,
        /// The worker's name, as the master's [[workers]] has it.
        #[arg(long)]
        name: String,
        /// A file holding the worker's password (copied into DIR).
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Run the worker of a directory in the foreground until the master
    /// shuts it down or a signal stops it.
    Start {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct Sendchange {
    /// The master's web address: HOST:PORT or a URL.
    #[arg(short, long, default_value = "localhost:8010")]
    master: String,
    /// USER:PASSWORD for a master with change_hook_auth.
    #[arg(short, long)]
    auth: Option<String>,
    /// The author of the change.
    #[arg(short = 'W', long, alias = "who")]
    author: Option<String>,
    #[arg(long)]
    committer: Option<String>,
    #[arg(short = 'R', long)]
    repository: Option<String>,
    #[arg(short = 'P', long)]
    project: Option<String>,
    #[arg(short, long)]
    branch: Option<String>,
    #[arg(short = 'C', long)]
    category: Option<String>,
    #[arg(short, long)]
    revision: Option<String>,
    #[arg(long)]
    revlink: Option<String>,
    #[arg(long)]
    codebase: Option<String>,
    /// When the change was made, in seconds since the epoch.
    #[arg(long)]
    when: Option<f64>,
    /// The change's comments (commit message).
    #[arg(short, long)]
    comments: Option<String>,
    /// Read the comments from this file (`-` for standard input).
    #[arg(short = 'F', long, conflicts_with = "comments")]
    logfile: Option<PathBuf>,
    /// A property NAME:VALUE; repeat for more.
    #[arg(short, long = "property")]
    property: Vec<String>,
    /// The files the change touches.
    files: Vec<String>,
}

fn main() -> ExitCode {
    // First, while no other thread runs: it edits the environment.
    let notifier = systemd::Notifier::from_env();
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::CreateMaster { dir } => create_master(&dir),
        Command::Checkconfig { path } => return checkconfig(&path),
        Command::Start { dir, daemon: false } => start(&dir, notifier),
        Command::Start { dir, daemon: true } => start_daemon(&dir),
        Command::Stop { dir, clean } => stop(&dir, clean),
        Command::Reconfig { dir } => reconfig(&dir),
        Command::Sendchange(args) => sendchange(*args),
        Command::Replay {
            delivery,
            master,
            auth,
            token,
        } => replay(delivery, &master, auth.as_deref(), token.as_deref()),
        Command::Worker(WorkerCommand::Create {
            dir,
            master,
            name,
            password_file,
        }) => {
            let settings = native_worker::Settings { master, name };
            native_worker::create(&dir, &settings, &password_file)
        }
        Command::Worker(WorkerCommand::Start { dir }) => start_worker(&dir),
        Command::NewPlugin {
            kind,
            name,
            dir,
            sdk,
        } => new_plugin::create(kind, &name, &dir, sdk),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error: text lines, or with `BUILDMASTER_LOG_FORMAT=json`
/// one JSON object per line (fields such as `correlation` as keys).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUILDMASTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match std::env::var("BUILDMASTER_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(false).init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// `DIR` → `DIR/master.toml`; a file stays as it is.
fn config_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(CONFIG_FILE)
    } else {
        path.to_path_buf()
    }
}

fn print_config_errors(errors: &[buildmaster::config::ConfigError]) {
    for error in errors {
        eprintln!("{error}");
    }
}

fn create_master(dir: &Path) -> anyhow::Result<()> {
    let file = dir.join(CONFIG_FILE);
    if file.exists() {
        println!("{} exists already; left as it is", file.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir.join("plugins"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&file, STARTER).with_context(|| format!("cannot write {}", file.display()))?;
    println!("buildmaster configured in {}", dir.display());
    println!(
        "edit {} then run: buildmaster start {}",
        file.display(),
        dir.display()
    );
    Ok(())
}

fn checkconfig(path: &Path) -> ExitCode {
    let file = config_file(path);
    let config = match Config::load(&file) {
        Ok(config) => config,
        Err(errors) => {
            print_config_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    // Load into a throw-away cache so checking leaves the basedir as it was.
    let cache = match tempfile::tempdir() {
        Ok(cache) => cache,
        Err(e) => {
            eprintln!("error: cannot create a temporary plugin cache: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loader = Loader::new(cache.path().to_path_buf());
    let (registry, problems) = registry::prepare(&config, &loader, None);
    for problem in &problems {
        eprintln!("{problem}");
    }
    if !problems.is_empty() {
        return ExitCode::FAILURE;
    }
    let mut names: Vec<&String> = registry.dialects.keys().collect();
    names.sort();
    println!(
        "{}: {} plugin(s), dialects: {}",
        file.display(),
        registry.offers.len(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    println!("Config file is good!");
    ExitCode::SUCCESS
}

fn start(dir: &Path, notifier: systemd::Notifier) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // First of all, so that an early SIGHUP does not end the process.
        let signals = topology::Signals::install()?;
        let file = config_file(dir);
        let config = match Config::load(&file) {
            Ok(config) => config,
            Err(errors) => {
                print_config_errors(&errors);
                bail!(
                    "{} has {} error(s); not starting",
                    file.display(),
                    errors.len()
                );
            }
        };
        topology::run(config, signals, notifier).await
    })
}

fn start_worker(dir: &Path) -> anyhow::Result<()> {
    let worker = native_worker::Worker::open(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            ended = worker.run() => ended,
            // Leaving the runtime drops the running commands, which kills
            // their process groups.
            _ = terminate.recv() => Ok(()),
            _ = interrupt.recv() => Ok(()),
        }
    })
}

/// The log file of a master started with `--daemon`.
const DAEMON_LOG: &str = "buildmaster.log";

fn start_daemon(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;

    // Check the configuration here, so errors reach the terminal.
    let file = config_file(dir);
    if let Err(errors) = Config::load(&file) {
        print_config_errors(&errors);
        bail!(
            "{} has {} error(s); not starting",
            file.display(),
            errors.len()
        );
    }
    let log_path = dir.join(DAEMON_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let offset = log.metadata()?.len();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("start")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot start the master process")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read(&log_path).unwrap_or_default();
        let new =
            String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned();
        if let Some(line) = new.lines().find(|l| l.contains(" listening on ")) {
            let address = line.rsplit(' ').next().unwrap_or_default();
            println!(
                "master started (pid {}), listening on {address}; log: {}",
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            eprint!("{new}");
            bail!(
                "the master exited ({status}) before listening; see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the master did not start listening within 30 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(dir: &Path, clean: bool) -> anyhow::Result<()> {
    let pid = running_pid(dir).inspect_err(|_| {
        // A stale pid file is of no use to anyone.
        let pid_file = dir.join(pidfile::PID_FILE);
        if pidfile::read_pid(&pid_file).is_some_and(|pid| !pidfile::process_alive(pid)) {
            let _ = std::fs::remove_file(&pid_file);
        }
    })?;
    // A clean shutdown is Buildbot's SIGUSR1: no build starts, and the master
    // exits once the running ones have ended, however long they take.
    let signal = if clean { libc::SIGUSR1 } else { libc::SIGTERM };
    // SAFETY: signalling a pid read from our own pid file.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    if clean {
        println!(
            "clean shutdown started: the master (pid {pid}) stops when its running builds end"
        );
    }
    let deadline = (!clean).then(|| Instant::now() + Duration::from_secs(15));
    while pidfile::process_alive(pid) {
        if deadline.is_some_and(|deadline| Instant::now() > deadline) {
            bail!("master (pid {pid}) did not stop within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("master (pid {pid}) stopped");
    Ok(())
}

/// The pid of the master running in `dir`.
fn running_pid(dir: &Path) -> anyhow::Result<i32> {
    let pid_file = dir.join(pidfile::PID_FILE);
    let Some(pid) = pidfile::read_pid(&pid_file) else {
        bail!(
            "no master is running in {} (no {})",
            dir.display(),
            pid_file.display()
        );
    };
    if !pidfile::process_alive(pid) {
        bail!(
            "no master is running in {} (stale pid {pid})",
            dir.display()
        );
    }
    Ok(pid)
}

fn reconfig(dir: &Path) -> anyhow::Result<()> {
    let pid = running_pid(dir)?;
    let before = Status::read(dir).map_or(0, |status| status.attempts);
    // SAFETY: sending SIGHUP to a pid read from our own pid file.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = Status::read(dir).filter(|s| s.attempts > before) {
            break status;
        }
        if Instant::now() > deadline {
            bail!("the master (pid {pid}) did not report a reconfig within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let described = status.describe(buildmaster::clock::now());
    match status.result {
        ReloadResult::Failed => {
            for error in &status.errors {
                eprintln!("{error}");
            }
            let summary = described.lines().next().unwrap_or_default();
            bail!("{summary}")
        }
        _ => {
            println!("{described}");
            Ok(())
        }
    }
}

/// `HOST:PORT` or a URL, as a URL without a trailing `/`.
fn master_url(master: &str) -> String {
    if master.contains("://") {
        master.trim_end_matches('/').to_string()
    } else {
        format!("http://{master}")
    }
}

/// How a command proves who it is to the master's web server.
struct Credentials<'a> {
    /// `USER:PASSWORD` for HTTP Basic.
    auth: Option<&'a str>,
    /// A bearer token.
    token: Option<&'a str>,
}

/// POSTs `body` to `url`; the status and the body of the answer.
fn post(
    url: &str,
    content_type: &str,
    body: String,
    timeout: Duration,
    credentials: Credentials,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("Content-Type", content_type)
            .timeout(timeout)
            .body(body);
        if let Some(auth) = credentials.auth {
            let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
            request = request.basic_auth(user, Some(password));
        }
        if let Some(token) = credentials.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        Ok((status, response.text().await.unwrap_or_default()))
    })
}

fn replay(
    delivery: i64,
    master: &str,
    auth: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let url = format!("{}/api/v2/hooks/deliveries/{delivery}", master_url(master));
    let call = serde_json::json!({"jsonrpc": "2.0", "method": "replay", "id": 1});
    let (status, text) = post(
        &url,
        "application/json",
        call.to_string(),
        Duration::from_secs(60),
        Credentials { auth, token },
    )?;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if let Some(error) = answer.get("error") {
        bail!(
            "the master refused the replay ({status}): {}",
            error["message"].as_str().unwrap_or_default()
        );
    }
    if !status.is_success() {
        bail!("the master answered {status}: {}", text.trim());
    }
    let result = &answer["result"];
    let replayed = &result["delivery"];
    println!(
        "delivery {delivery} replayed as delivery {}: {} {}",
        replayed["deliveryid"],
        result["status"],
        replayed["verdict"].as_str().unwrap_or_default()
    );
    for change in replayed["changes"].as_array().into_iter().flatten() {
        println!("  change {}", change["changeid"]);
    }
    Ok(())
}

fn sendchange(args: Sendchange) -> anyhow::Result<()> {
    let base = master_url(&args.master);
    let comments = match &args.logfile {
        Some(path) if path.as_os_str() == "-" => Some(std::io::read_to_string(std::io::stdin())?),
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => args.comments.clone(),
    };
    let mut properties = serde_json::Map::new();
    for property in &args.property {
        let (name, value) = property
            .split_once(':')
            .with_context(|| format!("property '{property}' is not NAME:VALUE"))?;
        properties.insert(
            name.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    let mut form: Vec<(&str, String)> = Vec::new();
    let fields = [
        ("author", &args.author),
        ("committer", &args.committer),
        ("repository", &args.repository),
        ("project", &args.project),
        ("branch", &args.branch),
        ("category", &args.category),
        ("revision", &args.revision),
        ("revlink", &args.revlink),
        ("codebase", &args.codebase),
        ("comments", &comments),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            form.push((name, value.clone()));
        }
    }
    if let Some(when) = args.when {
        form.push(("when_timestamp", when.to_string()));
    }
    if !args.files.is_empty() {
        form.push(("files", serde_json::to_string(&args.files)?));
    }
    if !properties.is_empty() {
        form.push((
            "properties",
            serde_json::Value::Object(properties).to_string(),
        ));
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();

    let url = format!("{base}/change_hook/base");
    let (status, text) = post(
        &url,
        "application/x-www-form-urlencoded",
        body,
        Duration::from_secs(30),
        Credentials {
            auth: args.auth.as_deref(),
            token: None,
        },
    )?;
    if !status.is_success() {
        bail!("the master answered {status}: {text}");
    }
    println!("change sent successfully: {text}");
    Ok(())
}
