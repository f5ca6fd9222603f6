//! Several registry replicas on one etcd key prefix: a change committed through one replica wakes the
//! watches of the others (in revision order, resumed after a broken stream, from a snapshot after a
//! compaction), and exactly one replica leads the background work, another taking over when it stops, its
//! lease is revoked, or its process is killed. Needs etcd (Debian's etcd-server); skipped without it
//! except in CI.

mod registry_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry_support::crash::{self, RegistryProcess};
use registry_support::etcd::{self, Etcd};
use sdwan_registry::service;
use sdwan_registry::store::etcd::{Election, EtcdOptions, EtcdStore, Replicas, CAMPAIGN_PERIOD, LEADER_TTL};
use sdwan_registry::store::Store;
use sdwan_registry::token;
use sdwand::vocab::wire::CreateNetworkRequest;
use serde_json::{json, Value};
use wireguard_control::Key;

fn options(etcd: &Etcd, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        key_prefix: prefix.to_owned(),
        tls: None,
    }
}

/// Polls `done` every 20 ms until it holds; fails with `what` after `within`.
async fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw etcd client of the test's etcd.
async fn raw(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .expect("connect to etcd")
}

/// etcd's current revision.
async fn etcd_revision(etcd: &Etcd) -> i64 {
    let answer = raw(etcd).await.get("/", None).await.expect("get");
    answer.header().expect("header").revision()
}

/// A store with an account and one network in it: (store, its replicas, the network id).
async fn one_network(etcd: &Etcd, prefix: &str) -> (Arc<dyn Store>, Replicas, String) {
    let opened = EtcdStore::open(&options(etcd, prefix)).expect("open");
    let replicas = opened.replicas();
    let store: Arc<dyn Store> = Arc::new(opened);
    let admin = store
        .write(|tx| service::create_account(tx, "acme", 1))
        .await
        .expect("account");
    let presented = token::parse(&admin.admin_token).expect("admin token");
    let request = CreateNetworkRequest {
        name: "net".into(),
        overlay_prefix: "fd00:1::/64".parse().expect("prefix"),
        vip_pool: "fd00:1::ffff:0/112".parse().expect("pool"),
        overlay_prefix_v4: None,
        pod_pools: Vec::new(),
        site_ranges: Vec::new(),
    };
    let network = store
        .write(move |tx| service::create_network(tx, &presented, &request, 1))
        .await
        .expect("network");
    (store, replicas, network.id)
}

/// Stores network `id` with revision `revision` (what any revision-bumping write does to it).
async fn set_revision(store: &Arc<dyn Store>, id: &str, revision: u64) {
    let id = id.to_owned();
    store
        .write(move |tx| {
            let mut network = tx.network(&id)?.expect("the network");
            network.revision = revision;
            tx.put_network(&network)
        })
        .await
        .expect("store the network");
}

/// What a follower announced, in order.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<(String, u64)>>>);

impl Heard {
    fn announce(&self) -> impl Fn(&str, u64) + Send + Sync + 'static {
        let heard = self.0.clone();
        move |id, revision| heard.lock().expect("lock").push((id.to_owned(), revision))
    }

    fn revisions(&self) -> Vec<u64> {
        self.0.lock().expect("lock").iter().map(|(_, r)| *r).collect()
    }
}

/// A follower resumed at an etcd revision announces every network revision committed since, in order, then
/// the later ones; resumed at a compacted revision, it announces the current revision (a snapshot), never
/// an older one, then follows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_resumes_in_order_and_takes_a_snapshot_after_a_compaction() {
    if !etcd::installed_or_skip("the_follower_resumes") {
        return;
    }
    let etcd = etcd::shared();
    let (store, replicas, network) = one_network(&etcd, "/follow/").await;
    let resume = etcd_revision(&etcd).await + 1;
    for revision in 2..=4 {
        set_revision(&store, &network, revision).await;
    }
    let heard = Heard::default();
    let follower = replicas.follow_from(resume, heard.announce());
    until(Duration::from_secs(10), "revisions 2-4 announced", || {
        heard.revisions() == [2, 3, 4]
    })
    .await;
    set_revision(&store, &network, 5).await;
    until(Duration::from_secs(10), "revision 5 announced", || {
        heard.revisions() == [2, 3, 4, 5]
    })
    .await;
    assert!(heard.0.lock().expect("lock").iter().all(|(id, _)| *id == network));
    drop(follower);

    let resume = etcd_revision(&etcd).await + 1;
    set_revision(&store, &network, 6).await;
    set_revision(&store, &network, 7).await;
    raw(&etcd)
        .await
        .compact(etcd_revision(&etcd).await, None)
        .await
        .expect("compact");
    let heard = Heard::default();
    let _follower = replicas.follow_from(resume, heard.announce());
    until(Duration::from_secs(10), "the snapshot's revision 7", || {
        heard.revisions() == [7]
    })
    .await;
    set_revision(&store, &network, 8).await;
    until(Duration::from_secs(10), "revision 8 after the snapshot", || {
        heard.revisions() == [7, 8]
    })
    .await;
}

/// Which of `elections` lead now (a stopped one does not).
fn leaders(elections: &[Option<Election>]) -> Vec<usize> {
    (0..elections.len())
        .filter(|&i| elections[i].as_ref().is_some_and(|e| *e.leading().borrow()))
        .collect()
}

/// Two replicas: exactly one leads, never both; when its lease is revoked behind its back it stops leading
/// and the other takes over; when that one stops (drops its election), the first takes over again before
/// a TTL went by (the stopped one resigned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_replica_leads_and_another_takes_over() {
    if !etcd::installed_or_skip("exactly_one_replica_leads") {
        return;
    }
    let etcd = etcd::shared();
    let stores = [
        EtcdStore::open(&options(&etcd, "/elect/")).expect("replica a"),
        EtcdStore::open(&options(&etcd, "/elect/")).expect("replica b"),
    ];
    let ttl = Duration::from_secs(2);
    let mut elections = [
        Some(stores[0].replicas().elect_with(ttl)),
        Some(stores[1].replicas().elect_with(ttl)),
    ];
    let takeover = ttl + CAMPAIGN_PERIOD + Duration::from_secs(3);
    until(takeover, "one replica leads", || leaders(&elections).len() == 1).await;
    // Never two, over several renewals.
    let watched = Instant::now();
    while watched.elapsed() < ttl * 2 {
        assert_eq!(leaders(&elections).len(), 1, "exactly one leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = leaders(&elections)[0];
    let other = 1 - first;
    let mut client = raw(&etcd).await;
    let key = client.get("/elect/leader", None).await.expect("get");
    let held = key.kvs().first().expect("the leader key");
    assert_eq!(
        held.value(),
        stores[first].replicas().id().as_bytes(),
        "the key names the leader"
    );
    client.lease_revoke(held.lease()).await.expect("revoke");
    until(takeover, "the other replica takes over after a revoke", || {
        leaders(&elections) == [other]
    })
    .await;
    elections[other] = None;
    until(
        CAMPAIGN_PERIOD * 3,
        "the first takes over once the other stopped",
        || leaders(&elections) == [first],
    )
    .await;
}

/// A running `sdwan-registry` replica on etcd (killed by its PID when dropped, also when the test fails).
struct Replica(RegistryProcess);

/// The configuration of replica `name` on `etcd`'s key prefix `prefix`, listening on `addr`.
fn write_config(dir: &Path, name: &str, etcd: &Etcd, prefix: &str, addr: SocketAddr) -> PathBuf {
    let store = format!(
        "report_min_interval = \"1ms\"\n[store]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nkey_prefix = \"{prefix}\"\n",
        etcd.endpoint
    );
    crash::write_config(dir, name, addr, &store)
}

impl Replica {
    /// Starts replica `name` and waits until it serves its metrics (its election has started).
    async fn start(dir: &Path, name: &str, etcd: &Etcd, prefix: &str) -> Replica {
        let addr = crash::free_port();
        let replica = Replica(RegistryProcess::start(&write_config(dir, name, etcd, prefix, addr), addr).await);
        let deadline = Instant::now() + Duration::from_secs(15);
        while replica.leader().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "sdwan-registry {name}: no metrics after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// `sdwan_registry_leader` from its metrics, `None` while it does not answer.
    async fn leader(&self) -> Option<bool> {
        let text = reqwest::get(self.url("/metrics")).await.ok()?.text().await.ok()?;
        let line = text.lines().find(|l| l.starts_with("sdwan_registry_leader "))?;
        Some(line.ends_with(" 1"))
    }

    /// SIGKILL, and reap the process: its lease is not revoked, it expires.
    fn kill(self) {
        self.0.kill();
    }
}

async fn post(url: String, token: &str, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    assert!(answer.status().is_success(), "{}", answer.status());
    json_of(answer).await
}

async fn json_of(answer: reqwest::Response) -> Value {
    serde_json::from_str(&answer.text().await.expect("body")).expect("json")
}

/// Two `sdwan-registry` processes on one etcd: enrollments through replica a wake a watch waiting on
/// replica b within a second each time (the watch would wait 20 s), with every revision newer than the
/// last; exactly one replica reports `sdwan_registry_leader 1`, and when it is SIGKILLed the other reports
/// it within the lease's TTL and a margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_wakes_another_and_a_killed_leader_is_replaced() {
    if !etcd::installed_or_skip("a_write_through_one_replica") {
        return;
    }
    // reqwest is built without a default TLS provider (plain HTTP here, but it needs one to build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let etcd = etcd::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = "/replicas/";
    let admin = crash::init_account(&write_config(dir.path(), "init", &etcd, prefix, crash::free_port()));
    let a = Replica::start(dir.path(), "a", &etcd, prefix).await;
    let b = Replica::start(dir.path(), "b", &etcd, prefix).await;
    let network = post(
        a.url("/v1/networks"),
        &admin,
        json!({"name": "net", "overlay_prefix": "fd00:2::/64", "vip_pool": "fd00:2::ffff:0/112"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let enrollment = post(
        a.url(&format!("/v1/networks/{network}/enrollment-tokens")),
        &admin,
        json!({}),
    )
    .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let members = reqwest::Client::new()
        .get(b.url(&format!("/v1/networks/{network}/members")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("members");
    let members = json_of(members).await;
    let mut since = members["revision"].as_u64().expect("revision");
    for i in 0..3 {
        let watch = reqwest::Client::new()
            .get(b.url(&format!("/v1/networks/{network}/watch?since={since}&wait_ms=20000")))
            .bearer_auth(&admin)
            .send();
        let watch = tokio::spawn(watch);
        // The watch waits on b before the write goes to a.
        let waiting = Instant::now() + Duration::from_secs(10);
        loop {
            let text = reqwest::get(b.url("/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            if text.lines().any(|l| l == "sdwan_registry_watch_clients 1") {
                break;
            }
            assert!(Instant::now() < waiting, "the watch never waited on b");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = Key::generate_private().get_public().to_base64();
        let written = Instant::now();
        post(
            a.url("/v1/peers/enroll"),
            &enrollment,
            json!({"name": format!("p{i}"), "public_key": key}),
        )
        .await;
        let answer = tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("b's watch answers within 5 s of the write through a")
            .expect("task")
            .expect("watch");
        assert_eq!(answer.status().as_u16(), 200, "woken, not timed out");
        let woken_after = written.elapsed();
        let body = json_of(answer).await;
        let revision = body["revision"].as_u64().expect("revision");
        assert!(revision > since, "revision {revision} after {since}");
        assert!(
            body["members"]
                .as_array()
                .expect("members")
                .iter()
                .any(|p| p["name"] == format!("p{i}")),
            "{body}"
        );
        eprintln!("watch on b woken {woken_after:?} after the enrollment through a");
        since = revision;
    }

    let takeover = LEADER_TTL + CAMPAIGN_PERIOD + Duration::from_secs(3);
    let deadline = Instant::now() + takeover;
    let leader = loop {
        let (la, lb) = (a.leader().await, b.leader().await);
        assert!(la != Some(true) || lb != Some(true), "two leaders");
        match (la, lb) {
            (Some(true), _) => break 'a',
            (_, Some(true)) => break 'b',
            _ => {}
        }
        assert!(Instant::now() < deadline, "no replica leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (killed, survivor) = if leader == 'a' { (a, b) } else { (b, a) };
    let killed_at = Instant::now();
    killed.kill();
    let deadline = Instant::now() + takeover;
    while survivor.leader().await != Some(true) {
        assert!(
            Instant::now() < deadline,
            "the surviving replica did not take over within {takeover:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("leadership moved {:?} after the SIGKILL", killed_at.elapsed());
}
