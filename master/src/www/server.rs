//! The HTTP server loop: accepts connections within the `[www]` limits and
//! serves each one with hyper.
//!
//! The master runs its own loop rather than warp's so that it can set
//! `TCP_NODELAY` (a small reply is not held back waiting for the client's
//! ACK), answer 503 above `max_connections` instead of running out of
//! descriptors, close connections that send their headers too slowly or sit
//! idle, and keep accepting after a transient `accept` failure.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use warp::http::Request;

use super::AppState;
use crate::config::HttpLimits;

/// The peer of the connection a request came on, as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub SocketAddr);

/// The reply to a connection above `max_connections`.
fn refusal() -> String {
    let body = r#"{"error":"too many connections; try again later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// How long a refused connection is given to take its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Refusals answered at once; past this, refused connections are just closed.
const MAX_REFUSING: usize = 64;

/// Serves `routes(state)` on `listener` until `shutdown` resolves, then lets
/// the requests in flight finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (closing, closed) = watch::channel(false);
    let routes = super::routes(state.clone(), closed.clone());
    let open = Arc::new(Counter::default());
    let refusing = Arc::new(Counter::default());
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_errors.failed(&error).await;
                continue;
            }
        };
        // Best effort: a socket that refuses the option still works.
        let _ = stream.set_nodelay(true);
        let limits = state.registry.load().limits;
        match open.enter(limits.max_connections) {
            Some(slot) => {
                let service = warp::service(routes.clone());
                let closed = closed.clone();
                tokio::spawn(connection(stream, peer, service, limits, closed, slot));
            }
            None => {
                tracing::warn!(
                    "refused a connection from {peer}: {} connections open (max_connections)",
                    limits.max_connections
                );
                if let Some(slot) = refusing.enter(MAX_REFUSING) {
                    tokio::spawn(refuse(stream, slot));
                }
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    open.emptied().await;
}

/// Counts what is open, up to a bound.
#[derive(Default)]
struct Counter {
    count: AtomicUsize,
    emptied: Notify,
}

impl Counter {
    /// One more, unless `max` are open already.
    fn enter(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(self.clone()))
    }

    async fn emptied(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// One place in a [`Counter`], given back when dropped.
struct Slot(Arc<Counter>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.emptied.notify_waiters();
        }
    }
}

/// Logs failed accepts without flooding the log, and backs off when the
/// process is out of descriptors (retrying at once would spin).
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    async fn failed(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now - at >= Duration::from_secs(10))
        {
            if self.suppressed > 0 {
                tracing::warn!(
                    "accept error: {error} ({} more since the last report)",
                    self.suppressed
                );
            } else {
                tracing::warn!("accept error: {error}");
            }
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        let out_of_descriptors = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if out_of_descriptors {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Answers 503 and closes, reading what the client sent meanwhile so that
/// the close does not reset the connection before the reply is read.
async fn refuse(mut stream: TcpStream, _slot: Slot) {
    let answer = async {
        stream.write_all(refusal().as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
}

/// Serves one connection until it closes, times out, or the server stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    routes: impl tower_service::Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    limits: HttpLimits,
    mut closed: watch::Receiver<bool>,
    _slot: Slot,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = Handler {
        routes,
        peer,
        activity: activity.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!("connection from {peer}: {error}");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = closed.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline.at.into()) => {
                // Activity may have moved the deadline since it was computed.
                if activity.deadline(&limits).at <= Instant::now() {
                    tracing::debug!("closed the connection from {peer}: {}", deadline.reason);
                    return;
                }
            }
        }
    }
}

/// When an idle or stalled connection is closed, and why.
struct Deadline {
    at: Instant,
    reason: &'static str,
}

/// What a connection has done lately, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    /// The last read or write.
    last: AtomicU64,
    /// When the first byte of a request not yet dispatched arrived, plus one;
    /// zero while none is pending.
    request_began: AtomicU64,
    /// Requests handed to the routes whose handler has not returned.
    in_flight: AtomicUsize,
    /// Told when a request begins, is dispatched or is answered: the
    /// deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            request_began: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Release);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .request_began
                .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Release);
    }

    fn dispatched(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.request_began.store(0, Ordering::Release);
        self.changed.notify_one();
    }

    fn answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wrote();
        self.changed.notify_one();
    }

    fn deadline(&self, limits: &HttpLimits) -> Deadline {
        let at = |since_open: u64, limit: Duration| {
            self.opened + Duration::from_millis(since_open) + limit
        };
        let last = self.last.load(Ordering::Acquire);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // A handler at work is bounded by its own limits; the connection
            // only goes when it has been silent for longer than any of them.
            let limit = limits.idle_timeout.max(limits.rest_timeout);
            return Deadline {
                at: at(last, limit),
                reason: "a request made no progress",
            };
        }
        match self.request_began.load(Ordering::Acquire) {
            0 => Deadline {
                at: at(last, limits.idle_timeout),
                reason: "idle_timeout",
            },
            began => Deadline {
                at: at(began - 1, limits.header_read_timeout),
                reason: "header_read_timeout",
            },
        }
    }
}

/// The connection's socket, noting each read and write in its [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Hands each request to the routes with its client's address, counting it
/// in flight until its handler returns.
#[derive(Clone)]
struct Handler<S> {
    routes: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

/// Marks a request answered when its handler returns or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered();
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for Handler<S>
where
    S: tower_service::Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone,
{
    type Response = warp::reply::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<warp::reply::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.dispatched();
        let in_flight = InFlight(self.activity.clone());
        request.extensions_mut().insert(ClientAddress(self.peer));
        let answer = self.routes.clone().call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            response
        })
    }
}
