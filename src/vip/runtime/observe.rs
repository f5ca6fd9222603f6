//! Metrics and log lines for the machines' notes, with the info lines that a stream of datagrams can
//! trigger (role changes, claims) rate-limited: the first [`BURST`] of a kind in a [`WINDOW`] are logged
//! (real failovers are rare, and each one must show), further identical ones are counted and summed up in
//! the next one logged after the window.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::metrics::VipMetrics;
use crate::vip::{ClaimReason, Note};

/// Identical lines are logged at most [`BURST`] times per window.
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// Identical lines logged per window before the rest are only counted.
pub(super) const BURST: u32 = 10;

/// What decides that two lines are identical: the VIP and the line's fields other than epochs and times.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    vip: String,
    what: &'static str,
    detail: [&'static str; 3],
}

/// Remembers, per kind of line, when the current window began, how many lines it logged and how many it
/// suppressed. The keys are bounded by VIPs × roles × reasons, all from the configuration and the code.
#[derive(Debug, Default)]
pub(super) struct LogLimit {
    seen: HashMap<Key, Window>,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed)` when a line of this kind may be logged now (with how many identical ones were
    /// dropped since the last one), `None` to drop it.
    fn admit(&mut self, key: Key, now: Instant) -> Option<u64> {
        let fresh = Window {
            since: now,
            logged: 1,
            suppressed: 0,
        };
        match self.seen.get_mut(&key) {
            Some(w) if now.saturating_duration_since(w.since) < WINDOW => {
                if w.logged < BURST {
                    w.logged += 1;
                    Some(0)
                } else {
                    w.suppressed += 1;
                    None
                }
            }
            Some(w) => Some(std::mem::replace(w, fresh).suppressed),
            None => {
                self.seen.insert(key, fresh);
                Some(0)
            }
        }
    }

    /// Forgets a VIP that is no longer configured.
    pub(super) fn forget(&mut self, vip: &str) {
        self.seen.retain(|k, _| k.vip != vip);
    }
}

/// Metrics and log lines for a machine's note.
pub(super) fn observe(
    m: &VipMetrics,
    limit: &mut LogLimit,
    now: Instant,
    vip: &str,
    note: Note,
    name_of: &dyn Fn(Ipv6Addr) -> String,
) {
    match note {
        Note::Role { from, to, why, claim } => {
            let key = Key {
                vip: vip.to_owned(),
                what: "role",
                detail: [from.as_str(), to.as_str(), why],
            };
            if let Some(suppressed) = limit.admit(key, now) {
                tracing::info!(
                    vip,
                    old = from.as_str(),
                    new = to.as_str(),
                    reason = why,
                    epoch = %claim.map_or("-".into(), |c| c.epoch.to_string()),
                    holder = %claim.map_or("-".into(), |c| name_of(c.holder)),
                    suppressed,
                    "VIP role changed"
                );
            } else {
                tracing::debug!(
                    vip,
                    old = from.as_str(),
                    new = to.as_str(),
                    reason = why,
                    "VIP role changed (repeat)"
                );
            }
        }
        Note::Claimed {
            reason,
            epoch,
            detection_to_claim,
            outage,
        } => {
            m.failovers.with_label_values(&[vip, reason.as_str()]).inc();
            if let Some(outage) = outage {
                m.outage.with_label_values(&[vip]).observe(outage.as_secs_f64());
            }
            // An initial or restart claim follows the start-up listening period, not a detection.
            if !matches!(reason, ClaimReason::Initial | ClaimReason::Restart) {
                m.detection_to_claim
                    .with_label_values(&[vip])
                    .observe(detection_to_claim.as_secs_f64());
            }
            let key = Key {
                vip: vip.to_owned(),
                what: "claimed",
                detail: [reason.as_str(), "", ""],
            };
            if let Some(suppressed) = limit.admit(key, now) {
                tracing::info!(vip, reason = reason.as_str(), %epoch, detection_to_claim_ms = detection_to_claim.as_secs_f64() * 1e3, suppressed, "claimed the VIP");
            } else {
                tracing::debug!(vip, reason = reason.as_str(), %epoch, "claimed the VIP (repeat)");
            }
        }
        Note::LiveConfirmed {
            epoch,
            claim_to_confirmed,
        } => {
            m.claim_to_confirmed
                .with_label_values(&[vip])
                .observe(claim_to_confirmed.as_secs_f64());
            tracing::debug!(vip, %epoch, claim_to_confirmed_ms = claim_to_confirmed.as_secs_f64() * 1e3, "every live peer routes the VIP here");
        }
        Note::Confirmed {
            epoch,
            claim_to_confirmed,
        } => {
            tracing::info!(vip, %epoch, claim_to_confirmed_ms = claim_to_confirmed.as_secs_f64() * 1e3, "every peer routes the VIP here");
        }
        Note::Rtt { peer, rtt } => m
            .rtt
            .with_label_values(&[vip, &name_of(peer)])
            .observe(rtt.as_secs_f64()),
        Note::Rejected(reason) => {
            m.rejected.with_label_values(&[reason]).inc();
            tracing::debug!(vip, reason, "failover datagram rejected");
        }
        Note::HandoverFailed { to } => {
            m.handovers_failed.with_label_values(&[vip]).inc();
            tracing::warn!(vip, to = %name_of(to), "handover timed out; keeping the VIP");
        }
        Note::LeaseLost { epoch, held } => {
            tracing::warn!(vip, %epoch, held_ms = held.as_secs_f64() * 1e3, "quorum mode: lost the votes of a majority; removed the VIP address");
        }
        Note::RivalUnheard { rival, hold_off } => {
            tracing::warn!(vip, rival = %name_of(rival), hold_off_ms = hold_off.as_secs_f64() * 1e3, "another holder this node cannot hear out-claimed its renewal (the candidates are cut off from each other, the followers reach both): waiting before renewing again");
        }
        Note::TermExhausted { term } => {
            tracing::error!(
                vip,
                term,
                "the claim rule picked this node, but terms are exhausted: not claiming"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(why: &'static str) -> Key {
        Key {
            vip: "fd00:5d:f::1".into(),
            what: "role",
            detail: ["holding", "standby", why],
        }
    }

    #[test]
    fn identical_lines_are_logged_a_burst_per_window_and_counted() {
        let mut limit = LogLimit::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.admit(key("higher claim"), t0), Some(0));
        }
        for i in 1..=1000 {
            assert_eq!(limit.admit(key("higher claim"), t0 + Duration::from_millis(i)), None);
        }
        // Another kind of line is not held back by the first.
        assert_eq!(limit.admit(key("health"), t0), Some(0));
        assert_eq!(limit.admit(key("higher claim"), t0 + WINDOW), Some(1000));
        for _ in 1..BURST {
            assert_eq!(limit.admit(key("higher claim"), t0 + WINDOW), Some(0));
        }
        assert_eq!(limit.admit(key("higher claim"), t0 + WINDOW), None);
        limit.forget("fd00:5d:f::1");
        assert_eq!(limit.admit(key("higher claim"), t0 + WINDOW), Some(0));
    }
}
