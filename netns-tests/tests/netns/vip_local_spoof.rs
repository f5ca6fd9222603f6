//! Local processes on a member node that speak the failover protocol in a daemon's name (security review §9.A,
//! finding H1):
//!
//! - P6: an unprivileged user (`nobody`) on a candidate binds the node's own overlay address with a port of
//!   its choosing and sends claims to every other member. They arrive through WireGuard from the right
//!   address, but not from the failover port: every receiver drops them (`bad_port`), no term moves.
//! - P8: a process on a candidate binds *another* member's overlay address with `IPV6_FREEBIND` and the
//!   failover port, and sends a claim to its own node's daemon, which reaches it through loopback, not
//!   through WireGuard: dropped (never counted as received), nothing changes. The port may be privileged
//!   (finding M12), so this sender runs as root; the filter under test must not care who sent it.

use std::net::SocketAddr;
use std::time::Duration;

use sdwan_lab::forge::{datagram, fresh_incarnation};
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::{Lab, Layout, SendOptions, User};
use sdwand::vip::{Body, Epoch};

use crate::common::{settled, vip_lab, wait_holder, CANDIDATES, POLL, VIP_PEERS};

/// The rejection reason for a datagram whose source port is not the failover port (the runtime's label).
const BAD_PORT: &str = "bad_port";

/// An unprivileged port a local user can bind on any address of its node.
const UNPRIVILEGED_PORT: u16 = 40000;

/// `sdwand_vip_datagrams_total{direction="received",kind}` on peer `i` (0 before the first).
fn received(lab: &Lab, i: usize, kind: &str) -> f64 {
    lab.metric(
        i,
        "sdwand_vip_datagrams_total",
        &[("direction", "received"), ("kind", kind)],
    )
    .unwrap()
    .unwrap_or(0.0)
}

/// A claim by `holder` at `term` with its own rank, as the holder itself would send it.
fn claim(holder: usize, incarnation: u64, seq: u64, term: u64) -> Vec<u8> {
    let body = Body::Claim {
        epoch: Epoch {
            term,
            rank: (holder - 1) as u16,
        },
        confirmed: 0,
        peers: (VIP_PEERS - 1) as u16,
    };
    datagram(VIP_ADDR, Layout::overlay_addr(holder), incarnation, seq, body)
}

#[test]
fn a_claim_from_an_unprivileged_port_is_dropped() {
    let lab = vip_lab("up");
    let holder = settled(&lab, Duration::from_secs(10));
    let terms: Vec<Option<u64>> = (1..=VIP_PEERS).map(|i| lab.vip_epoch_term(i).unwrap()).collect();
    let term = terms[holder - 1].expect("the holder's term");
    let others: Vec<usize> = (1..=VIP_PEERS).filter(|&i| i != holder).collect();
    let bad_port_before: Vec<f64> = others.iter().map(|&i| lab.vip_rejected(i, BAD_PORT).unwrap()).collect();

    let from = SocketAddr::from((Layout::overlay_addr(holder), UNPRIVILEGED_PORT));
    let to: Vec<SocketAddr> = others.iter().map(|&i| lab.failover_addr(i).unwrap()).collect();
    let forged = claim(holder, fresh_incarnation(), 1, term + 100);
    lab.send_crafted(holder, from, &to, &[forged], SendOptions::NOBODY)
        .unwrap();

    // Processed: counted as `bad_port`, or (the defect) learned, which shows as a new term.
    let waited = sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        others.iter().zip(&bad_port_before).all(|(&i, &b)| {
            lab.vip_rejected(i, BAD_PORT).unwrap_or(0.0) > b || lab.vip_epoch_term(i).ok().flatten() != terms[i - 1]
        })
    });
    let after: Vec<Option<u64>> = (1..=VIP_PEERS).map(|i| lab.vip_epoch_term(i).unwrap()).collect();
    assert_eq!(
        after,
        terms,
        "a term moved (claim at {}) \n{}",
        term + 100,
        lab.vip_view()
    );
    for (&i, &before) in others.iter().zip(&bad_port_before) {
        assert_eq!(
            lab.vip_rejected(i, BAD_PORT).unwrap(),
            before + 1.0,
            "p{i}: sdwand_vip_datagrams_rejected_total{{reason=\"{BAD_PORT}\"}} (waited: {waited:?})\n{}",
            lab.metrics(i).unwrap_or_default()
        );
    }
    wait_holder(&lab, holder, Duration::from_secs(2));
}

#[test]
fn a_looped_back_spoof_is_dropped() {
    let lab = vip_lab("lb");
    let holder = settled(&lab, Duration::from_secs(10));
    // The spoofing process runs on another candidate and pretends to be the holder.
    let victim = *CANDIDATES.iter().rev().find(|&&c| c != holder).unwrap();
    // The last candidate to start may still be listening once the VIP has settled; its role is compared
    // below, so wait for it to end its listening period on its own first.
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        lab.vip_role(victim).ok().flatten().as_deref() == Some("standby")
    })
    .unwrap_or_else(|e| panic!("p{victim} did not become standby: {e}\n{}", lab.vip_view()));
    let term = lab.vip_epoch_term(victim).unwrap().expect("a term");
    let role = lab.vip_role(victim).unwrap();
    let believed = lab.vip_believed_holder(victim).unwrap();
    let claims = received(&lab, victim, "claim");
    let heartbeats = received(&lab, victim, "heartbeat");
    let stale = lab.vip_rejected(victim, "stale").unwrap();

    // Three claims, so that acceptance cannot hide behind the holder's own periodic claim refresh (at most
    // one reaches the victim in the short window below). An incarnation of 2^62 would make the victim drop
    // the real holder's datagrams as stale afterwards, were the spoof accepted.
    let spoof: Vec<Vec<u8>> = (1..=3).map(|seq| claim(holder, 1 << 62, seq, term + 5)).collect();
    let from = lab.failover_addr(holder).unwrap();
    let to = lab.failover_addr(victim).unwrap();
    let opts = SendOptions {
        user: User::Root,
        freebind: true,
    };
    lab.send_crafted(victim, from, &[to], &spoof, opts).unwrap();

    // Loopback delivery is immediate; the victim has handled the spoof once it has handled heartbeats that
    // arrived through WireGuard after it.
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        received(&lab, victim, "heartbeat") >= heartbeats + 3.0
    })
    .unwrap_or_else(|e| panic!("p{victim} received no heartbeats: {e}\n{}", lab.vip_view()));
    let new_claims = received(&lab, victim, "claim") - claims;
    assert!(
        new_claims <= 1.0,
        "p{victim} received {new_claims} claims: the looped-back spoof got through\n{}",
        lab.vip_view()
    );
    assert_eq!(lab.vip_epoch_term(victim).unwrap(), Some(term), "{}", lab.vip_view());
    assert_eq!(lab.vip_role(victim).unwrap(), role, "{}", lab.vip_view());
    assert_eq!(lab.vip_believed_holder(victim).unwrap(), believed, "{}", lab.vip_view());
    assert_eq!(
        lab.vip_rejected(victim, "stale").unwrap(),
        stale,
        "p{victim} now drops the holder's own datagrams as stale"
    );
    wait_holder(&lab, holder, Duration::from_secs(2));
}
