//! The reaper: a periodic task that removes ephemeral and spot peers silent past their TTL
//! ([`crate::service::reap`]), each with its full cascade, in one transaction per pass. Removals
//! bump the revision and wake the watchers like any other write; a reaped peer's /32 and prefixes are held
//! down for [`crate::service::Ttls::prefix_hold_down`] from the pass's time.
//!
//! **Only real silence counts.** A peer is silent when it did not call; it is not silent when the registry
//! could not hear it. Silence therefore counts from the end of the last moment the registry may have been
//! deaf ([`SilenceClock`]): its start, any write that failed in the store (a full disk refuses reports, so
//! their liveness is lost), a pass that came much later than scheduled (the process or its VM was paused:
//! reports queued meanwhile have not been processed yet), and any step of the wall clock (silence is
//! measured on it, against the `last_seen` it stamped). After each, every peer has a full TTL to be heard
//! again before it can be reaped. A pass also removes at most a tenth of a network's peers
//! ([`crate::service::reap`]), so no mistake empties a network at once.
//!
//! **One replica.** Several replicas on one etcd run the reaper on the elected one only ([`spawn_led`]);
//! a lone registry (SQLite) always runs it ([`spawn`]).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api::AppState;
use super::service;

/// A pass this much later than its period means the process did not run meanwhile (stopped, VM paused).
const LATE_PASSES: u32 = 3;

/// The wall clock may drift from the monotonic one by this much between two passes without counting as a
/// step.
const CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

/// The running reaper; dropping it stops it.
#[derive(Debug)]
pub struct Reaper(JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the reaper looks: a quarter of the shortest TTL, between 1 s and 30 s, so a peer is removed
/// at most a quarter TTL late.
pub fn period(state: &AppState) -> Duration {
    (state.ttls.spot.min(state.ttls.ephemeral) / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Decides from when silence counts (a wall-clock time in Unix ms), from the reaper's passes: pure, with
/// both clocks and the store's failure count passed in.
#[derive(Debug, Clone)]
pub struct SilenceClock {
    period: Duration,
    /// Silence counts from here (Unix ms).
    counts_from_ms: u64,
    /// The previous pass: monotonic time, wall time (Unix ms), store failures seen.
    last: (Instant, u64, u64),
}

/// Why silence counts from a pass rather than from earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deafness {
    /// Writes failed in the store since the last pass.
    StoreFailures,
    /// The pass came more than [`LATE_PASSES`] periods after the previous one.
    Paused,
    /// The wall clock moved differently from the monotonic clock.
    ClockStep,
}

impl SilenceClock {
    /// A clock started at (`now`, `now_ms`) with `failures` store failures so far: silence counts from the
    /// start.
    pub fn new(period: Duration, now: Instant, now_ms: u64, failures: u64) -> Self {
        SilenceClock {
            period,
            counts_from_ms: now_ms,
            last: (now, now_ms, failures),
        }
    }

    /// A pass at (`now`, `now_ms`) having seen `failures` store failures since the start: answers from when
    /// silence counts, and why it moved, if it did.
    pub fn pass(&mut self, now: Instant, now_ms: u64, failures: u64) -> (u64, Option<Deafness>) {
        let (last, last_ms, last_failures) = self.last;
        self.last = (now, now_ms, failures);
        let mono = now.saturating_duration_since(last);
        let wall = Duration::from_millis(now_ms.abs_diff(last_ms));
        let stepped = now_ms < last_ms || wall.abs_diff(mono) > CLOCK_TOLERANCE;
        let deaf = if failures != last_failures {
            Some(Deafness::StoreFailures)
        } else if mono > self.period * LATE_PASSES {
            Some(Deafness::Paused)
        } else if stepped {
            Some(Deafness::ClockStep)
        } else {
            None
        };
        if deaf.is_some() {
            self.counts_from_ms = now_ms;
        }
        (self.counts_from_ms, deaf)
    }
}

/// Starts the reaper over `state`'s store, with `state`'s TTLs, on a registry that is the only replica.
pub fn spawn(state: AppState) -> Reaper {
    let (always, leading) = watch::channel(true);
    Reaper(tokio::spawn(async move {
        let _always = always;
        run(state, leading).await;
    }))
}

/// Starts the reaper over `state`'s store, with `state`'s TTLs, working only while `leading` is `true`
/// (one replica among several: [`crate::store::etcd::Replicas::elect`]). It stops as soon as leadership is
/// lost, without waiting for a pass in flight (that transaction may still commit: it reaps only what is
/// silent in the records it read, so a pass of the next leader finds it done), and on each gain starts its
/// silence clock afresh: the replica that led before may
/// have been deaf (its store failures are not counted here), so no peer is reaped for a TTL after a
/// failover. `sdwan_registry_leader` shows whether it works here.
pub fn spawn_led(state: AppState, leading: watch::Receiver<bool>) -> Reaper {
    Reaper(tokio::spawn(run(state, leading)))
}

async fn run(state: AppState, mut leading: watch::Receiver<bool>) {
    let period = period(&state);
    loop {
        state.metrics.set_leader(false);
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        state.metrics.set_leader(true);
        let mut clock = SilenceClock::new(period, Instant::now(), sdwand::now_ms(), state.store_failures());
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = leading.wait_for(|l| !*l) => break,
            }
            let (ttls, now) = (state.ttls, sdwand::now_ms());
            let (counts_from, deaf) = clock.pass(Instant::now(), now, state.store_failures());
            if let Some(reason) = deaf {
                tracing::warn!(
                    ?reason,
                    "the registry may have missed reports: silence counts from now, no peer is reaped for a TTL"
                );
                continue;
            }
            let pass = state.write(move |tx| service::reap(tx, &ttls, now, counts_from));
            tokio::select! {
                passed = pass => if let Err(e) = passed {
                    tracing::warn!(error = %e, "reaper pass failed; retrying at the next one");
                },
                _ = leading.wait_for(|l| !*l) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(30);
    const T0_MS: u64 = 1_700_000_000_000;

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).expect("ms")
    }

    /// Passes every period from a clock started at (t0, T0_MS), both clocks in step; answers the clock
    /// and the monotonic time and wall time of the last pass.
    fn steady(passes: u32) -> (SilenceClock, Instant, u64) {
        let t0 = Instant::now();
        let mut clock = SilenceClock::new(PERIOD, t0, T0_MS, 0);
        let (mut now, mut now_ms) = (t0, T0_MS);
        for _ in 0..passes {
            now += PERIOD;
            now_ms += ms(PERIOD);
            assert_eq!(clock.pass(now, now_ms, 0), (T0_MS, None), "steady passes move nothing");
        }
        (clock, now, now_ms)
    }

    #[test]
    fn silence_counts_from_the_start() {
        steady(20);
    }

    #[test]
    fn a_store_failure_restarts_the_count() {
        let (mut clock, now, now_ms) = steady(4);
        let later = (now + PERIOD, now_ms + ms(PERIOD));
        assert_eq!(
            clock.pass(later.0, later.1, 3),
            (later.1, Some(Deafness::StoreFailures))
        );
        // Failures that stopped: the count stays where the last one was seen.
        let next = (later.0 + PERIOD, later.1 + ms(PERIOD));
        assert_eq!(clock.pass(next.0, next.1, 3), (later.1, None));
    }

    #[test]
    fn a_pause_restarts_the_count() {
        let (mut clock, now, now_ms) = steady(4);
        // SIGSTOP for 150 s: the next pass comes five periods late, on both clocks.
        let resumed = (now + Duration::from_secs(150), now_ms + 150_000);
        assert_eq!(clock.pass(resumed.0, resumed.1, 0), (resumed.1, Some(Deafness::Paused)));
        // A pass just late by less than the bound is not a pause.
        let next = (resumed.0 + PERIOD * 2, resumed.1 + ms(PERIOD * 2));
        assert_eq!(clock.pass(next.0, next.1, 0), (resumed.1, None));
    }

    #[test]
    fn a_wall_clock_step_restarts_the_count() {
        let (mut clock, now, now_ms) = steady(4);
        // +10 minutes on the wall clock between two on-time passes.
        let stepped = (now + PERIOD, now_ms + ms(PERIOD) + 600_000);
        assert_eq!(
            clock.pass(stepped.0, stepped.1, 0),
            (stepped.1, Some(Deafness::ClockStep))
        );
        // And backwards.
        let back = (stepped.0 + PERIOD, stepped.1 + ms(PERIOD) - 300_000);
        assert_eq!(clock.pass(back.0, back.1, 0), (back.1, Some(Deafness::ClockStep)));
        // Drift within the tolerance is no step.
        let drift = (back.0 + PERIOD, back.1 + ms(PERIOD) + 500);
        assert_eq!(clock.pass(drift.0, drift.1, 0), (back.1, None));
    }
}
