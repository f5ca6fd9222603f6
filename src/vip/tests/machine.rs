//! The state machine in normal operation: the initial claim, failover, the claim rule, handovers,
//! shutdown, manual moves, preemption and health.

use super::super::*;
use super::cluster::{addr, ms, timers, Cluster};

const MANUAL: ClaimReason = ClaimReason::Handover(HandoverReason::Manual);

#[test]
fn rank0_claims_once_after_listening() {
    let mut c = Cluster::new(3, 2, timers());
    c.run(timers().listen() - ms(1));
    assert!(c.claims().is_empty(), "nobody claims while listening");
    assert_eq!(c.m(0).role(), PeerState::Listening);
    c.run(ms(100));
    let claims = c.claims();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!((claims[0].1, claims[0].2), (0, ClaimReason::Initial));
    assert_eq!(claims[0].3, Epoch { term: 1, rank: 0 });
    assert_eq!(claims[0].0, timers().listen());
    c.assert_converged(0);
    assert!(c
        .actions(0, ms(0))
        .iter()
        .any(|a| matches!(a, Action::Note(Note::Confirmed { .. }))));
    assert_eq!(c.m(0).status(c.now).confirmed, Some((4, 4)));
    assert_eq!(c.m(3).role(), PeerState::Follower);
}

#[test]
fn next_candidate_claims_when_the_holder_goes_silent() {
    let mut c = Cluster::booted(3, 1, timers());
    let t = c.elapsed();
    c.kill(0);
    c.run(ms(150));
    assert!(c.claims_since(t).is_empty(), "still within the dead time");
    c.run(ms(100));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    let (at, _, _, epoch) = c.claims()[1];
    assert_eq!(epoch, Epoch { term: 2, rank: 1 });
    let dead = timers().dead_time(timers().interval);
    assert!(
        at - t <= dead + ms(5) && at - t >= dead - timers().interval,
        "{:?}",
        at - t
    );
    c.run(ms(2_000));
    assert_eq!(c.claims_since(t).len(), 1, "rank 2 never claims while rank 1 lives");
    c.assert_converged(1);
}

#[test]
fn no_claim_while_a_higher_ranked_healthy_candidate_lives() {
    // A manual move to the lowest rank: the candidates above it see its claim before its next heartbeat
    // (which still said "standby") and must not take that as "the holder is gone".
    let mut c = Cluster::booted(3, 1, timers());
    let t = c.elapsed();
    assert_eq!(c.with(0, |m, now| m.request_move(now, Some(addr(2)))), Ok(addr(2)));
    c.run(ms(3_000));
    assert_eq!(c.claims_since(t), vec![(2, MANUAL)]);
    c.assert_converged(2);
    // Rank 2 dies: rank 0 claims, rank 1 (below a live rank 0) does not.
    let t = c.elapsed();
    c.kill(2);
    c.run(ms(1_000));
    assert_eq!(c.claims_since(t), vec![(0, ClaimReason::HolderDead)]);
    c.assert_converged(0);
}

#[test]
fn a_higher_claim_makes_the_holder_step_down() {
    let mut c = Cluster::booted(2, 2, timers());
    let t = c.elapsed();
    c.cut[0] = true;
    c.run(ms(500));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    assert_eq!(
        c.m(0).role(),
        PeerState::Holding,
        "the cut-off holder does not know yet"
    );
    c.cut[0] = false;
    c.run(ms(100));
    assert_eq!(c.m(0).role(), PeerState::Standby);
    assert!(c.actions(0, t).contains(&&Action::RemoveAddress));
    c.run(ms(2_500));
    assert_eq!(c.claims_since(t).len(), 1);
    c.assert_converged(1);
}

#[test]
fn handover_drains_until_the_successor_is_confirmed() {
    let mut c = Cluster::booted(3, 2, timers());
    let t = c.elapsed();
    assert_eq!(c.with(0, |m, now| m.request_move(now, None)), Ok(addr(1)));
    c.run(ms(2));
    assert_eq!(c.claims_since(t), vec![(1, MANUAL)]);
    c.run(ms(1));
    assert_eq!(c.m(0).role(), PeerState::Draining);
    assert!(
        c.nodes[0].has_addr && c.nodes[1].has_addr,
        "both serve while the claim spreads"
    );
    c.run(ms(20));
    assert_eq!(c.m(0).role(), PeerState::Standby);
    c.assert_converged(1);
    let confirmed = c
        .log
        .iter()
        .position(|(_, i, a)| *i == 1 && matches!(a, Action::Note(Note::Confirmed { .. })));
    let removed = c
        .log
        .iter()
        .position(|(_, i, a)| *i == 0 && *a == Action::RemoveAddress);
    assert!(
        confirmed < removed,
        "the old holder releases only after the confirmation"
    );
}

#[test]
fn drain_ends_at_the_timeout_when_a_peer_never_acknowledges() {
    let mut c = Cluster::booted(2, 2, timers());
    c.kill(3);
    let t = c.elapsed();
    assert_eq!(c.with(0, |m, now| m.request_move(now, None)), Ok(addr(1)));
    c.run(timers().drain_timeout() - ms(10));
    assert_eq!(c.m(0).role(), PeerState::Draining);
    c.run(ms(20));
    assert_eq!(c.m(0).role(), PeerState::Standby);
    assert!(!c.nodes[0].has_addr);
    assert_eq!(c.claims_since(t), vec![(1, MANUAL)]);
}

#[test]
fn shutdown_hands_over_then_stops() {
    let mut c = Cluster::booted(2, 1, timers());
    let t = c.elapsed();
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Shutdown));
    c.run(ms(100));
    assert_eq!(
        c.claims_since(t),
        vec![(1, ClaimReason::Handover(HandoverReason::Shutdown))]
    );
    let acts = c.actions(0, t);
    assert_eq!(acts.last(), Some(&&Action::Stopped));
    assert!(acts.contains(&&Action::RemoveAddress));
    c.crash(0);
    c.run(ms(1_000));
    assert_eq!(c.claims_since(t).len(), 1);
}

#[test]
fn shutdown_without_a_successor_stops_at_once_and_keeps_the_address() {
    let mut c = Cluster::booted(1, 1, timers());
    let t = c.elapsed();
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Shutdown));
    assert_eq!(c.actions(0, t), vec![&Action::Stopped]);
    // A standby stops at once too.
    let mut c = Cluster::booted(2, 0, timers());
    let t = c.elapsed();
    c.with(1, |m, now| m.handle_local(now, LocalEvent::Shutdown));
    assert_eq!(c.actions(1, t).last(), Some(&&Action::Stopped));
}

#[test]
fn manual_move_errors() {
    let mut c = Cluster::booted(3, 1, timers());
    let mv = |c: &mut Cluster, on: usize, to: Option<usize>| c.with(on, |m, now| m.request_move(now, to.map(addr)));
    assert_eq!(mv(&mut c, 1, Some(2)), Err(MoveError::NotHolder(Some(addr(0)))));
    assert_eq!(mv(&mut c, 0, Some(0)), Err(MoveError::SelfTarget(addr(0))));
    assert_eq!(mv(&mut c, 0, Some(3)), Err(MoveError::NotCandidate(addr(3))));
    c.with(2, |m, now| m.handle_local(now, LocalEvent::Health(false)));
    c.run(ms(50));
    assert_eq!(mv(&mut c, 0, Some(2)), Err(MoveError::NotReady(addr(2))));
    c.cut[3] = true; // no confirmation: rank 0 drains until the drain timeout
    assert_eq!(mv(&mut c, 0, Some(1)), Ok(addr(1)));
    assert_eq!(mv(&mut c, 0, None), Err(MoveError::InProgress(addr(1))));
    c.run(ms(5));
    assert_eq!(c.m(0).role(), PeerState::Draining);
    assert_eq!(mv(&mut c, 0, None), Err(MoveError::NotHolder(Some(addr(1)))));
    assert_eq!(
        mv(&mut c, 1, Some(0)),
        Err(MoveError::NotReady(addr(0))),
        "still draining"
    );
    c.run(ms(100));
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Health(false)));
    c.run(ms(50));
    assert_eq!(mv(&mut c, 1, None), Err(MoveError::NoSuccessor));
    c.kill(2);
    c.run(ms(500));
    assert_eq!(mv(&mut c, 1, Some(2)), Err(MoveError::NotReady(addr(2))), "dead");
}

#[test]
fn without_preemption_a_returning_rank0_stays_standby() {
    let mut c = Cluster::booted(3, 1, timers());
    c.kill(0);
    c.run(ms(500));
    let t = c.elapsed();
    c.start(0, Adopt::Nothing, true);
    c.run(ms(5_000));
    assert!(c.claims_since(t).is_empty());
    assert_eq!(c.m(0).role(), PeerState::Standby);
    c.assert_converged(1);
}

#[test]
fn with_preemption_rank0_takes_the_vip_back_after_the_delay() {
    let delay = ms(1_000);
    let t = Timers {
        preempt: Some(delay),
        ..timers()
    };
    let mut c = Cluster::booted(3, 1, t);
    c.kill(0);
    c.run(ms(500));
    let back = c.elapsed();
    c.start(0, Adopt::Nothing, true);
    c.run(ms(5_000));
    let claims: Vec<_> = c.claims().into_iter().filter(|c| c.0 >= back).collect();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(
        (claims[0].1, claims[0].2),
        (0, ClaimReason::Handover(HandoverReason::Preempt))
    );
    assert!(claims[0].0 >= back + delay, "not before the delay");
    assert!(claims[0].0 <= back + delay + ms(100));
    c.assert_converged(0);
    assert_eq!(c.m(1).role(), PeerState::Standby);
}

#[test]
fn unhealthy_candidates_do_not_claim_and_an_unhealthy_holder_hands_over() {
    let mut c = Cluster::new(2, 1, timers());
    c.start(0, Adopt::Nothing, false);
    c.run(ms(600));
    assert_eq!(
        c.claims_since(ms(0)),
        vec![(1, ClaimReason::Initial)],
        "rank 0 is unhealthy"
    );
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Health(true)));
    c.run(ms(100));
    let t = c.elapsed();
    c.with(1, |m, now| m.handle_local(now, LocalEvent::Health(false)));
    c.run(ms(100));
    assert_eq!(
        c.claims_since(t),
        vec![(0, ClaimReason::Handover(HandoverReason::Health))]
    );
    // Nobody healthy to hand over to: the holder keeps the VIP.
    let t = c.elapsed();
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Health(false)));
    c.run(ms(3_000));
    assert!(c.claims_since(t).is_empty());
    c.assert_converged(0);
    // The holder dies: the unhealthy standby does not claim.
    c.kill(0);
    c.run(ms(1_000));
    assert!(c.claims_since(t).is_empty());
    assert_eq!(c.m(1).role(), PeerState::Standby);
}

/// Moved whole from the end of `machine.rs`: a term floor raised by the registry bounds the next claim.
mod floor_tests {
    use std::net::Ipv6Addr;
    use std::time::{Duration, Instant};

    use crate::vip::{Adopt, Machine, Params};

    #[test]
    fn a_raised_floor_puts_the_next_claim_above_it() {
        let me: Ipv6Addr = "fd00:1::1".parse().expect("addr");
        let params = Params {
            vip: "fd00:1::ffff".parse().expect("vip"),
            me,
            candidates: vec![me],
            peers: vec![],
            timers: crate::vip::Timers {
                interval: Duration::from_millis(50),
                dead_after: 4,
                preempt: None,
            },
            quorum: None,
        };
        let mut now = Instant::now();
        let mut m = Machine::new(params, now, 1, true, Adopt::Nothing);
        m.raise_term(41);
        m.raise_term(7);
        for _ in 0..1000 {
            if m.claim().is_some() {
                break;
            }
            now = m.poll_timeout().expect("a listening candidate has a deadline");
            m.handle_timeout(now);
        }
        assert_eq!(m.claim().map(|c| c.epoch.term), Some(42));
    }
}

/// The outage (and live confirmation) noted with node `i`'s claims since `t`.
fn outages(c: &Cluster, i: usize, t: std::time::Duration) -> Vec<Option<std::time::Duration>> {
    c.actions(i, t)
        .iter()
        .filter_map(|a| match a {
            Action::Note(Note::Claimed { outage, .. }) => Some(*outage),
            _ => None,
        })
        .collect()
}

fn live_confirmations(c: &Cluster, i: usize, t: std::time::Duration) -> Vec<std::time::Duration> {
    c.actions(i, t)
        .iter()
        .filter_map(|a| match a {
            Action::Note(Note::LiveConfirmed { claim_to_confirmed, .. }) => Some(*claim_to_confirmed),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failover_notes_the_outage_from_the_dead_holders_last_heartbeat() {
    let mut c = Cluster::booted(3, 1, timers());
    let t = c.elapsed();
    c.kill(0);
    c.run(ms(400));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    let outage = outages(&c, 1, t)[0].expect("a holder_dead claim notes an outage");
    // Silence since the last heartbeat (sent at most half an interval before the kill) for a dead time.
    let dead = timers().dead_time(timers().interval);
    assert!(outage >= dead && outage <= dead + timers().interval, "{outage:?}");
    // The initial claim replaced no holder.
    assert_eq!(outages(&c, 0, ms(0)), vec![None]);
}

#[test]
fn a_handover_notes_no_outage_and_live_confirmation_skips_dead_candidates() {
    let mut c = Cluster::booted(3, 1, timers());
    let t = c.elapsed();
    assert_eq!(c.with(0, |m, now| m.request_move(now, Some(addr(1)))), Ok(addr(1)));
    c.run(ms(500));
    assert_eq!(outages(&c, 1, t), vec![Some(ms(0))]);
    // Kill the new holder and the old one: rank 2 claims with one live peer left (the follower); it does
    // not wait for the two dead candidates, while the full confirmation never comes.
    let t = c.elapsed();
    c.kill(0);
    c.kill(1);
    c.run(ms(2_000));
    assert_eq!(c.claims_since(t), vec![(2, ClaimReason::HolderDead)]);
    let live = live_confirmations(&c, 2, t);
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0] < ms(50), "{live:?}");
    assert!(
        !c.actions(2, t)
            .iter()
            .any(|a| matches!(a, Action::Note(Note::Confirmed { .. }))),
        "the dead candidates never acknowledge"
    );
}
