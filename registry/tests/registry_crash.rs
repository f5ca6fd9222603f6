//! Crash safety of the registry: the real `sdwan-registry` binary is SIGKILLed during a burst of 1,000
//! concurrent enrollments and joins, restarted on the same state directory, and then every request that was
//! acknowledged (2xx) must be there exactly once, and nothing may be half-written.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wireguard_control::Key;

/// Peers enrolling (and then joining) at once.
const PEERS: usize = 1000;
/// Every `SERVER_EVERY`-th peer joins as a k3s server (a VIP candidate), the others as agents.
const SERVER_EVERY: usize = 10;
/// The registry is killed once this many requests were acknowledged (of `2 * PEERS`).
const KILL_AFTER_ACKS: usize = 500;
/// The whole test, both registry runs included.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// A running `sdwan-registry`, killed by its PID when dropped (also when the test fails).
struct RegistryProcess {
    child: Child,
    addr: SocketAddr,
}

impl RegistryProcess {
    /// Writes the configuration (insecure, on a free port of 127.0.0.1) and starts the binary on `state_dir`.
    async fn start(dir: &Path, state_dir: &Path) -> RegistryProcess {
        let addr = free_port();
        let config = write_config(dir, state_dir, addr);
        let child = Command::new(env!("CARGO_BIN_EXE_sdwan-registry"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start sdwan-registry");
        let mut registry = RegistryProcess { child, addr };
        registry.wait_ready().await;
        registry
    }

    /// Polls the port until it accepts connections (10 s at most); fails at once if the process exited.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("sdwan-registry exited before serving: {status}");
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sdwan-registry not listening on {} after 10 s",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory preconditions; the PID is our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    /// SIGKILL, and reap the process.
    fn kill(mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("wait");
    }

    /// SIGTERM, and the exit status (graceful shutdown within 10 s).
    async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sdwan-registry did not stop within 10 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn write_config(dir: &Path, state_dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("registry.toml");
    let text = format!(
        "listen = \"{addr}\"\nstate_dir = \"{}\"\ninsecure = true\n",
        state_dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `sdwan-registry init-account`: the admin token.
fn init_account(dir: &Path, state_dir: &Path) -> String {
    let config = write_config(dir, state_dir, free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_sdwan-registry"))
        .arg("--config")
        .arg(&config)
        .args(["init-account", "--name", "crash", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run init-account");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("init-account --json");
    v["admin_token"].as_str().expect("admin_token").to_owned()
}

/// Sends a JSON request; the status and body, or the transport error.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn ok(client: &reqwest::Client, url: String, token: &str, body: Value, expect: u16) -> Value {
    let (status, v) = call(client, reqwest::Method::POST, url, token, Some(body))
        .await
        .expect("request");
    assert_eq!(status, expect, "{v}");
    v
}

/// What the burst got acknowledged.
#[derive(Default)]
struct Acked {
    /// name -> (peer id, role)
    enrolled: HashMap<String, (String, &'static str)>,
    /// peer ids whose join was answered 200
    joined: BTreeSet<String>,
    /// the highest revision an enrollment answer showed
    max_revision: u64,
    /// requests that got no answer or a non-2xx one
    failed: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_joins_survive_sigkill_and_nothing_is_half_written() {
    tokio::time::timeout(TEST_DEADLINE, crash_and_check())
        .await
        .expect("the crash test took longer than 60 s");
}

async fn crash_and_check() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let state_dir = dir.path().join("state");
    let admin = init_account(dir.path(), &state_dir);
    let registry = RegistryProcess::start(dir.path(), &state_dir).await;
    // reqwest is built without a bundled crypto provider (plain HTTP here, but the client needs one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");

    let network = ok(
        &client,
        registry.url("/v1/networks"),
        &admin,
        json!({"name": "net", "overlay_prefix": "fd00:c::/64", "vip_pool": "fd00:c::ffff:0/112"}),
        201,
    )
    .await["id"]
        .as_str()
        .expect("network id")
        .to_owned();
    let enrollment = ok(
        &client,
        registry.url(&format!("/v1/networks/{network}/enrollment-tokens")),
        &admin,
        json!({}),
        201,
    )
    .await["token"]
        .as_str()
        .expect("enrollment token")
        .to_owned();
    let key = || Key::generate_private().get_public().to_base64();
    let boot = ok(
        &client,
        registry.url("/v1/peers/enroll"),
        &enrollment,
        json!({"name": "boot", "public_key": key(), "roles": ["server"]}),
        201,
    )
    .await;
    let boot_token = boot["peer_token"].as_str().expect("peer token").to_owned();
    let cluster = ok(
        &client,
        registry.url("/v1/runtime/handshake"),
        &boot_token,
        json!({"phase": "bootstrap", "role": "server"}),
        200,
    )
    .await["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_owned();

    // The burst: every peer enrolls, then joins the cluster; the registry dies once KILL_AFTER_ACKS
    // answers came back.
    let acked = Arc::new(Mutex::new(Acked::default()));
    let acks = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let base = registry.url("");
    let tasks: Vec<_> = (0..PEERS)
        .map(|i| {
            let (client, acked, acks, enough) = (client.clone(), acked.clone(), acks.clone(), enough.clone());
            let (base, enrollment, cluster) = (base.clone(), enrollment.clone(), cluster.clone());
            let (role, name) = match i % SERVER_EVERY {
                0 => ("server", format!("server-{i}")),
                _ => ("agent", format!("agent-{i}")),
            };
            let public_key = key();
            tokio::spawn(async move {
                let ack = || {
                    if acks.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_ACKS {
                        enough.notify_one();
                    }
                };
                let body = json!({"name": name, "public_key": public_key, "roles": [role]});
                let url = format!("{base}/v1/peers/enroll");
                let enrolled = match call(&client, reqwest::Method::POST, url, &enrollment, Some(body)).await {
                    Ok((201, v)) => v,
                    _ => {
                        acked.lock().expect("lock").failed += 1;
                        return;
                    }
                };
                ack();
                let (Some(id), Some(token), Some(revision)) = (
                    enrolled["peer_id"].as_str(),
                    enrolled["peer_token"].as_str(),
                    enrolled["revision"].as_u64(),
                ) else {
                    panic!("a 201 enrollment answer without peer_id, peer_token or revision: {enrolled}");
                };
                {
                    let mut a = acked.lock().expect("lock");
                    a.enrolled.insert(name, (id.to_owned(), role));
                    a.max_revision = a.max_revision.max(revision);
                }
                let body = json!({"phase": "join_request", "role": role, "target_cluster_id": cluster});
                let url = format!("{base}/v1/runtime/handshake");
                match call(&client, reqwest::Method::POST, url, token, Some(body)).await {
                    Ok((200, _)) => {
                        ack();
                        acked.lock().expect("lock").joined.insert(id.to_owned());
                    }
                    _ => acked.lock().expect("lock").failed += 1,
                }
            })
        })
        .collect();
    enough.notified().await;
    registry.kill();
    for t in tasks {
        t.await.expect("a burst task panicked");
    }
    let acked = Arc::try_unwrap(acked)
        .unwrap_or_else(|_| panic!("tasks done"))
        .into_inner()
        .expect("lock");
    assert!(
        acked.failed > 0,
        "every request was answered before the kill: the crash did not hit the burst"
    );
    eprintln!(
        "at the kill: {} enrollments and {} joins acknowledged, {} requests unanswered",
        acked.enrolled.len(),
        acked.joined.len(),
        acked.failed
    );

    // Restart on the same state directory: the store must open, and the API must show every
    // acknowledged enrollment once.
    let registry = RegistryProcess::start(dir.path(), &state_dir).await;
    let url = registry.url(&format!("/v1/networks/{network}/members"));
    let (status, members) = call(&client, reqwest::Method::GET, url, &admin, None)
        .await
        .expect("members after restart");
    assert_eq!(status, 200, "{members}");
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in members["members"].as_array().expect("members") {
        by_name
            .entry(m["name"].as_str().expect("name"))
            .or_default()
            .push(m["peer_id"].as_str().expect("peer_id"));
    }
    for (name, (id, _)) in &acked.enrolled {
        assert_eq!(
            by_name.get(name.as_str()),
            Some(&vec![id.as_str()]),
            "acknowledged peer {name}"
        );
    }
    let api_revision = members["revision"].as_u64().expect("revision");
    let status = registry.terminate().await;
    assert!(
        status.success(),
        "the restarted registry did not stop cleanly: {status}"
    );

    check_store(&state_dir, &network, &cluster, &acked, api_revision);
}

/// Reads the store file directly: integrity, references, and the acknowledged rows.
fn check_store(state_dir: &Path, network: &str, cluster: &str, acked: &Acked, api_revision: u64) {
    let db = rusqlite::Connection::open(state_dir.join(sdwan_registry::store::sqlite::DB_FILE)).expect("open db");
    let text = |sql: &str| -> Vec<String> {
        let mut stmt = db.prepare(sql).expect(sql);
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect(sql);
        rows.collect::<Result<_, _>>().expect(sql)
    };
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(text("PRAGMA integrity_check"), vec!["ok".to_owned()]);
    assert_eq!(
        count("SELECT count(*) FROM pragma_foreign_key_check"),
        0,
        "dangling references"
    );

    // Exactly once, with the id the answer gave.
    for (name, (id, _)) in &acked.enrolled {
        let ids: Vec<String> = {
            let mut stmt = db
                .prepare("SELECT id FROM peers WHERE network_id = ?1 AND name = ?2")
                .expect("prepare");
            let rows = stmt
                .query_map([network, name.as_str()], |r| r.get::<_, String>(0))
                .expect("query");
            rows.collect::<Result<_, _>>().expect("rows")
        };
        assert_eq!(ids, vec![id.clone()], "acknowledged enrollment of {name}");
    }
    let members: HashMap<String, (String, String)> = {
        let mut stmt = db
            .prepare("SELECT peer_id, cluster_id, role FROM cluster_members")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    };
    let role_of: HashMap<&str, &str> = acked.enrolled.values().map(|(id, role)| (id.as_str(), *role)).collect();
    for id in &acked.joined {
        let expected = (cluster.to_owned(), role_of[id.as_str()].to_owned());
        assert_eq!(members.get(id), Some(&expected), "acknowledged join of {id}");
    }

    // Nothing half-written: every peer has its token, every member row its peer, every candidate its
    // peer, and the VIP's candidates are exactly the cluster's servers.
    assert_eq!(
        count(
            "SELECT count(*) FROM peers p WHERE NOT EXISTS \
             (SELECT 1 FROM tokens t WHERE t.peer_id = p.id AND t.kind = 'peer')"
        ),
        0,
        "a peer without its token"
    );
    assert_eq!(
        count("SELECT count(*) FROM tokens t WHERE t.kind = 'peer' AND t.peer_id NOT IN (SELECT id FROM peers)"),
        0,
        "a peer token without its peer"
    );
    assert_eq!(
        count("SELECT count(*) FROM cluster_members m WHERE m.peer_id NOT IN (SELECT id FROM peers)"),
        0,
        "a member row without its peer"
    );
    assert_eq!(
        count("SELECT count(*) FROM vip_candidates c WHERE c.peer_id NOT IN (SELECT id FROM peers)"),
        0,
        "a VIP candidate that is not a peer"
    );
    let candidates = text(&format!(
        "SELECT c.peer_id FROM vip_candidates c JOIN clusters k ON k.vip_id = c.vip_id \
         WHERE k.id = '{cluster}' ORDER BY c.rank"
    ));
    let servers: BTreeSet<String> = members
        .iter()
        .filter(|(_, (c, role))| c == cluster && role == "server")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        candidates.iter().cloned().collect::<BTreeSet<_>>(),
        servers,
        "VIP candidates and the cluster's servers differ"
    );
    assert_eq!(candidates.len(), servers.len(), "a peer is a candidate twice");

    // The revision counts every change that was made: each enrollment, the bootstrap, each server join.
    let revision = count(&format!("SELECT revision FROM networks WHERE id = '{network}'"));
    let peers = count(&format!("SELECT count(*) FROM peers WHERE network_id = '{network}'"));
    let server_joins = i64::try_from(servers.len()).expect("count") - 1;
    assert!(
        revision >= peers + 1 + server_joins,
        "revision {revision} < {peers} enrollments + 1 bootstrap + {server_joins} server joins"
    );
    assert!(u64::try_from(revision).expect("revision") >= acked.max_revision);
    assert_eq!(u64::try_from(revision).expect("revision"), api_revision);
    assert!(
        usize::try_from(peers).expect("count") > acked.enrolled.len(),
        "expected the bootstrap peer and the acknowledged ones at least"
    );
}
