//! The crash tests' common parts (`registry_crash` on SQLite, `registry_crash_etcd` on etcd): the real
//! `sdwan-registry` binary as a child process ([`RegistryProcess`], killed by PID on drop; the replicas of
//! `registry_replicas` too), the setup of a network with a bootstrapped cluster ([`setup`]), the burst of
//! concurrent enrollments and joins spread over one or more replicas ([`Burst`]), and the API-side check
//! that every acknowledged enrollment is there exactly once ([`check_members`]). Each test checks its
//! store's raw records itself.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wireguard_control::Key;

/// A running `sdwan-registry`, killed by its PID when dropped (also when the test fails).
pub struct RegistryProcess {
    child: Child,
    addr: SocketAddr,
}

impl RegistryProcess {
    /// Starts the binary on `config` (which listens on `addr`) and waits until it serves.
    pub async fn start(config: &Path, addr: SocketAddr) -> RegistryProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_sdwan-registry"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start sdwan-registry");
        let mut registry = RegistryProcess { child, addr };
        registry.wait_ready().await;
        registry
    }

    /// Polls the port until it accepts connections (15 s at most); fails at once if the process exited.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("sdwan-registry exited before serving: {status}");
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sdwan-registry not listening on {} after 15 s",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory preconditions; the PID is our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    /// SIGKILL, and reap the process.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("wait");
    }

    /// SIGTERM, and the exit status (graceful shutdown within 10 s).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
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

/// A free port of 127.0.0.1.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Writes `dir/NAME.toml`: an insecure registry on `addr` with its state in `dir/NAME`, and `store`
/// (a `[store]` section, or nothing for SQLite in the state directory).
pub fn write_config(dir: &Path, name: &str, addr: SocketAddr, store: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "listen = \"{addr}\"\nstate_dir = \"{}\"\ninsecure = true\n{store}",
        dir.join(name).display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `sdwan-registry init-account` on `config`: the admin token.
pub fn init_account(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sdwan-registry"))
        .arg("--config")
        .arg(config)
        .args(["init-account", "--name", "crash", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run init-account");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("init-account --json");
    v["admin_token"].as_str().expect("admin_token").to_owned()
}

/// An HTTP client for the burst (plain HTTP; reqwest still needs a crypto provider installed).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Sends a JSON request; the status and body, or the transport error.
pub async fn call(
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

/// What the burst works on: a network, its enrollment token, and a cluster bootstrapped by peer `boot`.
pub struct Setup {
    pub network: String,
    pub enrollment: String,
    pub cluster: String,
}

/// Creates the network, an enrollment token and the bootstrapped cluster through the registry at `base`.
pub async fn setup(client: &reqwest::Client, base: &str, admin: &str) -> Setup {
    let network = ok(
        client,
        format!("{base}/v1/networks"),
        admin,
        json!({"name": "net", "overlay_prefix": "fd00:c::/64", "vip_pool": "fd00:c::ffff:0/112"}),
        201,
    )
    .await["id"]
        .as_str()
        .expect("network id")
        .to_owned();
    let enrollment = ok(
        client,
        format!("{base}/v1/networks/{network}/enrollment-tokens"),
        admin,
        json!({}),
        201,
    )
    .await["token"]
        .as_str()
        .expect("enrollment token")
        .to_owned();
    let boot = ok(
        client,
        format!("{base}/v1/peers/enroll"),
        &enrollment,
        json!({"name": "boot", "public_key": new_key(), "roles": ["server"]}),
        201,
    )
    .await;
    let boot_token = boot["peer_token"].as_str().expect("peer token").to_owned();
    let cluster = ok(
        client,
        format!("{base}/v1/runtime/handshake"),
        &boot_token,
        json!({"phase": "bootstrap", "role": "server"}),
        200,
    )
    .await["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_owned();
    Setup {
        network,
        enrollment,
        cluster,
    }
}

fn new_key() -> String {
    Key::generate_private().get_public().to_base64()
}

/// What the burst got acknowledged.
#[derive(Default)]
pub struct Acked {
    /// name -> (peer id, role)
    pub enrolled: HashMap<String, (String, &'static str)>,
    /// peer ids whose join was answered 200
    pub joined: BTreeSet<String>,
    /// the highest revision an enrollment answer showed
    pub max_revision: u64,
    /// requests that got no 2xx answer in the end
    pub failed: usize,
    /// sends that failed over to another replica (a transport error or 502-504)
    pub failovers: usize,
}

/// A burst of `peers` enrollments, each followed by the peer's join of the cluster (every
/// `server_every`-th peer as a server, the others as agents), all at once.
pub struct Burst {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acked: Arc<Mutex<Acked>>,
    enough: Arc<tokio::sync::Notify>,
}

impl Burst {
    /// Starts it. Peer `i` starts on replica `i % bases.len()`; where a real client would (no answer, or
    /// 502-504), it tries the next replica, at most `bases.len() * 2` sends per request (one with a single
    /// replica). Only a 2xx answer counts as acknowledged. [`Burst::acknowledged`] returns once
    /// `kill_after` requests were.
    pub fn start(
        client: &reqwest::Client,
        bases: &[String],
        setup: &Setup,
        peers: usize,
        server_every: usize,
        kill_after: usize,
    ) -> Burst {
        let acked = Arc::new(Mutex::new(Acked::default()));
        let acks = Arc::new(AtomicUsize::new(0));
        let enough = Arc::new(tokio::sync::Notify::new());
        let bases: Arc<Vec<String>> = Arc::new(bases.to_vec());
        let tasks = (0..peers)
            .map(|i| {
                let (client, acked, acks, enough, bases) = (
                    client.clone(),
                    acked.clone(),
                    acks.clone(),
                    enough.clone(),
                    bases.clone(),
                );
                let (enrollment, cluster) = (setup.enrollment.clone(), setup.cluster.clone());
                let (role, name) = match i % server_every {
                    0 => ("server", format!("server-{i}")),
                    _ => ("agent", format!("agent-{i}")),
                };
                let public_key = new_key();
                tokio::spawn(async move {
                    let ack = || {
                        if acks.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                            enough.notify_one();
                        }
                    };
                    let send = |path: &'static str, token: String, body: Value| {
                        send_with_failover(&client, &bases, i, path, token, body, &acked)
                    };
                    let body = json!({"name": name, "public_key": public_key, "roles": [role]});
                    let enrolled = match send("/v1/peers/enroll", enrollment, body).await {
                        Some((201, v)) => v,
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
                    match send("/v1/runtime/handshake", token.to_owned(), body).await {
                        Some((200, _)) => {
                            ack();
                            acked.lock().expect("lock").joined.insert(id.to_owned());
                        }
                        _ => acked.lock().expect("lock").failed += 1,
                    }
                })
            })
            .collect();
        Burst { tasks, acked, enough }
    }

    /// Returns once `kill_after` requests were acknowledged.
    pub async fn acknowledged(&self) {
        self.enough.notified().await;
    }

    /// Waits for every request's end; what was acknowledged.
    pub async fn finish(self) -> Acked {
        for t in self.tasks {
            t.await.expect("a burst task panicked");
        }
        Arc::try_unwrap(self.acked)
            .unwrap_or_else(|_| panic!("tasks done"))
            .into_inner()
            .expect("lock")
    }
}

/// POSTs `body` to `path` on replica `first % bases.len()`, then on the next ones while there is no
/// answer or a 502-504 (with a growing pause, as a client moving to the next URL would); the last answer,
/// `None` when none came.
async fn send_with_failover(
    client: &reqwest::Client,
    bases: &[String],
    first: usize,
    path: &str,
    token: String,
    body: Value,
    acked: &Mutex<Acked>,
) -> Option<(u16, Value)> {
    let sends = if bases.len() > 1 { bases.len() * 2 } else { 1 };
    let mut last = None;
    for attempt in 0..sends {
        if attempt > 0 {
            acked.lock().expect("lock").failovers += 1;
            tokio::time::sleep(Duration::from_millis(100) * u32::try_from(attempt).expect("attempt")).await;
        }
        let url = format!("{}{path}", bases[(first + attempt) % bases.len()]);
        match call(client, reqwest::Method::POST, url, &token, Some(body.clone())).await {
            Ok((status, v)) if !(502..=504).contains(&status) => return Some((status, v)),
            Ok(answer) => last = Some(answer),
            Err(_) => last = None,
        }
    }
    last
}

/// The network's members as the API at `base` lists them: every acknowledged enrollment is there once,
/// with the id its answer gave. The list's revision.
pub async fn check_members(client: &reqwest::Client, base: &str, admin: &str, network: &str, acked: &Acked) -> u64 {
    let url = format!("{base}/v1/networks/{network}/members");
    let (status, members) = call(client, reqwest::Method::GET, url, admin, None)
        .await
        .expect("members");
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
    members["revision"].as_u64().expect("revision")
}
