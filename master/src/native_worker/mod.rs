//! `buildmaster worker`: the worker side of `msgpack_experimental_v7` as
//! part of this binary, so a worker machine needs no Python.
//!
//! `worker create DIR` writes `DIR/worker.toml` (the master's address and
//! the worker's name) and `DIR/password` (readable by its owner only);
//! `worker start DIR` connects, logs in with HTTP Basic, runs the commands
//! the master starts in builder directories under `DIR`, and reconnects
//! with exponential backoff when the connection goes. It names its
//! protocol in `Sec-WebSocket-Protocol`; a master that answers with
//! another (or refuses it) makes it stop with a message saying so.

mod commands;
mod session;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, error::ProtocolError};

use crate::workers::remote::protocol::PROTOCOL;

/// The settings file of a worker directory.
pub const SETTINGS_FILE: &str = "worker.toml";
const PASSWORD_FILE: &str = "password";

/// The first wait before reconnecting, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What `worker.toml` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The master's worker port, `HOST:PORT`.
    pub master: String,
    pub name: String,
}

/// `buildmaster worker create`.
pub fn create(dir: &Path, settings: &Settings, password_file: &Path) -> anyhow::Result<()> {
    if settings.name.is_empty() || settings.name.contains(':') {
        bail!(
            "worker name '{}' must be non-empty, without ':'",
            settings.name
        );
    }
    split_address(&settings.master)?;
    let password = std::fs::read_to_string(password_file)
        .with_context(|| format!("cannot read {}", password_file.display()))?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("{} holds no password", password_file.display());
    }
    let file = dir.join(SETTINGS_FILE);
    if file.exists() {
        bail!("{} exists already", file.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_private(&dir.join(PASSWORD_FILE), password)?;
    let text = format!(
        "# A buildmaster worker: `buildmaster worker start {}` runs it.\n\
         # Its password is in the file `{PASSWORD_FILE}` beside this one.\n{}",
        dir.display(),
        toml::to_string(settings)?
    );
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "worker {} for {} created in {}",
        settings.name,
        settings.master,
        dir.display()
    );
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `HOST:PORT` split, the port checked.
fn split_address(address: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("master '{address}' must be HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("master '{address}': '{port}' is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("master '{address}' names no host");
    }
    Ok((host.to_owned(), port))
}

/// A worker directory, read.
pub struct Worker {
    pub settings: Settings,
    password: String,
    /// Absolute: the master is told it and sends absolute paths under it.
    pub basedir: PathBuf,
}

impl Worker {
    pub fn open(dir: &Path) -> anyhow::Result<Worker> {
        let file = dir.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {} (made by `worker create`)", file.display()))?;
        let settings: Settings =
            toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
        split_address(&settings.master).with_context(|| format!("{}", file.display()))?;
        let password_file = dir.join(PASSWORD_FILE);
        let password = std::fs::read_to_string(&password_file)
            .with_context(|| format!("cannot read {}", password_file.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        let basedir = std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        Ok(Worker {
            settings,
            password,
            basedir,
        })
    }

    /// Connects, serves, and reconnects until the master shuts the worker
    /// down (Ok) or speaks another protocol (an error).
    pub async fn run(&self) -> anyhow::Result<()> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.connect().await {
                Ok(socket) => {
                    backoff = FIRST_BACKOFF;
                    tracing::info!(
                        "connected to {} as {} ({PROTOCOL})",
                        self.settings.master,
                        self.settings.name
                    );
                    if session::serve(socket, &self.basedir).await == session::End::Shutdown {
                        tracing::info!("the master asked this worker to shut down");
                        return Ok(());
                    }
                    tracing::warn!("lost the connection to {}", self.settings.master);
                }
                Err(Refusal::Protocol(message)) => bail!(message),
                Err(Refusal::Retry(message)) => tracing::warn!("{message}"),
            }
            tracing::info!("reconnecting in {} s", backoff.as_secs());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<session::Socket, Refusal> {
        let master = &self.settings.master;
        let (host, port) = split_address(master).map_err(|e| Refusal::Retry(e.to_string()))?;
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Refusal::Retry(format!("cannot connect to {master}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let url = if host.contains(':') {
            format!("ws://[{host}]:{port}/")
        } else {
            format!("ws://{host}:{port}/")
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| Refusal::Retry(format!("bad master address {master}: {e}")))?;
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.settings.name, self.password));
        let headers = request.headers_mut();
        headers.insert(
            "Authorization",
            HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(|e| Refusal::Retry(e.to_string()))?,
        );
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOCOL));
        let mut limits = tungstenite::protocol::WebSocketConfig::default();
        limits.max_message_size = Some(session::MAX_MESSAGE);
        limits.max_frame_size = Some(session::MAX_MESSAGE);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(limits)).await {
            Ok((socket, _)) => Ok(socket),
            Err(error) => Err(refusal(master, error)),
        }
    }
}

/// Why a connection did not start: worth retrying, or not.
enum Refusal {
    Retry(String),
    /// The master speaks another protocol: retrying cannot help.
    Protocol(String),
}

fn refusal(master: &str, error: tungstenite::Error) -> Refusal {
    use tungstenite::error::SubProtocolError;
    match error {
        tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            match response.status().as_u16() {
                401 => Refusal::Retry(format!(
                    "{master} refused the login: wrong worker name or password"
                )),
                400 if body.contains("speaks") => Refusal::Protocol(format!(
                    "{master} refused this worker's protocol {PROTOCOL}: {body}"
                )),
                status => Refusal::Retry(format!("{master} answered {status}: {body}")),
            }
        }
        tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(why)) => {
            let said = match why {
                SubProtocolError::NoSubProtocol => "it named no protocol".to_owned(),
                other => format!("it chose another protocol ({other})"),
            };
            Refusal::Protocol(format!(
                "{master} does not speak {PROTOCOL}: {said}; not connecting"
            ))
        }
        other => Refusal::Retry(format!("cannot connect to {master}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_writes_settings_and_a_private_password_that_open_reads() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("secret");
        std::fs::write(&password, "s3cret\n").unwrap();
        let settings = Settings {
            master: "localhost:9989".into(),
            name: "w1".into(),
        };
        let worker_dir = dir.path().join("w");
        create(&worker_dir, &settings, &password).unwrap();
        let worker = Worker::open(&worker_dir).unwrap();
        assert_eq!(worker.settings, settings);
        assert_eq!(worker.password, "s3cret");
        assert!(worker.basedir.is_absolute());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(worker_dir.join(PASSWORD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = create(&worker_dir, &settings, &password).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
    }

    #[test]
    fn bad_names_and_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("secret");
        std::fs::write(&password, "p").unwrap();
        let create_with = |master: &str, name: &str| {
            let settings = Settings {
                master: master.into(),
                name: name.into(),
            };
            create(&dir.path().join("w"), &settings, &password)
                .unwrap_err()
                .to_string()
        };
        assert!(create_with("localhost", "w").contains("must be HOST:PORT"));
        assert!(create_with("localhost:http", "w").contains("is not a port"));
        assert!(create_with("localhost:1", "a:b").contains("without ':'"));
        assert_eq!(
            split_address("[::1]:9989").unwrap(),
            ("::1".to_owned(), 9989)
        );
    }
}
