//! Bounded polling: the only way tests wait for the system to reach a state (never a bare sleep).

use std::thread;
use std::time::{Duration, Instant};

/// A bounded wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("condition not met within {}", crate::error::humanize(*.waited))]
pub struct WaitTimeout {
    /// How long it waited.
    pub waited: Duration,
}

/// Polls `cond` every `poll_interval` until it holds or `timeout` has passed (the condition is evaluated one
/// last time at the deadline). Returns how long it took.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, WaitTimeout> {
    wait_for(timeout, poll_interval, || cond().then_some(())).map(|((), took)| took)
}

/// Polls `f` every `poll_interval` until it returns `Some` or `timeout` has passed. Returns the value and how
/// long it took.
pub fn wait_for<T>(
    timeout: Duration,
    poll_interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<(T, Duration), WaitTimeout> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(v) = f() {
            return Ok((v, start.elapsed()));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimeout {
                waited: start.elapsed(),
            });
        }
        thread::sleep(poll_interval.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_true() {
        let mut n = 0;
        let took = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            n == 3
        })
        .unwrap();
        assert_eq!(n, 3);
        assert!(took < Duration::from_secs(5));
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let start = Instant::now();
        let err = wait_until(Duration::from_millis(30), Duration::from_millis(5), || false).unwrap_err();
        assert!(err.waited >= Duration::from_millis(30));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
