//! Per-sender replay protection: a sliding window over sequence numbers within an incarnation.

/// How far behind the highest sequence number a datagram may arrive (reordering tolerance).
const WINDOW: u64 = 64;

/// The verdict on one datagram's (incarnation, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: accept it.
    Fresh,
    /// Seen before: drop it (`replayed`).
    Replayed,
    /// From an older incarnation, or too far behind the window: drop it (`stale`).
    Stale,
}

impl Verdict {
    /// The metric label of a rejection.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verdict::Fresh => None,
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
    started: bool,
}

impl Window {
    /// Checks `(incarnation, seq)` and records it when fresh.
    pub fn check(&mut self, incarnation: u64, seq: u64) -> Verdict {
        if !self.started || incarnation > self.incarnation {
            *self = Window {
                incarnation,
                highest: seq,
                seen: 1,
                started: true,
            };
            return Verdict::Fresh;
        }
        if incarnation < self.incarnation {
            return Verdict::Stale;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW { 1 } else { (self.seen << shift) | 1 };
            self.highest = seq;
            return Verdict::Fresh;
        }
        let behind = self.highest - seq;
        if behind >= WINDOW {
            return Verdict::Stale;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return Verdict::Replayed;
        }
        self.seen |= bit;
        Verdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_reordered_replayed_and_stale() {
        let mut w = Window::default();
        assert_eq!(w.check(5, 10), Verdict::Fresh);
        assert_eq!(w.check(5, 10), Verdict::Replayed);
        assert_eq!(w.check(5, 12), Verdict::Fresh);
        assert_eq!(w.check(5, 11), Verdict::Fresh, "reordered within the window");
        assert_eq!(w.check(5, 11), Verdict::Replayed);
        assert_eq!(w.check(5, 200), Verdict::Fresh);
        assert_eq!(w.check(5, 12), Verdict::Stale, "behind the window");
        assert_eq!(w.check(4, 1000), Verdict::Stale, "older incarnation");
        assert_eq!(w.check(6, 0), Verdict::Fresh, "a restart resets the window");
        assert_eq!(w.check(5, 201), Verdict::Stale);
    }
}
