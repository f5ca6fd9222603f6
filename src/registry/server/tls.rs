//! HTTPS for the registry: the certificate and key from PEM files, and a listener that hands axum only
//! connections whose TLS handshake completed.
//!
//! Handshakes run in tasks of their own, each bounded by [`HANDSHAKE_TIMEOUT`], so a slow or broken client
//! delays nobody else, and a failed handshake is logged and dropped: it never reaches axum and never stops
//! the server. At most [`MAX_PENDING_HANDSHAKES`] run at once; beyond that new connections wait in the
//! kernel's backlog.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::super::config::TlsFiles;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the TLS identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong and what it should hold.
        reason: String,
    },
    /// rustls refuses the pair (the key does not match the certificate, or is of an unsupported kind).
    #[error("{cert} with {key}: {reason}")]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls says, and what to check.
        reason: String,
    },
}

/// Reads the certificate chain and key of `files` and builds the TLS server configuration (TLS 1.2 and
/// 1.3, ring, HTTP/1.1 by ALPN).
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = read(&files.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, "certificate", &e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: files.cert.clone(),
            reason: "holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"): tls_cert must be the \
                     certificate chain, leaf first"
                .into(),
        });
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            path: files.key.clone(),
            reason: "holds no PEM private key (PKCS#8 \"PRIVATE KEY\", PKCS#1 \"RSA PRIVATE KEY\" or SEC1 \"EC \
                     PRIVATE KEY\"): tls_key must be the certificate's private key"
                .into(),
        },
        e => pem_error(&files.key, "private key", &e),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| identity_error(files, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| identity_error(files, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: &str, e: &pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: format!("is not a valid PEM {what} file ({e})"),
    }
}

fn identity_error(files: &TlsFiles, e: &rustls::Error) -> TlsError {
    TlsError::Identity {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: format!("{e} (is the key the certificate's, and an RSA, ECDSA P-256/P-384 or Ed25519 key?)"),
    }
}

/// A listener for `axum::serve` that yields TLS streams whose handshake completed.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `tcp` (on the current tokio runtime). The accept task ends when the listener is
    /// dropped, which `axum::serve` does at graceful shutdown.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, acceptor, ready_tx));
        Ok(TlsListener { local_addr, ready })
    }
}

async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = ready.closed() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    () = ready.closed() => return,
                    accepted = tcp.accept() => accepted.map(|a| (a, permit)),
                },
                Err(_) => return,
            },
        };
        let ((stream, peer), permit) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "registry: accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    drop(permit);
                    // Fails only when the server is shutting down: the connection is dropped.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "registry: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "registry: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task holds the sender until this listener is dropped, so the channel cannot
            // close while `accept` is being awaited.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests;
