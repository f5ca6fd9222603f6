//! Hardened HTTP/1.1 serving: the one place that bounds what a client can hold open, used by every HTTP
//! endpoint of the crate (the registry's API over plain TCP and TLS, and sdwand's `/metrics`).
//!
//! It serves any hyper service (sdwand's `/metrics` is a plain one, the registry wraps its axum router in
//! `hyper_util::service::TowerToHyperService`), so this crate needs no web framework. A bare server (such as
//! `axum::serve`) sets no hyper timer, so hyper's header-read timeout is off, and it caps nothing: a client
//! that opens connections and sends nothing (or one byte a minute) holds a file descriptor each until the
//! process runs out. Here:
//!
//! - **A cap on open connections** ([`Limits::max_connections`]). A connection accepted while the cap is
//!   reached is closed at once (its descriptor is released immediately, nothing is queued) and counted in
//!   [`ConnectionStats::refused`]; the accept loop never blocks on the cap, so a flood cannot wedge it.
//! - **A header-read timeout** ([`Limits::header_read_timeout`]), with a timer, so hyper enforces it: the
//!   request line and headers must arrive within it. hyper restarts it whenever a kept-alive connection
//!   goes idle, so it is also the idle timeout: silent, trickling and idle connections all close after it.
//! - **A lifetime per connection** ([`Limits::max_connection_age`]): then it is shut down gracefully (the
//!   request in flight finishes, the connection closes), and dropped [`Limits::close_grace`] later whatever
//!   it is doing (a client that stopped reading its answer).
//! - **A bounded read buffer** ([`MAX_BUF`]): a request head larger than it is refused (431) instead of
//!   buffered.
//! - **A handshake per connection** (TLS), run in the connection's own task under the cap: a slow handshake
//!   delays nobody else, and a failed one is logged at debug and dropped.
//!
//! Shutdown is graceful: once the shutdown future completes nothing new is accepted, every connection is
//! asked to finish its request in flight, and [`serve_with`] returns when the last one closed (each within
//! `close_grace`).
//!
//! Per-request deadlines belong to the application's service (the registry exempts its long-poll watch).

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The largest read buffer of a connection: a request head (request line and headers) must fit in it.
pub const MAX_BUF: usize = 64 * 1024;

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning per this period about refused connections or failed accepts (the rest are counted).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (handshakes included); more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time to receive a request's head (line and headers), and the longest idle time of a kept-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// A connection older than this is closed once its request in flight is answered.
    pub max_connection_age: Duration,
    /// How long a connection that is asked to close (age, shutdown) may take to finish its request in
    /// flight before it is dropped.
    pub close_grace: Duration,
}

impl Limits {
    /// The fixed, conservative limits of sdwand's local `/metrics` endpoint: a local user must not be able
    /// to exhaust the daemon's file descriptors (1024 by default) through it.
    pub const METRICS: Limits = Limits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(5),
        max_connection_age: Duration::from_secs(60),
        close_grace: Duration::from_secs(5),
    };
}

/// Connection counters of one server, for its metrics and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnectionStats {
    /// Connections open now (handshakes included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because [`Limits::max_connections`] were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// What [`serve`] can serve: a hyper service, cloned for every connection, answering with any body.
/// Implemented for every such service (an axum `Router` qualifies once wrapped in
/// `hyper_util::service::TowerToHyperService`).
pub trait App:
    Service<Request<Incoming>, Response = Response<Self::Body>, Error = Self::Failure, Future = Self::Answer>
    + Clone
    + Send
    + 'static
{
    /// The answers' body.
    type Body: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static;
    /// The service's error (the connection ends with it).
    type Failure: Into<Box<dyn StdError + Send + Sync>>;
    /// The future of one answer.
    type Answer: Future<Output = Result<Response<Self::Body>, Self::Failure>> + Send + 'static;
}

impl<S, B> App for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::Future: Send + 'static,
    B: Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static,
{
    type Body = B;
    type Failure = S::Error;
    type Answer = S::Future;
}

/// Serves `app` over plain TCP on `listener` until `shutdown` completes, within `limits`.
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, app, limits, stats, shutdown, |tcp| async move { Ok(tcp) }).await;
}

/// [`serve`] with `handshake` run on every accepted connection first (TLS); a connection whose handshake
/// fails is dropped. The handshake must bound its own time.
pub async fn serve_with<A, H, F, Io>(
    listener: TcpListener,
    app: A,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send,
    handshake: H,
) where
    A: App,
    H: Fn(TcpStream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = io::Result<Io>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let mut refused_warning = Throttle::default();
    let mut accept_warning = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(more) = accept_warning.ready() {
                        tracing::warn!(error = %e, failed_since_last_warning = more, "accepting a connection failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(more) = refused_warning.ready() {
                tracing::warn!(
                    %peer, max_connections = max, refused_since_last_warning = more,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        };
        let conn = Connection {
            slot,
            stats: stats.clone(),
            limits,
            stopping: stopping.clone(),
        };
        tokio::spawn(conn.run(tcp, peer, app.clone(), handshake.clone()));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is gone: all slots back means all connections closed.
    let _ = slots.acquire_many(max as u32).await;
}

/// One accepted connection: its slot under the cap and what it needs to run.
struct Connection {
    slot: OwnedSemaphorePermit,
    stats: Arc<ConnectionStats>,
    limits: Limits,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run<A, H, F, Io>(mut self, tcp: TcpStream, peer: SocketAddr, app: A, handshake: H)
    where
        A: App,
        H: Fn(TcpStream) -> F,
        F: Future<Output = io::Result<Io>>,
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let born = Instant::now();
        let io = tokio::select! {
            io = handshake(tcp) => match io {
                Ok(io) => Some(io),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "handshake failed");
                    None
                }
            },
            _ = self.stopping.wait_for(|s| *s) => None,
        };
        if let Some(io) = io {
            self.serve(io, peer, app, born).await;
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        drop(self.slot);
    }

    async fn serve<A, Io>(&mut self, io: Io, peer: SocketAddr, app: A, born: Instant)
    where
        A: App,
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_BUF)
            .serve_connection(TokioIo::new(io), app);
        tokio::pin!(conn);
        tokio::select! {
            done = conn.as_mut() => return log_end(peer, done),
            _ = self.stopping.wait_for(|s| *s) => {}
            () = tokio::time::sleep_until(born + limits.max_connection_age) => {}
        }
        conn.as_mut().graceful_shutdown();
        match tokio::time::timeout(limits.close_grace, conn).await {
            Ok(done) => log_end(peer, done),
            Err(_) => tracing::debug!(%peer, "connection dropped: it did not finish within the close grace"),
        }
    }
}

fn log_end(peer: SocketAddr, done: Result<(), hyper::Error>) {
    if let Err(e) = done {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Lets a repeated warning through at most once per [`WARN_EVERY`], and counts the ones held back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` if a warning may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}
