use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn http(addr: SocketAddr) -> Checker {
    Checker::new(HealthCheck::Http {
        url: format!("http://{addr}/readyz"),
    })
}

/// Answers one `GET /readyz` on `conn` with `status`, or never when `None`.
async fn answer(mut conn: impl AsyncRead + AsyncWrite + Unpin, status: Option<&str>) {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    assert!(request.starts_with(b"GET /readyz HTTP/1.1\r\n"));
    let Some(status) = status else {
        return std::future::pending().await;
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    conn.write_all(response.as_bytes()).await.unwrap();
    conn.shutdown().await.unwrap();
}

/// An HTTP server on 127.0.0.1:0 that answers every request with `status`, or never when `None`; over TLS
/// when `tls` is given.
async fn server(status: Option<&'static str>, tls: Option<TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    // A refused handshake is what some tests expect; the client reports it.
                    Some(tls) => {
                        if let Ok(conn) = tls.accept(conn).await {
                            answer(conn, status).await;
                        }
                    }
                    None => answer(conn, status).await,
                }
            });
        }
    });
    addr
}

/// A CA, and files in `dir`: `ca.crt`, and `client.crt`/`client.key` it signed; plus a TLS acceptor for
/// 127.0.0.1 with a certificate from that CA that requires a client certificate from it.
fn pki(dir: &Path) -> TlsAcceptor {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issuer: &Issuer<'_, KeyPair> = &ca;
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, issuer).unwrap(), key)
    };
    let (client, client_key) = leaf("node-a", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.crt"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();

    let (server, server_key) = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der().clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

async fn server_plain(status: Option<&'static str>) -> SocketAddr {
    server(status, None).await
}

/// A port on 127.0.0.1 where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn tcp_check_passes_when_connect_succeeds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    Checker::new(HealthCheck::Tcp { target }).check(SECOND).await.unwrap();
    let refused = Checker::new(HealthCheck::Tcp {
        target: closed_port().await,
    })
    .check(SECOND)
    .await;
    assert!(matches!(refused, Err(HealthError::Connect(_))), "{refused:?}");
}

#[tokio::test]
async fn tcp_check_times_out_when_nobody_answers() {
    // A listener with a backlog of 0 that never accepts: once its queue is full the kernel drops SYNs.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let target = listener.local_addr().unwrap();
    let mut checker = Checker::new(HealthCheck::Tcp { target });
    let mut queued = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(SECOND, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(conn)) => queued.push(conn),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => break,
        }
    }
    let timeout = Duration::from_millis(100);
    let result = checker.check(timeout).await;
    assert!(
        matches!(result, Err(HealthError::Timeout(t)) if t == timeout),
        "{result:?}"
    );
}

#[tokio::test]
async fn http_check_needs_2xx_in_time() {
    http(server_plain(Some("200 OK")).await).check(SECOND).await.unwrap();
    http(server_plain(Some("204 No Content")).await)
        .check(SECOND)
        .await
        .unwrap();
    let failed = http(server_plain(Some("503 Service Unavailable")).await)
        .check(SECOND)
        .await;
    assert!(matches!(failed, Err(HealthError::Status(s)) if s == 503), "{failed:?}");
    // Redirects are not followed: a 3xx fails.
    let redirected = http(server_plain(Some("302 Found\r\nLocation: /")).await)
        .check(SECOND)
        .await;
    assert!(
        matches!(redirected, Err(HealthError::Status(s)) if s == 302),
        "{redirected:?}"
    );
    let silent = http(server_plain(None).await).check(Duration::from_millis(100)).await;
    assert!(matches!(silent, Err(HealthError::Timeout(_))), "{silent:?}");
    let refused = http(closed_port().await).check(SECOND).await.unwrap_err();
    assert!(matches!(refused, HealthError::Request(_)), "{refused:?}");
    assert!(refused.to_string().contains("onnect"), "{refused}");
}

#[tokio::test]
async fn https_check_with_ca_file_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let addr = server(Some("200 OK"), Some(pki(dir.path()))).await;
    let file = |name: &str| Some(dir.path().join(name));
    let https = |ca_file, client_cert, client_key| {
        Checker::new(HealthCheck::Https {
            url: format!("https://{addr}/readyz"),
            ca_file,
            client_cert,
            client_key,
        })
    };
    https(file("ca.crt"), file("client.crt"), file("client.key"))
        .check(SECOND)
        .await
        .unwrap();
    // The server requires a client certificate.
    let anonymous = https(file("ca.crt"), None, None).check(SECOND).await;
    assert!(matches!(anonymous, Err(HealthError::Request(_))), "{anonymous:?}");
    // The system roots do not know the test CA.
    let untrusted = https(None, file("client.crt"), file("client.key")).check(SECOND).await;
    let Err(HealthError::Request(e)) = &untrusted else {
        panic!("{untrusted:?}");
    };
    assert!(
        crate::error_chain(e).to_lowercase().contains("certificate"),
        "{}",
        crate::error_chain(e)
    );
    // After a failed request the files are read again: a rotated CA file is picked up.
    let other = tempfile::tempdir().unwrap();
    pki(other.path());
    let rotated = dir.path().join("rotated.crt");
    std::fs::copy(other.path().join("ca.crt"), &rotated).unwrap();
    let mut checker = https(Some(rotated.clone()), file("client.crt"), file("client.key"));
    checker.check(SECOND).await.unwrap_err();
    std::fs::copy(dir.path().join("ca.crt"), &rotated).unwrap();
    checker.check(SECOND).await.unwrap();
    // A key file without a key.
    let keyless = https(file("ca.crt"), file("client.crt"), file("ca.crt"))
        .check(SECOND)
        .await;
    assert!(matches!(&keyless, Err(e) if e.is_setup()), "{keyless:?}");
}

#[tokio::test]
async fn unusable_tls_files_fail_the_check_and_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let mut checker = Checker::new(HealthCheck::Https {
        url: "https://[::1]:1/readyz".into(),
        ca_file: Some(ca.clone()),
        client_cert: None,
        client_key: None,
    });
    let missing = checker.check(SECOND).await.unwrap_err();
    assert!(missing.is_setup());
    assert!(
        missing
            .to_string()
            .starts_with(&format!("cannot read {}", ca.display())),
        "{missing}"
    );
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let empty = checker.check(SECOND).await.unwrap_err();
    assert!(empty.to_string().contains("holds no PEM certificate"), "{empty}");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
    let garbled = checker.check(SECOND).await.unwrap_err();
    assert!(matches!(garbled, HealthError::Pem { .. }), "{garbled}");
    pki(dir.path());
    let refused = checker.check(SECOND).await.unwrap_err();
    assert!(matches!(refused, HealthError::Request(_)), "{refused}");
}

/// A TCP check of `target` every 20 ms (10 ms timeout), rise and fall 2.
fn fast_tcp(target: std::net::SocketAddr) -> HealthConfig {
    HealthConfig {
        check: HealthCheck::Tcp { target },
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(10),
        rise: 2,
        fall: 2,
    }
}

#[tokio::test]
async fn spawn_publishes_debounced_changes_and_ends_with_its_receivers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let cfg = fast_tcp(target);
    let (mut rx, task) = spawn(cfg, false);
    assert!(!*rx.borrow());
    tokio::time::timeout(5 * SECOND, rx.changed()).await.unwrap().unwrap();
    assert!(*rx.borrow_and_update());
    drop(listener);
    tokio::time::timeout(5 * SECOND, rx.changed()).await.unwrap().unwrap();
    assert!(!*rx.borrow_and_update());
    drop(rx);
    tokio::time::timeout(5 * SECOND, task).await.unwrap().unwrap();
}

#[test]
fn rises_and_falls_after_enough_results_in_a_row() {
    let mut h = Hysteresis::new(2, 3);
    assert!(!h.healthy());
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(true), Some(true));
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(false), None);
    // A pass resets the failure streak.
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(false), None);
    assert!(h.healthy());
    assert_eq!(h.record(false), Some(false));
    assert!(!h.healthy());
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(true), Some(true));
}

#[test]
fn zero_thresholds_count_as_one() {
    let mut h = Hysteresis::new(0, 0);
    assert_eq!(h.record(true), Some(true));
    assert_eq!(h.record(false), Some(false));
}

#[test]
fn an_assumed_healthy_start_falls_after_fall_failures_in_a_row() {
    let mut h = Hysteresis::starting(2, 3, true);
    assert!(h.healthy());
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(false), None);
    assert_eq!(h.record(false), Some(false));
    assert_eq!(h.record(true), None);
    assert_eq!(h.record(true), Some(true));
    assert_eq!(Hysteresis::starting(2, 3, false), Hysteresis::new(2, 3));
}

#[tokio::test]
async fn an_assumed_healthy_check_publishes_its_fall() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    drop(listener);
    let cfg = fast_tcp(target);
    let (mut rx, task) = spawn(cfg, true);
    assert!(*rx.borrow_and_update(), "starts as assumed");
    tokio::time::timeout(5 * SECOND, rx.changed()).await.unwrap().unwrap();
    assert!(!*rx.borrow_and_update(), "unhealthy after `fall` failed checks");
    drop(rx);
    tokio::time::timeout(5 * SECOND, task).await.unwrap().unwrap();
}
