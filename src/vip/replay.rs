//! Per-sender replay protection: a sliding window over sequence numbers within an incarnation, which a
//! sender that has been silent for a while may restart (see "Replay protection" in `docs/protocol.md`).

use std::time::{Duration, Instant};

/// How far behind the highest sequence number a datagram may arrive (reordering tolerance).
const WINDOW: u64 = 64;

/// The verdict on one datagram's (incarnation, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: accept it.
    Fresh,
    /// Accept it: the sender had been silent for longer than the quiet time and now sends a lower or equal
    /// incarnation, or a sequence number the window would refuse; it restarted without a higher
    /// incarnation (its clock went back and its incarnation file was lost, or it restarted a machine), and
    /// the window starts over from this datagram.
    Restarted,
    /// Seen before: drop it (`replayed`).
    Replayed,
    /// From an older incarnation, or too far behind the window: drop it (`stale`).
    Stale,
}

impl Verdict {
    /// The metric label of a rejection.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verdict::Fresh | Verdict::Restarted => None,
            Verdict::Replayed => Some("replayed"),
            Verdict::Stale => Some("stale"),
        }
    }
}

/// What one sender has sent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    incarnation: u64,
    highest: u64,
    /// Bit `i` set: `highest - i` has been seen.
    seen: u64,
    /// When the last accepted datagram arrived (`None`: nothing accepted yet).
    last: Option<Instant>,
}

impl Window {
    /// Checks `(incarnation, seq)` received at `now` and records it when accepted. A sender silent for
    /// longer than `quiet` (the listen time) may start over at any incarnation and sequence number.
    pub fn check(&mut self, now: Instant, quiet: Duration, incarnation: u64, seq: u64) -> Verdict {
        let silent = self.last.is_none_or(|t| now.saturating_duration_since(t) > quiet);
        let verdict = self.verdict(incarnation, seq);
        let verdict = match verdict {
            Verdict::Replayed | Verdict::Stale if silent && self.last.is_some() => Verdict::Restarted,
            v => v,
        };
        match verdict {
            Verdict::Restarted => self.restart(incarnation, seq),
            Verdict::Fresh => self.record(incarnation, seq),
            Verdict::Replayed | Verdict::Stale => return verdict,
        }
        self.last = Some(now);
        verdict
    }

    fn verdict(&self, incarnation: u64, seq: u64) -> Verdict {
        if self.last.is_none() || incarnation > self.incarnation {
            return Verdict::Fresh;
        }
        if incarnation < self.incarnation {
            return Verdict::Stale;
        }
        if seq > self.highest {
            return Verdict::Fresh;
        }
        let behind = self.highest - seq;
        if behind >= WINDOW {
            Verdict::Stale
        } else if self.seen & (1u64 << behind) != 0 {
            Verdict::Replayed
        } else {
            Verdict::Fresh
        }
    }

    fn restart(&mut self, incarnation: u64, seq: u64) {
        self.incarnation = incarnation;
        self.highest = seq;
        self.seen = 1;
    }

    /// Records a fresh `(incarnation, seq)`.
    fn record(&mut self, incarnation: u64, seq: u64) {
        if self.last.is_none() || incarnation > self.incarnation {
            self.restart(incarnation, seq);
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW { 1 } else { (self.seen << shift) | 1 };
            self.highest = seq;
        } else {
            self.seen |= 1u64 << (self.highest - seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(400);

    #[test]
    fn in_order_reordered_replayed_and_stale() {
        let now = Instant::now();
        let mut w = Window::default();
        let mut check = |inc, seq| w.check(now, QUIET, inc, seq);
        assert_eq!(check(5, 10), Verdict::Fresh);
        assert_eq!(check(5, 10), Verdict::Replayed);
        assert_eq!(check(5, 12), Verdict::Fresh);
        assert_eq!(check(5, 11), Verdict::Fresh, "reordered within the window");
        assert_eq!(check(5, 11), Verdict::Replayed);
        assert_eq!(check(5, 200), Verdict::Fresh);
        assert_eq!(check(5, 12), Verdict::Stale, "behind the window");
        assert_eq!(check(4, 1000), Verdict::Stale, "older incarnation");
        assert_eq!(check(6, 0), Verdict::Fresh, "a restart resets the window");
        assert_eq!(check(5, 201), Verdict::Stale);
    }

    #[test]
    fn a_sender_silent_for_the_quiet_time_may_start_over_lower() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.check(t0, QUIET, 1_000, 50), Verdict::Fresh);
        // Within the quiet time a lower incarnation or an old number is refused, and refusals do not
        // count as hearing the sender.
        let t1 = t0 + QUIET;
        assert_eq!(w.check(t1, QUIET, 7, 1), Verdict::Stale);
        assert_eq!(w.check(t1, QUIET, 1_000, 50), Verdict::Replayed);
        // Silent for longer than the quiet time: its clock went back and its incarnation file was lost.
        let t2 = t0 + QUIET + Duration::from_millis(1);
        assert_eq!(w.check(t2, QUIET, 7, 1), Verdict::Restarted);
        assert_eq!(
            w.check(t2, QUIET, 7, 1),
            Verdict::Replayed,
            "the window starts over from it"
        );
        assert_eq!(w.check(t2, QUIET, 7, 2), Verdict::Fresh);
        assert_eq!(
            w.check(t2, QUIET, 1_000, 500),
            Verdict::Fresh,
            "a higher incarnation still wins"
        );
        assert_eq!(
            w.check(t2, QUIET, 7, 3),
            Verdict::Stale,
            "and it heard the sender just now"
        );
        // The same incarnation restarting its sequence numbers (a machine re-created by a reload).
        let t3 = t2 + QUIET * 2;
        assert_eq!(w.check(t3, QUIET, 1_000, 1), Verdict::Restarted);
        assert_eq!(w.check(t3, QUIET, 1_000, 2), Verdict::Fresh);
    }
}
