//! Floating prefixes: an HA branch site (`--floating-candidates 2`: a LAN behind gateways p1 and p2, site
//! host 203.0.113.10 routing through the floating gateway address 203.0.113.1), observed from p3 and p4.
//! The holding gateway dies (node death), or its health check fails: the other gateway takes the prefix,
//! every observer reaches the site host through it, and no observer routes the prefix to the old holder.
//! Its daemon alone crashes and restarts: the restart takes off the gateway address it left. An
//! observer's daemon crashes and restarts: it keeps routing the prefix to the holder throughout. The same
//! node death with an IPv6 site (`--floating-family ipv6`: 2001:db8:5::/64, gateway 2001:db8:5::1),
//! where the site host's neighbour entry for the gateway address follows the new holder's unsolicited
//! neighbour advertisement.

use std::time::Duration;

use sdwan_lab::floating::{Site, V4, V6};
use sdwan_lab::{FloatingFamily, UpOptions};

use crate::common::{lab_with, unique_name, wait_sole_gateway, POLL};

/// The observers: peers that route the prefix, never hold it.
const OBSERVERS: [usize; 2] = [3, 4];

fn site_lab(prefix: &str, health: bool) -> crate::common::TestLab {
    site_lab_of(prefix, health, FloatingFamily::Ipv4)
}

fn site_lab_of(prefix: &str, health: bool, family: FloatingFamily) -> crate::common::TestLab {
    let mut opts = UpOptions::new(&unique_name(prefix), 4);
    opts.floating_candidates = 2;
    opts.floating_family = family;
    opts.floating_health = health;
    lab_with(opts)
}

/// Asserts that every observer reaches the site host of `s` (5 pings, none lost), after waiting at most
/// 10 s for a first answer from each.
fn assert_site_reachable(lab: &sdwan_lab::Lab, s: &Site) {
    let site = s.host;
    for j in OBSERVERS {
        sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
            lab.ping(j, site, 1, Duration::from_millis(200))
                .is_ok_and(|s| s.lost() == 0)
        })
        .unwrap_or_else(|e| panic!("p{j} cannot reach the site host {site}: {e}"));
        let stats = lab.ping(j, site, 5, Duration::from_millis(50)).unwrap();
        assert_eq!(stats.lost(), 0, "p{j} -> {site}: {stats:?}");
    }
}

/// Asserts that every observer routes the prefix of `s` to `holder` (in its allowed IPs) and to no
/// other candidate.
fn assert_routed_to(lab: &sdwan_lab::Lab, s: &Site, holder: usize, others: &[usize]) {
    let prefix: ipnet::IpNet = s.prefix.parse().unwrap();
    for j in OBSERVERS {
        sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
            lab.allowed_ips(j, holder).is_ok_and(|a| a.contains(&prefix))
                && others
                    .iter()
                    .all(|o| lab.allowed_ips(j, *o).is_ok_and(|a| !a.contains(&prefix)))
        })
        .unwrap_or_else(|e| {
            panic!(
                "p{j} does not route {prefix} to p{holder} alone: {e}: {:?}",
                [holder]
                    .iter()
                    .chain(others)
                    .map(|o| (o, lab.allowed_ips(j, *o)))
                    .collect::<Vec<_>>()
            )
        });
    }
}

#[test]
fn the_site_stays_reachable_when_its_holding_gateway_dies() {
    let mut lab = site_lab("fn", false);
    let old = lab.wait_floating_settled(Duration::from_secs(10)).unwrap();
    assert_eq!(old, 1, "the first candidate holds the prefix");
    let doc = lab.status().unwrap();
    assert_eq!(doc.floating.len(), 1, "{doc:?}");
    assert_eq!(doc.floating[0].candidates, ["p1", "p2"]);
    assert_eq!(doc.floating[0].holder.as_deref(), Some("p1"));
    assert_site_reachable(&lab, &V4);
    assert_routed_to(&lab, &V4, 1, &[2]);

    lab.kill_node(1).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || lab.has_gateway(2).unwrap_or(false))
        .unwrap_or_else(|e| panic!("p2 did not take the gateway address: {e}"));
    assert_site_reachable(&lab, &V4);
    assert_routed_to(&lab, &V4, 2, &[1]);
    assert_eq!(lab.status().unwrap().floating[0].holder.as_deref(), Some("p2"));
}

#[test]
fn a_failing_health_check_hands_the_prefix_over() {
    let lab = site_lab("fh", true);
    let old = lab.wait_floating_settled(Duration::from_secs(10)).unwrap();
    assert_eq!(old, 1);
    assert_site_reachable(&lab, &V4);

    lab.fail_floating_health(1, true).unwrap();
    wait_sole_gateway(&lab, 2, "the prefix did not move to p2");
    assert_site_reachable(&lab, &V4);
    assert_routed_to(&lab, &V4, 2, &[1]);
    lab.fail_floating_health(1, false).unwrap();
}

/// The holding gateway's daemon crashes (SIGKILL: its gateway address stays on its LAN interface) and p2
/// takes over; the restarted daemon adopts the address it left and takes it off, since p2 holds the
/// prefix now, so the LAN is left with one gateway.
#[test]
fn a_restarted_gateway_drops_the_gateway_address_it_left() {
    let mut lab = site_lab("fr", false);
    assert_eq!(lab.wait_floating_settled(Duration::from_secs(10)).unwrap(), 1);
    lab.kill_sdwand(1).unwrap();
    assert!(
        lab.has_gateway(1).unwrap(),
        "the gateway address left p1 although only its daemon died"
    );
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || lab.has_gateway(2).unwrap_or(false))
        .unwrap_or_else(|e| panic!("p2 did not take the gateway address: {e}"));

    lab.start_sdwand(1).unwrap();
    lab.wait_ready(1, Duration::from_secs(10)).unwrap();
    wait_sole_gateway(&lab, 2, "the restarted p1 keeps the gateway address it left");
    assert_site_reachable(&lab, &V4);
    assert_routed_to(&lab, &V4, 2, &[1]);
}

/// An observer's daemon crashes and restarts (SIGKILL: its WireGuard device and kernel route stay): the
/// restarted daemon adopts the route to the holder it left, so for longer than a claim refresh after it is
/// ready (the holder's next claim would put a dropped route back) it never stops routing the prefix to p1,
/// and the site host stays reachable.
#[test]
fn a_restarted_observer_keeps_routing_the_prefix() {
    let mut lab = site_lab("fo", false);
    assert_eq!(lab.wait_floating_settled(Duration::from_secs(10)).unwrap(), 1);
    assert_site_reachable(&lab, &V4);
    let prefix: ipnet::IpNet = V4.prefix.parse().unwrap();
    let observer = OBSERVERS[0];
    lab.kill_sdwand(observer).unwrap();
    lab.start_sdwand(observer).unwrap();
    lab.wait_ready(observer, Duration::from_secs(10)).unwrap();
    // An observation window, not a wait: a claim refresh (2 s) plus margin, sampled as fast as `wg` answers.
    let start = std::time::Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        let allowed = lab.allowed_ips(observer, 1).unwrap();
        assert!(
            allowed.contains(&prefix),
            "{:?} after p{observer} was ready, it does not route {prefix} to p1: {allowed:?}",
            start.elapsed()
        );
        samples += 1;
    }
    assert!(samples >= 10, "only {samples} samples in the window");
    assert_site_reachable(&lab, &V4);
}

/// An IPv6 site: p1 holds 2001:db8:5::/64 and both observers reach the site host over IPv6 (from their
/// overlay /128s, through the tunnel to p1 and its LAN). p1's node dies while nothing is sent to the site:
/// p2 serves the gateway address, p1 does not, and the site host's neighbour entry for the gateway address
/// moves to p2's LAN MAC with no traffic of its own to make the kernel probe the old entry (which it
/// would only do when sending), so only p2's unsolicited neighbour advertisement can have moved it. Then
/// both observers reach the site host through p2 and route the prefix to p2 alone.
#[test]
fn an_ipv6_site_follows_the_neighbour_advertisement_when_its_holding_gateway_dies() {
    let mut lab = site_lab_of("f6", false, FloatingFamily::Ipv6);
    assert_eq!(lab.wait_floating_settled(Duration::from_secs(10)).unwrap(), 1);
    let doc = lab.status().unwrap();
    assert_eq!(doc.floating.len(), 1, "{doc:?}");
    assert_eq!(doc.floating[0].prefix, "2001:db8:5::/64");
    assert_eq!(doc.floating[0].site_addr, "2001:db8:5::10");
    assert_eq!(doc.floating[0].holder.as_deref(), Some("p1"));
    assert_site_reachable(&lab, &V6);
    assert_routed_to(&lab, &V6, 1, &[2]);
    let (p1_mac, p2_mac) = (lab.lan_mac(1).unwrap(), lab.lan_mac(2).unwrap());
    let entry = lab.site_gateway_neighbour(&V6).unwrap();
    assert_eq!(
        entry.as_ref().and_then(|e| e.0.as_deref()),
        Some(p1_mac.as_str()),
        "the site host reached the observers through p1 ({p1_mac}): {entry:?}"
    );

    lab.kill_node(1).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.has_gateway_of(2, &V6).unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("p2 did not take the gateway address: {e}"));
    assert!(
        !lab.has_gateway_of(1, &V6).unwrap(),
        "the dead p1 still serves the gateway address"
    );
    sdwan_lab::wait_until(Duration::from_secs(3), POLL, || {
        lab.site_gateway_neighbour(&V6).is_ok_and(|e| {
            e.is_some_and(|(mac, flags)| {
                mac.as_deref() == Some(p2_mac.as_str()) && flags.iter().any(|f| f == "router")
            })
        })
    })
    .unwrap_or_else(|e| {
        panic!(
            "the site host's neighbour entry for the gateway address did not move to p2 ({p2_mac}) without traffic: {e}: {:?}",
            lab.site_gateway_neighbour(&V6)
        )
    });
    assert_site_reachable(&lab, &V6);
    assert_routed_to(&lab, &V6, 2, &[1]);
    assert_eq!(lab.status().unwrap().floating[0].holder.as_deref(), Some("p2"));
}
