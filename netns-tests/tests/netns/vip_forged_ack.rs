//! P1 + P2 (security review §9.A, finding C1): a follower forges Acks naming itself as the holder, one at
//! the current term + 1 and one at term 2⁶⁴−1, to every other member. They come from the follower's own
//! address and failover port, through WireGuard, so they pass every transport check and meet the protocol's
//! own rules: only a candidate, at its own rank, can be the holder. Nothing may move: the holder stays, every
//! node keeps routing the VIP to it (an observer's probe is answered by the holder alone, nothing lost), no
//! term goes above T + 1, every node counts both datagrams as rejected;
//! and when the holder's node then dies, the next candidate takes over as usual (a saturated term would
//! freeze the VIP on the dead node).

use std::net::SocketAddr;
use std::time::Duration;

use sdwan_lab::forge::{datagram, fresh_incarnation};
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::metrics::sum;
use sdwan_lab::{Lab, Layout, ProbeOptions, SendOptions};
use sdwand::vip::{Body, Claim, Epoch};

use crate::common::{
    allowed, assert_answered_by, assert_sole_holder_for, entry, name, next_candidate, settled, vip_lab, wait_holder,
    POLL, VIP_PEERS,
};

/// The follower that forges (its daemon is killed to free its failover port).
const FORGER: usize = 5;
/// The follower whose probe shows where the VIP's traffic lands.
const OBSERVER: usize = 4;

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
    let forged_ack = |seq: u64, term: u64| {
        let view = Claim {
            epoch: Epoch { term, rank: 0 },
            holder: me,
        };
        datagram(VIP_ADDR, me, incarnation, seq, Body::Ack { view })
    };
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
    lab.send_crafted(
        FORGER,
        from,
        &to,
        &[forged_ack(1, term + 1), forged_ack(2, u64::MAX)],
        SendOptions::ROOT,
    )
    .unwrap();

    // Processed: counted as rejected, or (the defect) learned, which shows as a term above T.
    let handled = |i: usize, before: f64| {
        rejected(&lab, i) >= before + 2.0 || lab.vip_epoch_term(i).ok().flatten().is_some_and(|t| t > term)
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
            now >= before + 2.0,
            "p{i} counted {} rejected datagrams for the 2 forged acks (waited: {waited:?})\n{}",
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
