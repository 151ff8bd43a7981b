//! Where remote workers connect: a WebSocket listener on the
//! `[protocols.msgpack_experimental_v7]` port. A worker logs in with HTTP
//! Basic credentials in the handshake (checked in constant time); a wrong
//! password or an unknown name is refused with 401 and a log line, and
//! counted in the worker's `refused_logins`. After the login the master asks the worker about itself
//! (`get_worker_info`), gives it its settings (`set_worker_settings`),
//! makes its builders' directories (`mkdir`), tells it it is attached
//! (`print`), and checks the connection every
//! `keepalive_interval`. A worker that names its protocol in
//! `Sec-WebSocket-Protocol` must name this one, else it is refused with 400.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use buildmaster_plugin_api::options::Secret;
use rmpv::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};

use crate::control::Control;
use crate::db::Db;
use crate::events::{Bus, Event, WorkerEvent};
use crate::tasks::{Policy, Supervisor, TaskHandle};
use crate::workers::remote::protocol::{self, map};
use crate::workers::remote::{make_builder_dirs, Connection, Link};

/// How long a worker may take to answer the login's questions.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may take to complete its WebSocket handshake.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message a worker may send (an upload block is far smaller).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One remote worker as the listener knows it.
#[derive(Clone)]
pub struct Login {
    pub workerid: i64,
    pub password: Secret,
    pub link: Arc<Link>,
    pub keepalive_interval: Duration,
    /// How long it may be away before it is "missing".
    pub missing_timeout: Duration,
    /// The builders that may use it: their directories are made at login.
    pub builders: Vec<String>,
}

/// The remote workers by name.
pub type Logins = BTreeMap<String, Login>;

/// The listener service.
pub struct WorkerListener {
    db: Db,
    bus: Bus,
    control: Control,
    supervisor: Supervisor,
    logins: Arc<ArcSwap<Logins>>,
    /// The address asked for, the task, and the address bound.
    running: Option<(SocketAddr, TaskHandle, SocketAddr)>,
}

impl WorkerListener {
    pub fn new(db: Db, bus: Bus, control: Control, supervisor: Supervisor) -> WorkerListener {
        WorkerListener {
            db,
            bus,
            control,
            supervisor,
            logins: Arc::new(ArcSwap::from_pointee(Logins::new())),
            running: None,
        }
    }

    /// Listens on `listen` (moving when it changed, stopping when `None`)
    /// for the workers of `logins`; connections of workers still
    /// configured are kept.
    pub async fn apply(
        &mut self,
        listen: Option<SocketAddr>,
        logins: Logins,
    ) -> Result<(), String> {
        let before = self.logins.load_full();
        for (name, login) in before.iter() {
            if !logins.contains_key(name) {
                if let Some(connection) = login.link.connection() {
                    tracing::info!("worker {name} is no longer configured: disconnecting it");
                    connection.close();
                }
            }
        }
        let added: Vec<(String, Login)> = logins
            .iter()
            .filter(|(name, _)| !before.contains_key(*name))
            .map(|(name, login)| (name.clone(), login.clone()))
            .collect();
        self.logins.store(Arc::new(logins));
        // A worker that does not come within its missing_timeout is missing,
        // as one that went away and did not come back.
        let shared = self.shared();
        for (name, login) in added {
            if login.link.connection().is_none() {
                shared.watch_for_missing(name, login, crate::clock::now());
            }
        }
        if self.running.as_ref().map(|(asked, _, _)| *asked) == listen {
            return Ok(());
        }
        if let Some((_, task, _)) = self.running.take() {
            task.stop().await;
        }
        let Some(listen) = listen else {
            return Ok(());
        };
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen for workers on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("workers connect to ws://{bound}/ ({})", protocol::PROTOCOL);
        let listener = Arc::new(listener);
        let shared = self.shared();
        let task = self.supervisor.spawn(
            format!("worker listener on {bound}"),
            Policy::Forever,
            move || {
                let (listener, shared) = (Arc::clone(&listener), shared.clone());
                async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, peer)) => {
                                let shared = shared.clone();
                                tokio::spawn(async move { shared.serve(stream, peer).await });
                            }
                            Err(e) => {
                                tracing::warn!("cannot accept a worker connection: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            },
        );
        self.running = Some((listen, task, bound));
        Ok(())
    }

    fn shared(&self) -> Shared {
        Shared {
            db: self.db.clone(),
            bus: self.bus.clone(),
            control: self.control.clone(),
            logins: Arc::clone(&self.logins),
        }
    }

    /// Stops listening and disconnects every worker.
    pub async fn stop(&mut self) {
        if let Some((_, task, _)) = self.running.take() {
            task.stop().await;
        }
        for login in self.logins.load().values() {
            if let Some(connection) = login.link.connection() {
                connection.close();
            }
        }
    }
}

/// What each connection's task shares.
#[derive(Clone)]
struct Shared {
    db: Db,
    bus: Bus,
    control: Control,
    logins: Arc<ArcSwap<Logins>>,
}

impl Shared {
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let who: Arc<Mutex<Option<Verdict>>> = Arc::default();
        let check = Check {
            logins: self.logins.load_full(),
            verdict: Arc::clone(&who),
        };
        let mut limits = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        limits.max_message_size = Some(MAX_MESSAGE);
        limits.max_frame_size = Some(MAX_MESSAGE);
        let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(limits));
        let Ok(socket) = tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await else {
            tracing::warn!("a connection from {peer} did not complete its handshake in time");
            return;
        };
        let outcome = who.lock().expect("login").take();
        let (name, login) = match (socket, outcome) {
            (Ok(socket), Some((name, Ok(login)))) => (name, (socket, login)),
            (_, Some((name, Err(why)))) => {
                tracing::warn!("worker login from {peer} refused: {why} (name {name:?})");
                if let Err(e) = self.db.record_refused_login(&name).await {
                    tracing::warn!("cannot count a refused login: {e}");
                }
                return;
            }
            (Err(e), _) => {
                tracing::warn!("a connection from {peer} is not a worker's: {e}");
                return;
            }
            (Ok(_), None) => return,
        };
        let (socket, login) = login;
        if !login.link.claim() && !replaces_silent_connection(&login.link, &name).await {
            tracing::warn!("worker {name} connected from {peer} while already connected: refused");
            return;
        }
        let (connection, serve) = Connection::start(socket, None);
        let reader = tokio::spawn(serve);
        match introduce(&connection).await {
            Ok((basedir, info)) => {
                // Beside the login: a shell step makes its own workdir anyway.
                let (made, at, builders) = (
                    Arc::clone(&connection),
                    basedir.clone(),
                    login.builders.clone(),
                );
                let worker = name.clone();
                tokio::spawn(async move {
                    if let Err(e) = make_builder_dirs(&made, &at, &builders).await {
                        tracing::warn!("worker {worker}: {e}");
                    }
                });
                let _ = self.db.record_worker_login(&name, info).await;
                login.link.connect(Arc::clone(&connection), basedir);
                tracing::info!("worker {name} logged in from {peer}");
                self.announce(Event::WorkerConnected, &name, login.workerid);
            }
            Err(e) => {
                tracing::warn!("worker {name} from {peer}: cannot start: {e}");
                login.link.release();
                connection.close();
                let _ = reader.await;
                return;
            }
        }
        let keepalive = keep_alive(&connection, login.keepalive_interval);
        tokio::select! {
            () = connection.wait_closed() => {}
            () = keepalive => connection.close(),
        }
        let _ = reader.await;
        // Only the current connection speaks for the worker.
        if login.link.disconnect(&connection) {
            let _ = self.db.record_worker_logout(&name).await;
            self.announce(Event::WorkerDisconnected, &name, login.workerid);
            self.watch_for_missing(name, login, crate::clock::now());
        }
    }

    /// Says that worker `name`, last seen at `seen` (epoch seconds), is
    /// missing if it is still away, and still configured, after its
    /// `missing_timeout`.
    fn watch_for_missing(&self, name: String, login: Login, seen: i64) {
        let shared = self.clone();
        let generation = login.link.generation();
        tokio::spawn(async move {
            tokio::time::sleep(login.missing_timeout).await;
            let current = shared.logins.load();
            let same = current
                .get(&name)
                .is_some_and(|now| Arc::ptr_eq(&now.link, &login.link));
            // No login since this timer started.
            let away = login.link.generation() == generation && login.link.connection().is_none();
            if same && away {
                shared.bus.send(Event::WorkerMissing(WorkerEvent {
                    workerid: login.workerid,
                    name,
                    at: seen,
                }));
            }
        });
    }

    fn announce(&self, event: fn(WorkerEvent) -> Event, name: &str, workerid: i64) {
        self.control.workers_changed();
        self.bus.send(event(WorkerEvent {
            workerid,
            name: name.to_string(),
            at: crate::clock::now(),
        }));
    }
}

/// The name a worker gave, and its login or why it is refused.
type Verdict = (String, Result<Login, String>);

/// Checks the credentials of a handshake and keeps its verdict.
struct Check {
    logins: Arc<Logins>,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl Callback for Check {
    #[allow(
        clippy::result_large_err,
        reason = "the handshake callback's signature is tungstenite's"
    )]
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
        let (name, password) = basic_credentials(request).unwrap_or_default();
        // buildbot-worker names no protocol; a worker that names some must
        // name this one.
        let offered = offered_protocols(request);
        if !offered.is_empty() && !offered.iter().any(|p| p == protocol::PROTOCOL) {
            let offered = offered.join(", ");
            let why = format!(
                "the worker speaks {offered}, this master {}",
                protocol::PROTOCOL
            );
            *self.verdict.lock().expect("login") = Some((name, Err(why)));
            let mut answer = ErrorResponse::new(Some(format!(
                "this master speaks {}, not {offered}\n",
                protocol::PROTOCOL
            )));
            *answer.status_mut() = StatusCode::BAD_REQUEST;
            return Err(answer);
        }
        let verdict = match self.logins.get(&name) {
            None => {
                // Compared all the same, so that a name's existence takes
                // no less time to learn than a password.
                let _ =
                    Secret::new(String::from("unknown-worker-name")).matches(password.as_bytes());
                Err("unknown worker name".to_owned())
            }
            Some(login) if !login.password.matches(password.as_bytes()) => {
                Err("wrong password".to_owned())
            }
            Some(login) => Ok(login.clone()),
        };
        let refused = verdict.is_err();
        *self.verdict.lock().expect("login") = Some((name, verdict));
        if refused {
            let mut answer = ErrorResponse::new(Some("worker login refused\n".into()));
            *answer.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(answer);
        }
        if !offered.is_empty() {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(protocol::PROTOCOL),
            );
        }
        Ok(response)
    }
}

/// The protocols a handshake offers in `Sec-WebSocket-Protocol`.
fn offered_protocols(request: &Request) -> Vec<String> {
    request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// How long the connection a worker already has may take to answer when a
/// new login comes under its name.
const ARBITRATION: Duration = Duration::from_secs(10);

/// When a worker logs in while the master still holds a connection for it
/// (its host crashed, a NAT forgot it): asks the old connection for a
/// keepalive; if it does not answer, closes it and claims the link for the
/// new one. True when the new login may go on.
async fn replaces_silent_connection(link: &Link, name: &str) -> bool {
    let Some(old) = link.connection() else {
        // Another login is under way.
        return false;
    };
    if old.request("keepalive", vec![], ARBITRATION).await.is_ok() {
        return false;
    }
    tracing::info!("worker {name}: its old connection does not answer; the new one takes over");
    old.close();
    if tokio::time::timeout(ARBITRATION, old.wait_closed())
        .await
        .is_err()
    {
        return false;
    }
    // The old connection's task records its end before the link frees.
    let deadline = tokio::time::Instant::now() + ARBITRATION;
    while tokio::time::Instant::now() < deadline {
        if link.claim() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The worker's name and password from the handshake's `Authorization`.
fn basic_credentials(request: &Request) -> Option<(String, String)> {
    let header = request.headers().get("authorization")?.to_str().ok()?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// The login's questions: what the worker is, then its settings. Gives its
/// base directory and the info shown of it (without its environment, which
/// may hold secrets, or its command list).
async fn introduce(connection: &Connection) -> Result<(String, serde_json::Value), String> {
    let info = connection
        .request("get_worker_info", vec![], HANDSHAKE_TIMEOUT)
        .await?;
    let mut info = protocol::to_json(&info);
    let basedir = info["basedir"]
        .as_str()
        .filter(|dir| dir.starts_with('/'))
        .ok_or("the worker gave no absolute base directory")?
        .to_string();
    if let Some(shown) = info.as_object_mut() {
        shown.remove("environ");
        shown.remove("worker_commands");
    }
    let settings = map(vec![
        ("buffer_size", Value::from(64 * 1024)),
        ("buffer_timeout", Value::from(5)),
        (
            "newline_re",
            Value::from(r"(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)"),
        ),
        ("max_line_length", Value::from(4096)),
    ]);
    connection
        .request(
            "set_worker_settings",
            vec![("args", settings)],
            HANDSHAKE_TIMEOUT,
        )
        .await?;
    // As Buildbot's master does: the worker logs that it is attached.
    connection
        .request(
            "print",
            vec![("message", Value::from("attached"))],
            HANDSHAKE_TIMEOUT,
        )
        .await?;
    Ok((basedir, info))
}

/// Asks the worker every `interval` whether it is there; returns when it
/// does not answer within the next interval.
async fn keep_alive(connection: &Connection, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = connection.request("keepalive", vec![], interval).await {
            tracing::warn!("a worker did not answer its keepalive: {e}");
            return;
        }
    }
}
