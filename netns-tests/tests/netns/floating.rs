//! Floating prefixes: an HA branch site (`--floating-candidates 2`: a LAN behind gateways p1 and p2, site
//! host 203.0.113.10 routing through the floating gateway address 203.0.113.1), observed from p3 and p4.
//! The holding gateway dies (node death), or its health check fails: the other gateway takes the prefix,
//! every observer reaches the site host through it, and no observer routes the prefix to the old holder.
//! Its daemon alone crashes and restarts: the restart takes off the gateway address it left.

use std::net::IpAddr;
use std::time::Duration;

use sdwan_lab::floating::{PREFIX, SITE_ADDR};
use sdwan_lab::UpOptions;

use crate::common::{lab_with, unique_name, POLL};

/// The observers: peers that route the prefix, never hold it.
const OBSERVERS: [usize; 2] = [3, 4];

fn site_lab(prefix: &str, health: bool) -> crate::common::TestLab {
    let mut opts = UpOptions::new(&unique_name(prefix), 4);
    opts.floating_candidates = 2;
    opts.floating_health = health;
    lab_with(opts)
}

/// Asserts that every observer reaches the site host (5 pings, none lost), after waiting at most 10 s
/// for a first answer from each.
fn assert_site_reachable(lab: &sdwan_lab::Lab) {
    let site = IpAddr::V4(SITE_ADDR);
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

/// Asserts that every observer routes the prefix to `holder` (in its allowed IPs) and to no other
/// candidate.
fn assert_routed_to(lab: &sdwan_lab::Lab, holder: usize, others: &[usize]) {
    let prefix: ipnet::IpNet = PREFIX.parse().unwrap();
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
    assert_site_reachable(&lab);
    assert_routed_to(&lab, 1, &[2]);

    lab.kill_node(1).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || lab.has_gateway(2).unwrap_or(false))
        .unwrap_or_else(|e| panic!("p2 did not take the gateway address: {e}"));
    assert_site_reachable(&lab);
    assert_routed_to(&lab, 2, &[1]);
    assert_eq!(lab.status().unwrap().floating[0].holder.as_deref(), Some("p2"));
}

#[test]
fn a_failing_health_check_hands_the_prefix_over() {
    let lab = site_lab("fh", true);
    let old = lab.wait_floating_settled(Duration::from_secs(10)).unwrap();
    assert_eq!(old, 1);
    assert_site_reachable(&lab);

    lab.fail_floating_health(1, true).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.gateway_holders().is_ok_and(|h| h == [2])
    })
    .unwrap_or_else(|e| {
        panic!(
            "the prefix did not move to p2: {e}: holders {:?}",
            lab.gateway_holders()
        )
    });
    assert_site_reachable(&lab);
    assert_routed_to(&lab, 2, &[1]);
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
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.gateway_holders().is_ok_and(|h| h == [2])
    })
    .unwrap_or_else(|e| {
        panic!(
            "the restarted p1 keeps the gateway address it left: {e}: holders {:?}",
            lab.gateway_holders()
        )
    });
    assert_site_reachable(&lab);
    assert_routed_to(&lab, 2, &[1]);
}
