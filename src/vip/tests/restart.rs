//! Restarting the holder's daemon (issue 13): a candidate that adopted the VIP address keeps it through
//! listening and claims at once when listening ends if no live holder was heard, so the VIP never goes
//! down; a claim made by a rival while it was down still wins; an assumed-healthy start falls like any
//! other once its check fails `fall` times.

use super::super::health::Hysteresis;
use super::super::*;
use super::cluster::{addr, ms, timers, Cluster};

/// A booted cluster of `candidates` and `followers` whose candidates other than rank 0 have died, then
/// rank 0's daemon stops (SIGTERM: no successor, so it stops at once and keeps the address).
fn sole_holder_stopped(candidates: usize, followers: usize) -> Cluster {
    let mut c = Cluster::booted(candidates, followers, timers());
    for i in 1..candidates {
        c.kill(i);
    }
    c.run(ms(500));
    c.assert_converged(0);
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Shutdown));
    assert!(c.actions(0, c.elapsed()).contains(&&Action::Stopped));
    assert!(c.nodes[0].has_addr, "a stop without a successor keeps the address");
    c.crash(0);
    c
}

/// Runs the cluster for `d` in 5 ms steps, asserting that node `h` has the address and every running
/// follower routes the VIP to it at each step.
fn run_serving(c: &mut Cluster, h: usize, d: std::time::Duration) {
    let end = c.elapsed() + d;
    while c.elapsed() < end {
        c.run(ms(5));
        assert!(c.nodes[h].has_addr, "node {h} lost the address at {:?}", c.elapsed());
        for i in c.candidates..c.nodes.len() {
            assert_eq!(c.nodes[i].route, Some(addr(h)), "follower {i} at {:?}", c.elapsed());
        }
    }
}

#[test]
fn a_restarted_sole_holder_keeps_the_address_and_claims_when_listening_ends() {
    let mut c = sole_holder_stopped(3, 2);
    let t = c.elapsed();
    c.run(ms(50));
    c.start(0, Adopt::HeldHere, true);
    let listen = timers().listen();
    run_serving(&mut c, 0, listen - ms(5));
    assert_eq!(c.m(0).role(), PeerState::Listening, "still listening");
    assert!(c.claims_since(t).is_empty(), "no claim while listening");
    run_serving(&mut c, 0, ms(10));
    assert_eq!(c.m(0).role(), PeerState::Holding, "claimed as listening ended");
    assert_eq!(c.claims_since(t).first(), Some(&(0, ClaimReason::Restart)));
    run_serving(&mut c, 0, ms(3_000));
    assert!(
        !c.actions(0, t).contains(&&Action::RemoveAddress),
        "the address never left"
    );
    c.assert_converged(0);
}

#[test]
fn a_restarted_holder_drops_the_address_on_hearing_a_rival_that_claimed_meanwhile() {
    let mut c = Cluster::booted(2, 1, timers());
    let t = c.elapsed();
    c.crash(0);
    c.run(ms(500));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    assert!(c.nodes[0].has_addr);
    c.start(0, Adopt::HeldHere, true);
    // The rival's next heartbeat (every half interval) names its higher claim.
    c.run(timers().interval / 2 + ms(2));
    assert!(!c.nodes[0].has_addr, "dropped on hearing the higher claim");
    assert_eq!(c.m(0).role(), PeerState::Listening);
    c.run(ms(3_000));
    assert_eq!(
        c.claims_since(t),
        vec![(1, ClaimReason::HolderDead)],
        "no restart claim"
    );
    c.assert_converged(1);
}

#[test]
fn a_rival_claim_made_while_the_holder_was_down_wins_even_when_that_rival_is_gone() {
    // Rank 1 claims while rank 0's daemon is down, then dies; rank 0 restarts knowing no term (no registry
    // floor) and claims below rank 1's claim. The follower still routes by rank 1's claim, so its ack makes
    // rank 0 renew above it: every node ends up on one claim above everything that was claimed.
    let mut c = Cluster::booted(2, 1, timers());
    c.crash(0);
    c.run(ms(500));
    let rival = c.m(1).claim().expect("rank 1 claimed");
    c.kill(1);
    c.run(ms(50));
    let t = c.elapsed();
    c.start(0, Adopt::HeldHere, true);
    c.run(timers().listen() + ms(500));
    assert!(
        !c.actions(0, t).contains(&&Action::RemoveAddress),
        "the address never left"
    );
    let claims: Vec<ClaimReason> = c.claims().iter().filter(|k| k.1 == 0).skip(1).map(|k| k.2).collect();
    assert_eq!(claims, vec![ClaimReason::Restart, ClaimReason::Renew]);
    assert!(c.m(0).claim().is_some_and(|k| k.epoch.term > rival.epoch.term));
    c.assert_converged(0);
}

#[test]
fn an_assumed_healthy_restart_steps_down_normally_once_its_check_fails_fall_times() {
    let mut c = sole_holder_stopped(2, 1);
    let t = c.elapsed();
    c.start(0, Adopt::HeldHere, true);
    let mut check = Hysteresis::starting(2, 3, true);
    run_serving(&mut c, 0, timers().listen() + ms(50));
    assert_eq!(c.claims_since(t), vec![(0, ClaimReason::Restart)]);
    // A failing check with no other candidate: the unhealthy holder keeps the VIP.
    assert_eq!(check.record(false), None);
    assert_eq!(check.record(false), None);
    let fell = check.record(false).expect("unhealthy after `fall` failures");
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Health(fell)));
    run_serving(&mut c, 0, ms(200));
    assert_eq!(c.m(0).role(), PeerState::Holding);
    // Rank 1 comes back: the unhealthy holder hands over to it, drains, and ends standby.
    c.start(1, Adopt::Nothing, true);
    c.run(timers().listen() + ms(3_000));
    assert_eq!(
        c.claims_since(t),
        vec![
            (0, ClaimReason::Restart),
            (1, ClaimReason::Handover(HandoverReason::Health))
        ]
    );
    assert_eq!(c.m(0).role(), PeerState::Standby);
    c.assert_converged(1);
}

#[test]
fn an_unhealthy_restart_drops_the_address_when_listening_ends() {
    // Without the assumption (the driver passed "unhealthy"), the claim rule does not pick the node.
    let mut c = sole_holder_stopped(2, 1);
    let t = c.elapsed();
    c.start(0, Adopt::HeldHere, false);
    c.run(timers().listen() + ms(10));
    assert_eq!(c.m(0).role(), PeerState::Standby);
    assert!(!c.nodes[0].has_addr);
    assert!(c.claims_since(t).is_empty());
}
