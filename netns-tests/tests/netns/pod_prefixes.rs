//! The life of workload prefixes (issue 10 item 1) with real daemons, the real registry, the real CNI
//! plugins and the real `sdwanctl registry`, in labs with `--pods 1` (p1 bootstraps a k3s cluster):
//!
//! - an ephemeral peer with a pod is reaped: its /32 and pod shares leave every other peer's allowed IPs
//!   and its shares their kernel routes (proto 200 through the WireGuard interface; its /32 is covered by
//!   the IPv4 overlay's route, which stays); a node enrolling during the hold-down (10 min, the
//!   registry's default) gets fresh ones;
//! - a site prefix an operator assigns to a peer (`sdwanctl registry site-prefixes`, in the network's site
//!   range 203.0.113.128/25) is routed by every other peer, and a pod on another node reaches a host on
//!   that site by its address, without NAT; cleared, it leaves the routing tables again;
//! - a site prefix overlapping another peer's, a pod share, a /32 or the default route is refused by
//!   `sdwanctl` with a non-zero exit and a message naming the conflict, and nothing changes: the
//!   registry's revision, its prefixes, every daemon's allowed IPs and routes.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sdwan_lab::netns::spawn_in;
use sdwan_lab::nodecfg::K3sSection;
use sdwan_lab::{Lab, PodState, UpOptions};

use crate::common::{allowed, lab_with, name, unique_name, POLL};
use crate::pods::pings;

/// How long a change in the registry may take to reach every daemon's interface and routes (a watch
/// round trip; the daemon retries a lost watch with a backoff).
const PROPAGATION: Duration = Duration::from_secs(15);
/// The registry's `ephemeral_ttl` in the reaping test.
const TTL: Duration = Duration::from_secs(4);
/// The network's site range: the half of 203.0.113.0/24 the lab's IPv4 overlay leaves free.
const SITE_RANGE: &str = sdwan_lab::layout::SITE_RANGE_V4;

/// A pods lab of `peers` peers (p1 bootstraps the cluster) named after `prefix`, with `site_ranges`.
fn pods_lab(prefix: &str, peers: usize, ttl: Option<Duration>, site_ranges: &[&str]) -> crate::common::TestLab {
    let mut opts = UpOptions::new(&unique_name(prefix), peers);
    opts.vip_candidates = 1;
    opts.pods = 1;
    if let Some(ttl) = ttl {
        opts.ephemeral_ttl = ttl;
    }
    opts.site_ranges = site_ranges.iter().map(|r| r.parse().expect("a range")).collect();
    lab_with(opts)
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a prefix")
}

/// Peer `j`'s /32 and prefixes (pod shares, site prefixes) as the registry has them.
fn held_by(lab: &Lab, j: usize) -> BTreeSet<IpNet> {
    let members = lab.registry_members().expect("the registry's members");
    let m = members
        .members
        .iter()
        .find(|m| m.name == name(j))
        .unwrap_or_else(|| panic!("p{j} is not a member"));
    m.address_v4
        .map(|a| IpNet::from(IpAddr::V4(a)))
        .into_iter()
        .chain(m.prefixes.iter().map(|p| p.prefix))
        .collect()
}

/// Every allowed IP of every entry on peer `i`'s interface, by entry (public key).
fn allowed_ips(lab: &Lab, i: usize) -> BTreeSet<(String, String)> {
    let dev = lab.device(i).unwrap_or_else(|e| panic!("p{i}'s device: {e}"));
    dev.peers
        .iter()
        .flat_map(|p| {
            let key = p.config.public_key.to_base64();
            allowed(p).into_iter().map(move |a| (key.clone(), a))
        })
        .collect()
}

/// The destinations of peer `i`'s routes with protocol 200 (sdwand's) through its WireGuard interface,
/// IPv4 and IPv6.
fn routes(lab: &Lab, i: usize) -> BTreeSet<String> {
    let wg = lab.wg_if(i).expect("the WireGuard interface");
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let text = lab
            .exec_ok(i, &["ip", family, "route", "show", "proto", "200", "dev", wg.as_str()])
            .unwrap_or_else(|e| panic!("p{i}: ip route: {e}"));
        out.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned),
        );
    }
    out
}

/// Whether peer `i` has `prefix` in any entry's allowed IPs (`allowed`), and a route through its
/// interface (`routed`).
fn routing_of(lab: &Lab, i: usize, prefix: IpNet) -> (bool, bool) {
    let p = prefix.to_string();
    (
        allowed_ips(lab, i).iter().any(|(_, a)| *a == p),
        routes(lab, i).contains(&p),
    )
}

/// Waits until every peer of `on` has (`present`) or lacks every prefix of `prefixes` in its allowed IPs
/// and, for those in `routed`, in its routes; how long it took.
fn wait_routing(lab: &Lab, on: &[usize], prefixes: &BTreeSet<IpNet>, routed: &[IpNet], present: bool) -> Duration {
    let settled = |i: usize| {
        prefixes.iter().all(|&p| {
            let (a, r) = routing_of(lab, i, p);
            a == present && (!routed.contains(&p) || r == present)
        })
    };
    sdwan_lab::wait_until(PROPAGATION + TTL, POLL, || on.iter().all(|&i| settled(i))).unwrap_or_else(|e| {
        let seen: Vec<String> = on
            .iter()
            .map(|&i| format!("p{i}: allowed {:?}\n  routes {:?}", allowed_ips(lab, i), routes(lab, i)))
            .collect();
        panic!(
            "{prefixes:?} {} on {on:?} ({e}):\n{}\n{}",
            if present { "not routed" } else { "still routed" },
            seen.join("\n"),
            lab.registry_log_tail(20)
        )
    })
}

/// The pod on peer `i`.
fn pod_of(lab: &Lab, i: usize) -> PodState {
    lab.pods()
        .iter()
        .find(|p| p.peer == name(i))
        .cloned()
        .unwrap_or_else(|| panic!("no pod on p{i}"))
}

/// Whether one ping from namespace `ns` to `to` is answered within a second.
fn one_ping(ns: &str, to: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", to])
        .output()
        .expect("running ping")
        .status
        .success()
}

#[test]
fn a_reaped_ephemeral_peers_prefixes_leave_every_peer_and_stay_held_down() {
    let mut lab = pods_lab("pl", 2, Some(TTL), &[]);
    let path = lab.layout().k3s_config(3);
    let k3s = K3sSection::join("agent", "", path).with_pods(lab.layout(), 3);
    let p3 = lab.add_peer("ephemeral", Some(k3s)).expect("p3 enrolls");
    let pod3 = lab.add_pods(p3, 1).expect("a pod on p3").remove(0);
    let held = held_by(&lab, p3);
    assert_eq!(held.len(), 3, "p3 has a /32, an IPv4 and an IPv6 share: {held:?}");
    // Its /32 is covered by the IPv4 overlay's route; its shares have routes of their own.
    let shares: Vec<IpNet> = held.iter().copied().filter(|p| p.prefix_len() < 32).collect();
    let took = wait_routing(&lab, &[1, 2], &held, &shares, true);
    eprintln!("p3's prefixes routed on p1 and p2 {took:?} after its pod was attached");
    let pod1 = pod_of(&lab, 1);
    for to in [pod3.ipv4.clone(), pod3.ipv6.clone()] {
        let to = to.expect("a dual-stack pod");
        assert!(pings(&pod1.netns, &to), "pod on p1 -> pod on p3 at {to}");
    }

    lab.kill_sdwand(p3).unwrap();
    let took = wait_routing(&lab, &[1, 2], &held, &shares, false);
    eprintln!("p3's prefixes gone from p1 and p2 {took:?} after its daemon was killed (TTL {TTL:?})");
    assert!(
        !lab.registry_members()
            .unwrap()
            .members
            .iter()
            .any(|m| m.name == name(p3)),
        "p3 is still a member"
    );

    // During the hold-down a new node gets fresh prefixes, not p3's (the lowest free ones but for them).
    let p4 = lab.add_peer("persistent", None).expect("p4 enrolls");
    let fresh = held_by(&lab, p4);
    assert_eq!(fresh.len(), 3, "p4 has a /32, an IPv4 and an IPv6 share: {fresh:?}");
    let taken: Vec<IpNet> = held
        .iter()
        .chain(&held_by(&lab, 1))
        .chain(&held_by(&lab, 2))
        .copied()
        .collect();
    for p in &fresh {
        let clash = taken
            .iter()
            .find(|t| t.contains(&p.network()) || p.contains(&t.network()));
        assert!(clash.is_none(), "p4 got {p}, which overlaps {clash:?} (p3's: {held:?})");
    }
    let fresh_shares: Vec<IpNet> = fresh.iter().copied().filter(|p| p.prefix_len() < 32).collect();
    wait_routing(&lab, &[1, 2], &fresh, &fresh_shares, true);
    for i in [1, 2, p4] {
        for &p in &held {
            assert_eq!(routing_of(&lab, i, p), (false, false), "p{i} routes p3's {p} again");
        }
    }
}

/// Accepts one TCP connection on `at` in namespace `ns`; the client's address, read from the connection.
fn accept_one(ns: &str, at: SocketAddr) -> std::thread::JoinHandle<std::io::Result<SocketAddr>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = spawn_in(ns, move || {
        let listener = TcpListener::bind(at)?;
        listener.set_nonblocking(true)?;
        let _ = ready_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut conn, from) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf)?;
        conn.write_all(&buf)?;
        Ok(from)
    })
    .expect("a thread in the site namespace");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the site host listens");
    server
}

#[test]
fn an_operator_assigned_site_prefix_is_reachable_from_pods_on_other_nodes() {
    let lab = pods_lab("ps", 3, None, &[SITE_RANGE]);
    let site = net("203.0.113.128/26");
    let host = lab.add_site(2, site).expect("a site host behind p2");
    let addr = host.address.to_string();
    let pod1 = pod_of(&lab, 1);
    let pod_v4 = pod1.ipv4.clone().expect("an IPv4 pod");
    let only_site = BTreeSet::from([site]);
    assert!(
        !one_ping(&pod1.netns, &addr),
        "the site host answers a pod on p1 before the site prefix is assigned"
    );

    lab.set_site_prefixes(2, &[site])
        .expect("sdwanctl registry site-prefixes p2");
    assert!(held_by(&lab, 2).contains(&site));
    let took = wait_routing(&lab, &[1, 3], &only_site, &[site], true);
    eprintln!("{site} routed on p1 and p3 {took:?} after sdwanctl set it on p2");
    let p2_key = lab.peer(2).unwrap().public_key.clone();
    for i in [1, 3] {
        let entry = (p2_key.clone(), site.to_string());
        assert!(allowed_ips(&lab, i).contains(&entry), "p{i} has {site} on p2's entry");
    }
    assert!(
        pings(&pod1.netns, &addr),
        "pod {pod_v4} on p1 -> site host {addr} behind p2"
    );
    assert!(pings(&host.netns, &pod_v4), "site host {addr} -> pod {pod_v4} on p1");
    let at = SocketAddr::new(host.address, 5202);
    let server = accept_one(&host.netns, at);
    let client = spawn_in(&pod1.netns, move || {
        let mut c = TcpStream::connect_timeout(&at, Duration::from_secs(5))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"hello")?;
        let mut back = [0u8; 5];
        c.read_exact(&mut back)?;
        Ok(back)
    })
    .unwrap();
    assert_eq!(&client.join().unwrap().expect("TCP pod -> site host"), b"hello");
    let seen = server.join().unwrap().expect("the site host's connection");
    assert_eq!(
        seen.ip().to_string(),
        pod_v4,
        "the site host sees the pod's own address (no NAT)"
    );

    lab.set_site_prefixes(2, &[])
        .expect("sdwanctl registry site-prefixes p2 --clear");
    wait_routing(&lab, &[1, 3], &only_site, &[site], false);
    assert!(
        !one_ping(&pod1.netns, &addr),
        "the site host still answers once cleared"
    );
}

/// One peer's allowed IPs (by entry) and routes.
type Routing = (BTreeSet<(String, String)>, BTreeSet<String>);

/// What a refused change could have touched on the daemons: each peer's allowed IPs and routes.
fn snapshot(lab: &Lab, peers: &[usize]) -> Vec<Routing> {
    peers.iter().map(|&i| (allowed_ips(lab, i), routes(lab, i))).collect()
}

#[test]
fn an_overlapping_site_prefix_is_refused_and_nothing_changes() {
    let lab = pods_lab("pc", 2, None, &[SITE_RANGE]);
    let site = net("203.0.113.128/26");
    lab.set_site_prefixes(1, &[site]).expect("p1's site prefix");
    wait_routing(&lab, &[2], &BTreeSet::from([site]), &[site], true);
    let (p1_share, p1_v4) = {
        let held = held_by(&lab, 1);
        let share = *held
            .iter()
            .find(|p| p.addr().is_ipv4() && p.prefix_len() < 32)
            .expect("p1's IPv4 share");
        let v4 = *held.iter().find(|p| p.prefix_len() == 32).expect("p1's /32");
        (share, v4)
    };
    let revision = lab.registry_members().unwrap().revision;
    let before = snapshot(&lab, &[1, 2]);
    let (held1, held2) = (held_by(&lab, 1), held_by(&lab, 2));

    let range = format!("site_ranges ({SITE_RANGE})");
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        // Inside p1's site prefix: a conflict naming p1 and its prefix.
        (
            vec!["203.0.113.160/27".into()],
            vec!["prefix_conflict".into(), format!("site prefix {site}"), "\"p1\"".into()],
        ),
        // Around it (the whole range).
        (
            vec![SITE_RANGE.into()],
            vec!["prefix_conflict".into(), format!("site prefix {site}"), "\"p1\"".into()],
        ),
        // p1's pod share and its /32: outside the site ranges, which never overlap pools or the overlay.
        (
            vec![p1_share.to_string()],
            vec![p1_share.to_string(), format!("not inside any of the network's {range}")],
        ),
        (
            vec![p1_v4.to_string()],
            vec![p1_v4.to_string(), format!("not inside any of the network's {range}")],
        ),
        // Two of the list overlapping each other.
        (
            vec!["203.0.113.192/26".into(), "203.0.113.200/29".into()],
            vec!["203.0.113.200/29 overlaps prefixes[0] 203.0.113.192/26".into()],
        ),
        // A default route.
        (vec!["0.0.0.0/0".into()], vec!["default route".into()]),
    ];
    for (prefixes, words) in &cases {
        let mut args = vec!["site-prefixes".to_owned(), name(2)];
        args.extend(prefixes.iter().cloned());
        let out = lab.sdwanctl_registry(&args).expect("sdwanctl runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "sdwanctl registry site-prefixes p2 {prefixes:?}: {}\nstdout: {}\nstderr: {stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        for w in words {
            assert!(
                stderr.contains(w.as_str()),
                "{w:?} in the refusal of {prefixes:?}: {stderr}"
            );
        }
        eprintln!("refused {prefixes:?}: {}", stderr.trim());
    }

    assert_eq!(
        lab.registry_members().unwrap().revision,
        revision,
        "a refusal moved the revision"
    );
    assert_eq!((held_by(&lab, 1), held_by(&lab, 2)), (held1, held2));
    // An observation window longer than the daemons' 2 s resync: nothing moves.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            snapshot(&lab, &[1, 2]),
            before,
            "a daemon changed after the refusals ({:?} in)",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
