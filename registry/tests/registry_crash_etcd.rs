//! Crash safety of the registry on etcd: two real `sdwan-registry` replicas on one key prefix of a
//! three-member etcd share a burst of 1,000 concurrent enrollments and joins (each client moving to the
//! other replica when its own does not answer or answers 502-504); once some hundreds of requests were
//! acknowledged, the etcd leader and one replica are SIGKILLed, and the burst finishes on the survivor.
//! Afterwards (the survivor killed too, both restarted), through the API of both replicas and raw etcd reads,
//! every acknowledged (2xx) request is there exactly once, nothing unacknowledged is half-written, and the
//! secondary indexes (peer by key, name and address, record pointers, tokens by account and by peer) agree
//! with the records. Needs etcd (Debian's etcd-server); skipped without it except in CI.

mod registry_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use registry_support::crash::{self, Acked, Burst, RegistryProcess, Setup};
use registry_support::etcd::{self, EtcdCluster};
use sdwan_registry::model::{Cluster, ClusterMember, Network, Peer, TokenKind, TokenRecord, Vip};
use serde::de::DeserializeOwned;

/// Peers enrolling (and then joining) at once.
const PEERS: usize = 1000;
/// Every `SERVER_EVERY`-th peer joins as a k3s server (a VIP candidate), the others as agents.
const SERVER_EVERY: usize = 10;
/// The etcd leader and one replica are killed once this many requests were acknowledged (of `2 * PEERS`).
const KILL_AFTER_ACKS: usize = 200;
/// The whole test, the cluster's start and the restart of the killed replica included.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// The replicas' key prefix.
const PREFIX: &str = "/crash/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_requests_survive_the_etcd_leader_and_a_replica_killed_and_indexes_agree() {
    if !etcd::installed_or_skip("acknowledged_requests_survive_the_etcd_leader") {
        return;
    }
    tokio::time::timeout(TEST_DEADLINE, crash_and_check())
        .await
        .expect("the etcd crash test took longer than 60 s");
}

async fn crash_and_check() {
    let mut cluster = tokio::task::block_in_place(|| etcd::cluster(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
    let store = format!(
        "[store]\nbackend = \"etcd\"\nendpoints = [{}]\nkey_prefix = \"{PREFIX}\"\n",
        endpoints.join(", ")
    );
    let config = |name, addr| crash::write_config(dir.path(), name, addr, &store);
    let admin = crash::init_account(&config("init", crash::free_port()));
    let (addr_a, addr_b) = (crash::free_port(), crash::free_port());
    let a = RegistryProcess::start(&config("a", addr_a), addr_a).await;
    let b = RegistryProcess::start(&config("b", addr_b), addr_b).await;
    let client = crash::client();
    let setup = crash::setup(&client, &a.url(""), &admin).await;

    let burst = Burst::start(
        &client,
        &[a.url(""), b.url("")],
        &setup,
        PEERS,
        SERVER_EVERY,
        KILL_AFTER_ACKS,
    );
    burst.acknowledged().await;
    let leader = tokio::task::block_in_place(|| {
        let leader = cluster.leader().expect("an etcd leader during the burst");
        cluster.kill(leader).expect("kill the etcd leader");
        leader
    });
    b.kill();
    let acked = burst.finish().await;
    assert!(
        acked.failovers > 0,
        "no request had to move to the other replica: the kills did not hit the burst"
    );
    eprintln!(
        "etcd leader m{leader} and replica b killed after {KILL_AFTER_ACKS} acks; in the end {} enrollments and \
         {} joins acknowledged, {} requests not, {} sends moved to the other replica",
        acked.enrolled.len(),
        acked.joined.len(),
        acked.failed,
        acked.failovers
    );
    // Not asserted: how much the survivor acknowledged after the kills (its availability during etcd's
    // election); what was acknowledged must be there, which is what follows.
    eprintln!(
        "acknowledged after the kills: {}",
        (acked.enrolled.len() + acked.joined.len()).saturating_sub(KILL_AFTER_ACKS)
    );

    // Requests whose clients gave up may still be running on the survivor: it goes too (SIGKILL: nothing
    // may write while the records are checked). Both replicas come back on the two remaining members and
    // list the same members at the same revision.
    a.kill();
    let (addr_a, addr_b) = (crash::free_port(), crash::free_port());
    let a = RegistryProcess::start(&config("a", addr_a), addr_a).await;
    let b = RegistryProcess::start(&config("b", addr_b), addr_b).await;
    let revision_a = crash::check_members(&client, &a.url(""), &admin, &setup.network, &acked).await;
    let revision_b = crash::check_members(&client, &b.url(""), &admin, &setup.network, &acked).await;
    assert_eq!(
        revision_a, revision_b,
        "the replicas disagree on the network's revision"
    );

    check_store(&cluster, &setup, &acked, revision_a).await;
    for (name, replica) in [("a", a), ("b", b)] {
        let status = replica.terminate().await;
        assert!(status.success(), "replica {name} did not stop cleanly: {status}");
    }
}

/// Every key under `PREFIX` + `coll` + `/`, by the rest of its key.
async fn raw(client: &mut etcd_client::Client, coll: &str) -> BTreeMap<String, Vec<u8>> {
    let prefix = format!("{PREFIX}{coll}/");
    let options = etcd_client::GetOptions::new().with_prefix();
    let answer = client.get(prefix.as_str(), Some(options)).await.expect("etcd read");
    answer
        .kvs()
        .iter()
        .map(|kv| {
            let key = String::from_utf8(kv.key().to_vec()).expect("a UTF-8 key");
            (key[prefix.len()..].to_owned(), kv.value().to_vec())
        })
        .collect()
}

/// The records of `coll` (`OWNER/ID` keys): ((owner, id), record).
async fn records<T: DeserializeOwned>(client: &mut etcd_client::Client, coll: &str) -> Vec<((String, String), T)> {
    raw(client, coll)
        .await
        .into_iter()
        .map(|(key, value)| {
            let (owner, id) = key.rsplit_once('/').expect("an OWNER/ID key");
            let record = serde_json::from_slice(&value).unwrap_or_else(|e| panic!("{coll}/{key}: {e}"));
            ((owner.to_owned(), id.to_owned()), record)
        })
        .collect()
}

/// Fails with what `stored` lacks and what it has too much (a few of each) unless it equals `expected`.
fn assert_same<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    stored: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| stored.get(k) != Some(v))
        .take(5)
        .collect();
    let extra: Vec<_> = stored
        .iter()
        .filter(|(k, v)| expected.get(k) != Some(v))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} entries stored, {} expected; missing or different (first 5): {missing:?}; extra or \
         different (first 5): {extra:?}",
        stored.len(),
        expected.len()
    );
}

/// The set `keys` as a map to `()` (for [`assert_same`]).
fn set(keys: impl IntoIterator<Item = String>) -> BTreeMap<String, ()> {
    keys.into_iter().map(|k| (k, ())).collect()
}

/// Reads the registry's keys straight from the surviving etcd members: the acknowledged requests, and
/// the indexes against the records.
async fn check_store(cluster: &EtcdCluster, setup: &Setup, acked: &Acked, api_revision: u64) {
    let alive: Vec<String> = cluster
        .members()
        .iter()
        .filter(|m| m.running())
        .map(|m| m.client_url.clone())
        .collect();
    let mut client = etcd_client::Client::connect(alive, None)
        .await
        .expect("connect to etcd");
    let client = &mut client;

    // Peers: each record under its network, its pointer naming that network, and each unique value's
    // index naming it; no index or pointer without its record.
    let peers: Vec<((String, String), Peer)> = records(client, "peer").await;
    let mut by_id: HashMap<&str, &Peer> = HashMap::new();
    for ((network, id), peer) in &peers {
        assert_eq!(
            (network, id),
            (&peer.network_id, &peer.id),
            "peer record under another key"
        );
        assert!(by_id.insert(&peer.id, peer).is_none());
    }
    let pointers = raw(client, "peer-id").await;
    let expected: BTreeMap<String, Vec<u8>> = peers
        .iter()
        .map(|(_, p)| (p.id.clone(), p.network_id.as_bytes().to_vec()))
        .collect();
    assert_same(
        "peer pointers (peer-id/) against the peer records",
        &pointers,
        &expected,
    );
    for (index, value_of) in [
        ("peer-key", (|p: &Peer| p.public_key.clone()) as fn(&Peer) -> String),
        ("peer-name", |p: &Peer| p.name.clone()),
        ("peer-addr", |p: &Peer| p.address.to_string()),
    ] {
        let stored = raw(client, index).await;
        let expected: BTreeMap<String, Vec<u8>> = peers
            .iter()
            .map(|(_, p)| (format!("{}/{}", p.network_id, value_of(p)), p.id.as_bytes().to_vec()))
            .collect();
        assert_same(&format!("{index}/ against the peer records"), &stored, &expected);
    }

    // Tokens: every token listed under its account and kind, every peer token under its peer, no listing
    // without its token; every peer has a token (a retried enrollment may have two), every peer token a
    // peer.
    let tokens: BTreeMap<String, TokenRecord> = raw(client, "token")
        .await
        .into_iter()
        .map(|(key_id, value)| {
            let token: TokenRecord = serde_json::from_slice(&value).expect("a token record");
            assert_eq!(token.key_id, key_id, "token record under another key");
            (key_id, token)
        })
        .collect();
    let by_account = set(raw(client, "token-acct").await.into_keys());
    let expected = set(tokens
        .values()
        .map(|t| format!("{}/{}/{}", t.account_id, t.kind, t.key_id)));
    assert_same("token-acct/ against the token records", &by_account, &expected);
    let by_peer = set(raw(client, "token-peer").await.into_keys());
    let expected = set(tokens
        .values()
        .filter_map(|t| Some(format!("{}/{}", t.peer_id.as_ref()?, t.key_id))));
    assert_same("token-peer/ against the token records", &by_peer, &expected);
    let mut peers_with_token = BTreeSet::new();
    for token in tokens.values().filter(|t| t.kind == TokenKind::Peer) {
        let peer = token.peer_id.as_deref().expect("a peer token names its peer");
        assert!(
            by_id.contains_key(peer),
            "peer token {} of a peer that is not there",
            token.key_id
        );
        peers_with_token.insert(peer);
    }
    for id in by_id.keys() {
        assert!(peers_with_token.contains(id), "peer {id} without its token");
    }

    // Members: each record's pointer, each member a peer.
    let members: Vec<((String, String), ClusterMember)> = records(client, "member").await;
    let pointers = raw(client, "member-id").await;
    let expected: BTreeMap<String, Vec<u8>> = members
        .iter()
        .map(|(_, m)| (m.peer_id.clone(), m.cluster_id.as_bytes().to_vec()))
        .collect();
    assert_same(
        "member pointers (member-id/) against the member records",
        &pointers,
        &expected,
    );
    let mut member_of: HashMap<&str, &ClusterMember> = HashMap::new();
    for ((cluster, peer), member) in &members {
        assert_eq!((cluster, peer), (&member.cluster_id, &member.peer_id));
        assert!(by_id.contains_key(peer.as_str()), "member {peer} is not a peer");
        member_of.insert(peer, member);
    }

    // Exactly once, with the id the answer gave; every acknowledged join with its role.
    for (name, (id, _)) in &acked.enrolled {
        let named: Vec<&str> = by_id
            .values()
            .filter(|p| p.network_id == setup.network && p.name == *name)
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(named, vec![id.as_str()], "acknowledged enrollment of {name}");
    }
    let role_of: HashMap<&str, &str> = acked.enrolled.values().map(|(id, role)| (id.as_str(), *role)).collect();
    for id in &acked.joined {
        let member = member_of
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged join of {id}"));
        assert_eq!(
            (member.cluster_id.as_str(), member.role.to_string()),
            (setup.cluster.as_str(), role_of[id.as_str()].to_owned()),
            "acknowledged join of {id}"
        );
    }

    // The VIP's candidates are exactly the cluster's servers, each once.
    let clusters: Vec<((String, String), Cluster)> = records(client, "cluster").await;
    let (_, ours) = clusters
        .iter()
        .find(|((_, id), _)| *id == setup.cluster)
        .expect("the cluster's record");
    let vips: Vec<((String, String), Vip)> = records(client, "vip").await;
    let (_, vip) = vips
        .iter()
        .find(|((_, id), _)| *id == ours.vip_id)
        .expect("the cluster's VIP");
    let servers: BTreeSet<&str> = members
        .iter()
        .filter(|(_, m)| m.cluster_id == setup.cluster && m.role.to_string() == "server")
        .map(|(_, m)| m.peer_id.as_str())
        .collect();
    let candidates: BTreeSet<&str> = vip.candidates.iter().map(String::as_str).collect();
    assert_eq!(candidates, servers, "VIP candidates and the cluster's servers differ");
    assert_eq!(vip.candidates.len(), servers.len(), "a peer is a candidate twice");

    // The revision counts every change: each enrollment, the bootstrap, each server join.
    let networks: Vec<((String, String), Network)> = records(client, "network").await;
    let (_, network) = networks
        .iter()
        .find(|((_, id), _)| *id == setup.network)
        .expect("the network's record");
    let server_joins = servers.len() as u64 - 1;
    let enrolled = peers.iter().filter(|(_, p)| p.network_id == setup.network).count() as u64;
    assert!(
        network.revision >= enrolled + 1 + server_joins,
        "revision {} < {enrolled} enrollments + 1 bootstrap + {server_joins} server joins",
        network.revision
    );
    assert!(network.revision >= acked.max_revision);
    assert_eq!(network.revision, api_revision);
    assert!(
        usize::try_from(enrolled).expect("count") > acked.enrolled.len(),
        "expected the bootstrap peer and the acknowledged ones at least"
    );
}
