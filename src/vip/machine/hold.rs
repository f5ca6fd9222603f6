//! The holder's side of the machine: fanning the claim out and collecting acknowledgements, re-sends and
//! refreshes, handovers (manual, shutdown, health, preemption) and the former holder's drain.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Instant;

use super::{Cand, Handover, Hold, Machine};
use crate::vip::{Body, Claim, Epoch, HandoverReason, Note, PeerState};

impl Machine {
    /// An acknowledgement: it confirms this holder's claim when it names it. Any other view is learned
    /// from a candidate (subject to [`Machine::vet`]) and never from a follower (see
    /// [`Machine::follower_view`]).
    pub(super) fn on_ack(&mut self, now: Instant, from: Ipv6Addr, view: Claim) {
        let peers = self.p.peers.len();
        let mine = self.hold.as_ref().map(|h| Claim {
            epoch: h.epoch,
            holder: self.p.me,
        });
        if Some(view) != mine {
            if self.cands.contains_key(&from) {
                self.learn(now, from, view);
            } else {
                self.follower_view(now, from, mine, view);
            }
            return;
        }
        let Some(h) = self.hold.as_mut() else { return };
        h.pending.remove(&from);
        if !self.peer_set.contains(&from) || !h.acked.insert(from) {
            return;
        }
        if h.live.remove(&from) && h.live.is_empty() {
            let (epoch, took) = (h.epoch, now.saturating_duration_since(h.since));
            self.note(Note::LiveConfirmed {
                epoch,
                claim_to_confirmed: took,
            });
        }
        let Some(h) = self.hold.as_mut() else { return };
        if h.acked.len() == peers && h.confirmed_at.is_none() {
            h.confirmed_at = Some(now);
            let (epoch, took) = (h.epoch, now.saturating_duration_since(h.since));
            self.note(Note::Confirmed {
                epoch,
                claim_to_confirmed: took,
            });
            for c in self.p.candidates.clone() {
                if c != self.p.me {
                    self.send_claim(c);
                }
            }
        }
    }

    pub(super) fn holding_duties(&mut self, now: Instant) {
        if let Some(h) = self.handover {
            if now >= h.deadline {
                self.handover = None;
                self.note(Note::HandoverFailed { to: h.to });
                if self.shutting_down {
                    self.stop();
                    return;
                }
            } else if now >= h.next_send {
                let epoch = self.hold.as_ref().map(|h| h.epoch);
                if let Some(epoch) = epoch {
                    self.send(
                        h.to,
                        Body::Handover {
                            epoch,
                            reason: h.reason,
                        },
                    );
                }
                self.handover = Some(Handover {
                    next_send: now + self.p.timers.interval,
                    ..h
                });
            }
        }
        let Some(hold) = self.hold.as_mut() else {
            self.preempt_since = None;
            return;
        };
        let mut resend: Vec<Ipv6Addr> = Vec::new();
        let max = self.p.timers.retransmit_max();
        for (peer, (next, backoff)) in hold.pending.iter_mut() {
            if now >= *next {
                resend.push(*peer);
                *backoff = (*backoff * 2).min(max);
                *next = now + *backoff;
            }
        }
        if now >= hold.next_refresh {
            hold.next_refresh = now + self.p.timers.refresh();
            resend = self.p.peers.clone();
        }
        for peer in resend {
            self.send_claim(peer);
        }
        if self.handover.is_some() || self.shutting_down {
            return;
        }
        if !self.healthy {
            if let Some(to) = self.successor(now) {
                self.start_handover(now, to, HandoverReason::Health);
            }
            return;
        }
        let Some(delay) = self.p.timers.preempt else { return };
        // The best-placed live healthy candidate above this node gets the VIP once it has been live for
        // `delay` and is standby (not while it listens or drains: handing the VIP to one below it in the
        // meantime would only move it twice).
        let rank = self.rank().unwrap_or(0);
        let top = self.p.candidates[..rank]
            .iter()
            .copied()
            .find(|a| self.cands.get(a).is_some_and(|c| self.live(c, now) && c.healthy));
        match top {
            Some(to) => {
                let since = *self.preempt_since.get_or_insert(now);
                let standby = self.cands.get(&to).is_some_and(|c| c.state == Some(PeerState::Standby));
                if standby && now >= since + delay {
                    self.preempt_since = None;
                    self.start_handover(now, to, HandoverReason::Preempt);
                }
            }
            None => self.preempt_since = None,
        }
    }

    /// Whether a candidate can take a handover: live, healthy, and neither holding nor draining.
    pub(super) fn ready(&self, c: &Cand, now: Instant) -> bool {
        self.live(c, now) && c.healthy && matches!(c.state, Some(PeerState::Standby | PeerState::Listening))
    }

    /// The first candidate by rank, other than this node, that can take a handover.
    pub(super) fn successor(&self, now: Instant) -> Option<Ipv6Addr> {
        self.p
            .candidates
            .iter()
            .copied()
            .find(|a| self.cands.get(a).is_some_and(|c| self.ready(c, now)))
    }

    /// Starts holding at `epoch`: fans the claim out and tracks acknowledgements.
    pub(super) fn begin_hold(&mut self, now: Instant, epoch: Epoch) {
        let first = self.p.timers.interval;
        // The peers a live confirmation waits for: every peer but the candidates dead right now.
        let live: BTreeSet<Ipv6Addr> = self
            .p
            .peers
            .iter()
            .filter(|p| self.cands.get(p).is_none_or(|c| self.live(c, now)))
            .copied()
            .collect();
        let nobody_live = live.is_empty();
        self.hold = Some(Hold {
            epoch,
            since: now,
            live,
            acked: BTreeSet::new(),
            pending: self.p.peers.iter().map(|p| (*p, (now + first, first))).collect(),
            confirmed_at: None,
            next_refresh: now + self.p.timers.refresh(),
        });
        self.drain = None;
        for peer in self.p.peers.clone() {
            self.send_claim(peer);
        }
        if self.p.peers.is_empty() {
            if let Some(h) = self.hold.as_mut() {
                h.confirmed_at = Some(now);
            }
        }
        if nobody_live {
            self.note(Note::LiveConfirmed {
                epoch,
                claim_to_confirmed: std::time::Duration::ZERO,
            });
        }
    }

    pub(super) fn start_handover(&mut self, now: Instant, to: Ipv6Addr, reason: HandoverReason) {
        if self.p.quorum.is_some() {
            self.quorum_handover(now, to, reason);
            return;
        }
        self.handover = Some(Handover {
            to,
            reason,
            deadline: now + self.p.timers.handover_timeout(),
            next_send: now,
        });
        self.holding_duties(now);
    }

    pub(super) fn finish_drain(&mut self) {
        self.drain = None;
        self.remove_address();
        self.set_role(PeerState::Standby, "successor confirmed");
    }

    pub(super) fn send_claim(&mut self, to: Ipv6Addr) {
        let Some(h) = self.hold.as_ref() else { return };
        let body = Body::Claim {
            epoch: h.epoch,
            confirmed: u16::try_from(h.acked.len()).unwrap_or(u16::MAX),
            peers: u16::try_from(self.p.peers.len()).unwrap_or(u16::MAX),
        };
        self.send(to, body);
    }
}
