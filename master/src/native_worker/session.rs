//! One connection of the native worker: the master's requests answered,
//! its commands run each in their own task.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rmpv::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;

use super::commands::{self, OutputSettings};
use crate::workers::remote::protocol::{get, map, text};
use crate::workers::remote::Connection;

pub type Socket = WebSocketStream<TcpStream>;

/// The largest message either side sends (blocks of files are smaller).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Lost,
    /// The master asked the worker to shut down.
    Shutdown,
}

/// The commands running, by id: their stop flags.
type Running = Arc<Mutex<HashMap<String, watch::Sender<bool>>>>;

/// Serves the master on `socket` until the connection goes or the master
/// shuts the worker down. Commands still running then are stopped: the
/// master retries their builds.
pub async fn serve(socket: Socket, basedir: &Path) -> End {
    let (to_worker, mut requests) = mpsc::unbounded_channel();
    let (connection, reader) = Connection::start(socket, Some(to_worker));
    let reader = tokio::spawn(reader);
    let running: Running = Arc::default();
    let mut settings = OutputSettings::default();
    let mut end = End::Lost;
    loop {
        let request = tokio::select! {
            request = requests.recv() => request,
            () = connection.wait_closed() => None,
        };
        let Some(request) = request else { break };
        let answer = match request.op.as_str() {
            "keepalive" => Ok(Value::Nil),
            "print" => {
                let message = get(&request.message, "message").and_then(text);
                tracing::info!("the master says: {}", message.unwrap_or_default());
                Ok(Value::Nil)
            }
            "get_worker_info" => Ok(info(basedir)),
            "set_worker_settings" => {
                if let Some(args) = get(&request.message, "args") {
                    settings.apply(args);
                }
                Ok(Value::Nil)
            }
            "start_command" => start(&connection, &request.message, settings, &running),
            "interrupt_command" => {
                let id = get(&request.message, "command_id").and_then(text);
                // A command that ended meanwhile needs nothing.
                if let Some(stop) =
                    id.and_then(|id| running.lock().expect("running").get(&id).cloned())
                {
                    stop.send_replace(true);
                }
                Ok(Value::Nil)
            }
            "shutdown" => {
                end = End::Shutdown;
                Ok(Value::Nil)
            }
            other => Err(format!("this worker does not know '{other}'")),
        };
        connection.answer(request.seq, answer);
        if end == End::Shutdown {
            // Let the answer go out before the close.
            connection.close();
            break;
        }
    }
    for stop in running.lock().expect("running").values() {
        stop.send_replace(true);
    }
    let _ = reader.await;
    end
}

/// Starts a command in its own task; an unknown command or bad arguments
/// are refused at once.
fn start(
    connection: &Arc<Connection>,
    message: &Value,
    settings: OutputSettings,
    running: &Running,
) -> Result<Value, String> {
    let id = get(message, "command_id")
        .and_then(text)
        .ok_or("start_command without command_id")?;
    let name = get(message, "command_name")
        .and_then(text)
        .ok_or("start_command without command_name")?;
    let args = get(message, "args").cloned().unwrap_or(Value::Nil);
    let command = commands::parse(&name, &args)?;
    let (stop, stopped) = watch::channel(false);
    {
        let mut running = running.lock().expect("running");
        if running.contains_key(&id) {
            return Err(format!("command {id} is already running"));
        }
        running.insert(id.clone(), stop);
    }
    let context = commands::Context {
        connection: Arc::clone(connection),
        id: id.clone(),
        settings,
        stop: stopped,
    };
    let running = Arc::clone(running);
    tokio::spawn(async move {
        let failure = command.run(&context).await.err();
        if let Some(failure) = &failure {
            tracing::warn!("command {id} ({name}) failed: {failure}");
        }
        let args = failure.map_or(Value::Nil, Value::from);
        let _ = context.request("complete", vec![("args", args)]).await;
        running.lock().expect("running").remove(&id);
    });
    Ok(Value::Nil)
}

/// What the worker says about itself, as buildbot-worker does.
fn info(basedir: &Path) -> Value {
    let environ = std::env::vars()
        .map(|(name, value)| (Value::from(name), Value::from(value)))
        .collect();
    let numcpus = std::thread::available_parallelism().map_or(1, usize::from);
    let commands = commands::NAMES
        .iter()
        .map(|name| (Value::from(*name), Value::from("3.3")))
        .collect();
    let mut fields = vec![
        ("basedir", Value::from(basedir.display().to_string())),
        ("system", Value::from("posix")),
        ("numcpus", Value::from(numcpus)),
        (
            "version",
            Value::from(format!("buildmaster {}", env!("CARGO_PKG_VERSION"))),
        ),
        ("environ", Value::Map(environ)),
        ("worker_commands", Value::Map(commands)),
        ("delete_leftover_dirs", Value::from(false)),
    ];
    // Like buildbot-worker, the files of `info/` say who runs it and where.
    for (key, file) in [
        ("admin", "admin"),
        ("host", "host"),
        ("access_uri", "access_uri"),
    ] {
        if let Ok(value) = std::fs::read_to_string(basedir.join("info").join(file)) {
            fields.push((key, Value::from(value.trim())));
        }
    }
    map(fields)
}
