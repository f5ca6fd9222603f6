//! The registry server: opens the store, binds the listener and serves the API until shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use tokio::signal::unix::{signal, SignalKind};

use super::api;
use super::config::RegistryConfig;
use super::error::ApiError;
use super::service;
use super::store::sqlite::{SqliteOptions, SqliteStore};
use super::store::{Store, StoreError};
use super::wire::AccountCreated;

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
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The registry refused the request (an invalid account name).
    #[error("{}", .0.message)]
    Refused(ApiError),
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: &RegistryConfig) -> Result<(), ServerError> {
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
/// init-account`). Safe while the server runs: SQLite serializes the two writers.
pub async fn init_account(config: &RegistryConfig, name: &str, now_ms: u64) -> Result<AccountCreated, ServerError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.state_dir, SqliteOptions::default())?);
    let name = name.to_owned();
    store
        .write(move |tx| service::create_account(tx, &name, now_ms))
        .await
        .map_err(ServerError::Refused)
}

/// Serves the registry described by `config` until `shutdown` completes, then lets in-flight requests
/// finish and closes the store (every acknowledged write is already durable).
pub async fn serve(
    config: &RegistryConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = SqliteStore::open(&config.state_dir, SqliteOptions::default())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(listen = %config.listen, state_dir = %config.state_dir.display(), "sdwan-registry serving plain HTTP (insecure)");
    let state = api::AppState::new(Arc::new(store)).with_ttls(config.ttls);
    let _reaper = super::reaper::spawn(state.clone());
    axum::serve(listener, api::router_with(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)
}
