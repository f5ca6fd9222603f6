//! Forged failover datagrams from members, sent from the member's own address and failover port through
//! WireGuard (its daemon is killed to free the port), so they pass every transport check and meet the
//! protocol's own rules: only a candidate, at its own rank, can be the holder (security review §9.A, findings
//! C1 and M13).
//!
//! - P1, P2, P4, P5: a follower sends every other member Acks naming itself as the holder at the current
//!   term + 1 and at 2⁶⁴−1, and one naming a holder that is no member at all, then a Handover at term + 1 to
//!   the last candidate. Nothing may move: every node still names and routes to the holder (an observer's
//!   probe is answered by the holder alone), no term goes above T + 1, every node counts the three acks as
//!   rejected, the last candidate does not claim, the registry keeps taking every daemon's report; and when
//!   the holder's node then dies, the next candidate takes over as usual (a saturated term would freeze the
//!   VIP on the dead node).
//! - P12: the last candidate claims at the holder's term with rank 0 (and at term + 1 with rank 0): refused,
//!   the holder keeps the VIP and every node its term.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sdwan_lab::forge::{datagram, fresh_incarnation};
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::metrics::sum;
use sdwan_lab::{Lab, Layout, ProbeOptions, SendOptions};
use sdwand::vip::{Body, Claim, Epoch, HandoverReason};

use crate::common::{
    allowed, assert_answered_by, assert_sole_holder_for, entry, name, next_candidate, settled, vip_lab, wait_holder,
    CANDIDATES, POLL, VIP_PEERS,
};

/// The follower that forges (its daemon is killed to free its failover port).
const FORGER: usize = 5;
/// The follower whose probe shows where the VIP's traffic lands.
const OBSERVER: usize = 4;
/// What a daemon logs when the registry refuses its report.
const REPORT_FAILED: &str = "registry report failed";
/// A holder no member has (P4: routing the VIP to it would blackhole it).
const NOT_A_MEMBER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 0xffff);

/// Every rejected failover datagram on peer `i`, whatever the reason (the protocol core names them:
/// `not_candidate`, `bad_rank`, `bad_term`, …).
fn rejected(lab: &Lab, i: usize) -> f64 {
    sum(
        &lab.metrics(i).unwrap_or_default(),
        "sdwand_vip_datagrams_rejected_total",
        &[],
    )
}

/// Asserts that peer `i` routes the VIP to `holder`: the VIP /128 is in the allowed IPs of `holder`'s entry
/// on `i`'s interface and in no other entry's.
fn assert_routes_to(lab: &Lab, i: usize, holder: usize) {
    let dev = lab.device(i).unwrap();
    let vip = format!("{VIP_ADDR}/128");
    for j in (1..=lab.peer_count()).filter(|&j| j != i) {
        let has = entry(lab, &dev, j).is_some_and(|p| allowed(p).contains(&vip));
        assert_eq!(
            has,
            j == holder,
            "p{i} routes the VIP {} p{j} (it should go to p{holder} only)\n{}",
            if has { "to" } else { "not to" },
            lab.vip_view()
        );
    }
}

/// Milliseconds since the Unix epoch (the registry's clock for `last_seen_ms`).
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Asserts that the registry still takes the reports of `peers` made after `since_ms`: it has seen each
/// of them twice more (`last_seen_ms`, reports every second), and none of their logs since `offsets` says a
/// report failed. A term above what the registry stores would make every report a 400 and, with it, lose
/// the liveness of every peer of the network (spot and ephemeral peers would be reaped).
fn assert_reports_accepted(lab: &Lab, peers: &[usize], offsets: &[usize], since_ms: u64) {
    let names: Vec<String> = peers.iter().map(|&i| name(i)).collect();
    let after = since_ms + 2_500;
    sdwan_lab::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        lab.registry_members().is_ok_and(|m| {
            m.members
                .iter()
                .filter(|m| names.contains(&m.name))
                .all(|m| m.last_seen_ms >= after)
        })
    })
    .unwrap_or_else(|e| panic!("the registry did not hear from {names:?} again: {e}"));
    for (&i, &offset) in peers.iter().zip(offsets) {
        let log = lab.log_since(i, offset).unwrap();
        assert!(
            !log.contains(REPORT_FAILED),
            "p{i}'s reports to the registry fail since the forged datagrams:\n{log}"
        );
    }
}

#[test]
fn a_followers_forged_acks_move_nothing() {
    let mut lab = vip_lab("fa");
    let holder = settled(&lab, Duration::from_secs(10));
    let term = lab.vip_epoch_term(holder).unwrap().expect("the holder's term");
    let receivers: Vec<usize> = (1..=VIP_PEERS).filter(|&i| i != FORGER).collect();
    let rejected_before: Vec<f64> = receivers.iter().map(|&i| rejected(&lab, i)).collect();

    // Free the forger's failover port: its daemon dies (SIGKILL: wireguard-go, the interface and the address
    // stay), and the test sends from that port as the daemon would.
    lab.kill_sdwand(FORGER).unwrap();
    let me = Layout::overlay_addr(FORGER);
    let incarnation = fresh_incarnation();
    let forged_ack = |seq: u64, term: u64, holder: Ipv6Addr| {
        let view = Claim {
            epoch: Epoch { term, rank: 0 },
            holder,
        };
        datagram(VIP_ADDR, me, incarnation, seq, Body::Ack { view })
    };
    let acks = [
        forged_ack(1, term + 1, me),
        forged_ack(2, u64::MAX, me),
        forged_ack(3, term + 1, NOT_A_MEMBER),
    ];
    // Were the first ack learned, this would make the last candidate claim at once.
    let handover = Body::Handover {
        epoch: Epoch {
            term: term + 1,
            rank: 0,
        },
        reason: HandoverReason::Manual,
    };
    let handover = datagram(VIP_ADDR, me, incarnation, 4, handover);
    let last = *CANDIDATES.last().unwrap();
    let to: Vec<SocketAddr> = receivers.iter().map(|&i| lab.failover_addr(i).unwrap()).collect();
    let from = lab.failover_addr(FORGER).unwrap();
    let probe = lab
        .start_probe(OBSERVER, ProbeOptions::new(Duration::from_secs(30)))
        .unwrap();
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        probe.progress().answers_from(&name(holder)) >= 10
    })
    .unwrap_or_else(|e| {
        panic!(
            "p{holder} does not answer p{OBSERVER}'s probe: {e}: {:?}",
            probe.progress()
        )
    });
    let log_offsets: Vec<usize> = receivers.iter().map(|&i| lab.log_text(i).unwrap().len()).collect();
    let sent_ms = unix_ms();
    lab.send_crafted(FORGER, from, &to, &acks, SendOptions::ROOT).unwrap();
    let to_last = [lab.failover_addr(last).unwrap()];
    lab.send_crafted(FORGER, from, &to_last, &[handover], SendOptions::ROOT)
        .unwrap();

    // Processed: counted as rejected, or (the defect) learned, which shows as a term above T.
    let handled = |i: usize, before: f64| {
        rejected(&lab, i) >= before + 3.0 || lab.vip_epoch_term(i).ok().flatten().is_some_and(|t| t > term)
    };
    let waited = sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        receivers.iter().zip(&rejected_before).all(|(&i, &b)| handled(i, b))
    });
    for &i in &receivers {
        let t = lab.vip_epoch_term(i).unwrap();
        assert!(
            t.is_some_and(|t| t <= term + 1),
            "p{i}'s term is {t:?}, above T + 1 = {} after the forged acks\n{}",
            term + 1,
            lab.vip_view()
        );
    }
    for (&i, &before) in receivers.iter().zip(&rejected_before) {
        let now = rejected(&lab, i);
        assert!(
            now >= before + 3.0,
            "p{i} counted {} rejected datagrams for the 3 forged acks (waited: {waited:?})\n{}",
            now - before,
            lab.metrics(i).unwrap_or_default()
        );
    }
    for &i in &receivers {
        assert_eq!(
            lab.vip_believed_holder(i).unwrap(),
            Some(name(holder)),
            "p{i}\n{}",
            lab.vip_view()
        );
        if i != holder {
            assert_routes_to(&lab, i, holder);
        }
    }
    assert_sole_holder_for(&lab, holder, Duration::from_secs(1));
    assert_eq!(
        lab.vip_role(last).unwrap().as_deref(),
        Some("standby"),
        "{}",
        lab.vip_view()
    );
    assert_reports_accepted(&lab, &receivers, &log_offsets, sent_ms);
    probe.stop();
    let report = probe.finish().unwrap();
    assert_eq!(
        report.answer_sequence(),
        [name(holder).as_str()],
        "p{OBSERVER}'s traffic to the VIP left the holder: {report}"
    );
    assert!(
        report.answered * 10 >= report.sent * 9,
        "p{OBSERVER}'s traffic to the VIP was lost: {report}"
    );

    // Failover still works: the holder's node dies, the next candidate takes over and answers.
    let next = next_candidate(&[holder]);
    lab.kill_node(holder).unwrap();
    let took = wait_holder(&lab, next, Duration::from_secs(10));
    eprintln!("p{next} holds the VIP {took:?} after p{holder}'s node died");
    assert_eq!(lab.holders().unwrap(), [next], "{}", lab.vip_view());
    assert_routes_to(&lab, OBSERVER, next);
    assert_answered_by(&lab, OBSERVER, next);
}

#[test]
fn a_candidates_claim_with_another_rank_is_refused() {
    let mut lab = vip_lab("fr");
    let holder = settled(&lab, Duration::from_secs(10));
    let liar = *CANDIDATES.last().unwrap();
    assert_ne!(liar, holder, "the last candidate holds the VIP\n{}", lab.vip_view());
    let term = lab.vip_epoch_term(holder).unwrap().expect("the holder's term");
    lab.kill_sdwand(liar).unwrap();
    let receivers: Vec<usize> = (1..=VIP_PEERS).filter(|&i| i != liar).collect();
    let terms: Vec<Option<u64>> = receivers.iter().map(|&i| lab.vip_epoch_term(i).unwrap()).collect();
    let rejected_before: Vec<f64> = receivers.iter().map(|&i| rejected(&lab, i)).collect();

    // Rank 0 at the holder's term beats the holder's own claim when the liar's address sorts higher; at
    // term + 1 it beats the rank-1 candidate's legitimate claim of the same round.
    let me = Layout::overlay_addr(liar);
    let incarnation = fresh_incarnation();
    let claim = |seq: u64, term: u64| {
        let body = Body::Claim {
            epoch: Epoch { term, rank: 0 },
            confirmed: 0,
            peers: (VIP_PEERS - 1) as u16,
        };
        datagram(VIP_ADDR, me, incarnation, seq, body)
    };
    let to: Vec<SocketAddr> = receivers.iter().map(|&i| lab.failover_addr(i).unwrap()).collect();
    let from = lab.failover_addr(liar).unwrap();
    lab.send_crafted(
        liar,
        from,
        &to,
        &[claim(1, term), claim(2, term + 1)],
        SendOptions::ROOT,
    )
    .unwrap();

    let waited = sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        receivers
            .iter()
            .zip(&rejected_before)
            .zip(&terms)
            .all(|((&i, &b), t)| rejected(&lab, i) >= b + 2.0 || lab.vip_epoch_term(i).ok().flatten() != *t)
    });
    let after: Vec<Option<u64>> = receivers.iter().map(|&i| lab.vip_epoch_term(i).unwrap()).collect();
    assert_eq!(after, terms, "a term moved\n{}", lab.vip_view());
    for (&i, &before) in receivers.iter().zip(&rejected_before) {
        let now = rejected(&lab, i);
        assert!(
            now >= before + 2.0,
            "p{i} counted {} rejected datagrams for the 2 wrong-rank claims (waited: {waited:?})",
            now - before
        );
        assert_eq!(
            lab.vip_believed_holder(i).unwrap(),
            Some(name(holder)),
            "p{i}\n{}",
            lab.vip_view()
        );
    }
    assert_sole_holder_for(&lab, holder, Duration::from_millis(500));
    assert_answered_by(&lab, OBSERVER, holder);
}
