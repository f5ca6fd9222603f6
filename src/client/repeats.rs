//! Pure: rate limiting of repeated failure logs. A failure that repeats (a removed peer's 401 on every
//! report, a registry answering 400 to every watch) is logged the first time, then at most once per
//! interval as a summary with the count of occurrences not logged; a different failure, or a success in
//! between, starts over. The caller reads the clock and logs.

use std::time::{Duration, Instant};

/// How often a repeated failure is summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(600);

/// What to log for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// The first occurrence (of this failure, or after a success): log it in full.
    First,
    /// A repeat after an interval: log it with the number of occurrences since the last line (this one
    /// included).
    Summary(u64),
    /// A repeat within the interval: do not log.
    Quiet,
}

/// The state of one stream of failures (one per task: the watch, the report).
#[derive(Debug, Clone)]
pub struct Repeats {
    interval: Duration,
    /// The failure being repeated (its key), when it was last logged, and the occurrences since.
    current: Option<(String, Instant, u64)>,
}

impl Repeats {
    /// Summaries at most once per `interval`.
    pub fn new(interval: Duration) -> Repeats {
        Repeats {
            interval,
            current: None,
        }
    }

    /// A failure whose kind is `key` (same key = same failure) at `now`: what to log.
    pub fn failure(&mut self, key: &str, now: Instant) -> Log {
        match &mut self.current {
            Some((k, logged, count)) if k == key => {
                *count += 1;
                if now.saturating_duration_since(*logged) >= self.interval {
                    let n = *count;
                    *logged = now;
                    *count = 0;
                    Log::Summary(n)
                } else {
                    Log::Quiet
                }
            }
            _ => {
                self.current = Some((key.to_owned(), now, 0));
                Log::First
            }
        }
    }

    /// A success: the next failure is logged in full. Returns how many repeats went unlogged since the
    /// last line, if any (worth a line saying the failure stopped).
    pub fn success(&mut self) -> Option<u64> {
        self.current.take().map(|(_, _, n)| n).filter(|n| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_one_summary_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Repeats::new(s(600));
        assert_eq!(r.failure("401", t0), Log::First);
        // A report every 5 s for an hour: 720 failures, 1 first line and 5 summaries.
        let logs: Vec<Log> = (1..720).map(|i| r.failure("401", t0 + s(5 * i))).collect();
        let summaries: Vec<u64> = logs
            .iter()
            .filter_map(|l| match l {
                Log::Summary(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(summaries, [120, 120, 120, 120, 120]);
        assert_eq!(logs.iter().filter(|l| **l == Log::First).count(), 0);
    }

    #[test]
    fn another_failure_or_a_success_starts_over() {
        let t0 = Instant::now();
        let mut r = Repeats::new(Duration::from_secs(600));
        assert_eq!(r.failure("401", t0), Log::First);
        assert_eq!(r.failure("401", t0), Log::Quiet);
        assert_eq!(r.failure("400", t0), Log::First, "a different failure is logged");
        assert_eq!(r.failure("400", t0), Log::Quiet);
        assert_eq!(r.success(), Some(1), "one repeat went unlogged");
        assert_eq!(r.success(), None);
        assert_eq!(r.failure("400", t0), Log::First, "after a success");
        assert_eq!(r.success(), None, "nothing suppressed");
    }
}
