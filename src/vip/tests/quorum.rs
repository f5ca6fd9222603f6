//! Quorum mode: claims and holds backed by a majority of votes, the voter's promise, which votes count,
//! the holder's release, handovers and restarts (see "Quorum mode" in `docs/protocol.md`).

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::super::*;
use super::cluster::{addr, ms, timers, Cluster, VIP};
use super::faults::msg;

const MANUAL: ClaimReason = ClaimReason::Handover(HandoverReason::Manual);

/// When node `i` last did `what` (time since the start).
fn last(c: &Cluster, i: usize, what: &Action) -> Option<Duration> {
    c.log.iter().rev().find(|(_, j, a)| *j == i && a == what).map(|l| l.0)
}

fn lease_lost(c: &Cluster, i: usize) -> usize {
    c.actions(i, ms(0))
        .iter()
        .filter(|a| matches!(a, Action::Note(Note::LeaseLost { .. })))
        .count()
}

#[test]
fn two_candidates_and_a_witness_fail_over_within_a_dead_time_and_a_round_trip() {
    let mut c = Cluster::quorum(2, 2, 1, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    let t = c.elapsed();
    c.kill(0);
    c.run(ms(600));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    let took = c.claims()[1].0 - t;
    let d = timers().dead_time(timers().interval);
    assert!(took >= d && took <= d + timers().interval, "{took:?}");
    c.run(ms(2_000));
    assert_eq!(lease_lost(&c, 1), 0, "the new holder keeps its lease");
}

#[test]
fn an_isolated_holder_is_off_the_interface_before_the_majority_claims() {
    let mut c = Cluster::quorum(2, 1, 1, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    let t = c.elapsed();
    c.cut[0] = true;
    c.run(ms(1_000));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    assert_eq!(lease_lost(&c, 0), 1);
    let removed = last(&c, 0, &Action::RemoveAddress).expect("node 0 stepped down");
    let added = last(&c, 1, &Action::AddAddress).expect("node 1 claimed");
    assert!(
        removed < added,
        "removed at {removed:?}, the successor added it at {added:?}"
    );
    assert!(removed - t < timers().vote_lease(), "within a lease of the last votes");
    assert_eq!(c.m(0).role(), PeerState::Standby);
    // It heals: node 1 keeps the VIP, node 0 stands by.
    c.cut[0] = false;
    c.run(ms(2_000));
    c.assert_converged(1);
}

#[test]
fn without_a_majority_nobody_holds() {
    let mut c = Cluster::quorum(3, 1, 0, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    let t = c.elapsed();
    c.kill(1);
    c.kill(2);
    c.run(ms(3_000));
    assert!(c.claims_since(t).is_empty());
    assert_eq!(lease_lost(&c, 0), 1, "one of three voters is no majority");
    assert!(!c.nodes[0].has_addr);
    // Without quorum mode the last candidate keeps it.
    let mut c = Cluster::booted(3, 1, timers());
    c.kill(1);
    c.kill(2);
    c.run(ms(3_000));
    assert!(c.nodes[0].has_addr);
}

#[test]
fn the_minority_side_of_a_partition_never_claims() {
    // Candidates 0, 1, 2 and witnesses 3, 4: node 2 alone on one side, it stays standby.
    let mut c = Cluster::quorum(3, 2, 2, timers());
    c.run(timers().listen() + ms(300));
    let t = c.elapsed();
    for j in [0, 1, 3, 4] {
        c.blocked.push((2, j));
        c.blocked.push((j, 2));
    }
    c.kill(0);
    c.run(ms(2_000));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    assert!(!c.nodes[2].has_addr);
}

/// The machine of node 3, the witness of candidates 0, 1 and 2 (incarnation 1), and when it started.
fn witness() -> (Machine, Instant) {
    let now = Instant::now();
    let params = Params {
        vip: VIP,
        me: addr(3),
        candidates: (0..3).map(addr).collect(),
        peers: [0, 1, 2].map(addr).to_vec(),
        timers: timers(),
        quorum: Some(Quorum {
            witnesses: vec![addr(3)],
        }),
    };
    let m = Machine::new(params, now, 1, true, Adopt::Nothing);
    (m, now)
}

fn beat(from: usize, seq: u64, state: PeerState, healthy: bool, sent_at_us: u64) -> Message {
    msg(
        from,
        1,
        seq,
        Body::Heartbeat(Heartbeat {
            state,
            healthy,
            interval_ms: 50,
            view: None,
            sent_at_us,
            echo_at_us: 0,
            echo_held_us: 0,
            liveness: Vec::new(),
            vote: None,
        }),
    )
}

/// Hands `m` a datagram, dropping what it does in answer.
fn feed(m: &mut Machine, at: Instant, msg: Message) {
    m.handle_datagram(at, msg);
    while m.poll_action().is_some() {}
}

/// Runs `m`'s timers until `until`: the candidates its heartbeats voted for meanwhile.
fn votes(m: &mut Machine, until: Instant) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    while let Some(t) = m.poll_timeout().filter(|t| *t <= until) {
        m.handle_timeout(t);
        while let Some(a) = m.poll_action() {
            if let Action::Send { to, msg } = a {
                if let Body::Heartbeat(Heartbeat { vote: Some(1), .. }) = msg.body {
                    if !out.contains(&to) {
                        out.push(to);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_voter_votes_for_one_candidate_and_keeps_its_promise() {
    let (mut m, t0) = witness();
    let s = timers().vote_promise();
    let mut seq = 0;
    let mut round = |m: &mut Machine, at: Instant, healthy0: bool| {
        for (i, healthy) in [(0, healthy0), (1, true), (2, true)] {
            seq += 1;
            feed(m, at, beat(i, seq, PeerState::Standby, healthy, 1_000 + seq));
        }
    };
    // No vote in the first promise time of a run (a promise of an earlier run may bind it).
    round(&mut m, t0, true);
    assert!(votes(&mut m, t0 + s - ms(1)).is_empty());
    let r = t0 + s;
    round(&mut m, r, true);
    assert_eq!(votes(&mut m, r + ms(30)), vec![addr(0)], "the best-placed live healthy");
    // Rank 0 turns unhealthy: the witness wants rank 1 but is bound until S after the heartbeat its
    // vote for rank 0 echoed.
    round(&mut m, r + ms(31), false);
    assert!(votes(&mut m, r + s - ms(1)).is_empty(), "promised to rank 0");
    round(&mut m, r + s - ms(1), false);
    assert_eq!(votes(&mut m, r + s + ms(30)), vec![addr(1)], "free at r + S");
}

#[test]
fn a_holder_that_says_it_stopped_holding_frees_its_voters() {
    let (mut m, t0) = witness();
    let at = t0 + timers().vote_promise();
    let claim = Claim {
        epoch: Epoch { term: 1, rank: 0 },
        holder: addr(0),
    };
    let hb = |seq, state, healthy| {
        let mut b = beat(0, seq, state, healthy, 500 + seq);
        if let Body::Heartbeat(h) = &mut b.body {
            h.view = Some(claim);
        }
        b
    };
    feed(&mut m, at, hb(1, PeerState::Holding, true));
    feed(&mut m, at, beat(1, 1, PeerState::Standby, true, 7));
    assert_eq!(votes(&mut m, at + ms(30)), vec![addr(0)], "the holder");
    // It steps down and says so (it forgot every vote when it did): the witness may vote at once.
    feed(&mut m, at + ms(31), hb(2, PeerState::Standby, false));
    assert_eq!(votes(&mut m, at + ms(60)), vec![addr(1)]);
    // A holder that still says it holds keeps the votes, healthy or not (it hands over if it can).
    let (mut m, t0) = witness();
    let at = t0 + timers().vote_promise();
    feed(&mut m, at, hb(1, PeerState::Holding, true));
    feed(&mut m, at, beat(1, 1, PeerState::Standby, true, 7));
    assert_eq!(votes(&mut m, at + ms(30)), vec![addr(0)]);
    feed(&mut m, at + ms(31), hb(2, PeerState::Holding, false));
    assert_eq!(votes(&mut m, at + ms(60)), vec![addr(0)]);
}

#[test]
fn only_votes_echoing_a_heartbeat_this_run_sent_count() {
    let mut c = Cluster::quorum(2, 1, 1, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    let forged = |incarnation: u64, echo_at_us: u64, seq: u64| {
        msg(
            2,
            1,
            seq,
            Body::Heartbeat(Heartbeat {
                state: PeerState::Follower,
                healthy: true,
                interval_ms: 50,
                view: None,
                sent_at_us: 1,
                echo_at_us,
                echo_held_us: 0,
                liveness: Vec::new(),
                vote: Some(incarnation),
            }),
        )
    };
    c.inject(0, forged(2, 1_000, 1_000_000));
    c.inject(0, forged(1, 123_457, 1_000_001));
    assert_eq!(
        c.rejected(0, "stale_vote"),
        2,
        "another incarnation; a heartbeat never sent"
    );
    // Without quorum mode a vote counts for nothing.
    let mut c = Cluster::booted(2, 1, timers());
    c.inject(0, forged(1, 1_000, 1_000_000));
    assert_eq!(c.rejected(0, "not_candidate"), 1, "a follower's heartbeat");
}

#[test]
fn a_handover_releases_first_and_goes_to_the_best_placed_ready_candidate() {
    let mut c = Cluster::quorum(3, 1, 0, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    let t = c.elapsed();
    let refused = c.with(0, |m, now| m.request_move(now, Some(addr(2))));
    assert_eq!(refused, Err(MoveError::NotReady(addr(2))), "the voters turn to rank 1");
    assert_eq!(c.with(0, |m, now| m.request_move(now, None)), Ok(addr(1)));
    c.run(ms(500));
    assert_eq!(c.claims_since(t), vec![(1, MANUAL)]);
    let removed = last(&c, 0, &Action::RemoveAddress).expect("released");
    let added = last(&c, 1, &Action::AddAddress).expect("claimed");
    assert!(removed <= added && added - t < ms(100), "{removed:?} {added:?}");
    c.run(ms(2_000));
    c.assert_converged(1);
}

#[test]
fn a_restarted_holder_drops_the_address_it_left() {
    let mut c = Cluster::quorum(2, 1, 1, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    c.crash(0);
    c.start(0, Adopt::HeldHere, true);
    assert!(!c.nodes[0].has_addr, "no lease, no address");
    c.run(ms(3_000));
    c.assert_converged(0);
}

#[test]
fn a_stopping_holder_without_a_successor_takes_the_address_with_it() {
    let mut c = Cluster::quorum(2, 1, 1, timers());
    c.run(timers().listen() + ms(300));
    c.assert_converged(0);
    c.kill(1);
    c.run(ms(400));
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Shutdown));
    assert!(!c.nodes[0].has_addr);
}

#[test]
fn a_witness_heartbeats_the_candidates_and_stops_when_it_is_no_longer_one() {
    let (mut m, t0) = witness();
    let sent = |m: &mut Machine| {
        let mut to = Vec::new();
        while let Some(a) = m.poll_action() {
            if let Action::Send { to: t, msg } = a {
                if let Body::Heartbeat(hb) = msg.body {
                    assert_eq!(hb.state, PeerState::Follower);
                    to.push(t);
                }
            }
        }
        to
    };
    assert_eq!(sent(&mut m), [0, 1, 2].map(addr), "at start");
    let mut params = m.params().clone();
    params.quorum = Some(Quorum::default());
    m.handle_local(t0 + ms(10), LocalEvent::Update(params));
    m.handle_timeout(t0 + ms(100));
    m.handle_timeout(t0 + ms(400));
    assert!(sent(&mut m).is_empty(), "a follower does not heartbeat");
}
