//! The registry server: opens the store, binds the listener and serves the API (HTTPS, or plain HTTP with
//! `insecure = true`) until shut down, within the configured limits ([`sdwand::http_serve`]).
//!
//! On etcd the server is one replica among any number on the same key prefix: it wakes its watchers for
//! changes committed through the others ([`crate::store::etcd::Replicas::follow`]) and runs the reaper
//! only while elected ([`crate::store::etcd::Replicas::elect`]).
//!
//! Should the store's writer thread die, the server stops and [`serve`] answers
//! [`ServerError::WriterDied`]: the process exits non-zero and its service manager restarts it, instead
//! of answering every write with 503 forever.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use tokio::signal::unix::{signal, SignalKind};

use super::api;
use super::config::ServerConfig;
use super::error::ApiError;
use super::service;
use super::store::{self, Opened, StoreError};
use sdwand::http_serve::{self, ConnectionStats};
use sdwand::vocab::wire::AccountCreated;

pub mod tls;

/// Why the server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The registry refused the request (an invalid or taken account name).
    #[error("{}", .0.message)]
    Refused(ApiError),
    /// The metrics token file cannot be used.
    #[error("{path}: {reason} (metrics_token_file)")]
    MetricsToken {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store's writer thread died: no write can be done any more.
    #[error("the store's writer thread died; exiting so that the service manager restarts the registry")]
    WriterDied,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: &ServerConfig) -> Result<(), ServerError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("sdwan-registry stopping");
    };
    serve(config, stop).await
}

/// Creates an account in the store of `config` and returns its admin token (`sdwan-registry
/// init-account`). Safe while the server runs: SQLite serializes the two writers, etcd's transactions
/// conflict and retry.
pub async fn init_account(config: &ServerConfig, name: &str, now_ms: u64) -> Result<AccountCreated, ServerError> {
    let store = store::open(&config.store, &config.state_dir)?.store;
    let name = name.to_owned();
    store
        .write(move |tx| service::create_account(tx, &name, now_ms))
        .await
        .map_err(ServerError::Refused)
}

/// Serves the registry described by `config` until `shutdown` completes, then answers waiting watches at
/// once (204), lets in-flight requests finish and closes the store (every acknowledged write is already
/// durable).
pub async fn serve(
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    serve_on(config, listener, shutdown).await
}

/// [`serve`] on a listener bound by the caller (`config.listen` is not used): tests bind port 0.
pub async fn serve_on(
    config: &ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // The TLS files first: a bad certificate stops the start before anything is opened.
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let store = store::open(&config.store, &config.state_dir)?;
    serve_store(config, store, acceptor, listener, shutdown).await
}

/// [`serve_on`] over a store the caller opened, with the TLS acceptor of `config` (if any).
pub async fn serve_store(
    config: &ServerConfig,
    store: impl Into<Opened>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Opened {
        store,
        died: writer_died,
        replicas,
    } = store.into();
    let connections = Arc::new(ConnectionStats::default());
    let mut state = api::AppState::new(store)
        .with_ttls(config.ttls)
        .with_limits(config.limits.api)
        .with_connections(connections.clone());
    if let Some(path) = &config.metrics_token_file {
        state = state.with_metrics_token(metrics_token(path)?);
    }
    let watchers = state.watchers.clone();
    // Several replicas: changes committed through the others wake this one's watchers, and the reaper runs
    // on the elected one only. Dropped at the end of serving (the election gives leadership up).
    let (_reaper, _follower, _election) = match &replicas {
        Some(replicas) => {
            let woken = watchers.clone();
            let follower = replicas.follow(move |network_id, revision| woken.announce(network_id, revision));
            let election = replicas.elect();
            let reaper = super::reaper::spawn_led(state.clone(), election.leading());
            (reaper, Some(follower), Some(election))
        }
        None => (super::reaper::spawn(state.clone()), None, None),
    };
    let router = TowerToHyperService::new(api::router_with(state));
    let stored_in = match &config.store {
        store::StoreConfig::Sqlite => config.state_dir.display().to_string(),
        store::StoreConfig::Etcd(etcd) => format!(
            "etcd {} {} (replica {})",
            etcd.endpoints.join(","),
            etcd.key_prefix,
            replicas.as_ref().map_or("?", |r| r.id())
        ),
    };
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let died = Arc::new(AtomicBool::new(false));
    let stop = {
        let died = died.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = writer_died => died.store(true, Ordering::Relaxed),
            }
            // Waiting watches answer now instead of holding the stop for up to their wait.
            watchers.stop();
        }
    };
    let limits = config.limits.http;
    match acceptor {
        Some(acceptor) => {
            tracing::info!(listen = %local, store = %stored_in, "sdwan-registry serving HTTPS");
            let handshake = move |tcp: TcpStream| tls::accept(acceptor.clone(), tcp);
            http_serve::serve_with(listener, router, limits, connections, stop, handshake).await;
        }
        None => {
            tracing::info!(listen = %local, store = %stored_in, "sdwan-registry serving plain HTTP (insecure)");
            http_serve::serve(listener, router, limits, connections, stop).await;
        }
    }
    if died.load(Ordering::Relaxed) {
        return Err(ServerError::WriterDied);
    }
    Ok(())
}

/// The metrics bearer token from `path` (its first line, whitespace trimmed).
fn metrics_token(path: &Path) -> Result<api::MetricsToken, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServerError::MetricsToken {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })?;
    api::MetricsToken::new(text.lines().next().unwrap_or_default()).ok_or_else(|| ServerError::MetricsToken {
        path: path.to_owned(),
        reason: "is empty: it must hold the bearer token scrapers present".into(),
    })
}

#[cfg(test)]
mod tests;
