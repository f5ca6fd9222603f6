use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::{init_account, serve_on, ServerError};
use crate::config::{Limits, ServerConfig, TlsFiles};
use crate::service::Ttls;

/// Writes `ca.pem`, and `cert.pem`/`key.pem` for 127.0.0.1 signed by that CA, into `dir`.
fn pki(dir: &Path) -> TlsFiles {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
    TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

fn config(dir: &Path, tls: TlsFiles) -> ServerConfig {
    ServerConfig {
        source: dir.join("registry.toml"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: dir.join("state"),
        store: crate::store::StoreConfig::Sqlite,
        tls: Some(tls),
        ttls: Ttls::default(),
        limits: Limits::default(),
        metrics_token_file: None,
    }
}

#[tokio::test]
async fn serves_the_api_over_https_and_survives_failed_handshakes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), pki(dir.path()));
    let admin = init_account(&config, "acme", 1).await.expect("account").admin_token;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let config = config.clone();
        tokio::spawn(async move {
            serve_on(&config, listener, async {
                let _ = stopped.await;
            })
            .await
        })
    };

    // A client that speaks plain HTTP to the TLS port: its handshake fails, the server closes it.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /v1/peers HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(super::HANDSHAKE_TIMEOUT, plain.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the server did not close a connection whose handshake failed"
    );
    assert!(!rest.starts_with(b"HTTP/"), "plain HTTP was answered on the TLS port");
    // A client that connects and says nothing holds no one up.
    let _silent = TcpStream::connect(addr).await.expect("connect");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem")).expect("ca")).expect("pem");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .build()
        .expect("client");
    let resp = client
        .post(format!("https://{addr}/v1/networks"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"name":"net","overlay_prefix":"fd00:1::/64","vip_pool":"fd00:1::ffff:0/112"}"#)
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(body["name"], "net", "{body}");

    // The same port refuses to talk plain HTTP to a real client too.
    let plain = reqwest::Client::builder().no_proxy().build().expect("client");
    assert!(plain.get(format!("http://{addr}/v1/peers")).send().await.is_err());

    stop.send(()).expect("server running");
    let served = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("graceful shutdown within 10 s")
        .expect("server task");
    assert!(served.is_ok(), "{served:?}");
}

/// Serves with `tls` and answers the start error's message.
async fn start_error(dir: &Path, tls: TlsFiles) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    match serve_on(&config(dir, tls), listener, async {}).await {
        Err(e @ ServerError::Tls(_)) => e.to_string(),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_certificate_or_key_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = pki(dir.path());
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let missing = dir.path().join("missing.pem");
    let e = start_error(
        dir.path(),
        TlsFiles {
            cert: missing.clone(),
            key: good.key.clone(),
        },
    )
    .await;
    assert!(e.starts_with(&format!("{}: cannot read", missing.display())), "{e}");

    let not_pem = file("junk.pem", "hello\n");
    let e = start_error(
        dir.path(),
        TlsFiles {
            cert: not_pem.clone(),
            key: good.key.clone(),
        },
    )
    .await;
    assert!(
        e.contains(&not_pem.display().to_string()) && e.contains("no PEM certificate"),
        "{e}"
    );

    let e = start_error(
        dir.path(),
        TlsFiles {
            cert: good.cert.clone(),
            key: good.cert.clone(),
        },
    )
    .await;
    assert!(
        e.contains(&good.cert.display().to_string()) && e.contains("no PEM private key"),
        "{e}"
    );

    let broken = file(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let e = start_error(
        dir.path(),
        TlsFiles {
            cert: broken.clone(),
            key: good.key.clone(),
        },
    )
    .await;
    assert!(
        e.contains(&broken.display().to_string()) && e.contains("not a valid PEM"),
        "{e}"
    );

    let other_key = file("other.key", &KeyPair::generate().expect("key").serialize_pem());
    let e = start_error(
        dir.path(),
        TlsFiles {
            cert: good.cert.clone(),
            key: other_key.clone(),
        },
    )
    .await;
    assert!(
        e.contains(&good.cert.display().to_string()) && e.contains(&other_key.display().to_string()),
        "{e}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "the store was opened before the TLS files were checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_says_nothing_after_the_handshake_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), pki(dir.path()));
    let header_timeout = std::time::Duration::from_millis(300);
    config.limits.http.header_read_timeout = header_timeout;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { serve_on(&config, listener, std::future::pending()).await });

    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("ca pem")).expect("root");
    }
    let client =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("the handshake completes");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(header_timeout * 10, tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the silent TLS connection is still open");
    assert!(
        started.elapsed() >= header_timeout / 2,
        "closed before the header timeout"
    );
    server.abort();
}
