//! The registry client against the real registry router (in process, over a temporary SQLite store, served
//! on 127.0.0.1): enrollment and its persisted identity, restart without re-enrollment, the watch, pinning,
//! the k3s handshakes and their drop-ins, and a start from the stored view while the registry is down.
//! Against a fake, hostile registry (a small axum server scripted by the test): views that would re-route
//! pinned members are refused and never persisted, offending entries are dropped, floors above the highest
//! term are ignored, instant answers with alternating revisions are rate limited, and a corrupt
//! `network.json` does not stop a start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sdwan_registry::api;
use sdwan_registry::service;
use sdwan_registry::store::sqlite::{SqliteOptions, SqliteStore};
use sdwan_registry::store::Store;
use sdwand::client::state::StateDir;
use sdwand::client::{ClientMetrics, Link, LinkEvent};
use sdwand::config::{self, Config};
use sdwand::vocab::wire::{
    CandidateView, EnrollRequest, EnrollResponse, EpochView, MemberView, MembersResponse, PeerReportResponse,
    VipEpochView, VipView, WatchQuery,
};
use sdwand::vocab::Lifecycle;
use serde_json::{json, Value};
use wireguard_control::Key;

/// How long any awaited event may take.
const DEADLINE: Duration = Duration::from_secs(15);

/// A registry served on 127.0.0.1 until dropped (or stopped).
struct Server {
    addr: SocketAddr,
    admin: String,
    network: String,
    enrollment: String,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        // reqwest is built without a crypto provider; sdwand installs ring (see `sdwand::client::http`).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store"));
        let account = store
            .write(|tx| service::create_account(tx, "acme", 1))
            .await
            .expect("account");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = api::router(store);
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        let mut s = Server {
            addr,
            admin: account.admin_token,
            network: String::new(),
            enrollment: String::new(),
            task,
            _dir: dir,
        };
        let net = s
            .post(
                "/v1/networks",
                &s.admin,
                json!({"name": "lab", "overlay_prefix": "fd00:5d::/32", "vip_pool": "fd00:5d:f::/64"}),
            )
            .await;
        s.network = net["id"].as_str().expect("network id").to_owned();
        let tok = s
            .post(
                &format!("/v1/networks/{}/enrollment-tokens", s.network),
                &s.admin,
                json!({}),
            )
            .await;
        s.enrollment = tok["token"].as_str().expect("token").to_owned();
        s
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, v) = self.try_post(path, token, body).await;
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn try_post(&self, path: &str, token: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Stops accepting connections (the nodes' links must be dropped first: their open connections
    /// would otherwise stay served).
    async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Waits until a join without a target succeeds, i.e. the network has an active cluster.
    async fn wait_active_cluster(&self) {
        let probe = Key::generate_private().get_public().to_base64();
        let enrolled = self
            .post(
                "/v1/peers/enroll",
                &self.enrollment,
                json!({"name": "probe", "public_key": probe, "roles": ["agent"]}),
            )
            .await;
        let token = enrolled["peer_token"].as_str().expect("peer token").to_owned();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, v) = self
                .try_post(
                    "/v1/runtime/handshake",
                    &token,
                    json!({"phase": "join_request", "role": "agent"}),
                )
                .await;
            if status.is_success() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no active cluster: {status} {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One node: its state directory, token file and key.
struct Node {
    dir: tempfile::TempDir,
    key: Key,
}

impl Node {
    fn new(server: &Server) -> Node {
        Node::with_token(&server.enrollment)
    }

    fn with_token(token: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{token}\n")).expect("token");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Node {
            dir,
            key: Key::generate_private(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn dropin(&self) -> PathBuf {
        self.dir.path().join("k3s/50-sdwand.yaml")
    }

    fn config(&self, server: &Server, name: &str, k3s: &str) -> Config {
        self.config_at(&server.url(), name, k3s)
    }

    fn config_at(&self, url: &str, name: &str, k3s: &str) -> Config {
        let d = self.dir.path().display();
        let text = format!(
            "[interface]\nname = \"sdw0\"\nprivate_key_file = \"{d}/private.key\"\n\
             [daemon]\nstate_dir = \"{d}/state\"\n\
             [registry]\nurl = \"{url}\"\ninsecure = true\nenrollment_token_file = \"{d}/token\"\nname = \"{name}\"\n{k3s}"
        );
        config::parse(Path::new("/etc/sdwand/sdwand.toml"), &text).expect("config")
    }

    fn k3s(&self, role: &str, extra: &str) -> String {
        format!(
            "[k3s]\nrole = \"{role}\"\nconfig_path = \"{}\"\n{extra}",
            self.dropin().display()
        )
    }
}

async fn start(cfg: &Config, key: &Key) -> Link {
    start_metered(cfg, key, ClientMetrics::new()).await
}

/// [`start`] with the caller's metrics, to read the link's counters.
async fn start_metered(cfg: &Config, key: &Key, metrics: ClientMetrics) -> Link {
    tokio::time::timeout(DEADLINE, Link::start(cfg, key, metrics))
        .await
        .expect("the link started in time")
        .expect("the link started")
}

/// Waits for the first event that satisfies `done`.
async fn until(link: &mut Link, what: &str, mut done: impl FnMut(&Link, &LinkEvent) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, link.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if done(link, &event) {
            return;
        }
    }
}

/// Waits until the link's state satisfies `done` (checked now, then after each event).
async fn until_state(link: &mut Link, what: &str, done: impl Fn(&Link) -> bool) {
    if !done(link) {
        until(link, what, |l, _| done(l)).await;
    }
}

fn names(link: &Link) -> Vec<String> {
    link.view.members.iter().map(|m| m.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_persist_restart_without_reenrolling_and_watch() {
    let server = Server::start().await;
    let n1 = Node::new(&server);
    let cfg = n1.config(&server, "p1", "");
    let link = start(&cfg, &n1.key).await;
    assert_eq!(link.identity.name, "p1");
    assert_eq!(link.identity.address.to_string(), "fd00:5d::1");
    assert_eq!(names(&link), ["p1"]);
    let state = StateDir::new(&n1.state());
    assert_eq!(state.identity().expect("identity").as_ref(), Some(&link.identity));
    for f in ["identity.json", "network.json", "pins.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.path().join(f)).expect(f).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let effective = link.effective(&cfg).expect("effective");
    assert_eq!(effective.interface.address, link.identity.address);
    assert_eq!(effective.members.len(), 1);
    let identity = link.identity.clone();
    drop(link);

    // A restart neither re-enrolls nor needs the token any more.
    std::fs::remove_file(n1.dir.path().join("token")).expect("rm token");
    let mut link = start(&cfg, &n1.key).await;
    assert_eq!(link.identity, identity);

    // A second peer enrolls: the watch brings it.
    let n2 = Node::new(&server);
    let link2 = start(&n2.config(&server, "p2", ""), &n2.key).await;
    assert_eq!(link2.identity.address.to_string(), "fd00:5d::2");
    until(&mut link, "p2 in p1's view", |l, e| {
        matches!(e, LinkEvent::View) && names(l) == ["p1", "p2"]
    })
    .await;
    let stored = state.network().expect("network.json").expect("present");
    assert_eq!(stored, link.view, "the accepted view is persisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_address_is_refused() {
    let server = Server::start().await;
    let n1 = Node::new(&server);
    let cfg = n1.config(&server, "p1", "");
    let link = start(&cfg, &n1.key).await;
    drop(link);
    // p1 once accepted another key at the address p2 is about to get.
    let state = StateDir::new(&n1.state());
    let mut pins = state.pins().expect("pins");
    let old = Key::generate_private().get_public().to_base64();
    pins.pin("fd00:5d::2".parse().expect("addr"), &old);
    state.save_pins(&pins).expect("save");

    let metrics = ClientMetrics::new();
    let mut link = start_metered(&cfg, &n1.key, metrics.clone()).await;
    let n2 = Node::new(&server);
    let _l2 = start(&n2.config(&server, "p2", ""), &n2.key).await;
    let n3 = Node::new(&server);
    let _l3 = start(&n3.config(&server, "p3", ""), &n3.key).await;
    until(&mut link, "p3 in p1's view", |l, e| {
        matches!(e, LinkEvent::View) && names(l).contains(&"p3".to_owned())
    })
    .await;
    assert_eq!(names(&link), ["p1", "p3"], "p2's address is pinned to another key");
    assert!(metrics.refused_rekeys.get() >= 1);
    let pins = state.pins().expect("pins");
    assert_eq!(
        pins.key(&"fd00:5d::2".parse().expect("addr")),
        Some(old.as_str()),
        "the pin is kept"
    );
    assert!(
        link.effective(&cfg)
            .expect("effective")
            .members
            .iter()
            .all(|m| m.name != "p2"),
        "p2 never reaches the data plane"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_joins_write_their_dropins() {
    let server = Server::start().await;
    let s1 = Node::new(&server);
    let s1_cfg = s1.config(
        &server,
        "s1",
        &s1.k3s("server", "bootstrap = true\ncluster_name = \"prod\"\n"),
    );
    let mut l1 = start(&s1_cfg, &s1.key).await;
    let mut cluster = String::new();
    until(&mut l1, "the bootstrap", |_, e| match e {
        LinkEvent::Joined(resp) => {
            cluster = resp.cluster_id.clone();
            true
        }
        _ => false,
    })
    .await;
    let text = std::fs::read_to_string(s1.dropin()).expect("s1 drop-in");
    assert!(text.contains("\ncluster-init: true\n"), "{text}");
    assert!(text.contains("\ntls-san:\n  - \"fd00:5d:f::1\"\n"), "{text}");
    assert!(!text.contains("server:"), "{text}");

    // The cluster VIP reaches s1's view with s1 as candidate; [k3s.health] absent, so no health check.
    until_state(&mut l1, "the cluster VIP in s1's view", |l| !l.view.vips.is_empty()).await;
    let eff = l1.effective(&s1_cfg).expect("effective");
    assert_eq!(eff.vips.len(), 1);
    assert_eq!(eff.vips[0].candidates, ["s1"]);

    // s1 reports k3s ready (no [k3s.health]): the cluster becomes active and agents may join it.
    l1.report(&[], |_| None);
    server.wait_active_cluster().await;
    let a1 = Node::new(&server);
    let a1_cfg = a1.config(&server, "a1", &a1.k3s("agent", ""));
    let mut la = start(&a1_cfg, &a1.key).await;
    until(&mut la, "the agent's join", |_, e| matches!(e, LinkEvent::Joined(_))).await;
    let text = std::fs::read_to_string(a1.dropin()).expect("agent drop-in");
    let body: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(body[0], "server: \"https://[fd00:5d:f::1]:6443\"");
    assert!(body[1].starts_with("token: \"") && body.len() == 2, "{text}");

    // A joining server, by cluster id: appended to the candidates, seen by s1.
    let s2 = Node::new(&server);
    let target = format!("target_cluster_id = \"{cluster}\"\n");
    let s2_cfg = s2.config(&server, "s2", &s2.k3s("server", &target));
    let mut l2 = start(&s2_cfg, &s2.key).await;
    until(&mut l2, "s2's join", |_, e| matches!(e, LinkEvent::Joined(_))).await;
    let text = std::fs::read_to_string(s2.dropin()).expect("s2 drop-in");
    assert!(text.contains("\nserver: \"https://[fd00:5d:f::1]:6443\"\n"), "{text}");
    assert!(text.contains("\ntls-san:\n  - \"fd00:5d:f::1\"\n"), "{text}");
    until_state(&mut l1, "s2 as second candidate", |l| {
        l.view.vips.first().map(|v| v.candidates.len()) == Some(2)
    })
    .await;
    let eff = l1.effective(&s1_cfg).expect("effective");
    assert_eq!(eff.vips[0].candidates, ["s1", "s2"]);

    // A restart with the same answer leaves the drop-in untouched.
    let before = std::fs::metadata(s2.dropin()).expect("meta").modified().expect("mtime");
    drop(l2);
    let mut l2 = start(&s2_cfg, &s2.key).await;
    until(&mut l2, "s2's join again", |_, e| matches!(e, LinkEvent::Joined(_))).await;
    let after = std::fs::metadata(s2.dropin()).expect("meta").modified().expect("mtime");
    assert_eq!(before, after, "unchanged content is not rewritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_the_stored_view_while_the_registry_is_down() {
    let mut server = Server::start().await;
    let n1 = Node::new(&server);
    let n2 = Node::new(&server);
    let cfg = n1.config(&server, "p1", "");
    let mut l1 = start(&cfg, &n1.key).await;
    let l2 = start(&n2.config(&server, "p2", ""), &n2.key).await;
    until_state(&mut l1, "p2 in p1's view", |l| names(l).len() == 2).await;
    let view = l1.view.clone();
    drop(l1);
    drop(l2);
    server.stop().await;

    let metrics = ClientMetrics::new();
    metrics.up.set(1);
    let l1 = start_metered(&cfg, &n1.key, metrics.clone()).await;
    assert_eq!(l1.view, view);
    let eff = l1.effective(&cfg).expect("effective");
    assert_eq!(
        eff.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["p1", "p2"]
    );
    // The watch finds the registry gone.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while metrics.up.get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "registry_up never went to 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_bring_back_the_highest_epoch() {
    use sdwand::vip::{Claim, Epoch, PeerState, VipStatus};
    let server = Server::start().await;
    let s1 = Node::new(&server);
    let cfg = s1.config(&server, "s1", &s1.k3s("server", "bootstrap = true\n"));
    let mut l1 = start(&cfg, &s1.key).await;
    until_state(&mut l1, "the cluster VIP", |l| !l.view.vips.is_empty()).await;
    let vip = l1.view.vips[0].address;
    let holding = VipStatus {
        vip,
        role: PeerState::Holding,
        healthy: true,
        claim: Some(Claim {
            epoch: Epoch { term: 5, rank: 0 },
            holder: l1.identity.address,
        }),
        routed_to: None,
        candidates: vec![],
        confirmed: Some((0, 0)),
        transport_up: true,
    };
    let me = l1.identity.clone();
    l1.report(&[holding], |a| (a == me.address).then(|| me.name.clone()));
    let mut term = None;
    until(&mut l1, "the epoch floors", |_, e| match e {
        LinkEvent::Floors(f) => {
            term = f.iter().find(|f| f.address == vip).map(|f| f.epoch.term);
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(term, Some(5));
    // A restarted peer that saw nothing learns the floor from its first report.
    l1.report(&[], |_| None);
    let mut again = None;
    until(&mut l1, "the floors again", |_, e| match e {
        LinkEvent::Floors(f) => {
            again = f.first().map(|f| f.epoch.term);
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(again, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_target_reruns_the_join_without_restart() {
    let server = Server::start().await;
    let s1 = Node::new(&server);
    let mut l1 = start(
        &s1.config(&server, "s1", &s1.k3s("server", "bootstrap = true\n")),
        &s1.key,
    )
    .await;
    let mut cluster = String::new();
    until(&mut l1, "the bootstrap", |_, e| match e {
        LinkEvent::Joined(r) => {
            cluster = r.cluster_id.clone();
            true
        }
        _ => false,
    })
    .await;
    let a1 = Node::new(&server);
    let wrong = a1.config(
        &server,
        "a1",
        &a1.k3s("agent", "target_cluster_id = \"no-such-cluster\"\n"),
    );
    let mut la = start(&wrong, &a1.key).await;
    // The refusal is retried slowly: nothing is written meanwhile.
    let early = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let LinkEvent::Joined(_) = la.next_event().await {
                return;
            }
        }
    })
    .await;
    assert!(early.is_err(), "a join to a missing cluster must not succeed");
    assert!(!a1.dropin().exists());
    // SIGHUP with the right target: the join runs again at once.
    let right = a1.config(
        &server,
        "a1",
        &a1.k3s("agent", &format!("target_cluster_id = \"{cluster}\"\n")),
    );
    la.set_k3s(right.k3s.as_ref());
    until(
        &mut la,
        "the join to the right cluster",
        |_, e| matches!(e, LinkEvent::Joined(r) if r.cluster_id == cluster),
    )
    .await;
    let text = std::fs::read_to_string(a1.dropin()).expect("drop-in");
    assert!(text.contains("\nserver: \"https://[fd00:5d:f::1]:6443\"\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_another_cluster_on_a_target_change() {
    let server = Server::start().await;
    let mut clusters = Vec::new();
    let mut servers = Vec::new();
    for name in ["s1", "s2"] {
        let node = Node::new(&server);
        let cfg = node.config(
            &server,
            name,
            &node.k3s("server", &format!("bootstrap = true\ncluster_name = \"c-{name}\"\n")),
        );
        let mut link = start(&cfg, &node.key).await;
        until(&mut link, "a bootstrap", |_, e| match e {
            LinkEvent::Joined(r) => {
                clusters.push((r.cluster_id.clone(), r.vip));
                true
            }
            _ => false,
        })
        .await;
        servers.push((node, link));
    }
    let a1 = Node::new(&server);
    let target = |i: usize| a1.k3s("agent", &format!("target_cluster_id = \"{}\"\n", clusters[i].0));
    let mut la = start(&a1.config(&server, "a1", &target(0)), &a1.key).await;
    until(&mut la, "the first join", |_, e| matches!(e, LinkEvent::Joined(_))).await;
    let first = std::fs::read_to_string(a1.dropin()).expect("drop-in");
    assert!(first.contains(&format!("[{}]", clusters[0].1)), "{first}");
    la.set_k3s(a1.config(&server, "a1", &target(1)).k3s.as_ref());
    let second = clusters[1].0.clone();
    until(
        &mut la,
        "the move",
        |_, e| matches!(e, LinkEvent::Joined(r) if r.cluster_id == second),
    )
    .await;
    let text = std::fs::read_to_string(a1.dropin()).expect("drop-in");
    assert!(
        text.contains(&format!("server: \"https://[{}]:6443\"", clusters[1].1)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_move_request_is_seen_once() {
    let server = Server::start().await;
    let s1 = Node::new(&server);
    let mut l1 = start(
        &s1.config(&server, "s1", &s1.k3s("server", "bootstrap = true\n")),
        &s1.key,
    )
    .await;
    until(&mut l1, "the bootstrap", |_, e| matches!(e, LinkEvent::Joined(_))).await;
    l1.report(&[], |_| None);
    server.wait_active_cluster().await;
    let s2 = Node::new(&server);
    let mut l2 = start(&s2.config(&server, "s2", &s2.k3s("server", "")), &s2.key).await;
    until(&mut l2, "s2's join", |_, e| matches!(e, LinkEvent::Joined(_))).await;
    until_state(&mut l1, "two candidates", |l| {
        l.view.vips.first().is_some_and(|v| v.candidates.len() == 2)
    })
    .await;
    let vip = l1.view.vips[0].clone();
    assert!(l1.moves(&[vip.address]).is_empty());
    server
        .post(
            &format!("/v1/vips/{}/move", vip.vip_id),
            &server.admin,
            json!({"to": "s2"}),
        )
        .await;
    until_state(&mut l1, "the move request", |l| {
        l.view.vips.first().is_some_and(|v| v.move_request.is_some())
    })
    .await;
    assert!(l1.moves(&[]).is_empty(), "only the holder acts on it");
    assert_eq!(l1.moves(&[vip.address]), [(vip.address, "s2".to_owned())]);
    assert!(l1.moves(&[vip.address]).is_empty(), "acted on once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_without_a_readable_token_is_refused() {
    let server = Server::start().await;
    let n1 = Node::new(&server);
    std::fs::remove_file(n1.dir.path().join("token")).expect("rm token");
    let cfg = n1.config(&server, "p1", "");
    let err = tokio::time::timeout(DEADLINE, Link::start(&cfg, &n1.key, ClientMetrics::new()))
        .await
        .expect("refused at once")
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("registry.enrollment_token_file") && text.contains("cannot be read"),
        "{text}"
    );
    assert!(!n1.state().join("registry/identity.json").exists());
}

/// A scripted, hostile registry: enrolls anyone as p1 (fd00:5d::1) next to p2 (fd00:5d::2, underlay
/// [2001:db8::2]:51820); its watch answers the views queued by the test one per request (a long poll of
/// `wait_ms` when none is queued), or, when `alternate` is set, answers at once with revisions 5/6/5/6...;
/// its report answers with the queued floors.
#[derive(Clone, Default)]
struct Fake {
    views: Arc<std::sync::Mutex<std::collections::VecDeque<MembersResponse>>>,
    alternate: Arc<std::sync::atomic::AtomicBool>,
    watches: Arc<std::sync::atomic::AtomicUsize>,
    floors: Arc<std::sync::Mutex<Vec<VipEpochView>>>,
}

const P2_KEY: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";

fn member(name: &str, address: &str, key: &str) -> MemberView {
    MemberView {
        peer_id: format!("id-{name}"),
        name: name.into(),
        public_key: key.into(),
        endpoint: None,
        address: address.parse().expect("address"),
        routed_prefixes: vec![],
        address_v4: None,
        prefixes: vec![],
        lifecycle: Lifecycle::Persistent,
        roles: vec![],
        last_seen_ms: 0,
    }
}

fn fake_vip(address: &str, candidates: &[&str]) -> VipView {
    VipView {
        vip_id: format!("v-{address}"),
        address: address.parse().expect("vip"),
        cluster_id: None,
        candidates: candidates
            .iter()
            .map(|n| CandidateView {
                peer_id: format!("id-{n}"),
                name: (*n).into(),
                address: "fd00:5d::1".parse().expect("addr"),
            })
            .collect(),
        holder: None,
        epoch: None,
        confirmed_peers: None,
        move_request: None,
        quorum: None,
    }
}

impl Fake {
    /// Serves the fake on 127.0.0.1; returns its URL.
    async fn start(&self) -> String {
        use axum::extract::{Query, State};
        use axum::routing::{get, post};
        use axum::Json;
        async fn enroll(Json(req): Json<EnrollRequest>) -> Json<EnrollResponse> {
            let mut me = member("p1", "fd00:5d::1", &req.public_key);
            me.name = req.name;
            let mut p2 = member("p2", "fd00:5d::2", P2_KEY);
            p2.endpoint = Some("[2001:db8::2]:51820".parse().expect("endpoint"));
            Json(EnrollResponse {
                peer_id: "id-p1".into(),
                network_id: "n1".into(),
                address: "fd00:5d::1".parse().expect("addr"),
                address_v4: None,
                overlay_prefix: "fd00:5d::/32".parse().expect("prefix"),
                peer_token: "peer-token".into(),
                revision: 0,
                members: vec![me, p2],
                overlay_prefix_v4: None,
                pod_pools: vec![],
                site_ranges: vec![],
            })
        }
        async fn watch(State(fake): State<Fake>, Query(q): Query<WatchQuery>) -> axum::response::Response {
            use axum::response::IntoResponse;
            use std::sync::atomic::Ordering;
            let n = fake.watches.fetch_add(1, Ordering::SeqCst);
            if fake.alternate.load(Ordering::SeqCst) {
                let mut v = fake
                    .views
                    .lock()
                    .expect("lock")
                    .front()
                    .cloned()
                    .expect("a view to alternate");
                v.revision = 5 + (n as u64 % 2);
                return Json(v).into_response();
            }
            let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0));
            loop {
                if let Some(v) = fake.views.lock().expect("lock").pop_front() {
                    return Json(v).into_response();
                }
                if tokio::time::Instant::now() >= deadline {
                    return axum::http::StatusCode::NO_CONTENT.into_response();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        async fn report(State(fake): State<Fake>) -> Json<PeerReportResponse> {
            Json(PeerReportResponse {
                revision: 1,
                epochs: fake.floors.lock().expect("lock").clone(),
                refused: Vec::new(),
            })
        }
        let router = axum::Router::new()
            .route("/v1/peers/enroll", post(enroll))
            .route("/v1/networks/{id}/watch", get(watch))
            .route("/v1/peers/self/report", post(report))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        format!("http://{addr}")
    }

    fn push(&self, view: MembersResponse) {
        self.views.lock().expect("lock").push_back(view);
    }
}

/// The network at `revision`: p1 (`key`), p2, and `extra` members and `vips`.
fn fake_view(revision: u64, key: &Key, extra: Vec<MemberView>, vips: Vec<VipView>) -> MembersResponse {
    let mut p2 = member("p2", "fd00:5d::2", P2_KEY);
    p2.endpoint = Some("[2001:db8::2]:51820".parse().expect("endpoint"));
    let mut members = vec![member("p1", "fd00:5d::1", &key.get_public().to_base64()), p2];
    members.extend(extra);
    MembersResponse {
        network_id: "n1".into(),
        revision,
        overlay_prefix: Some("fd00:5d::/32".parse().expect("prefix")),
        vip_pool: Some("fd00:5d:f::/64".parse().expect("pool")),
        overlay_prefix_v4: None,
        pod_pools: vec![],
        site_ranges: vec![],
        members,
        vips,
        floating: Vec::new(),
    }
}

/// Drives `link` (a refused view produces no event) until `done` holds.
async fn drive_until(link: &mut Link, what: &str, done: impl Fn(&Link) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(link) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        let _ = tokio::time::timeout(Duration::from_millis(50), link.next_event()).await;
    }
}

fn refused(metrics: &ClientMetrics, reason: &str) -> u64 {
    metrics.views_refused.with_label_values(&[reason]).get()
}

fn dropped(metrics: &ClientMetrics, reason: &str) -> u64 {
    metrics.entries_dropped.with_label_values(&[reason]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_views_are_refused_and_the_last_good_view_stays() {
    let fake = Fake::default();
    let url = fake.start().await;
    let n1 = Node::with_token("enroll-me");
    let cfg = n1.config_at(&url, "p1", "");
    let metrics = ClientMetrics::new();
    let mut link = start_metered(&cfg, &n1.key, metrics.clone()).await;
    assert_eq!(names(&link), ["p1", "p2"], "both pinned from the enrollment");
    let state = StateDir::new(&n1.state());

    fake.push(fake_view(
        1,
        &n1.key,
        vec![],
        vec![fake_vip("fd00:5d:f::1", &["p1", "p2"])],
    ));
    until_state(&mut link, "revision 1", |l| l.view.revision == 1).await;

    // E5a + E5c: a new member routing p2's /128, a VIP on p2's address. Refused as a whole.
    let mut x = member("x", "fd00:5d::3", &Key::generate_private().get_public().to_base64());
    x.routed_prefixes = vec!["fd00:5d::2/128".parse().expect("prefix")];
    fake.push(fake_view(2, &n1.key, vec![x], vec![fake_vip("fd00:5d::2", &["p1"])]));
    drive_until(&mut link, "the refusal", |_| refused(&metrics, "overlap") == 1).await;
    assert_eq!(link.view.revision, 1, "the last good view stays");
    let stored = state.network().expect("network.json").expect("present");
    assert_eq!(stored.revision, 1, "a refused view is never persisted");
    assert_eq!(
        link.effective(&cfg).expect("effective").members.len(),
        2,
        "x never reaches the data plane"
    );

    // A restart starts from the last good view, not the refused one.
    drop(link);
    let mut link = start_metered(&cfg, &n1.key, metrics.clone()).await;
    assert_eq!(link.view.revision, 1);

    // E5b: the default route on a new member refuses the view too (it covers pinned members).
    let mut y = member("y", "fd00:5d::4", &Key::generate_private().get_public().to_base64());
    y.routed_prefixes = vec!["::/0".parse().expect("prefix")];
    fake.push(fake_view(3, &n1.key, vec![y], vec![]));
    drive_until(&mut link, "the second refusal", |_| refused(&metrics, "overlap") == 2).await;
    assert_eq!(link.view.revision, 1);

    // E5d + E5e: a VIP on p2's underlay (outside the overlay too), a VIP outside the network's pool and a
    // member outside the overlay are dropped, the rest applied.
    let fine = member("z", "fd00:5d::5", &Key::generate_private().get_public().to_base64());
    let outside = member("o", "fd00:99::5", &Key::generate_private().get_public().to_base64());
    fake.push(fake_view(
        4,
        &n1.key,
        vec![fine, outside],
        vec![
            fake_vip("2001:db8::2", &["p1"]),
            fake_vip("fd00:5d::77", &["p1"]),
            fake_vip("fd00:5d:f::1", &["p1", "p2"]),
        ],
    ));
    until_state(&mut link, "revision 4", |l| l.view.revision == 4).await;
    assert_eq!(names(&link), ["p1", "p2", "z"]);
    assert_eq!(link.view.vips.len(), 1);
    assert_eq!(link.view.vips[0].address.to_string(), "fd00:5d:f::1");
    assert_eq!(
        (
            dropped(&metrics, "underlay"),
            dropped(&metrics, "outside_overlay"),
            dropped(&metrics, "outside_pool")
        ),
        (1, 2, 1)
    );
    assert_eq!(
        state.network().expect("read").expect("present"),
        link.view,
        "persisted after validation"
    );

    // E5f: a registry restored from a backup (lower revision) is followed, with a warning.
    fake.push(fake_view(3, &n1.key, vec![], vec![]));
    until_state(&mut link, "revision 3 again", |l| l.view.revision == 3).await;
    assert_eq!(names(&link), ["p1", "p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floors_above_the_highest_term_are_ignored() {
    let fake = Fake::default();
    let url = fake.start().await;
    let n1 = Node::with_token("enroll-me");
    let cfg = n1.config_at(&url, "p1", "");
    let metrics = ClientMetrics::new();
    let mut link = start_metered(&cfg, &n1.key, metrics.clone()).await;
    // A view whose floor is u64::MAX: the VIP is kept, the floor is not.
    let mut v = fake_view(
        1,
        &n1.key,
        vec![],
        vec![
            fake_vip("fd00:5d:f::1", &["p1", "p2"]),
            fake_vip("fd00:5d:f::2", &["p2"]),
        ],
    );
    v.vips[0].epoch = Some(EpochView {
        term: u64::MAX,
        rank: 0,
    });
    fake.push(v);
    until_state(&mut link, "revision 1", |l| l.view.revision == 1).await;
    assert_eq!(link.view.vips.len(), 2);
    assert_eq!(link.view.vips[0].epoch, None);
    assert_eq!(dropped(&metrics, "term_floor"), 1);

    // E6: a report answer with a floor at u64::MAX next to an honest one.
    *fake.floors.lock().expect("lock") = vec![
        VipEpochView {
            address: "fd00:5d:f::1".parse().expect("vip"),
            epoch: EpochView {
                term: u64::MAX,
                rank: 0,
            },
        },
        VipEpochView {
            address: "fd00:5d:f::2".parse().expect("vip"),
            epoch: EpochView { term: 7, rank: 1 },
        },
    ];
    link.report(&[], |_| None);
    let mut got = Vec::new();
    until(&mut link, "the floors", |_, e| match e {
        LinkEvent::Floors(f) => {
            got = f.clone();
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].address.to_string(), got[0].epoch.term),
        ("fd00:5d:f::2".into(), 7)
    );
    assert_eq!(metrics.floors_refused.get(), 1);
    // Even handed over directly, an absurd floor is never recorded nor persisted.
    let mut all = got.clone();
    all.push(VipEpochView {
        address: "fd00:5d:f::1".parse().expect("vip"),
        epoch: EpochView {
            term: u64::MAX,
            rank: 0,
        },
    });
    link.record_floors(&all);
    let stored = StateDir::new(&n1.state()).network().expect("read").expect("present");
    let epochs: Vec<Option<u64>> = stored.vips.iter().map(|v| v.epoch.map(|e| e.term)).collect();
    assert_eq!(epochs, [None, Some(7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_answers_with_alternating_revisions_are_rate_limited() {
    let fake = Fake::default();
    let url = fake.start().await;
    let n1 = Node::with_token("enroll-me");
    let cfg = n1.config_at(&url, "p1", "");
    fake.push(fake_view(5, &n1.key, vec![], vec![]));
    fake.alternate.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut link = start(&cfg, &n1.key).await;
    // Drain every view for 3.5 s (a loop that did not drain would throttle the watch by itself).
    let start = tokio::time::Instant::now();
    let window = Duration::from_millis(3500);
    let mut views = 0;
    while let Ok(event) = tokio::time::timeout_at(start + window, link.next_event()).await {
        if matches!(event, LinkEvent::View) {
            views += 1;
        }
    }
    let requests = fake.watches.load(std::sync::atomic::Ordering::SeqCst);
    // 5 then 6 are news (the second request follows the first at once); every answer after them brings
    // nothing newer, so one per second follows: at most 2 + 4 in 3.5 s.
    assert!(requests <= 6, "{requests} watch requests in 3.5 s");
    assert!(views >= 2, "the views are still taken ({views})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_network_json_does_not_stop_a_start() {
    let fake = Fake::default();
    let url = fake.start().await;
    let n1 = Node::with_token("enroll-me");
    let cfg = n1.config_at(&url, "p1", "");
    let mut link = start(&cfg, &n1.key).await;
    fake.push(fake_view(1, &n1.key, vec![], vec![]));
    until_state(&mut link, "revision 1", |l| l.view.revision == 1).await;
    drop(link);
    let state = StateDir::new(&n1.state());
    std::fs::write(state.path().join("network.json"), "{\"network_id\": \"n1\", \"revi").expect("truncate");
    let link = start(&cfg, &n1.key).await;
    assert_eq!(link.view.revision, 0, "starts from scratch");
    let aside = std::fs::read_dir(state.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("network.json.corrupt-"))
        .count();
    assert_eq!(aside, 1, "the corrupt file is kept aside");
}
