//! Workload prefixes (issue 10 item 2) with real daemons: a fake registry (in the real one's place) gives
//! each of three nodes a /32 in 203.0.113.0/24, an IPv4 pod share of 198.51.100.0/24 (a /26 each) and an
//! IPv6 one of fd00:42::/48 (a /64 each). Behind p1 and p2, a "pod" namespace on a veth holds an address
//! of its node's shares. Then:
//!
//! - every node routes the others' shares and /32s through its interface (allowed IPs and kernel routes)
//!   and has its own /32 on it;
//! - pod 1 pings pod 2 over the overlay, IPv4 and IPv6, and pod 1 reaches p3's underlay address (outside
//!   the network: masqueraded by p1);
//! - counters on p1's and p2's underlay links (after NAT on the way out, before it on the way in) see
//!   WireGuard UDP and never a pod address;
//! - p1 has `inet sdwand` with its masquerade and MSS clamp, and forwarding on; after `nft flush ruleset`
//!   on p2 the table comes back at the next resync; stopping p1's daemon (`teardown_on_exit`) removes it.

use std::process::Command;
use std::time::Duration;

use sdwan_lab::layout::LISTEN_PORT;
use sdwan_lab::{Lab, Layout};
use serde_json::{json, Value};

use crate::common::{allowed, lab, POLL};

/// The pod nodes: each gets a pod namespace.
const POD_NODES: [usize; 2] = [1, 2];

/// Node `j`'s IPv4 pod share.
fn share_v4(j: usize) -> String {
    format!("198.51.100.{}/26", 64 * (j - 1))
}

/// Node `j`'s IPv6 pod share.
fn share_v6(j: usize) -> String {
    format!("fd00:42:0:{j}::/64")
}

/// Node `j`'s gateway (on its end of the pod veth) and pod addresses: (gateway v4, pod v4, gateway v6,
/// pod v6).
fn pod_addrs(j: usize) -> (String, String, String, String) {
    let base = 64 * (j - 1);
    (
        format!("198.51.100.{}", base + 1),
        format!("198.51.100.{}", base + 2),
        format!("fd00:42:0:{j}::1"),
        format!("fd00:42:0:{j}::2"),
    )
}

/// The pod namespaces a test created; deleted on drop (also when the test fails).
struct PodNamespaces(Vec<String>);

impl Drop for PodNamespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `ip ARGS` (in the host namespace unless the arguments say `-n NS`); panics with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `argv` in namespace `ns`; its output whatever its exit status.
fn in_ns(ns: &str, argv: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .expect("running ip netns exec")
}

/// Creates node `j`'s pod namespace `NAME-q<j>`: a veth whose node end holds the gateways, the pod end
/// the pod addresses and default routes through the gateways.
fn add_pod(lab: &Lab, j: usize, created: &mut PodNamespaces) -> String {
    let ns = format!("{}-q{j}", lab.name());
    let node_ns = lab.netns(j).unwrap();
    let (host_if, pod_if) = (format!("{}-v{j}", lab.name()), format!("{}-w{j}", lab.name()));
    ip(&["netns", "add", &ns]);
    created.0.push(ns.clone());
    ip(&[
        "-n", &node_ns, "link", "add", &host_if, "type", "veth", "peer", "name", &pod_if, "netns", &ns,
    ]);
    let (gw4, pod4, gw6, pod6) = pod_addrs(j);
    let len4 = "/26";
    ip(&["-n", &node_ns, "addr", "add", &format!("{gw4}{len4}"), "dev", &host_if]);
    ip(&[
        "-n",
        &node_ns,
        "addr",
        "add",
        &format!("{gw6}/64"),
        "dev",
        &host_if,
        "nodad",
    ]);
    ip(&["-n", &node_ns, "link", "set", &host_if, "up"]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "addr", "add", &format!("{pod4}{len4}"), "dev", &pod_if]);
    ip(&["-n", &ns, "addr", "add", &format!("{pod6}/64"), "dev", &pod_if, "nodad"]);
    ip(&["-n", &ns, "link", "set", &pod_if, "up"]);
    ip(&["-n", &ns, "route", "add", "default", "via", &gw4]);
    ip(&["-n", &ns, "-6", "route", "add", "default", "via", &gw6]);
    ns
}

/// The view with the workload ranges and every member's /32 and shares, at `revision`.
fn workload_view(real: &Value, revision: u64) -> Value {
    let mut view = real.clone();
    view["revision"] = revision.into();
    view["overlay_prefix_v4"] = "203.0.113.0/24".into();
    view["pod_pools"] = json!([
        { "prefix": "198.51.100.0/24", "node_len": 26 },
        { "prefix": "fd00:42::/48", "node_len": 64 },
    ]);
    view["site_ranges"] = json!([]);
    for m in view["members"].as_array_mut().unwrap() {
        let j: usize = m["name"].as_str().unwrap().trim_start_matches('p').parse().unwrap();
        m["address_v4"] = format!("203.0.113.{j}").into();
        m["prefixes"] = json!([
            { "prefix": share_v4(j), "kind": "pod" },
            { "prefix": share_v6(j), "kind": "pod" },
        ]);
        m["routed_prefixes"] = json!([share_v6(j)]);
    }
    view
}

/// Counters on peer `i`'s underlay link: `pods` counts any packet with a pod address (after NAT going out,
/// before it coming in), `wg` WireGuard's UDP.
fn add_capture(lab: &Lab, i: usize) {
    let u = lab.layout().underlay_if(i);
    let rules = format!(
        "table inet rtcap {{
    counter pods {{}}
    counter wg {{}}
    chain out {{
        type filter hook postrouting priority 300; policy accept;
        oifname \"{u}\" ip saddr 198.51.100.0/24 counter name pods
        oifname \"{u}\" ip daddr 198.51.100.0/24 counter name pods
        oifname \"{u}\" ip6 saddr fd00:42::/48 counter name pods
        oifname \"{u}\" ip6 daddr fd00:42::/48 counter name pods
        oifname \"{u}\" udp sport {LISTEN_PORT} counter name wg
    }}
    chain in {{
        type filter hook prerouting priority -300; policy accept;
        iifname \"{u}\" ip saddr 198.51.100.0/24 counter name pods
        iifname \"{u}\" ip daddr 198.51.100.0/24 counter name pods
        iifname \"{u}\" ip6 saddr fd00:42::/48 counter name pods
        iifname \"{u}\" ip6 daddr fd00:42::/48 counter name pods
        iifname \"{u}\" udp dport {LISTEN_PORT} counter name wg
    }}
}}
"
    );
    let path = lab.layout().peer_dir(i).join("rtcap.nft");
    std::fs::write(&path, rules).unwrap();
    lab.exec_ok(i, &["nft", "-f", path.to_str().unwrap()]).unwrap();
}

/// The packets counted by `counter` of peer `i`'s capture table.
fn captured(lab: &Lab, i: usize, counter: &str) -> u64 {
    let out = lab
        .exec_ok(i, &["nft", "list", "counter", "inet", "rtcap", counter])
        .unwrap();
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect("a packets field");
    words[at + 1].parse().expect("a packet count")
}

/// Whether one `ping` from namespace `ns` to `to` gets an answer within a second.
fn pings(ns: &str, to: &str) -> bool {
    in_ns(ns, &["ping", "-c", "1", "-W", "1", to]).status.success()
}

#[test]
fn pods_reach_each_other_over_the_overlay_and_never_show_on_the_underlay() {
    let mut lab = lab("rt", 3);
    let real = serde_json::to_value(lab.registry_members().unwrap()).unwrap();
    let revision = real["revision"].as_u64().unwrap() + 1;
    lab.kill_registry().unwrap();
    let _fake = lab.start_fake_registry(workload_view(&real, revision)).unwrap();

    // Routed everywhere: allowed IPs and kernel routes.
    for i in 1..=3 {
        let wg = lab.wg_if(i).unwrap();
        let routed = sdwan_lab::wait_until(Duration::from_secs(30), POLL, || {
            let dev = lab.device(i).unwrap();
            let all_allowed = (1..=3).filter(|&j| j != i).all(|j| {
                let key = &lab.peer(j).unwrap().public_key;
                dev.peers.iter().any(|p| {
                    let a = allowed(p);
                    p.config.public_key.to_base64() == *key
                        && [share_v4(j), share_v6(j), format!("203.0.113.{j}/32")]
                            .iter()
                            .all(|n| a.contains(n))
                })
            });
            let v4 = lab
                .exec_ok(i, &["ip", "-4", "route", "show", "dev", &wg])
                .unwrap_or_default();
            let v6 = lab
                .exec_ok(i, &["ip", "-6", "route", "show", "dev", &wg])
                .unwrap_or_default();
            let addr = lab
                .exec_ok(i, &["ip", "-4", "addr", "show", "dev", &wg])
                .unwrap_or_default();
            all_allowed
                && (1..=3).filter(|&j| j != i).all(|j| {
                    v4.contains(&format!("{} proto 200", share_v4(j)))
                        && v6.contains(&format!("{} proto 200", share_v6(j)))
                })
                && v4.contains("203.0.113.0/24 proto 200")
                && addr.contains(&format!("203.0.113.{i}/32"))
        });
        assert!(
            routed.is_ok(),
            "p{i} did not route the others' shares and /32s\n{}",
            lab.log_tail(i, 30)
        );
    }

    let mut created = PodNamespaces(Vec::new());
    let pods: Vec<String> = POD_NODES.iter().map(|&j| add_pod(&lab, j, &mut created)).collect();
    for &i in &POD_NODES {
        add_capture(&lab, i);
    }
    let wg_before: Vec<u64> = POD_NODES.iter().map(|&i| captured(&lab, i, "wg")).collect();

    let (_, pod2_v4, _, pod2_v6) = pod_addrs(2);
    for to in [&pod2_v4, &pod2_v6] {
        let reached = sdwan_lab::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            pings(&pods[0], to)
        });
        assert!(
            reached.is_ok(),
            "pod 1 cannot reach pod 2 at {to}\n{}",
            lab.log_tail(1, 30)
        );
        let out = in_ns(&pods[0], &["ping", "-c", "5", "-i", "0.2", "-W", "2", to]);
        assert!(
            out.status.success(),
            "pod 1 -> {to}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Outside the network (p3's underlay address): masqueraded by p1.
    let outside = Layout::underlay_addr(3).to_string();
    let reached = sdwan_lab::wait_until(Duration::from_secs(5), Duration::from_millis(200), || {
        pings(&pods[0], &outside)
    });
    assert!(reached.is_ok(), "pod 1 cannot reach {outside} through p1's masquerade");

    for (n, &i) in POD_NODES.iter().enumerate() {
        assert_eq!(
            captured(&lab, i, "pods"),
            0,
            "a pod address crossed p{i}'s underlay link"
        );
        assert!(
            captured(&lab, i, "wg") > wg_before[n],
            "no WireGuard UDP counted on p{i}'s underlay: the capture sees nothing"
        );
    }

    // p1's table and forwarding.
    let table = lab.exec_ok(1, &["nft", "list", "table", "inet", "sdwand"]).unwrap();
    assert!(
        table.contains("masquerade") && table.contains("maxseg size set rt mtu"),
        "{table}"
    );
    for switch in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        assert_eq!(lab.exec_ok(1, &["cat", switch]).unwrap().trim(), "1", "{switch}");
    }
    // p3 has pod shares too (no pod namespace): it has the table as well.
    assert!(lab
        .exec(3, &["nft", "list", "table", "inet", "sdwand"])
        .unwrap()
        .status
        .success());

    // A flushed ruleset comes back at the next resync (the lab's interval is a few seconds).
    lab.exec_ok(2, &["nft", "flush", "ruleset"]).unwrap();
    let back = sdwan_lab::wait_until(Duration::from_secs(30), POLL, || {
        lab.exec(2, &["nft", "list", "table", "inet", "sdwand"])
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("masquerade"))
    });
    assert!(
        back.is_ok(),
        "p2's inet sdwand table did not come back after a flush\n{}",
        lab.log_tail(2, 20)
    );

    // Stopping p1's daemon (teardown_on_exit) removes the table.
    lab.stop_sdwand(1, libc::SIGTERM).unwrap();
    let gone = sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        !lab.exec(1, &["nft", "list", "table", "inet", "sdwand"])
            .unwrap()
            .status
            .success()
    });
    assert!(gone.is_ok(), "p1's inet sdwand table outlived its daemon");
}
