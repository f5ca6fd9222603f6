//! Logging of refused requests by known callers, without a flood.
//!
//! A daemon whose enrollment token was revoked retries for ever, and a rogue candidate can post an
//! implausible epoch with every report: one warning per (caller, reason) says what happened and to whom;
//! the repetitions go to debug. Callers are named by a token's key id or a peer id — never by a secret;
//! tokens whose id is unknown share the caller `unknown-token`, so made-up tokens cannot flood the log.
//! The set of seen pairs is bounded: when it is full it starts over (so a long-lived refusal is warned
//! about again, rarely).

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

/// How many (caller, reason) pairs are remembered before the set starts over.
const REMEMBERED: usize = 4096;

static SEEN: LazyLock<Mutex<HashSet<(String, &'static str)>>> = LazyLock::new(Mutex::default);

/// Whether (`who`, `reason`) is new: `true` the first time, `false` after, until the set starts over.
fn first(who: &str, reason: &'static str) -> bool {
    let Ok(mut seen) = SEEN.lock() else {
        return true;
    };
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert((who.to_owned(), reason))
}

/// Logs that a request of `who` (a token key id or a peer id) was refused for `reason` (an error code):
/// at warn the first time, at debug after.
pub(crate) fn log(who: &str, reason: &'static str, detail: &str) {
    if first(who, reason) {
        tracing::warn!(caller = %who, reason, "registry refused a request: {detail} (repeats are logged at debug)");
    } else {
        tracing::debug!(caller = %who, reason, "registry refused a request: {detail}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_new_once_per_caller_and_reason() {
        assert!(first("key-a-refusal-test", "token_revoked"));
        assert!(!first("key-a-refusal-test", "token_revoked"));
        assert!(first("key-a-refusal-test", "token_expired"));
        assert!(first("key-b-refusal-test", "token_revoked"));
    }
}
