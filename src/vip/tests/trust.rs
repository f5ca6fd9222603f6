//! Who may say what (see "Trust model" in `docs/protocol.md`): forged acks and handovers from followers
//! (review C1), wrong ranks and huge terms from candidates (M13), the term bounds, the cap on indirect
//! liveness, and what a membership update does to ranks and replay windows.

use std::net::Ipv6Addr;

use super::super::*;
use super::cluster::{addr, ms, timers, Cluster};
use super::faults::{heartbeat, msg};

fn claim(term: u64, rank: u16, holder: Ipv6Addr) -> Claim {
    Claim {
        epoch: Epoch { term, rank },
        holder,
    }
}

fn ack(from: usize, seq: u64, view: Claim) -> Message {
    msg(from, 1 << 40, seq, Body::Ack { view })
}

/// Every running node still routes by `want`, and node 0 holds it with the only address.
fn assert_untouched(c: &Cluster, want: Option<Claim>) {
    for i in 0..c.nodes.len() {
        assert_eq!(c.m(i).claim(), want, "node {i}'s claim");
        assert_eq!(c.nodes[i].route, Some(addr(0)), "node {i}'s route");
        assert_eq!(c.nodes[i].has_addr, i == 0, "node {i}'s address");
    }
    assert_eq!(c.m(0).role(), PeerState::Holding);
}

#[test]
fn a_followers_forged_acks_move_nothing() {
    // Review C1: one ack from a follower naming itself at term u64::MAX re-routed the VIP on every node
    // and saturated the term, so the VIP could never fail over again.
    let mut c = Cluster::booted(3, 2, timers());
    let held = c.m(0).claim();
    let t = c.elapsed();
    let forged = [
        (claim(u64::MAX, 0, addr(4)), "not_candidate"),
        (claim(2, 0, addr(4)), "not_candidate"),
        (claim(2, 0, addr(1)), "bad_rank"),
        (
            claim(MAX_TERM, 0, Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xfff0)),
            "not_candidate",
        ),
        (claim(MAX_TERM + 1, 1, addr(1)), "bad_term"),
        (claim(CATCH_UP_TERM, 1, addr(1)), "bad_term"),
    ];
    for (seq, (view, why)) in forged.iter().enumerate() {
        for i in 0..4 {
            let before = c.rejected(i, why);
            c.inject(i, ack(4, seq as u64 + 1, *view));
            assert_eq!(c.rejected(i, why), before + 1, "node {i}, {view:?}");
        }
        assert_untouched(&c, held);
    }
    // A forged handover after the forged ack does not make a standby claim (review P5).
    c.inject(
        2,
        msg(
            4,
            1 << 40,
            100,
            Body::Handover {
                epoch: Epoch { term: 2, rank: 0 },
                reason: HandoverReason::Manual,
            },
        ),
    );
    assert_eq!(c.rejected(2, "not_candidate"), 4);
    c.run(ms(1_000));
    assert!(c.claims_since(t).is_empty());
    assert_untouched(&c, held);
    // The term is not saturated: the VIP still fails over, at the next term.
    c.kill(0);
    c.run(ms(500));
    assert_eq!(
        c.claims().last().map(|r| (r.1, r.3)),
        Some((1, Epoch { term: 2, rank: 1 }))
    );
    c.assert_converged(1);
}

#[test]
fn a_followers_valid_higher_report_only_renews_the_holders_claim() {
    // A well-formed claim of a live standby candidate, relayed by a follower: nobody routes to that
    // candidate; the holder renews its own claim above it (at most once per interval).
    let mut c = Cluster::booted(3, 1, timers());
    let t = c.elapsed();
    for seq in 1..=3 {
        c.inject(0, ack(3, seq, claim(5, 1, addr(1))));
    }
    assert_eq!(c.claims_since(t), vec![(0, ClaimReason::Renew)]);
    assert_eq!(c.m(0).claim(), Some(claim(6, 0, addr(0))));
    c.run(ms(500));
    c.assert_converged(0);
    assert!(!c.actions(0, t).contains(&&Action::RemoveAddress));
}

#[test]
fn a_candidate_claims_only_with_its_own_rank() {
    // Review M13 / P12: rank 2 claims with rank 0 at the holder's term (which would beat it when rank 2's
    // address sorts higher), and with rank 0 one term up.
    let mut c = Cluster::booted(3, 1, timers());
    let held = c.m(0).claim();
    for (seq, term) in [(1, 1), (2, 2)] {
        for i in [0, 1, 3] {
            c.inject(
                i,
                msg(
                    2,
                    1 << 40,
                    seq,
                    Body::Claim {
                        epoch: Epoch { term, rank: 0 },
                        confirmed: 0,
                        peers: 3,
                    },
                ),
            );
            assert_eq!(c.rejected(i, "bad_rank"), seq as usize, "node {i}");
        }
    }
    c.run(ms(100));
    assert_untouched(&c, held);
}

fn own_claim(from: usize, seq: u64, term: u64, rank: u16) -> Message {
    msg(
        from,
        1 << 40,
        seq,
        Body::Claim {
            epoch: Epoch { term, rank },
            confirmed: 0,
            peers: 3,
        },
    )
}

#[test]
fn a_candidates_own_claim_cannot_exhaust_the_terms() {
    // A rogue candidate claims for itself at MAX_TERM: were it learned, no node could ever claim again.
    // Each refusal lifts the node's terms to its bound (CATCH_UP_TERM at first, then a step at a time),
    // never further, and moves nothing.
    let mut c = Cluster::booted(3, 1, timers());
    let held = c.m(0).claim();
    for i in [0, 1, 3] {
        c.inject(i, own_claim(2, 1, MAX_TERM + 1, 2));
        c.inject(i, own_claim(2, 2, MAX_TERM, 2));
        c.inject(i, own_claim(2, 3, MAX_TERM, 2));
        assert_eq!(c.rejected(i, "bad_term"), 3, "node {i}");
    }
    assert_untouched(&c, held);
    c.run(ms(500));
    c.assert_converged(0);
    // Failover still works, right above the terms the refusals reached.
    c.kill(0);
    c.run(ms(500));
    c.assert_converged(1);
    assert_eq!(
        c.m(1).claim().map(|c| c.epoch.term),
        Some(CATCH_UP_TERM + MAX_TERM_STEP + 1)
    );
}

#[test]
fn a_candidates_jump_is_taken_up_to_the_catch_up_term() {
    // A restarted node must catch up with a holder far ahead in one message; a rogue's jump that far
    // still leaves half of the term space. Its own machine learns the claim it never made, says it does
    // not hold it, and rank 0 claims above it.
    let mut c = Cluster::booted(3, 1, timers());
    for i in [0, 1, 3] {
        c.inject(i, own_claim(2, 1, CATCH_UP_TERM, 2));
        assert_eq!(c.nodes[i].route, Some(addr(2)), "node {i} takes the jump");
    }
    c.run(ms(500));
    c.assert_converged(0);
    assert_eq!(c.m(0).claim().map(|c| c.epoch.term), Some(CATCH_UP_TERM + 1));
}

#[test]
fn another_candidates_claim_does_not_end_a_drain() {
    // Review M13: rank 2 announces a confirmed claim with rank 1's rank while rank 0 drains towards rank 1.
    let mut c = Cluster::booted(3, 1, timers());
    c.cut[3] = true; // the follower never confirms: the drain lasts
    c.with(0, |m, now| m.request_move(now, Some(addr(1)))).expect("move");
    c.run(ms(50));
    assert_eq!(c.m(0).role(), PeerState::Draining);
    let succ = c.m(0).claim().expect("the successor's claim");
    c.inject(
        0,
        msg(
            2,
            1 << 40,
            1,
            Body::Claim {
                epoch: Epoch {
                    term: succ.epoch.term,
                    rank: 0,
                },
                confirmed: 3,
                peers: 3,
            },
        ),
    );
    assert_eq!(c.rejected(0, "bad_rank"), 1);
    assert_eq!(c.m(0).role(), PeerState::Draining);
    assert!(c.nodes[0].has_addr);
    assert_eq!(c.m(0).claim(), Some(succ));
}

#[test]
fn relayed_views_are_bounded_but_a_restarted_node_catches_up() {
    // A candidate's heartbeat view naming another candidate above CATCH_UP_TERM, far above the terms
    // seen, is refused...
    let mut c = Cluster::booted(3, 1, timers());
    let held = c.m(0).claim();
    let far = claim(CATCH_UP_TERM + 1, 0, addr(0));
    c.inject(1, msg(2, 1 << 40, 1, heartbeat(PeerState::Standby, Some(far))));
    assert_eq!(c.rejected(1, "bad_term"), 1);
    c.inject(
        3,
        msg(
            2,
            1 << 40,
            1,
            heartbeat(PeerState::Standby, Some(claim(MAX_TERM + 1, 2, addr(2)))),
        ),
    );
    assert_eq!(c.rejected(3, "bad_term"), 1, "never above MAX_TERM, from anyone");
    c.run(ms(100));
    assert_untouched(&c, held);

    // ...but a node that starts with no floor catches up with a holder whose own claim is far above it
    // (a static configuration, no registry: terms survive only in the running daemons).
    let mut c = Cluster::new(3, 1, timers());
    assert!(c.with(0, |m, _| m.raise_term(99_999)));
    c.run(timers().listen() + ms(200));
    c.assert_converged(0);
    assert_eq!(c.m(0).claim().map(|c| c.epoch.term), Some(100_000));
    c.kill(1);
    c.run(ms(100));
    c.start(1, Adopt::Nothing, true);
    c.run(timers().listen() + ms(200));
    c.assert_converged(0);
    // and fails over above it.
    c.kill(0);
    c.run(ms(500));
    c.assert_converged(1);
    assert_eq!(c.m(1).claim().map(|c| c.epoch), Some(Epoch { term: 100_001, rank: 1 }));
}

#[test]
fn terms_never_pass_max_term() {
    let mut c = Cluster::new(1, 1, timers());
    assert!(
        !c.with(0, |m, _| m.raise_term(MAX_TERM + 1)),
        "a floor above MAX_TERM is refused"
    );
    assert!(!c.with(0, |m, _| m.raise_term(u64::MAX)));
    assert!(c.with(0, |m, _| m.raise_term(MAX_TERM - 1)));
    c.run(timers().listen() + ms(100));
    assert_eq!(c.m(0).claim().map(|c| c.epoch.term), Some(MAX_TERM));
    // The holder restarts (its claim is lost with the daemon): the claim rule picks it again, but there is
    // no term left. It says so once and does not claim.
    c.kill(0);
    c.start(0, Adopt::Nothing, true);
    assert!(c.with(0, |m, _| m.raise_term(MAX_TERM)));
    let t = c.elapsed();
    c.run(ms(3_000));
    assert!(c.claims_since(t).is_empty());
    let exhausted = c
        .actions(0, t)
        .into_iter()
        .filter(|a| matches!(a, Action::Note(Note::TermExhausted { term: MAX_TERM })))
        .count();
    assert_eq!(exhausted, 1);
    assert!(!c.nodes[0].has_addr);
}

#[test]
fn a_candidate_lying_about_a_dead_holder_delays_failover_by_at_most_a_dead_time() {
    // Review P13: rank 0 dies; rank 2 keeps reporting "I heard rank 0 just now" to rank 1 every 25 ms.
    let mut c = Cluster::booted(3, 0, timers());
    c.crash(2); // only the lies below speak for it
    let dead = timers().dead_time(timers().interval);
    let t = c.elapsed();
    c.kill(0);
    let lie = |seq| {
        let Body::Heartbeat(mut hb) = heartbeat(PeerState::Standby, None) else {
            unreachable!()
        };
        hb.liveness = vec![(addr(0), 0)];
        msg(2, 1 << 40, seq, Body::Heartbeat(hb))
    };
    let mut seq = 0;
    while c.claims_since(t).is_empty() && c.elapsed() < t + 4 * dead {
        seq += 1;
        c.inject(1, lie(seq));
        c.run(ms(25));
    }
    let claims: Vec<_> = c.claims().into_iter().filter(|r| r.0 >= t).collect();
    assert_eq!(claims.len(), 1, "rank 1 claims despite the lie");
    assert_eq!((claims[0].1, claims[0].2), (1, ClaimReason::HolderDead));
    let after = claims[0].0 - t;
    assert!(after >= dead && after <= 2 * dead + ms(30), "claimed after {after:?}");
}

#[test]
fn a_rank_change_renews_the_holders_claim() {
    let mut c = Cluster::booted(3, 1, timers());
    let t = c.elapsed();
    // Rank 0 moves to rank 1: candidates [1, 0, 2] on every node.
    for i in 0..4 {
        let mut p = c.m(i).params().clone();
        p.candidates = vec![addr(1), addr(0), addr(2)];
        c.with(i, |m, now| m.handle_local(now, LocalEvent::Update(p)));
    }
    assert_eq!(c.claims_since(t), vec![(0, ClaimReason::Renew)]);
    assert_eq!(c.m(0).claim(), Some(claim(2, 1, addr(0))));
    c.run(ms(500));
    c.assert_converged(0);
    assert!(c.claims_since(t).len() == 1);
}

#[test]
fn a_member_that_leaves_and_returns_starts_a_new_window() {
    // Review L11: the windows of members that left are pruned on an update.
    let mut c = Cluster::booted(2, 2, timers());
    let held = c.m(0).claim().expect("claim");
    c.inject(0, ack(3, 1_000, held));
    let params = c.m(0).params().clone();
    let mut without = params.clone();
    without.peers.retain(|p| *p != addr(3));
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Update(without)));
    c.with(0, |m, now| m.handle_local(now, LocalEvent::Update(params)));
    c.inject(0, msg(3, 1, 1, Body::Ack { view: held }));
    assert_eq!(c.rejected(0, "stale"), 0, "a new window for the returning member");
}

#[test]
fn a_candidate_restarted_with_an_old_incarnation_is_heard_after_the_listen_time() {
    // Review M6: node 1 restarts with the incarnation it had (its clock went back and its incarnation
    // file was lost), so its sequence numbers start over far behind what the others saw.
    let mut c = Cluster::booted(2, 0, timers());
    c.run(ms(5_000));
    c.crash(1);
    c.nodes[1].incarnation -= 1;
    c.start(1, Adopt::Nothing, true);
    c.run(timers().listen() + ms(30));
    let now = c.now;
    let last = c.m(0).status(now).candidates[1].last_heard_ms;
    assert!(last.is_some_and(|ms| ms <= 30), "last heard {last:?} ms ago");
    assert!(c.rejected(0, "stale") > 0, "refused while it might be a replay");
}
