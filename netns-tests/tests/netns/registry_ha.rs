//! Registry HA on etcd (issue 12): a registry of 2 replicas on a 3-member etcd, 4 peers, a VIP with 2
//! candidates. Replica 1 and the etcd leader are SIGKILLed; a new peer enrolls through the surviving replica
//! and lands on every interface, every daemon's `sdwand_registry_replica_info` names the surviving replica,
//! and the VIP fails over as usual when its holder's node dies meanwhile. Then replica 1 and the etcd member
//! are started again and replica 1 rejoins without anyone acting: it serves the new peer, its metrics, and
//! a change made through it reaches the daemons.

use std::time::Duration;

use sdwan_lab::{Lab, RegistryBackend, UpOptions};
use sdwand::vocab::wire::MembersResponse;

use crate::common::{assert_answered_by, lab_with, settled, unique_name, wait_holder};

/// How long the daemons, the registry and etcd get for each step (each is a poll with this deadline).
const STEP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// The replica peer `i`'s daemon calls now, from its `sdwand_registry_replica_info` (`None` while its
/// metrics do not answer or show no replica).
fn replica_in_use(lab: &Lab, i: usize) -> Option<String> {
    let text = lab.metrics(i).ok()?;
    let series = sdwan_lab::metrics::samples(&text, "sdwand_registry_replica_info", &[]);
    match series.as_slice() {
        [(labels, v)] if *v == 1.0 => labels.get("url").cloned(),
        _ => None,
    }
}

/// Whether peer `i`'s interface lists the public key `key`.
fn lists_key(lab: &Lab, i: usize, key: &str) -> bool {
    lab.device(i)
        .is_ok_and(|dev| dev.peers.iter().any(|p| p.config.public_key.to_base64() == key))
}

/// The network's members as registry replica `r` serves them (admin token).
fn members_via(lab: &Lab, r: usize) -> Result<MembersResponse, String> {
    let path = format!("/v1/networks/{}/members", lab.network_id().map_err(|e| e.to_string())?);
    let token = lab.admin_token().map_err(|e| e.to_string())?;
    let answer = lab
        .replica_call(r, "GET", &path, Some(&token), None)
        .map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!("GET {path} via replica {r}: {} {}", answer.status, answer.body));
    }
    serde_json::from_str(&answer.body).map_err(|e| format!("{e}: {}", answer.body))
}

#[test]
fn registry_replica_and_etcd_leader_die_and_come_back() {
    let mut opts = UpOptions::new(&unique_name("ha"), 4);
    opts.vip_candidates = 2;
    opts.registry_backend = RegistryBackend::Etcd;
    opts.registry_replicas = 2;
    let mut lab = lab_with(opts);
    let holder = settled(&lab, Duration::from_secs(10));
    let other = 3 - holder;

    let doc = lab.status().unwrap();
    let reg = doc.registry.as_ref().expect("a registry");
    assert_eq!(reg.replicas.len(), 2, "{reg:?}");
    assert_eq!(reg.replicas[0].url, reg.url, "replica 1 is the registry of old");
    assert_eq!(reg.etcd.len(), 3, "{reg:?}");
    assert!(
        reg.replicas.iter().all(|r| r.pid.is_some()) && reg.etcd.iter().all(|m| m.pid.is_some()),
        "{reg:?}"
    );
    let urls = lab.replica_urls().unwrap();
    let survivor = urls[1].clone();

    lab.kill_replica(1).expect("SIGKILL replica 1");
    let leader = lab
        .kill_etcd_leader(Duration::from_secs(10))
        .expect("SIGKILL the etcd leader");
    eprintln!("killed registry replica 1 and the etcd leader e{leader}");

    // A new peer enrolls (its daemon starts at a random replica and moves on from a dead one).
    let new = lab
        .add_peer("persistent", None)
        .expect("a new peer enrolls through replica 2");
    let new_key = lab.peer(new).unwrap().public_key.clone();
    let alive: Vec<usize> = (1..=lab.peer_count()).collect();
    sdwan_lab::wait_until(STEP, POLL, || {
        alive.iter().all(|&i| i == new || lists_key(&lab, i, &new_key))
    })
    .unwrap_or_else(|e| {
        let missing: Vec<_> = alive.iter().filter(|&&i| !lists_key(&lab, i, &new_key)).collect();
        panic!(
            "p{new} is not on the interfaces of {missing:?}: {e}\n{}",
            lab.replica_log_tail(2, 20)
        )
    });
    let took = lab
        .wait_mesh(STEP)
        .unwrap_or_else(|e| panic!("p{new} does not handshake with all: {e}"));
    eprintln!("p{new} meshed with every peer (mesh complete {took:?} after its enrollment)");
    sdwan_lab::wait_until(STEP, POLL, || {
        alive
            .iter()
            .all(|&i| replica_in_use(&lab, i).as_deref() == Some(&survivor))
    })
    .unwrap_or_else(|e| {
        let seen: Vec<_> = alive.iter().map(|&i| (i, replica_in_use(&lab, i))).collect();
        panic!("not every daemon moved to {survivor}: {e}: {seen:?}")
    });

    // The VIP fails over as usual meanwhile.
    lab.kill_node(holder).expect("kill the holder's node");
    let moved = wait_holder(&lab, other, Duration::from_secs(10));
    eprintln!("p{other} holds the VIP {moved:?} after p{holder}'s node died");
    for observer in [3, 4] {
        assert_answered_by(&lab, observer, other);
    }

    // Replica 1 and the etcd member come back and rejoin on their own.
    lab.start_etcd_member(leader, STEP)
        .expect("etcd member restarts and is healthy");
    lab.start_replica(1).expect("replica 1 restarts");
    let (served, _) = sdwan_lab::wait_for(STEP, POLL, || {
        members_via(&lab, 1)
            .ok()
            .filter(|m| m.members.iter().any(|p| p.public_key == new_key))
    })
    .unwrap_or_else(|e| panic!("replica 1 does not serve p{new}: {e}: {:?}", members_via(&lab, 1)));
    let new_id = served
        .members
        .iter()
        .find(|p| p.public_key == new_key)
        .map(|p| p.peer_id.clone())
        .expect("found above");
    let metrics = lab
        .replica_call(1, "GET", "/metrics", None, None)
        .expect("replica 1's metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);

    // A change made through replica 1 reaches the daemons: the new peer removed there leaves every interface.
    let token = lab.admin_token().unwrap();
    let removed = lab
        .replica_call(1, "DELETE", &format!("/v1/peers/{new_id}"), Some(&token), None)
        .expect("DELETE via replica 1");
    assert_eq!(removed.status, 204, "{}", removed.body);
    let running: Vec<usize> = (1..new).filter(|&i| i != holder).collect();
    sdwan_lab::wait_until(STEP, POLL, || running.iter().all(|&i| !lists_key(&lab, i, &new_key)))
        .unwrap_or_else(|e| panic!("p{new}'s removal through replica 1 does not reach {running:?}: {e}"));
}
