//! Per-token limits of the API: how often a peer token's report reaches the writer, and the bearer token
//! of `GET /metrics`. (The per-token watch cap lives with the watchers, [`super::Watchers`].)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{code, ApiError, ErrorKind};

/// The request limits of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Every request but the watch is answered within this (503 `request_timeout` otherwise).
    pub request_timeout: Duration,
    /// Watches one token may hold waiting at once (429 `too_many_watches` beyond).
    pub watches_per_token: usize,
    /// A peer token's reports are written at most once per this (429 `rate_limited` sooner); zero: no
    /// bound. A daemon reports every `report_interval` (1 s at the least), so half of that leaves room for
    /// network jitter.
    pub report_min_interval: Duration,
}

impl Default for Limits {
    /// The server's defaults.
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(10),
            watches_per_token: 4,
            report_min_interval: Duration::from_millis(500),
        }
    }
}

impl Limits {
    /// No per-token limit, for registries composed in process (tests, benchmarks), whose clients are not
    /// hostile and may call faster than daemons do.
    pub const IN_PROCESS: Limits = Limits {
        request_timeout: Duration::from_secs(10),
        watches_per_token: usize::MAX,
        report_min_interval: Duration::ZERO,
    };
}

/// Prune the gate's map once it holds this many tokens (then at twice what survived).
const PRUNE_AT: usize = 1024;

/// When each peer token's report was last let through to the writer.
#[derive(Debug)]
pub struct ReportGate {
    last: Mutex<Gate>,
}

#[derive(Debug)]
struct Gate {
    by_key: HashMap<String, Instant>,
    prune_at: usize,
}

impl Default for ReportGate {
    fn default() -> Self {
        ReportGate {
            last: Mutex::new(Gate {
                by_key: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }
}

impl ReportGate {
    /// Lets a report of the (authenticated) token `key_id` through at `now`, unless one was let through
    /// less than `min_interval` before: then 429 `rate_limited`.
    pub fn admit(&self, key_id: &str, now: Instant, min_interval: Duration) -> Result<(), ApiError> {
        if min_interval.is_zero() {
            return Ok(());
        }
        let Ok(mut gate) = self.last.lock() else {
            // Cannot happen (nothing panics under the lock); failing open only drops the bound.
            return Ok(());
        };
        if let Some(last) = gate.by_key.get(key_id) {
            if now.saturating_duration_since(*last) < min_interval {
                crate::service::refusal::log(
                    key_id,
                    code::RATE_LIMITED,
                    "a report came sooner than report_min_interval",
                );
                return Err(ApiError::new(
                    ErrorKind::TooManyRequests,
                    code::RATE_LIMITED,
                    format!(
                        "a report of this token was accepted less than {} ms ago; report at most once per {} ms",
                        min_interval.as_millis(),
                        min_interval.as_millis()
                    ),
                ));
            }
        }
        gate.by_key.insert(key_id.to_owned(), now);
        if gate.by_key.len() >= gate.prune_at {
            gate.by_key
                .retain(|_, last| now.saturating_duration_since(*last) < min_interval);
            gate.prune_at = (gate.by_key.len() * 2).max(PRUNE_AT);
        }
        Ok(())
    }
}

/// The bearer token `GET /metrics` requires (`metrics_token_file`), kept as its SHA-256.
#[derive(Debug, Clone)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// The token whose text is `text` (surrounding whitespace ignored); `None` if it is empty.
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| MetricsToken(Sha256::digest(text.as_bytes()).into()))
    }

    /// Whether the `Authorization` header value `header` presents this token (`Bearer <token>`), compared
    /// in constant time.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(text) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Some((scheme, token)) = text.split_once(' ') else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        scheme.eq_ignore_ascii_case("bearer") && bool::from(presented.ct_eq(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_sooner_than_the_interval_is_refused_and_others_pass() {
        let gate = ReportGate::default();
        let t0 = Instant::now();
        let every = Duration::from_millis(500);
        assert!(gate.admit("a", t0, every).is_ok());
        let e = gate
            .admit("a", t0 + Duration::from_millis(499), every)
            .expect_err("too soon");
        assert_eq!((e.kind, e.code), (ErrorKind::TooManyRequests, code::RATE_LIMITED));
        assert!(
            gate.admit("b", t0 + Duration::from_millis(1), every).is_ok(),
            "another token"
        );
        assert!(gate.admit("a", t0 + every, every).is_ok(), "after the interval");
        assert!(gate.admit("a", t0 + every, Duration::ZERO).is_ok(), "zero: no bound");
    }

    #[test]
    fn the_gate_forgets_quiet_tokens() {
        let gate = ReportGate::default();
        let t0 = Instant::now();
        let every = Duration::from_millis(500);
        for i in 0..PRUNE_AT - 1 {
            gate.admit(&format!("k{i}"), t0, every).expect("first report");
        }
        gate.admit("late", t0 + every, every).expect("first report");
        let held = gate.last.lock().expect("lock").by_key.len();
        assert_eq!(held, 1, "only the recent token is held");
    }

    #[test]
    fn the_metrics_token_is_checked() {
        let token = MetricsToken::new(" s3cret\n").expect("token");
        assert!(token.admits(Some(b"Bearer s3cret")));
        assert!(token.admits(Some(b"bearer s3cret")));
        assert!(!token.admits(Some(b"Bearer s3cre")));
        assert!(!token.admits(Some(b"Basic s3cret")));
        assert!(!token.admits(Some(b"s3cret")));
        assert!(!token.admits(None));
        assert!(MetricsToken::new(" \n").is_none());
    }
}
