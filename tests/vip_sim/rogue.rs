//! A misbehaving member: its machine runs like any other, but the world rewrites what it sends. A rogue
//! follower forges acks (naming itself, candidates with wrong ranks, non-members, terms up to `u64::MAX`,
//! valid-looking higher claims) and handovers; a rogue candidate also claims with other ranks, with terms
//! above `MAX_TERM`, just below it, on either side of `CATCH_UP_TERM` and a step up (claims it never
//! made: its own machine does not hold them; sent to whoever the network delivers them to, so the
//! others are left behind and must climb), relays such views in its heartbeats, and always reports every other candidate as
//! heard just now (the indirect-liveness lie about a dead holder). In quorum mode a rogue voter also
//! forges votes (for an incarnation the receiver does not run, or echoing a heartbeat it never sent), and
//! where the number of voters is even votes for every candidate at once; a rogue that does not vote
//! sends heartbeats with votes. Forgeries stop when the faults end; the liveness lie goes on for the
//! whole run.

use std::net::Ipv6Addr;

use sdwand::vip::{
    Body, Claim, Epoch, HandoverReason, Heartbeat, Message, PeerState, CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP,
};

use super::{addr, Rng, World};

/// Who misbehaves, and its own random stream (so the network's stream is the same with or without it).
pub struct Rogue {
    /// The node.
    pub node: usize,
    rng: Rng,
}

impl Rogue {
    /// Node `node` misbehaves, drawing from `seed`.
    pub fn new(node: usize, seed: u64) -> Rogue {
        Rogue {
            node,
            rng: Rng::new(seed),
        }
    }
}

impl World {
    /// Rewrites a datagram node `from` is about to send to `to`, if it is the rogue.
    pub(super) fn tamper(&mut self, from: usize, to: Ipv6Addr, mut msg: Message) -> Message {
        let cands = self.setup.candidates;
        let setup = &self.setup;
        // Quorum mode: what the receiver would accept as a vote (its incarnation), if it is a candidate.
        let receiver = (0..cands)
            .find(|&j| addr(j) == to && setup.quorum.is_some())
            .map(|j| self.nodes[j].incarnation);
        // A voter may vote for two candidates only where that cannot decide anything: with an even number
        // of voters, two majorities share at least two voters, so one more honest voter is in both.
        let double = setup.voter(from) && setup.voters() % 2 == 0;
        let forging = !self.auto_restart;
        let base = self.nodes[from]
            .machine
            .as_ref()
            .and_then(|m| m.claim())
            .map_or(1, |c| c.epoch.term);
        let Some(r) = self.rogue.as_mut().filter(|r| r.node == from) else {
            return msg;
        };
        let rng = &mut r.rng;
        let candidate = from < cands;
        match &mut msg.body {
            Body::Heartbeat(hb) => {
                hb.liveness = (0..cands).filter(|&j| j != from).map(|j| (addr(j), 0)).collect();
                if forging && rng.chance(0.5) {
                    hb.view = Some(forged(rng, from, cands, base));
                }
                if let (Some(inc), true) = (receiver, forging && hb.echo_at_us != 0) {
                    match rng.pick(4) {
                        // Votes for everyone it heartbeats, on genuine echoes.
                        0 | 1 if double => hb.vote = Some(inc),
                        // A vote for an incarnation the receiver does not run.
                        0 => hb.vote = Some(inc + 1 + rng.range(0, 3)),
                        // An echo of a heartbeat the receiver never sent (no sim clock reaches 2^63 µs).
                        1 => {
                            hb.vote = Some(inc);
                            hb.echo_at_us = (1 << 63) | rng.next();
                        }
                        _ => {}
                    }
                }
            }
            Body::Claim { epoch, .. } if forging && rng.chance(0.5) => {
                let term = match rng.pick(5) {
                    0 => MAX_TERM + 1 + rng.range(0, 1 << 20),
                    1 => MAX_TERM - rng.range(0, 1 << 20),
                    2 => CATCH_UP_TERM + 1 + rng.range(0, 1 << 20),
                    3 => CATCH_UP_TERM - rng.range(0, 1 << 20),
                    _ => epoch.term + rng.range(1, MAX_TERM_STEP + 2),
                };
                *epoch = if rng.chance(0.4) {
                    Epoch {
                        term: epoch.term,
                        rank: other_rank(rng, from, cands),
                    }
                } else {
                    Epoch { term, rank: epoch.rank }
                };
            }
            // A member that does not vote sends a heartbeat with a vote (quorum mode).
            Body::Ack { .. } if forging && setup.quorum.is_some() && !setup.voter(from) && rng.chance(0.2) => {
                if let Some(inc) = receiver {
                    msg.body = Body::Heartbeat(Heartbeat {
                        state: PeerState::Follower,
                        healthy: true,
                        interval_ms: 50,
                        view: None,
                        sent_at_us: 1 + rng.range(0, 1 << 40),
                        echo_at_us: 1 + rng.range(0, 1 << 40),
                        echo_held_us: 0,
                        liveness: Vec::new(),
                        vote: Some(inc),
                    });
                }
            }
            Body::Ack { view } if forging && rng.chance(0.5) => {
                let claim = forged(rng, from, cands, base);
                if !candidate && rng.chance(0.3) {
                    msg.body = Body::Handover {
                        epoch: claim.epoch,
                        reason: HandoverReason::Manual,
                    };
                } else {
                    *view = claim;
                }
            }
            _ => {}
        }
        msg
    }
}

/// A rank in `0..cands` other than `own` (or 1 if there is none: `own` is a follower and `cands` is 1).
fn other_rank(rng: &mut Rng, own: usize, cands: usize) -> u16 {
    let r = rng.pick(cands);
    (if r == own { (r + 1) % cands.max(2) } else { r }) as u16
}

/// A claim no honest node may take up (a relayed one far above the terms in use included), or (one time
/// in six) a well-formed claim of a candidate a little above them, which may be learned but names a
/// candidate.
fn forged(rng: &mut Rng, from: usize, cands: usize, base: u64) -> Claim {
    let j = rng.pick(cands);
    let claim = |term, rank: usize, holder| Claim {
        epoch: Epoch {
            term,
            rank: rank as u16,
        },
        holder,
    };
    match rng.pick(6) {
        0 => claim(u64::MAX, 0, addr(from)),
        1 => claim(base + rng.range(0, 3), usize::from(other_rank(rng, j, cands)), addr(j)),
        2 => claim(base + 1, 0, Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 0xfff0)),
        3 => claim(MAX_TERM + 1 + rng.range(0, u64::from(u32::MAX)), j, addr(j)),
        4 => {
            let k = usize::from(other_rank(rng, from, cands));
            claim(MAX_TERM - rng.range(0, 1 << 20), k, addr(k))
        }
        _ => claim(base + rng.range(1, 3), j, addr(j)),
    }
}
