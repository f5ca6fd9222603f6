//! What outside clients cannot do to the registry and to sdwand's metrics endpoint: hold connections
//! (slowloris, connection floods), hold more than a few watches per token, flood the single writer with
//! reports, pin blocking threads with reads, or make a scrape cost a census each; and how much a pass of
//! the reaper may remove.

mod registry_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use registry_support::{code, Registry};
use sdwan_registry::api::{self, MetricsToken};
use sdwan_registry::config::{Limits, ServerConfig};
use sdwan_registry::server;
use sdwan_registry::service::{self, Ttls};
use sdwan_registry::store::sqlite::{SqliteOptions, SqliteStore, READERS};
use sdwan_registry::store::Store;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// A short header timeout, so the tests see stalled connections closed quickly.
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);

/// Polls `done` every 10 ms until it holds, failing after `limit`.
async fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the server closed `conn` within `limit` (EOF or reset); whatever it sent first is ignored.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(limit, conn.read_to_end(&mut sink)).await.is_ok()
}

/// One `GET path` on a new connection; the status line of the answer, within a second.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), conn.read_to_end(&mut answer))
        .await
        .expect("answered within a second")
        .expect("read");
    assert!(started.elapsed() < Duration::from_secs(1));
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `n` connections that send half a request line and stall, and `n` that send nothing.
async fn stalled(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for i in 0..2 * n {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: r\r\n")
                .await
                .expect("write");
        }
        conns.push(conn);
    }
    conns
}

fn registry_config(dir: &std::path::Path, limits: Limits) -> ServerConfig {
    ServerConfig {
        source: dir.join("registry.toml"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: dir.join("state"),
        store: sdwan_registry::store::StoreConfig::Sqlite,
        tls: None,
        ttls: Ttls::default(),
        limits,
        metrics_token_file: None,
    }
}

/// Serves a registry with `limits` on 127.0.0.1:0 until the returned sender is dropped.
async fn serve(dir: &std::path::Path, limits: Limits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = registry_config(dir, limits);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server::serve_on(&config, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop)
}

fn short_limits(max_connections: usize) -> Limits {
    let mut limits = Limits::default();
    limits.http.max_connections = max_connections;
    limits.http.header_read_timeout = HEADER_TIMEOUT;
    limits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_do_not_block_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, _stop) = serve(dir.path(), short_limits(100)).await;
    let mut conns = stalled(addr, 20).await;
    assert!(
        get(addr, "/metrics").await.starts_with("HTTP/1.1 200"),
        "a legitimate request is answered"
    );
    for conn in &mut conns {
        assert!(
            closed_within(conn, HEADER_TIMEOUT + Duration::from_secs(2)).await,
            "a stalled connection is closed after the header timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, _stop) = serve(dir.path(), short_limits(5)).await;
    // Five connections hold every slot; the sixth is over the cap.
    let _held = stalled(addr, 2).await;
    let _also = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    assert!(
        closed_within(&mut over, Duration::from_millis(200)).await,
        "over the cap: closed"
    );
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "closed at once, not after the header timeout"
    );
    // Once the stalled ones timed out, there is room again.
    tokio::time::sleep(HEADER_TIMEOUT + Duration::from_millis(200)).await;
    assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200"));
    let text = {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.expect("read");
        answer
    };
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("sdwan_registry_connections_refused_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(refused.is_some_and(|n| n >= 1), "refusals are counted: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdwand_metrics_endpoint_resists_slowloris_and_floods() {
    let limits = sdwand::http_serve::Limits::METRICS;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(sdwand::metrics::Metrics::new().serve(listener));
    let mut conns = stalled(addr, limits.max_connections / 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut over, Duration::from_millis(500)).await,
        "over the cap: closed at once"
    );
    let started = Instant::now();
    for conn in &mut conns {
        assert!(
            closed_within(conn, limits.header_read_timeout + Duration::from_secs(2)).await,
            "a stalled connection is closed after the header timeout"
        );
    }
    assert!(started.elapsed() >= limits.header_read_timeout - Duration::from_millis(500));
    assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200"), "serving again");
    task.abort();
}

/// `GET path` with `token` through `router`: the status and the JSON body.
async fn send_get(router: axum::Router, path: &str, token: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let resp = router.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

/// `GET /metrics` through `router`, with `token` if given: the status and the text.
async fn scrape(router: axum::Router, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get("/metrics");
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = router
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A registry in process with the server's default per-token limits, `report_min_interval` aside.
fn limited(report_min_interval: Duration) -> Registry {
    let limits = api::Limits {
        report_min_interval,
        ..api::Limits::default()
    };
    Registry::with_state(|state| state.with_limits(limits))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holds_at_most_four_watches() {
    let r = limited(Duration::ZERO);
    let t = r.tenant("acme", 1).await;
    let a = r.enroll(&t.enrollment, "a", &[]).await;
    let b = r.enroll(&t.enrollment, "b", &[]).await;
    let since = b.answer["revision"].as_u64().expect("revision");
    let path = |wait: u64| format!("/v1/networks/{}/watch?since={since}&wait_ms={wait}", t.network_id);
    let long = path(30_000);
    let held: Vec<_> = (0..4)
        .map(|_| {
            let (router, token, long) = (r.router.clone(), a.token.clone(), long.clone());
            tokio::spawn(async move { send_get(router, &long, &token).await })
        })
        .collect();
    until(Duration::from_secs(5), "four watches waiting", || {
        r.state.watchers.waiting() == 4
    })
    .await;
    let (s, v) = r.get(&long, &a.token).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_watches"),
        "{v}"
    );
    let (s, _) = r.get(&path(100), &b.token).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "another token's watch still works");
    // A watch that answers at once takes no slot.
    let (s, _) = r
        .get(
            &format!("/v1/networks/{}/watch?since=0&wait_ms=0", t.network_id),
            &a.token,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    r.enroll(&t.enrollment, "c", &[]).await;
    for h in held {
        assert_eq!(h.await.expect("watch").0, StatusCode::OK);
    }
    let (s, _) = r.get(&path(0), &a.token).await;
    assert_eq!(s, StatusCode::OK, "slots are given back");
}

#[tokio::test]
async fn reports_reach_the_writer_at_most_once_per_interval() {
    let r = limited(Duration::from_secs(30));
    let t = r.tenant("acme", 1).await;
    let a = r.enroll(&t.enrollment, "a", &[]).await;
    let b = r.enroll(&t.enrollment, "b", &[]).await;
    let report = json!({"vips": []});
    let (s, v) = r.post("/v1/peers/self/report", &a.token, report.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let seen = |v: &serde_json::Value, name: &str| {
        v["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p["last_seen_ms"].as_u64())
    };
    let (_, peers) = r.get("/v1/peers", &t.account.admin_token).await;
    let first = seen(&peers, "a").expect("last seen");
    let (s, v) = r.post("/v1/peers/self/report", &a.token, report.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"), "{v}");
    let (_, peers) = r.get("/v1/peers", &t.account.admin_token).await;
    assert_eq!(seen(&peers, "a"), Some(first), "the refused report wrote nothing");
    // A forged token with b's key id is refused before the gate: it does not use up b's budget.
    let secret_start = b.token.rfind('_').expect("token shape") + 1;
    let forged = format!(
        "{}{}",
        &b.token[..secret_start],
        "0".repeat(b.token.len() - secret_start)
    );
    let (s, v) = r.post("/v1/peers/self/report", &forged, report.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{v}");
    let (s, v) = r.post("/v1/peers/self/report", &b.token, report).await;
    assert_eq!(s, StatusCode::OK, "b's own report still goes through: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_cached_and_can_require_a_token() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    r.enroll(&t.enrollment, "a", &[]).await;
    let scrape = |r: &Registry, token: Option<&str>| {
        let (router, token) = (r.router.clone(), token.map(str::to_owned));
        async move { scrape(router, token.as_deref()).await }
    };
    let (s, text) = scrape(&r, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        text.contains("sdwan_registry_peers{class=\"persistent\",state=\"live\"} 1"),
        "{text}"
    );
    r.enroll(&t.enrollment, "b", &[]).await;
    let (_, text) = scrape(&r, None).await;
    assert!(
        text.contains("sdwan_registry_peers{class=\"persistent\",state=\"live\"} 1"),
        "the second scrape within seconds reuses the census: {text}"
    );

    let guarded = Registry::with_state(|state| state.with_metrics_token(MetricsToken::new("m3trics").expect("token")));
    assert_eq!(scrape(&guarded, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&guarded, Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&guarded, Some("m3trics")).await.0, StatusCode::OK);
}

/// Per-object gauges (VIP holder and epoch term, peer last seen) appear only behind `metrics_token_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_object_gauges_only_behind_the_metrics_token() {
    let guarded =
        || Registry::with_state(|state| state.with_metrics_token(MetricsToken::new("m3trics").expect("token")));
    for (r, token) in [(Registry::new(), None), (guarded(), Some("m3trics"))] {
        let t = r.tenant("acme", 1).await;
        let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
        let boot = r.bootstrap(&s1).await;
        let vip = boot["vip"].as_str().expect("vip").to_owned();
        if token.is_some() {
            // s1 holds the VIP at term 7 (before the first scrape: a census serves scrapes for seconds).
            let report = json!({"vips": [{"address": vip, "role": "holding", "holder": "s1",
                                          "epoch": {"term": 7, "rank": 0}}]});
            let (s, v) = r.post("/v1/peers/self/report", &s1.token, report).await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let (status, text) = scrape(r.router.clone(), token).await;
        assert_eq!(status, StatusCode::OK);
        let holder = format!(
            r#"sdwan_registry_vip_holder{{holder="",network="{}",vip="{vip}"}} 1"#,
            t.network_id
        );
        let seen = format!(
            r#"sdwan_registry_peer_last_seen_timestamp_seconds{{network="{}",peer="s1"}} "#,
            t.network_id
        );
        if token.is_none() {
            assert!(
                !text.contains(&t.network_id),
                "the public endpoint names no network: {text}"
            );
            assert!(!text.contains("sdwan_registry_vip_holder{"), "{text}");
            assert!(
                !text.contains("sdwan_registry_peer_last_seen_timestamp_seconds{"),
                "{text}"
            );
            continue;
        }
        let holder = holder.replace(r#"holder="""#, r#"holder="s1""#);
        let term = format!(
            r#"sdwan_registry_vip_epoch_term{{network="{}",vip="{vip}"}} 7"#,
            t.network_id
        );
        assert!(text.contains(&holder), "missing {holder:?} in\n{text}");
        assert!(text.contains(&term), "missing {term:?} in\n{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with(&seen))
            .unwrap_or_else(|| panic!("no {seen:?} in\n{text}"));
        let secs: f64 = line[seen.len()..].parse().expect("a number");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!((now - 600.0..=now + 1.0).contains(&secs), "last seen {secs}, now {now}");
        assert!(text.contains("sdwan_registry_detail_series_dropped 0"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_on_a_bounded_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store"));
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reads = (0..4 * READERS).map(|_| {
        let (running, most) = (running.clone(), most.clone());
        store.read(move |_tx| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, sdwan_registry::store::StoreError>(())
        })
    });
    for read in futures::future::join_all(reads).await {
        read.expect("read");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= READERS, "{most} reads ran at once, more than {READERS}");
    assert!(most > 1, "reads still run in parallel");
}

#[tokio::test]
async fn a_reaper_pass_removes_at_most_a_tenth_of_a_network() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    for i in 0..25 {
        let key = wireguard_control::Key::generate_private().get_public().to_base64();
        let (s, v) = r
            .post(
                "/v1/peers/enroll",
                &t.enrollment,
                json!({"name": format!("s{i}"), "public_key": key, "lifecycle": "spot"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let ttls = Ttls::default();
    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()).expect("ms");
    let later = now + 3_600_000;
    let pass = || r.state.write(move |tx| service::reap(tx, &ttls, later, 0));
    assert_eq!(pass().await.expect("reap").len(), 2, "25 peers: 2 per pass");
    assert_eq!(pass().await.expect("reap").len(), 2, "23 peers: 2 per pass");
    let mut left = 21;
    while left > 0 {
        let removed = pass().await.expect("reap").len();
        assert!(removed >= 1 && removed <= (left / 10).max(1), "{removed} of {left}");
        left -= removed;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_but_the_watch_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store"));
    let limits = api::Limits {
        request_timeout: Duration::from_millis(200),
        ..api::Limits::IN_PROCESS
    };
    let state = api::AppState::new(store.clone()).with_limits(limits);
    // SQLite's reader pool is what this test fills: SQLite whatever the requested backend.
    let r = Registry {
        router: api::router_with(state.clone()),
        state,
        store,
        dir,
        etcd: None,
    };
    let t = r.tenant("acme", 1).await;
    let a = r.enroll(&t.enrollment, "a", &[]).await;
    // Every reader busy for a second: requests that read wait past their deadline.
    let busy: Vec<_> = (0..READERS)
        .map(|_| {
            r.store.read(|_tx| {
                std::thread::sleep(Duration::from_secs(1));
                Ok::<_, sdwan_registry::store::StoreError>(())
            })
        })
        .collect();
    let busy = tokio::spawn(futures::future::join_all(busy));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let (s, v) = r.get("/v1/peers", &t.account.admin_token).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The watch has no deadline: it waits for the readers and answers.
    let since = a.answer["revision"].as_u64().expect("revision");
    let watch = format!("/v1/networks/{}/watch?since={since}&wait_ms=100", t.network_id);
    let (s, v) = r.get(&watch, &a.token).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    busy.await.expect("reads");
}

/// A write job whose answer panics in the writer thread, outside any request: the writer dies.
struct KillsTheWriter;

impl sdwan_registry::store::WriteJob for KillsTheWriter {
    fn run(&mut self, _tx: &mut dyn sdwan_registry::store::WriteRecords) -> bool {
        true
    }

    fn finish(self: Box<Self>, _committed: Result<(), sdwan_registry::store::StoreError>) {
        panic!("test hook: the writer thread dies");
    }
}

#[tokio::test]
async fn store_failures_are_counted_for_the_reaper_and_refusals_are_not() {
    let r = Registry::new();
    let refused = r.state.write(|tx| service::create_account(tx, "not a name", 1)).await;
    assert!(refused.is_err(), "an invalid name is refused");
    assert_eq!(r.state.store_failures(), 0, "a refusal is no store failure");
    r.store.submit_write(Box::new(KillsTheWriter));
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.state.store_failures() == 0 {
        assert!(
            Instant::now() < deadline,
            "writes kept succeeding after the writer died"
        );
        let _ = r.state.write(|tx| service::create_account(tx, "acme", 1)).await;
    }
}
