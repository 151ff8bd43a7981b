//! The HTTP service: the live dialects (the plugin registry, swapped whole
//! at each reload) and the server, which a reload can move to another
//! address without dropping a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::service::{Next, Service};
use crate::config::Setting;
use crate::registry::Registry;
use crate::tasks::{Policy, Supervisor, TaskHandle};
use crate::www::{self, AppState};

/// How long requests in flight may take to finish once their server stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One server on one socket.
struct Server {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: TaskHandle,
}

impl Server {
    fn spawn(
        listener: TcpListener,
        state: AppState,
        supervisor: &Supervisor,
    ) -> std::io::Result<Server> {
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        // A server cannot be restarted without its socket: it runs once, and
        // its failure makes the master unhealthy.
        let serving = std::sync::Mutex::new(Some((listener, stopped)));
        let task = supervisor.spawn(
            format!("http server on {address}"),
            Policy::Once,
            move || {
                let taken = serving.lock().ok().and_then(|mut s| s.take());
                let state = state.clone();
                async move {
                    if let Some((listener, stopped)) = taken {
                        www::serve(listener, state, async {
                            let _ = stopped.await;
                        })
                        .await;
                    }
                }
            },
        );
        Ok(Server {
            address,
            stop,
            task,
        })
    }

    /// Stops accepting and lets the requests in flight finish, for at most
    /// [`DRAIN_TIMEOUT`]; says whether they all did.
    async fn drain(self) -> bool {
        let _ = self.stop.send(());
        self.task.join(DRAIN_TIMEOUT).await
    }
}

/// The HTTP side of the master.
pub struct Http {
    state: AppState,
    server: Option<Server>,
    supervisor: Supervisor,
}

impl Http {
    /// No server yet: the first configuration gives it its address.
    pub fn new(state: AppState, supervisor: Supervisor) -> Http {
        Http {
            state,
            server: None,
            supervisor,
        }
    }

    /// The live plugin registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.state.registry.load_full()
    }

    /// What the HTTP API sees and asks of the master.
    #[cfg(test)]
    pub fn control(&self) -> crate::control::Control {
        self.state.engine.control.clone()
    }

    /// Where the server listens.
    pub fn address(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|server| server.address)
    }
}

/// The new registry, and a socket bound to a new address.
pub struct Prepared {
    registry: Registry,
    listener: Option<TcpListener>,
}

impl Service for Http {
    type Prepared = Prepared;

    async fn prepare(&self, next: &Next<'_>) -> Result<Prepared, Vec<String>> {
        let listen = next.config.www.listen;
        let listener = if self.server.is_none() || next.diff.changed(Setting::ListenAddress) {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|e| vec![format!("cannot listen on {listen}: {e}")])?;
            Some(listener)
        } else {
            None
        };
        Ok(Prepared {
            registry: next.registry.clone(),
            listener,
        })
    }

    async fn apply(&mut self, prepared: Prepared) -> Result<(), String> {
        // One atomic swap: requests in flight finish on the instances they
        // started with.
        self.state.registry.store(Arc::new(prepared.registry));
        if let Some(listener) = prepared.listener {
            let server = Server::spawn(listener, self.state.clone(), &self.supervisor)
                .map_err(|e| format!("cannot use the new listening socket: {e}"))?;
            if let Some(old) = self.server.replace(server) {
                // The old socket stops accepting; its requests finish aside.
                tokio::spawn(old.drain());
            }
        }
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            if server.drain().await {
                tracing::info!("every request in flight finished");
            } else {
                tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
            }
        }
    }
}
