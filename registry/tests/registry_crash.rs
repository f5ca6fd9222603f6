//! Crash safety of the registry: the real `sdwan-registry` binary is SIGKILLed during a burst of 1,000
//! concurrent enrollments and joins, restarted on the same state directory, and then every request that was
//! acknowledged (2xx) must be there exactly once, and nothing may be half-written.

mod registry_support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use registry_support::crash::{self, Acked, Burst, RegistryProcess};

/// Peers enrolling (and then joining) at once.
const PEERS: usize = 1000;
/// Every `SERVER_EVERY`-th peer joins as a k3s server (a VIP candidate), the others as agents.
const SERVER_EVERY: usize = 10;
/// The registry is killed once this many requests were acknowledged (of `2 * PEERS`).
const KILL_AFTER_ACKS: usize = 500;
/// The whole test, both registry runs included.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_joins_survive_sigkill_and_nothing_is_half_written() {
    tokio::time::timeout(TEST_DEADLINE, crash_and_check())
        .await
        .expect("the crash test took longer than 60 s");
}

async fn crash_and_check() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    // The registry's configuration `registry.toml`, its state (the SQLite file) in `registry/`.
    let config = |addr| crash::write_config(dir.path(), "registry", addr, "");
    let state_dir = dir.path().join("registry");
    let admin = crash::init_account(&config(crash::free_port()));
    let addr = crash::free_port();
    let registry = RegistryProcess::start(&config(addr), addr).await;
    let client = crash::client();
    let setup = crash::setup(&client, &registry.url(""), &admin).await;

    // The burst: every peer enrolls, then joins the cluster; the registry dies once KILL_AFTER_ACKS
    // answers came back.
    let burst = Burst::start(
        &client,
        &[registry.url("")],
        &setup,
        PEERS,
        SERVER_EVERY,
        KILL_AFTER_ACKS,
    );
    burst.acknowledged().await;
    registry.kill();
    let acked = burst.finish().await;
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
    let addr = crash::free_port();
    let registry = RegistryProcess::start(&config(addr), addr).await;
    let api_revision = crash::check_members(&client, &registry.url(""), &admin, &setup.network, &acked).await;
    let status = registry.terminate().await;
    assert!(
        status.success(),
        "the restarted registry did not stop cleanly: {status}"
    );

    check_store(&state_dir, &setup.network, &setup.cluster, &acked, api_revision);
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
