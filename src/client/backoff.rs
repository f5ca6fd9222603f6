//! Capped backoff with decorrelated jitter (pure: the caller sleeps; randomness is seeded).
//!
//! Without jitter every daemon of a network retries in lockstep after a registry outage (a thundering herd
//! at every step of the doubling). Decorrelated jitter ("Exponential Backoff And Jitter", AWS Architecture
//! Blog, 2015) draws each delay uniformly from `[first, 3 × previous]`, capped: the delays still grow about
//! geometrically, never fall below `first` (no tight retry loop) and never exceed `cap`.

use std::time::Duration;

/// Delays drawn from `[first, min(cap, 3 × previous delay)]`, back to `first` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    prev: Duration,
    rng: SplitMix64,
}

impl Backoff {
    /// Starts at `first`, never above `cap`; seeded from the operating system's randomness.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        // Jitter only needs a seed that differs between daemons; without OS randomness (never expected
        // on Linux) the clock's nanoseconds still differ between nodes.
        let seed = getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Backoff::with_seed(first, cap, seed)
    }

    /// As [`Backoff::new`] with a fixed seed (tests, reproducible schedules).
    pub fn with_seed(first: Duration, cap: Duration, seed: u64) -> Backoff {
        let first = first.min(cap);
        Backoff {
            first,
            cap,
            prev: first,
            rng: SplitMix64(seed),
        }
    }

    /// The delay before the next attempt after a failure: uniform in `[first, min(cap, 3 × previous)]`.
    pub fn fail(&mut self) -> Duration {
        let low = self.first.as_micros() as u64;
        let high = (self.prev.saturating_mul(3)).min(self.cap).as_micros() as u64;
        let span = high.saturating_sub(low);
        let offset = if span == 0 { 0 } else { self.rng.next() % (span + 1) };
        let d = Duration::from_micros(low + offset);
        self.prev = d;
        d
    }

    /// A success: the next failure starts from `first` again.
    pub fn reset(&mut self) {
        self.prev = self.first;
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-distributed generator; plenty for jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delays_stay_between_first_and_cap_and_grow() {
        for seed in 0..200 {
            let mut b = Backoff::with_seed(S(1), S(30), seed);
            let mut prev = S(1);
            for _ in 0..50 {
                let d = b.fail();
                assert!(d >= S(1) && d <= S(30), "seed {seed}: {d:?}");
                assert!(d <= prev * 3, "seed {seed}: {d:?} after {prev:?}");
                prev = d;
            }
        }
        // Growth: after a dozen failures the delays sit well above `first` on average.
        let late: Duration = (0..100)
            .map(|seed| {
                let mut b = Backoff::with_seed(S(1), S(30), seed);
                (0..12).map(|_| b.fail()).last().unwrap()
            })
            .sum();
        assert!(late / 100 > S(8), "mean late delay {:?}", late / 100);
    }

    #[test]
    fn daemons_do_not_retry_in_lockstep() {
        let third = |seed| {
            let mut b = Backoff::with_seed(Duration::from_millis(500), S(30), seed);
            b.fail();
            b.fail();
            b.fail()
        };
        let distinct: std::collections::BTreeSet<Duration> = (0..50).map(third).collect();
        assert!(distinct.len() > 40, "only {} distinct delays of 50", distinct.len());
    }

    #[test]
    fn reset_starts_over_and_a_cap_below_first_wins() {
        let mut b = Backoff::with_seed(S(1), S(30), 7);
        for _ in 0..20 {
            b.fail();
        }
        b.reset();
        assert!(b.fail() <= S(3), "back near first after a success");
        let mut tight = Backoff::with_seed(S(10), S(2), 7);
        assert_eq!((tight.fail(), tight.fail()), (S(2), S(2)));
    }
}
