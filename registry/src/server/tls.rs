//! HTTPS for the registry: the certificate and key from PEM files, and the handshake of one connection.
//!
//! The handshake runs in the connection's own task ([`sdwand::http_serve::serve_with`]), under the server's
//! connection cap, bounded by [`HANDSHAKE_TIMEOUT`]: a slow or broken client delays nobody else, and a
//! failed handshake is logged and dropped: it never reaches the router and never stops the server.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::super::config::TlsFiles;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Runs the TLS handshake of `tcp`, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept(acceptor: TlsAcceptor, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

#[cfg(test)]
mod tests;
