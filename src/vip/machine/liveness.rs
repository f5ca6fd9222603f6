//! Heartbeats: what a candidate tells the others and learns from them (state, health, view, direct and
//! indirect liveness, round trips), and the operator's view built from it.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::{Cand, Echo, Machine};
use crate::vip::{Body, CandidateStatus, Header, Heartbeat, Note, PeerState, VipStatus};

impl Machine {
    /// Everything an operator wants to see about this VIP.
    pub fn status(&self, now: Instant) -> VipStatus {
        let candidates = self
            .p
            .candidates
            .iter()
            .enumerate()
            .map(|(rank, &address)| match self.cands.get(&address) {
                Some(c) => CandidateStatus {
                    address,
                    rank,
                    me: false,
                    live: self.live(c, now),
                    healthy: c.healthy,
                    state: c.state,
                    last_heard_ms: c
                        .last_heard()
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    rtt_us: c.rtt.map(|r| r.as_micros() as u64),
                },
                None => CandidateStatus {
                    address,
                    rank,
                    me: true,
                    live: true,
                    healthy: self.healthy,
                    state: Some(self.role),
                    last_heard_ms: Some(0),
                    rtt_us: None,
                },
            })
            .collect();
        VipStatus {
            vip: self.p.vip,
            role: self.role,
            healthy: self.healthy,
            claim: self.best,
            routed_to: self.routed_to,
            candidates,
            confirmed: self.hold.as_ref().map(|h| (h.acked.len(), self.p.peers.len())),
            transport_up: self.transport_up,
        }
    }

    /// Until when a candidate is live: a dead time after it was last heard directly or reported by
    /// another candidate, but a report counts only up to twice the dead time after this node last heard
    /// it directly (or started tracking it): a candidate that lies about a dead one's freshness delays
    /// its detection by at most one dead time.
    pub(super) fn live_until(&self, c: &Cand) -> Option<Instant> {
        let dead = self.p.timers.dead_time(c.interval);
        let direct = c.direct.map(|t| t + dead);
        let anchor = c.direct.unwrap_or(c.since);
        let indirect = c.indirect.map(|t| (t + dead).min(anchor + 2 * dead));
        direct.max(indirect)
    }

    pub(super) fn live(&self, c: &Cand, now: Instant) -> bool {
        self.live_until(c).is_some_and(|t| now < t)
    }

    pub(super) fn on_heartbeat(&mut self, now: Instant, header: &Header, hb: Heartbeat) {
        let (me, from) = (self.p.me, header.sender);
        if self.witnesses.contains(&from) {
            // A witness's heartbeat carries its vote and nothing this node relies on otherwise.
            self.take_vote(from, &hb);
            return;
        }
        let Some(c) = self.cands.get_mut(&from) else {
            self.note(Note::Rejected("not_candidate"));
            return;
        };
        c.direct = Some(now);
        let mut released = false;
        if (header.incarnation, header.seq) > c.newest {
            released = c.state == Some(PeerState::Holding) && hb.state != PeerState::Holding;
            c.newest = (header.incarnation, header.seq);
            c.interval = Duration::from_millis(u64::from(hb.interval_ms));
            c.state = Some(hb.state);
            c.healthy = hb.healthy;
            c.view = hb.view;
            c.echo = Some(Echo {
                at: hb.sent_at_us,
                received: now,
                incarnation: header.incarnation,
            });
        }

        let mut rtt = None;
        if hb.echo_at_us != 0 {
            let now_us = now.saturating_duration_since(self.origin).as_micros() as u64;
            let us = now_us
                .saturating_sub(hb.echo_at_us)
                .saturating_sub(u64::from(hb.echo_held_us));
            c.rtt = Some(Duration::from_micros(us));
            rtt = c.rtt;
        }
        if released {
            self.released_by(from);
        }
        self.take_vote(from, &hb);
        for (addr, age_ms) in hb.liveness {
            if addr == me || addr == from {
                continue;
            }
            if let (Some(k), Some(t)) = (
                self.cands.get_mut(&addr),
                now.checked_sub(Duration::from_millis(u64::from(age_ms))),
            ) {
                k.indirect = k.indirect.max(Some(t));
            }
        }
        if let Some(rtt) = rtt {
            self.note(Note::Rtt { peer: from, rtt });
        }
        // A former holder drains until it sees this claim confirmed; one lost datagram must not keep it
        // serving until the drain timeout, so answer every heartbeat it sends while draining.
        let confirmed = self.hold.as_ref().is_some_and(|h| h.confirmed_at.is_some());
        if confirmed && hb.state == PeerState::Draining {
            self.send_claim(from);
        }
        if let Some(view) = hb.view {
            self.learn(now, from, view);
        }
    }

    pub(super) fn send_heartbeats(&mut self, now: Instant) {
        let now_us = now.saturating_duration_since(self.origin).as_micros() as u64;
        let state = match self.role {
            PeerState::Listening if self.has_address => PeerState::Holding,
            r => r,
        };
        let liveness: Vec<(Ipv6Addr, u16)> = self
            .cands
            .iter()
            .filter_map(|(a, c)| {
                let t = c.direct?;
                let ms = now.saturating_duration_since(t).as_millis();
                Some((*a, u16::try_from(ms).unwrap_or(u16::MAX)))
            })
            .collect();
        let interval_ms = u16::try_from(self.p.timers.interval.as_millis().max(1)).unwrap_or(u16::MAX);
        let sent_at_us = now_us.max(1);
        let mut targets: Vec<(Ipv6Addr, Option<Echo>)> = self.cands.iter().map(|(a, c)| (*a, c.echo)).collect();
        // Quorum mode: a candidate heartbeats the witnesses too (they echo it in their votes).
        if self.rank().is_some() {
            targets.extend(self.witnesses.iter().map(|w| (*w, None)));
        }
        self.record_round(sent_at_us);
        for (to, echo) in targets {
            let (echo_at_us, echo_held_us) = match echo {
                Some(e) => {
                    let held = now.saturating_duration_since(e.received).as_micros();
                    (e.at, u32::try_from(held).unwrap_or(u32::MAX))
                }
                None => (0, 0),
            };
            let vote = self.vote_for(now, to);
            self.send(
                to,
                Body::Heartbeat(Heartbeat {
                    state,
                    // A stopping (or, in quorum mode, yielding) node will not claim: candidates below it
                    // need not wait for it, and voters turn to another.
                    healthy: self.fit(now),
                    interval_ms,
                    view: self.best,
                    sent_at_us,
                    echo_at_us,
                    echo_held_us,
                    liveness: liveness.clone(),
                    vote,
                }),
            );
        }
    }
}
