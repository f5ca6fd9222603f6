//! Samples and their summaries (median, min, max), and the CPU clocks the benchmarks read.

use std::time::Duration;

use serde::Serialize;

/// Durations of one measured quantity, one per trial.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Adds one trial.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Median, min and max (all zero when there are no samples).
    pub fn summary(&self) -> Summary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => ms(v[n / 2]),
            n => (ms(v[n / 2 - 1]) + ms(v[n / 2])) / 2.0,
        };
        Summary {
            trials: v.len(),
            median_ms: median,
            min_ms: v.first().copied().map_or(0.0, ms),
            max_ms: v.last().copied().map_or(0.0, ms),
        }
    }
}

/// Summary of [`Samples`], in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Number of trials.
    pub trials: usize,
    /// Median.
    pub median_ms: f64,
    /// Fastest trial.
    pub min_ms: f64,
    /// Slowest trial.
    pub max_ms: f64,
}

impl Summary {
    /// `median (min–max)` for the table.
    pub fn cell(&self) -> String {
        format!(
            "{} ({}–{})",
            fmt_ms(self.median_ms),
            fmt_ms(self.min_ms),
            fmt_ms(self.max_ms)
        )
    }
}

/// Milliseconds with three significant-ish digits.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is valid for writes; clock_gettime only writes it.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User plus system CPU time of every child process reaped so far (`RUSAGE_CHILDREN`). The difference
/// around a spawn-and-wait is that child's CPU time, as long as no other child is reaped meanwhile.
pub fn children_cpu() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writes; getrusage only writes it.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for m in ms {
            s.push(Duration::from_millis(*m));
        }
        s
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = samples(&[9, 1, 5]).summary();
        assert_eq!((odd.trials, odd.median_ms, odd.min_ms, odd.max_ms), (3, 5.0, 1.0, 9.0));
        let even = samples(&[4, 1, 2, 8]).summary();
        assert_eq!((even.median_ms, even.min_ms, even.max_ms), (3.0, 1.0, 8.0));
        assert_eq!(samples(&[]).summary().trials, 0);
    }
}
