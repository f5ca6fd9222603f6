//! P13 (security review §9.A, finding M13): the holder's node dies while another candidate keeps telling the
//! successor, every 25 ms, that it heard the holder 0 ms ago. Indirect liveness must not keep a holder that
//! the successor has stopped hearing itself alive for ever: the successor takes over within a bounded
//! time, lie or not.

use std::time::Duration;

use sdwan_lab::forge::{datagram, fresh_incarnation};
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::Layout;
use sdwand::vip::{Body, Claim, Epoch, Heartbeat, PeerState};

use crate::common::{next_candidate, settled, vip_lab, wait_holder, CANDIDATES};

/// How often the liar reports the dead holder as just heard.
const LIE_EVERY: Duration = Duration::from_millis(25);
/// How long the successor may take: the lab's dead time (200 ms) a few times over, plus the claim.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5);

#[test]
fn a_lie_about_a_dead_holder_delays_the_takeover_only_boundedly() {
    let mut lab = vip_lab("ll");
    let holder = settled(&lab, Duration::from_secs(10));
    let successor = next_candidate(&[holder]);
    let liar = *CANDIDATES
        .iter()
        .rev()
        .find(|&&c| c != holder && c != successor)
        .unwrap();
    let term = lab.vip_epoch_term(holder).unwrap().expect("the holder's term");
    // The liar's daemon dies so its failover port can carry the lies.
    lab.kill_sdwand(liar).unwrap();
    let (me, held) = (Layout::overlay_addr(liar), Layout::overlay_addr(holder));
    let incarnation = fresh_incarnation();
    let view = Claim {
        epoch: Epoch {
            term,
            rank: (holder - 1) as u16,
        },
        holder: held,
    };
    let lie = move |n: u64| {
        let hb = Heartbeat {
            state: PeerState::Standby,
            healthy: true,
            interval_ms: LIE_EVERY.as_millis() as u16,
            view: Some(view),
            sent_at_us: (n + 1) * LIE_EVERY.as_micros() as u64,
            echo_at_us: 0,
            echo_held_us: 0,
            liveness: vec![(held, 0), (Layout::overlay_addr(successor), 0)],
            vote: None,
        };
        datagram(VIP_ADDR, me, incarnation, n + 1, Body::Heartbeat(hb))
    };
    let from = lab.failover_addr(liar).unwrap();
    let to = lab.failover_addr(successor).unwrap();
    let stream = lab
        .stream_crafted(liar, from, to, LIE_EVERY, TAKEOVER_BOUND * 3, lie)
        .unwrap();

    lab.kill_node(holder).unwrap();
    let took = wait_holder(&lab, successor, TAKEOVER_BOUND);
    let sent = stream.stop().unwrap();
    eprintln!("p{successor} took over {took:?} after p{holder}'s node died, despite {sent} lies from p{liar}");
    assert!(sent > 0, "the liar sent nothing");
}
