//! The machine's view of the VIP's members: admitting a datagram (VIP, membership, replay window), and
//! taking a new member and candidate list ([`LocalEvent::Update`](crate::vip::LocalEvent::Update)) while
//! keeping what is known of the candidates that stay. It must not judge claims: that is `trust.rs` and
//! `claim.rs`.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::{Cand, Machine};
use crate::vip::replay::Verdict;
use crate::vip::{ClaimReason, Header, Note, Params, PeerState};

impl Machine {
    /// Replay, membership and VIP checks common to every datagram; `Some(label)` rejects it.
    pub(super) fn admit(&mut self, now: Instant, h: &Header) -> Option<&'static str> {
        if h.vip != self.p.vip {
            return Some("unknown_vip");
        }
        if h.sender == self.p.me || !(self.peer_set.contains(&h.sender) || self.cands.contains_key(&h.sender)) {
            return Some("not_member");
        }
        let quiet = self.p.timers.listen();
        let verdict = self
            .windows
            .entry(h.sender)
            .or_default()
            .check(now, quiet, h.incarnation, h.seq);
        if verdict == Verdict::Restarted {
            // A candidate that started over: its heartbeats are its newest again.
            if let Some(c) = self.cands.get_mut(&h.sender) {
                c.newest = (0, 0);
            }
        }
        verdict.reason()
    }

    pub(super) fn update(&mut self, now: Instant, params: Params) {
        let was_candidate = self.rank().is_some();
        let old_peers = std::mem::take(&mut self.peer_set);
        self.peer_set = params.peers.iter().copied().collect();
        let new_peers: Vec<Ipv6Addr> = params
            .peers
            .iter()
            .filter(|p| !old_peers.contains(p))
            .copied()
            .collect();
        let was_quorum = self.p.quorum.is_some();
        self.p = params;
        self.sync_candidates(now);
        let (peers, cands) = (&self.peer_set, &self.cands);
        self.windows.retain(|a, _| peers.contains(a) || cands.contains_key(a));
        let is_candidate = self.rank().is_some();
        if was_candidate && !is_candidate {
            self.hold = None;
            self.handover = None;
            self.drain = None;
            self.listen_until = None;
            self.next_heartbeat = None;
            self.remove_address();
            self.set_role(PeerState::Follower, "no longer a candidate");
        } else if !was_candidate && is_candidate {
            self.listen_until = Some(now + self.p.timers.listen());
            self.next_heartbeat = Some(now);
            self.set_role(PeerState::Listening, "became a candidate");
        }
        // A witness heartbeats the candidates (quorum mode); a follower does not.
        if !is_candidate {
            let witness = self.witnesses.contains(&self.p.me);
            if witness != self.next_heartbeat.is_some() {
                self.next_heartbeat = witness.then_some(now);
            }
        }
        self.prune_votes(was_quorum);
        // A holder whose rank changed renews its claim: others check a claim's rank against its holder's.
        if let (Some(h), Some(rank)) = (&self.hold, self.rank()) {
            if usize::from(h.epoch.rank) != rank {
                self.claim_now(now, ClaimReason::Renew);
                return;
            }
        }
        let peers = &self.peer_set;
        let mut live_confirmed = None;
        if let Some(h) = self.hold.as_mut() {
            // A removed peer that was still awaited no longer holds up the live confirmation.
            let awaited = !h.live.is_empty();
            h.live.retain(|a| peers.contains(a));
            if awaited && h.live.is_empty() {
                live_confirmed = Some((h.epoch, now.saturating_duration_since(h.since)));
            }
            h.acked.retain(|a| peers.contains(a));
            h.pending.retain(|a, _| peers.contains(a));
            let first = self.p.timers.interval;
            for p in &new_peers {
                h.pending.insert(*p, (now + first, first));
            }
        }
        if let Some((epoch, took)) = live_confirmed {
            self.note(Note::LiveConfirmed {
                epoch,
                claim_to_confirmed: took,
            });
        }
        if self.hold.is_some() {
            for p in new_peers {
                self.send_claim(p);
            }
        }
    }

    /// Makes `cands` match the candidate list (keeping what is known of those that stay, with their
    /// new ranks).
    pub(super) fn sync_candidates(&mut self, now: Instant) {
        let me = self.p.me;
        let (candidates, quorum) = (&self.p.candidates, &self.p.quorum);
        self.witnesses = quorum
            .iter()
            .flat_map(|q| q.witnesses.iter())
            .filter(|w| !candidates.contains(w))
            .copied()
            .collect();
        let interval = self.p.timers.interval;
        self.cands.retain(|a, _| self.p.candidates.contains(a));
        for (rank, a) in self.p.candidates.iter().enumerate().filter(|(_, a)| **a != me) {
            self.cands.entry(*a).and_modify(|c| c.rank = rank).or_insert(Cand {
                rank,
                since: now,
                direct: None,
                indirect: None,
                interval,
                state: None,
                healthy: false,
                view: None,
                newest: (0, 0),
                echo: None,
                rtt: None,
            });
        }
    }
}
