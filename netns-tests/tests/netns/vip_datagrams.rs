//! Bad failover datagrams sent from an observer's namespace to the holder's failover port (through
//! WireGuard, like real ones) are counted under their rejection reason and change nothing: garbage,
//! truncated, wrong version, a sender field that is not the source (a candidate's address sent from the
//! observer), a claim from a non-candidate, an unknown VIP, a replayed and a stale datagram. They leave
//! from the observer's own failover port (its daemon is killed to free it), so they pass the transport's
//! port check and reach the checks under test.

use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sdwan_lab::forge::datagram;
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::{Lab, Layout};
use sdwand::vip::{Body, Claim, Epoch};

use crate::common::{failovers, settled, vip_lab, CANDIDATES, POLL, VIP_PEERS};

/// The observer the datagrams come from.
const FROM: usize = 4;

/// Sends `payloads` from the observer to peer `to`'s failover port and waits until `to`'s rejection counter
/// for `reason` has grown by `grow`.
fn expect_rejected(lab: &Lab, to: usize, reason: &str, payloads: &[Vec<u8>], grow: f64) {
    let before = lab.vip_rejected(to, reason).unwrap();
    let from = lab.failover_addr(FROM).unwrap();
    let dest = lab.failover_addr(to).unwrap();
    lab.send_udp(FROM, from, dest, payloads).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        lab.vip_rejected(to, reason).unwrap_or(0.0) >= before + grow
    })
    .unwrap_or_else(|e| {
        panic!(
            "sdwand_vip_datagrams_rejected_total{{reason={reason:?}}} on p{to} did not grow by {grow} (was {before}, is {}): {e}\n{}",
            lab.vip_rejected(to, reason).unwrap_or(f64::NAN),
            lab.metrics(to).unwrap_or_default()
        )
    });
}

#[test]
fn bad_datagrams_are_counted_and_change_nothing() {
    let mut lab = vip_lab("vd");
    let holder = settled(&lab, Duration::from_secs(10));
    // Free the observer's failover port for the crafted datagrams.
    lab.kill_sdwand(FROM).unwrap();
    let running = || (1..=VIP_PEERS).filter(|&i| i != FROM);
    let terms: Vec<Option<u64>> = running().map(|i| lab.vip_epoch_term(i).unwrap()).collect();
    let before = failovers(&lab, running());
    let me = Layout::overlay_addr(FROM);
    let other_candidate = Layout::overlay_addr(*CANDIDATES.iter().find(|&&c| c != holder).unwrap());
    // Above any incarnation the observer's own daemon (started earlier) had, so the first crafted datagram
    // from it is fresh.
    let incarnation = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    // A claim the holder would have to yield to, were it accepted.
    let huge_claim = Body::Claim {
        epoch: Epoch {
            term: 1_000_000,
            rank: 0,
        },
        confirmed: 0,
        peers: 4,
    };
    // An ack naming the lowest possible claim: harmless when accepted.
    let last = CANDIDATES.len();
    let low_ack = Body::Ack {
        view: Claim {
            epoch: Epoch {
                term: 1,
                rank: (last - 1) as u16,
            },
            holder: Layout::overlay_addr(last),
        },
    };

    expect_rejected(
        &lab,
        holder,
        "bad_magic",
        &[b"garbage! not a failover datagram, just bytes".repeat(2)],
        1.0,
    );
    expect_rejected(&lab, holder, "truncated", &[b"SDWV\x01\x02".to_vec()], 1.0);
    let mut wrong_version = datagram(VIP_ADDR, me, incarnation, 1, low_ack.clone());
    wrong_version[4] = 99;
    expect_rejected(&lab, holder, "bad_version", &[wrong_version], 1.0);
    let forged = datagram(VIP_ADDR, other_candidate, incarnation, 1, huge_claim.clone());
    expect_rejected(&lab, holder, "forged_sender", &[forged], 1.0);
    let unknown: Ipv6Addr = "fd00:5d:f::99".parse().unwrap();
    expect_rejected(
        &lab,
        holder,
        "unknown_vip",
        &[datagram(unknown, me, incarnation, 1, low_ack.clone())],
        1.0,
    );
    let from_follower = datagram(VIP_ADDR, me, incarnation, 2, huge_claim);
    expect_rejected(&lab, holder, "not_candidate", &[from_follower], 1.0);
    let ack = datagram(VIP_ADDR, me, incarnation, 3, low_ack.clone());
    expect_rejected(&lab, holder, "replayed", &[ack.clone(), ack], 1.0);
    let stale = datagram(VIP_ADDR, me, incarnation - 1, 4, low_ack);
    expect_rejected(&lab, holder, "stale", &[stale], 1.0);

    assert_eq!(lab.holders().unwrap(), [holder], "{}", lab.vip_view());
    assert_eq!(lab.vip_settled().unwrap(), Some(holder), "{}", lab.vip_view());
    let after: Vec<Option<u64>> = running().map(|i| lab.vip_epoch_term(i).unwrap()).collect();
    assert_eq!(after, terms, "an epoch changed\n{}", lab.vip_view());
    assert_eq!(failovers(&lab, running()), before, "{}", lab.vip_view());
}
