//! The registry's HTTP API as async functions. Every request has a timeout and every answer a size cap
//! (checked while it streams in, so a hostile registry cannot make the daemon buffer gigabytes); tokens go
//! in the `Authorization` header only and are never logged or put in an error.
//!
//! A client knows every replica of the registry (each serves the same store). A call goes to the replica that
//! answered last; when that one does not answer (unreachable, timed out, or 502/503/504 from a proxy or a
//! replica that lost its store), the call moves on to the next replica after a random pause of up to
//! [`FAILOVER_JITTER`], so a fleet whose replica died does not land on the next one in lockstep, and stays
//! there for later calls. Each call tries each replica at most once. A watch moves with its `since`, so it
//! resumes on the other replica where it left off.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::RegistryConfig;
use crate::vocab::wire::{
    ClusterStateView, EnrollRequest, EnrollResponse, HandshakeRequest, HandshakeResponse, K3sStatus, MembersResponse,
    PeerReportRequest, PeerReportResponse, ReportRequest,
};

/// Timeout of every request but the watch.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a watch request gets beyond the wait it asks for.
const WATCH_SLACK: Duration = Duration::from_secs(10);
/// The longest random pause before a call moves on to the next replica.
pub const FAILOVER_JITTER: Duration = Duration::from_millis(250);
/// The largest watch answer (a whole network view) the client reads.
pub const MAX_VIEW_BYTES: usize = 64 << 20;
/// The largest answer of every other call (and of any error answer); the enrollment answer, which lists
/// every member, gets [`MAX_VIEW_BYTES`].
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A failed registry call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, timeout, TLS failure...).
    #[error("{url}: registry unreachable: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The registry answered with an error.
    #[error("{url}: the registry refused: {status} {code}: {message}")]
    Refused {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's machine-readable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("{url}: unexpected answer: {reason}")]
    Decode {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer was larger than the client accepts; it was cut off unread.
    #[error("{url}: answer larger than {limit} bytes; refused (a registry never sends that much: check what answers at this URL)")]
    TooLarge {
        /// The URL called.
        url: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The client could not be set up (the CA file).
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// A 4xx other than 408 and 429: retrying the same request cannot help until someone changes
    /// something (the registry side or this node's configuration).
    pub fn is_definitive(&self) -> bool {
        matches!(self, ClientError::Refused { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }

    /// Whether another replica may answer where this one failed: it did not answer at all, or a proxy or
    /// the replica said it cannot serve now (502, 503, 504). A refusal on the request's merits is the same
    /// on every replica.
    pub fn is_replica_failure(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

/// A random pause in `[0, max]`.
fn jitter(max: Duration) -> Duration {
    let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(getrandom::u64().unwrap_or(0) % (micros + 1))
}

/// Which replica a client's calls go to: a read-only handle on the state every clone of that client shares
/// (the client alone moves it), for the metrics (`sdwand_registry_replica_info`).
#[derive(Debug, Clone)]
pub struct ReplicaCursor {
    /// The replicas' base URLs, in the configured order; never empty.
    bases: Arc<[String]>,
    /// Index into `bases` of the replica calls go to (shared by the clones: a move holds for every task).
    current: Arc<AtomicUsize>,
}

impl ReplicaCursor {
    /// The base URL of the replica calls go to now.
    pub fn current(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }
}

/// A client of one registry (one or several replicas), optionally with a bearer token.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// The replicas and the one calls go to (shared by the clones: a move holds for every task).
    replicas: ReplicaCursor,
    token: Option<String>,
    /// What to do when the registry's certificate is not trusted: names the CA setting.
    untrusted_fix: String,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("bases", &self.replicas.bases)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for the registry of `cfg` (sdwand's link). See [`RegistryClient::connect`]. With several
    /// replicas it starts at a random one, so a fleet spreads over them.
    pub fn new(cfg: &RegistryConfig) -> Result<RegistryClient, ClientError> {
        let agent = concat!("sdwand/", env!("CARGO_PKG_VERSION"));
        let client = RegistryClient::connect(&cfg.urls, cfg.ca_file.as_deref(), "registry.ca_file", agent)?;
        let start = getrandom::u64().unwrap_or(0) as usize % client.replicas.bases.len();
        client.replicas.current.store(start, Ordering::Relaxed);
        Ok(client)
    }

    /// A client of the registry whose replicas answer at `urls` (the first is used first; at least one),
    /// sending `user_agent`. With `ca_file` (named `ca_setting` in
    /// errors: the setting or option the operator wrote it in), only the certificates in it are trusted
    /// for the registry, not the system roots: a certificate any public CA issued for the registry's name
    /// must not be able to impersonate it. Without, the system roots.
    pub fn connect(
        urls: &[String],
        ca_file: Option<&Path>,
        ca_setting: &str,
        user_agent: &str,
    ) -> Result<RegistryClient, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::Setup("no registry URL given".into()));
        }
        // reqwest is built without a bundled crypto provider (see `crate::vip::health`); installing fails
        // only when one is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(user_agent);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Setup(format!(
                    "{ca_setting} {}: cannot be read: {e} (fix: point it at a readable PEM file)",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Setup(format!("{ca_setting} {}: not PEM certificates: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Setup(format!(
                    "{ca_setting} {}: holds no PEM certificate (fix: put the registry's CA certificate in it)",
                    path.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot set up the HTTP client: {}", crate::error_chain(&e))))?;
        let untrusted_fix = match ca_file {
            Some(path) => format!(
                "the registry's certificate was not issued by the CA in {ca_setting} {}: put the CA that \
                 issued it there",
                path.display()
            ),
            None => format!(
                "the registry's certificate was not issued by a CA of the system roots: for a private CA, set \
                 {ca_setting} to its certificate (PEM)"
            ),
        };
        Ok(RegistryClient {
            http,
            replicas: ReplicaCursor {
                bases: urls.iter().map(|u| u.trim_end_matches('/').to_owned()).collect(),
                current: Arc::new(AtomicUsize::new(0)),
            },
            token: None,
            untrusted_fix,
        })
    }

    /// The same client with `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> RegistryClient {
        RegistryClient {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The base URL of the replica calls go to now.
    pub fn base(&self) -> String {
        self.replicas.current().to_owned()
    }

    /// A handle that follows which replica this client (and every clone) calls.
    pub fn cursor(&self) -> ReplicaCursor {
        self.replicas.clone()
    }

    /// One call whose answer may be up to `limit` bytes, to the current replica and, when it does not
    /// answer, to the next ones (each at most once; see the module's docs). `Ok(None)` on 204.
    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Option<T>, ClientError> {
        let ReplicaCursor { bases, current } = &self.replicas;
        let n = bases.len();
        let mut attempt = 0;
        loop {
            let idx = current.load(Ordering::Relaxed) % n;
            let base = &bases[idx];
            let result = self.call_one(base, method.clone(), path, body, timeout, limit).await;
            match result {
                Err(e) if n > 1 && e.is_replica_failure() => {
                    let next = (idx + 1) % n;
                    // Concurrent calls that failed on the same replica move on once, together.
                    if current
                        .compare_exchange(idx, next, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        tracing::warn!(from = %base, to = %bases[next], error = %e, "registry replica does not answer; moving to the next");
                    }
                    attempt += 1;
                    if attempt >= n {
                        return Err(e);
                    }
                    tokio::time::sleep(jitter(FAILOVER_JITTER)).await;
                }
                other => return other,
            }
        }
    }

    /// One call to the replica at `base`.
    async fn call_one<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Option<T>, ClientError> {
        let url = format!("{base}{path}");
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                url: url.clone(),
                reason: format!("encoding the request: {e}"),
            })?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let unreachable = |e: reqwest::Error| {
            let mut reason = crate::error_chain(&e);
            // rustls's verdicts for a chain that does not end at a trusted CA.
            if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
                reason = format!("{reason} (fix: {})", self.untrusted_fix);
            }
            ClientError::Unreachable {
                url: url.clone(),
                reason,
            }
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let limit = if status.is_success() { limit } else { MAX_ANSWER_BYTES };
        let bytes = read_capped(&mut resp, limit).await.map_err(|e| match e {
            Capped::TooLarge => ClientError::TooLarge {
                url: url.clone(),
                limit,
            },
            Capped::Read(e) => unreachable(e),
        })?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let envelope: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
            let field = |k: &str| {
                envelope
                    .as_ref()
                    .and_then(|v| v["error"][k].as_str())
                    .map(str::to_owned)
            };
            return Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                code: field("code").unwrap_or_else(|| "unknown".into()),
                message: field("message")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            })
    }

    /// One call that must answer with a body of at most `limit` bytes.
    async fn must_within<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        limit: usize,
    ) -> Result<T, ClientError> {
        self.call(method, path, body, REQUEST_TIMEOUT, limit)
            .await?
            .ok_or_else(|| ClientError::Decode {
                url: format!("{}{path}", self.base()),
                reason: "204 without a body".into(),
            })
    }

    /// One call that must answer with a body (of at most [`MAX_ANSWER_BYTES`]).
    pub(crate) async fn must<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.must_within(method, path, body, MAX_ANSWER_BYTES).await
    }

    /// `POST /v1/peers/enroll` with `enrollment_token`.
    pub async fn enroll(&self, enrollment_token: &str, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        // The answer carries every member, like a view.
        self.with_token(enrollment_token)
            .must_within(Method::POST, "/v1/peers/enroll", Some(req), MAX_VIEW_BYTES)
            .await
    }

    /// `GET /v1/networks/{id}/members`.
    pub async fn members(&self, network_id: &str) -> Result<MembersResponse, ClientError> {
        let path = format!("/v1/networks/{}/members", segment(network_id));
        self.must_within::<(), _>(Method::GET, &path, None, MAX_VIEW_BYTES)
            .await
    }

    /// `GET /v1/networks/{id}/watch?since=R&wait_ms=W`: the network when its revision is not `since`,
    /// `None` when `wait` passed without a change.
    pub async fn watch(
        &self,
        network_id: &str,
        since: u64,
        wait: Duration,
    ) -> Result<Option<MembersResponse>, ClientError> {
        let path = format!(
            "/v1/networks/{}/watch?since={since}&wait_ms={}",
            segment(network_id),
            wait.as_millis()
        );
        self.call::<(), _>(Method::GET, &path, None, wait + WATCH_SLACK, MAX_VIEW_BYTES)
            .await
    }

    /// `POST /v1/peers/self/report`.
    pub async fn report(&self, req: &PeerReportRequest) -> Result<PeerReportResponse, ClientError> {
        self.must(Method::POST, "/v1/peers/self/report", Some(req)).await
    }

    /// `POST /v1/runtime/handshake`.
    pub async fn handshake(&self, req: &HandshakeRequest) -> Result<HandshakeResponse, ClientError> {
        self.must(Method::POST, "/v1/runtime/handshake", Some(req)).await
    }

    /// `POST /v1/clusters/{id}/report`.
    pub async fn cluster_report(&self, cluster_id: &str, k3s: K3sStatus) -> Result<ClusterStateView, ClientError> {
        self.must(
            Method::POST,
            &format!("/v1/clusters/{}/report", segment(cluster_id)),
            Some(&ReportRequest { k3s }),
        )
        .await
    }
}

/// An id as one path segment: ids are letters, digits, `-` and `_`; anything else is percent-encoded.
pub(crate) fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Why a capped read stopped.
enum Capped {
    /// The body is longer than the cap.
    TooLarge,
    /// The connection failed.
    Read(reqwest::Error),
}

/// Reads `resp`'s body chunk by chunk, refusing it (without reading on) once it exceeds `limit` bytes. A
/// `Content-Length` above the limit is refused before any of the body is read.
async fn read_capped(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Capped::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(Capped::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(url: String, ca_file: Option<std::path::PathBuf>) -> RegistryConfig {
        RegistryConfig {
            urls: vec![url],
            insecure: true,
            enrollment_token_file: None,
            name: None,
            endpoint: None,
            lifecycle: crate::vocab::Lifecycle::Persistent,
            ca_file,
            report_interval: Duration::from_secs(5),
            file_address: None,
            file_overlay_prefix: None,
            line: 0,
            key_lines: Vec::new(),
        }
    }

    fn client(url: String) -> RegistryClient {
        RegistryClient::new(&config(url, None)).expect("client")
    }

    /// Serves every connection `head`, then `chunk` forever (until the client hangs up); counts the bytes
    /// it managed to send.
    async fn endless(head: &'static str, chunk: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    while sock.write_all(chunk).await.is_ok() {
                        counter.fetch_add(chunk.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        (url, sent)
    }

    /// A server that answers every request with `answer` and counts the requests; its URL.
    async fn answering(answer: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, served)
    }

    /// A URL where nothing listens (connections are refused).
    async fn closed() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    }

    fn replicas(urls: &[&String]) -> RegistryClient {
        let urls: Vec<String> = urls.iter().map(|u| (*u).clone()).collect();
        RegistryClient::connect(&urls, None, "registry.ca_file", "test").expect("client")
    }

    const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test]
    async fn a_call_moves_to_the_next_replica_and_stays_there() {
        let down = closed().await;
        let (good, served) = answering(NO_CONTENT).await;
        let c = replicas(&[&down, &good]);
        assert_eq!(c.base(), down);
        let cursor = c.cursor();
        let got = c
            .watch("n1", 7, Duration::from_millis(10))
            .await
            .expect("the second replica answers");
        assert_eq!(got, None);
        assert_eq!(c.base(), good, "later calls go to the replica that answered");
        assert_eq!(cursor.current(), good, "a cursor taken before the move follows it");
        // Clones (the daemon's tasks) share the move.
        let clone = c.with_token("t");
        clone.watch("n1", 7, Duration::from_millis(10)).await.expect("answers");
        assert_eq!(served.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn unavailable_moves_on_but_a_refusal_on_the_merits_does_not() {
        let (busy, _) = answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let (good, served) = answering(NO_CONTENT).await;
        let c = replicas(&[&busy, &good]);
        c.watch("n1", 0, Duration::from_millis(10))
            .await
            .expect("moved past the 503");
        assert_eq!((c.base(), served.load(Ordering::Relaxed)), (good.clone(), 1));

        let (refusing, asked) = answering(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 54\r\n\r\n\
             {\"error\":{\"code\":\"unauthorized\",\"message\":\"bad token!!\"}}",
        )
        .await;
        let (other, untouched) = answering(NO_CONTENT).await;
        let c = replicas(&[&refusing, &other]);
        let err = c.watch("n1", 0, Duration::from_millis(10)).await.expect_err("refused");
        assert!(matches!(err, ClientError::Refused { status: 401, .. }), "{err:?}");
        assert_eq!(
            (asked.load(Ordering::Relaxed), untouched.load(Ordering::Relaxed)),
            (1, 0)
        );
        assert_eq!(c.base(), refusing, "a refusal does not move the client");
    }

    #[tokio::test]
    async fn every_replica_failing_is_tried_once_and_reported() {
        const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        let (a, asked_a) = answering(BUSY).await;
        let (b, asked_b) = answering(BUSY).await;
        let down = closed().await;
        let c = replicas(&[&a, &b, &down]);
        let err = c.watch("n1", 0, Duration::from_millis(10)).await.expect_err("all fail");
        assert!(
            matches!(err, ClientError::Unreachable { .. }),
            "the last replica's error: {err:?}"
        );
        assert_eq!(
            (asked_a.load(Ordering::Relaxed), asked_b.load(Ordering::Relaxed)),
            (1, 1)
        );
        assert_eq!(
            c.base(),
            a,
            "after a full round the client is back at the first replica"
        );
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_the_cap() {
        // Chunked: 64 KiB chunks of JSON-looking bytes, never a last chunk.
        static CHUNK: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut c = b"10000\r\n".to_vec();
            c.extend(std::iter::repeat_n(b'[', 0x10000));
            c.extend_from_slice(b"\r\n");
            c
        });
        let (url, sent) = endless(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            CHUNK.as_slice(),
        )
        .await;
        let c = client(url);
        let err = tokio::time::timeout(Duration::from_secs(20), c.report(&PeerReportRequest { vips: vec![] }))
            .await
            .expect("refused in time, not read forever")
            .expect_err("refused");
        assert!(
            matches!(err, ClientError::TooLarge { limit, .. } if limit == MAX_ANSWER_BYTES),
            "{err:?}"
        );
        assert!(err.to_string().contains("larger than 1048576 bytes"), "{err}");
        // The client stopped reading: the server could not push much more than the cap (plus what the
        // socket buffers hold).
        let total = sent.load(Ordering::Relaxed);
        assert!(total < MAX_ANSWER_BYTES + (32 << 20), "server sent {total} bytes");
    }

    #[tokio::test]
    async fn a_large_content_length_is_refused_before_reading() {
        let (url, _) = endless(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2000000000\r\n\r\n",
            b"[[[[[[[[",
        )
        .await;
        let err = client(url)
            .watch("n1", 0, Duration::from_millis(10))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ClientError::TooLarge { limit, .. } if limit == MAX_VIEW_BYTES),
            "{err:?}"
        );
    }

    /// A registry whose certificate the client does not trust: the error names the CA setting to fix.
    #[tokio::test]
    async fn an_untrusted_certificate_names_the_ca_setting() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let _ = acceptor.accept(conn).await;
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let other_ca = dir.path().join("other-ca.pem");
        let other = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["other".to_owned()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "another CA");
        let other_cert = params.self_signed(&other).expect("cert");
        std::fs::write(&other_ca, other_cert.pem()).expect("write");
        for (ca, fix) in [
            (None, "for a private CA, set registry.ca_file to its certificate"),
            (Some(other_ca.clone()), "not issued by the CA in registry.ca_file"),
        ] {
            let client = RegistryClient::new(&config(format!("https://{addr}"), ca)).expect("client");
            let err = client.members("n").await.expect_err("untrusted").to_string();
            assert!(err.contains("UnknownIssuer") && err.contains(fix), "{err}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "no certificates here\n").expect("write");
        let err = RegistryClient::new(&config("https://reg".into(), Some(path))).expect_err("refused");
        assert!(err.to_string().contains("holds no PEM certificate"), "{err}");
    }
}
