//! Samples and their summaries (median, min, max; or the full spread with percentiles), and the CPU clocks
//! the benchmarks read.

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

/// The spread of one quantity over a case's trials: count, min, median, p90, p95, p99, max.
///
/// Percentiles are nearest-rank (the smallest sample with at least p % of the samples at or below it), so
/// every figure is a value that was measured; with fewer than 100 samples p99 is the maximum. The median of
/// an even count is the mean of the two middle samples, as in [`Summary`]. All zero when there are none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Number of samples.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Figures {
    /// The figures of `values` (non-finite values are ignored).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Figures {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Figures::default();
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Figures {
            count: n,
            min: v[0],
            median,
            p90: nearest_rank(&v, 90.0),
            p95: nearest_rank(&v, 95.0),
            p99: nearest_rank(&v, 99.0),
            max: v[n - 1],
        }
    }
}

/// The nearest-rank `p`-th percentile of non-empty, sorted `sorted`.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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

    #[test]
    fn figures_use_nearest_rank_percentiles() {
        let f = Figures::of((1..=100).map(f64::from));
        assert_eq!(
            (f.count, f.min, f.median, f.p90, f.p95, f.p99, f.max),
            (100, 1.0, 50.5, 90.0, 95.0, 99.0, 100.0)
        );
        // 30 trials: p90 is the 27th smallest, p95 the 29th, p99 the largest.
        let f = Figures::of((1..=30).rev().map(f64::from));
        assert_eq!((f.median, f.p90, f.p95, f.p99, f.max), (15.5, 27.0, 29.0, 30.0, 30.0));
        let f = Figures::of([7.0, f64::NAN]);
        assert_eq!((f.count, f.min, f.median, f.p90, f.p99), (1, 7.0, 7.0, 7.0, 7.0));
        assert_eq!(Figures::of([]), Figures::default());
    }
}
