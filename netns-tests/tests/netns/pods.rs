//! Pods on the SD-WAN (issue 10 items 3 and 5) with real daemons, the real registry and the real CNI
//! plugins: a 3-peer lab with `--pods 1` (p1 bootstraps a k3s cluster, so its drop-in is a server's), pod
//! pools 198.51.100.0/24 and fd00:42::/48. Then:
//!
//! - each daemon wrote its CNI configuration for its own shares, and p1's drop-in turns flannel off with the
//!   network's pools as cluster CIDRs and its overlay addresses as node-ip;
//! - pods on different nodes ping each other, IPv4 and IPv6, and a pod reaches a remote node's overlay
//!   address;
//! - 50 MB cross the overlay over TCP from a pod on p1 to a pod on p2, IPv4 then IPv6, within a deadline;
//! - all along, counters on p1's and p2's underlay links see WireGuard UDP and never a pod address.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sdwan_lab::layout::LISTEN_PORT;
use sdwan_lab::netns::spawn_in;
use sdwan_lab::{Lab, PodState, UpOptions};
use serde_json::Value;

use crate::common::{lab_with, unique_name};

/// The bytes of each transfer.
const TRANSFER: usize = 50 * 1024 * 1024;
/// How long one transfer may take (userspace WireGuard in a shared CI machine: a few seconds).
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

/// Counters on peer `i`'s underlay link: `pods` counts any packet with a pod address, `wg` WireGuard's UDP.
fn add_capture(lab: &Lab, i: usize) {
    let u = lab.layout().underlay_if(i);
    let mut rules = String::from("table inet pdcap {\n    counter pods {}\n    counter wg {}\n");
    for (chain, hook, dir, prio) in [
        ("out", "postrouting", "oifname", 300),
        ("in", "prerouting", "iifname", -300),
    ] {
        rules.push_str(&format!(
            "    chain {chain} {{\n        type filter hook {hook} priority {prio}; policy accept;\n"
        ));
        for m in [
            "ip saddr 198.51.100.0/24",
            "ip daddr 198.51.100.0/24",
            "ip6 saddr fd00:42::/48",
            "ip6 daddr fd00:42::/48",
        ] {
            rules.push_str(&format!("        {dir} \"{u}\" {m} counter name pods\n"));
        }
        let port = if chain == "out" { "sport" } else { "dport" };
        rules.push_str(&format!(
            "        {dir} \"{u}\" udp {port} {LISTEN_PORT} counter name wg\n    }}\n"
        ));
    }
    rules.push_str("}\n");
    let path = lab.layout().peer_dir(i).join("pdcap.nft");
    std::fs::write(&path, rules).unwrap();
    lab.exec_ok(i, &["nft", "-f", path.to_str().unwrap()]).unwrap();
}

/// The packets counted by `counter` of peer `i`'s capture table.
fn captured(lab: &Lab, i: usize, counter: &str) -> u64 {
    let out = lab
        .exec_ok(i, &["nft", "list", "counter", "inet", "pdcap", counter])
        .unwrap();
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect("a packets field");
    words[at + 1].parse().expect("a packet count")
}

/// Whether `ping` from namespace `ns` to `to` gets an answer, trying for up to 10 s (the first packets may
/// wait for a handshake).
pub(crate) fn pings(ns: &str, to: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ok = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", to])
            .output()
            .expect("running ping")
            .status
            .success();
        if ok {
            return true;
        }
    }
    false
}

/// Sends [`TRANSFER`] bytes over TCP from pod `from` to pod `to` at `addr`; the bytes received and the time.
fn transfer(from: &PodState, to: &PodState, addr: IpAddr) -> (usize, Duration) {
    let target = SocketAddr::new(addr, 5201);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = spawn_in(&to.netns, move || {
        let listener = TcpListener::bind(target)?;
        let _ = ready_tx.send(());
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(TRANSFER_DEADLINE))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    })
    .unwrap();
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the receiver listens");
    let start = Instant::now();
    let sender = spawn_in(&from.netns, move || {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(10))?;
        conn.set_write_timeout(Some(TRANSFER_DEADLINE))?;
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0;
        while sent < TRANSFER {
            let n = chunk.len().min(TRANSFER - sent);
            conn.write_all(&chunk[..n])?;
            sent += n;
        }
        conn.shutdown(std::net::Shutdown::Write)
    })
    .unwrap();
    sender.join().expect("sender thread").expect("sending");
    let received = receiver.join().expect("receiver thread").expect("receiving");
    (received, start.elapsed())
}

#[test]
fn pods_on_different_nodes_talk_over_the_overlay_through_the_real_cni_plugins() {
    let mut opts = UpOptions::new(&unique_name("pd"), 3);
    opts.vip_candidates = 1;
    opts.pods = 1;
    let mut lab = lab_with(opts);
    let doc = lab.status().unwrap();
    assert_eq!(doc.pods.len(), 3, "{:?}", doc.pods);
    let pod = |peer: &str| doc.pods.iter().find(|p| p.peer == peer).unwrap().clone();
    let (a, b) = (pod("p1"), pod("p2"));

    // The files the daemons wrote.
    let shares: Vec<Vec<String>> = doc.peers.iter().map(|p| p.prefixes.clone()).collect();
    for (k, s) in shares.iter().enumerate() {
        assert_eq!(s.len(), 2, "p{} has an IPv4 and an IPv6 share: {s:?}", k + 1);
        assert!(s[0].starts_with("198.51.100.") && s[0].ends_with("/28"), "{s:?}");
        assert!(s[1].starts_with("fd00:42:") && s[1].ends_with("/64"), "{s:?}");
    }
    let conflist = lab.layout().peer_dir(1).join("cni/net.d/10-sdwan.conflist");
    let conf: Value = serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    assert_eq!(conf["plugins"][0]["type"], "bridge");
    assert_eq!(conf["plugins"][0]["ipMasq"], false);
    assert_eq!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].as_str(),
        Some(shares[0][0].as_str())
    );
    let drop_in = std::fs::read_to_string(lab.layout().k3s_config(1)).unwrap();
    for line in [
        "flannel-backend: \"none\"\n",
        "cluster-cidr: \"198.51.100.0/24,fd00:42::/48\"\n",
        "node-ip: \"203.0.113.1,fd00:5d::1\"\n",
    ] {
        assert!(drop_in.contains(line), "{line:?} in p1's drop-in:\n{drop_in}");
    }
    let (a4, a6) = (a.ipv4.clone().unwrap(), a.ipv6.clone().unwrap());
    let (b4, b6) = (b.ipv4.clone().unwrap(), b.ipv6.clone().unwrap());
    assert!(
        a4.starts_with(shares[0][0].trim_end_matches("0/28")),
        "{a4} in {:?}",
        shares[0]
    );

    for i in [1, 2] {
        add_capture(&lab, i);
    }
    assert!(pings(&a.netns, &b4), "pod {a4} -> pod {b4}");
    assert!(pings(&a.netns, &b6), "pod {a6} -> pod {b6}");
    assert!(pings(&b.netns, &a4), "pod {b4} -> pod {a4}");
    assert!(pings(&a.netns, "fd00:5d::3"), "pod {a6} -> p3's overlay address");
    for addr in [b4.parse().unwrap(), b6.parse().unwrap()] {
        let (received, took) = transfer(&a, &b, addr);
        assert_eq!(received, TRANSFER, "to {addr}");
        assert!(took < TRANSFER_DEADLINE, "{took:?} to {addr}");
        eprintln!(
            "pods: 50 MB pod to pod to {addr} in {took:?} ({:.0} Mbit/s)",
            TRANSFER as f64 * 8.0 / took.as_secs_f64() / 1e6
        );
    }
    for i in [1, 2] {
        assert_eq!(captured(&lab, i, "pods"), 0, "p{i}'s underlay carried a pod address");
        assert!(
            captured(&lab, i, "wg") > 1000,
            "p{i}'s underlay carried the transfer as WireGuard"
        );
    }
}
