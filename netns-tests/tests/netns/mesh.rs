//! A 3-peer mesh built through the `sdwan-lab` binary: every peer reaches every other /128, the JSON contract
//! holds, and `down` leaves nothing behind.

use std::process::{Command, Output};

use sdwan_lab::process::{comm, ProcId};
use sdwan_lab::{LabDoc, LabGuard, Layout};

use crate::common::{assert_ping, overlay, require_root, slot, unique_name};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdwan-lab"))
        .args(args)
        .output()
        .expect("sdwan-lab runs")
}

fn doc_of(out: &Output) -> (LabDoc, serde_json::Value) {
    assert!(
        out.status.success(),
        "sdwan-lab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"));
    (serde_json::from_value(value.clone()).expect("a LabDoc"), value)
}

#[test]
fn three_peers_reach_each_other_and_down_leaves_nothing() {
    require_root();
    let _slot = slot();
    let name = unique_name("m");
    // Guards whatever the subprocess creates, from the first namespace on.
    let mut guard = LabGuard::for_name(&name);
    let (doc, raw) = doc_of(&cli(&["up", "--name", &name, "--peers", "3"]));

    // The contract: these keys, these values.
    for key in ["name", "hub_netns", "peers", "vips", "registry"] {
        assert!(raw.get(key).is_some(), "missing {key:?} in {raw}");
    }
    for key in [
        "name",
        "netns",
        "underlay_if",
        "underlay_addr",
        "overlay_addr",
        "wg_if",
        "sdwand_pid",
        "wg_pid",
    ] {
        assert!(raw["peers"][0].get(key).is_some(), "missing peers[].{key:?} in {raw}");
    }
    assert_eq!(doc.name, name);
    assert_eq!(doc.hub_netns, format!("{name}-hub"));
    assert!(doc.vips.is_empty());
    assert_eq!(doc.peers.len(), 3);
    let mut pids = Vec::new();
    for (k, p) in doc.peers.iter().enumerate() {
        let i = k + 1;
        assert_eq!(p.name, format!("p{i}"));
        assert_eq!(p.netns, format!("{name}-p{i}"));
        assert_eq!(p.wg_if, format!("{name}-p{i}"));
        assert_eq!(p.underlay_addr, Layout::underlay_addr(i).to_string());
        assert_eq!(p.overlay_addr, format!("fd00:5d::{i}"));
        let sdwand = p.sdwand_pid.expect("sdwand_pid");
        let wg = p.wg_pid.expect("wg_pid");
        assert_eq!(comm(sdwand).as_deref(), Some("sdwand"), "pid {sdwand}");
        assert_eq!(comm(wg).as_deref(), Some("wireguard-go"), "pid {wg}");
        pids.extend([sdwand, wg]);
    }
    let registry = doc.registry.as_ref().expect("a registry by default");
    assert_eq!(registry.netns, format!("{name}-reg"));
    assert_eq!(registry.url, "http://192.0.2.2:7443");
    let registry_pid = registry.pid.expect("registry pid");
    assert_eq!(
        comm(registry_pid).as_deref(),
        Some("sdwan-registry"),
        "pid {registry_pid}"
    );
    pids.push(registry_pid);
    let ids: Vec<ProcId> = pids.iter().map(|p| ProcId::of(*p).expect("running")).collect();
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), pids.len(), "pids not distinct: {pids:?}");

    let lab = guard.lab().expect("the state file of the lab the CLI made");
    for i in 1..=3 {
        for j in (1..=3).filter(|j| *j != i) {
            assert_ping(lab, i, overlay(j), 3);
        }
    }

    let (status, _) = doc_of(&cli(&["status", "--name", &name]));
    assert_eq!(status, doc, "status differs from up");

    let down = cli(&["down", "--name", &name]);
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let netns = sdwan_lab::cmd::netns_list().expect("ip netns list");
    let prefix = format!("{name}-");
    assert!(
        !netns.iter().any(|n| n.starts_with(&prefix)),
        "namespaces left: {netns:?}"
    );
    let sockets: Vec<String> = std::fs::read_dir("/var/run/wireguard")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|f| f.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(sockets.is_empty(), "sockets left: {sockets:?}");
    for id in &ids {
        assert!(!id.is_alive(), "pid {} ({:?}) still runs", id.pid, comm(id.pid));
    }
    assert!(
        !Layout::new(&name).unwrap().state_dir().exists(),
        "state directory left"
    );

    // Idempotent, and a removed lab has no status.
    let again = cli(&["down", "--name", &name]);
    assert!(
        again.status.success(),
        "second down failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(!cli(&["status", "--name", &name]).status.success());
}

#[test]
fn cli_rejects_bad_input_without_panicking() {
    for args in [
        &["up", "--name", "Bad-Name", "--peers", "2"][..],
        &["up", "--name", "toolong7", "--peers", "2"],
        &["up", "--name", "ok", "--peers", "0"],
        &["up", "--name", "ok", "--peers", "201"],
        &["status", "--name", "a/b"],
        &["down", "--name", ""],
    ] {
        let out = cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("sdwan-lab: error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
