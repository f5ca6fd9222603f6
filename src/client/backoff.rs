//! Capped exponential backoff (pure: the caller sleeps).

use std::time::Duration;

/// Delays that double from `first` up to `cap`, back to `first` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, never above `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            next: first.min(cap),
        }
    }

    /// The delay before the next attempt after a failure; the one after it is twice as long (capped).
    pub fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(10));
        let got: Vec<Duration> = (0..6).map(|_| b.fail()).collect();
        assert_eq!(got, [s(1), s(2), s(4), s(8), s(10), s(10)]);
        b.reset();
        assert_eq!(b.fail(), s(1));
    }
}
