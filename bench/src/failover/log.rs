//! Reading sdwand's log: the events the failover benchmark times, with their wall-clock timestamps and
//! fields.
//!
//! sdwand logs with `tracing`'s default format, one event per line:
//! `2026-11-21T11:59:21.533292Z  INFO sdwand::vip::runtime: claimed the VIP vip="fd00:5d:f::1"
//! reason="manual" epoch=2.1 detection_to_claim_ms=0.0`. The timestamp is the daemon's `SystemTime` when the
//! event happened (microseconds, UTC); every daemon of a lab runs on the same machine, so timestamps of
//! different peers and the bench's own `SystemTime::now()` share one clock. Lines that are not sdwand
//! events (`wireguard-go`'s own output, the lab's start markers) are skipped.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// The claimant's event: the VIP is on its interface (logged before the claim datagrams are sent).
pub const ADDRESS_ADDED: &str = "VIP address added";
/// The claimant's event for a floating prefix: the gateway address is on its LAN interface (logged before
/// the claim datagrams are sent, like [`ADDRESS_ADDED`]).
pub const GATEWAY_ADDED: &str = "floating gateway address added";
/// The claimant's event (a floating prefix's too): it put the address on its interface and sent the claim
/// to every peer.
pub const CLAIMED: &str = "claimed the VIP";
/// The claimant's event: the last peer acknowledged the claim (each peer acknowledges after re-routing).
pub const CONFIRMED: &str = "every peer routes the VIP here";
/// Any peer's event: a WireGuard reconcile pass changed the device (a VIP re-route is one); logged after
/// the UAPI request returned.
pub const DEVICE_CHANGED: &str = "WireGuard device changed";

/// One sdwand log event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When the daemon logged it.
    pub at: SystemTime,
    /// Its message.
    pub message: String,
    /// Its fields, quotes removed: `reason` → `manual`.
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// Field `key` as a number.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.fields.get(key)?.parse().ok()
    }

    /// Field `key` as text.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Every event with `message` in `log`, in order.
pub fn events(log: &str, message: &str) -> Vec<Event> {
    log.lines().filter_map(|l| parse_line(l, message)).collect()
}

/// The first event with `message` in `log` logged at or after `since`.
pub fn first_since(log: &str, message: &str, since: SystemTime) -> Option<Event> {
    events(log, message).into_iter().find(|e| e.at >= since)
}

/// The event on `line` if its message is `message`.
fn parse_line(line: &str, message: &str) -> Option<Event> {
    let line = strip_ansi(line);
    let (stamp, rest) = line.split_once(' ')?;
    let at = humantime::parse_rfc3339(stamp).ok()?;
    // Level, then `target: `, then the message and its fields.
    let (_, text) = rest.split_once(": ")?;
    let fields = text.strip_prefix(message)?;
    // The message ends where the fields begin: nothing, or ` key=…`.
    let first = fields
        .strip_prefix(' ')
        .map(|f| f.split(' ').next().unwrap_or_default());
    if !(fields.is_empty() || first.is_some_and(|f| f.contains('='))) {
        return None;
    }
    Some(Event {
        at,
        message: message.to_owned(),
        fields: parse_fields(fields),
    })
}

/// `a=1 b="x y" c=z` as a map (values unquoted; `\"` inside quotes kept as `"`).
fn parse_fields(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.trim_start().chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => break,
                    c => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
            // The separator after the closing quote.
            chars.next();
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if !key.is_empty() {
            out.insert(key.trim().to_owned(), value);
        }
    }
    out
}

/// `line` without ANSI colour sequences (`ESC [ … m`), in case the daemon colours its log.
fn strip_ansi(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('\u{1b}') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
pub fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LOG: &str = "\
--- sdwan-lab: starting `ip netns exec x-p2 sdwand --config …` ---
2026-11-21T11:59:21.533292Z  INFO sdwand::vip::runtime: claimed the VIP vip=\"fd00:5d:f::1\" reason=\"manual\" epoch=2.1 detection_to_claim_ms=0.0
ERROR: (x-p2) 2026/11/21 11:53:50 Failed to write packet to TUN device: write /dev/net/tun: input/output error
2026-11-21T11:59:21.540000Z  INFO sdwand::daemon::plane: WireGuard device changed added=0 updated=2 removed=0 interface_set=false
\u{1b}[2m2026-11-21T11:59:21.557036Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2msdwand::vip::runtime\u{1b}[0m\u{1b}[2m:\u{1b}[0m every peer routes the VIP here vip=\"fd00:5d:f::1\" epoch=2.1 claim_to_confirmed_ms=24.325218999999997
2026-11-21T11:59:23.104073Z  INFO sdwand::vip::runtime: claimed the VIP vip=\"fd00:5d:f::1\" reason=\"holder_dead\" epoch=4.0 detection_to_claim_ms=0.0
";

    #[test]
    fn finds_claims_with_fields_and_times() {
        let claims = events(LOG, CLAIMED);
        assert_eq!(claims.len(), 2);
        assert_eq!(claims[0].field("reason"), Some("manual"));
        assert_eq!(claims[0].field("vip"), Some("fd00:5d:f::1"));
        assert_eq!(claims[0].field("epoch"), Some("2.1"));
        assert_eq!(claims[1].field("reason"), Some("holder_dead"));
        assert_eq!(claims[1].number("detection_to_claim_ms"), Some(0.0));
        let gap = ms_between(claims[0].at, claims[1].at);
        assert!((gap - 1570.781).abs() < 1e-6, "{gap}");
        assert!((ms_between(claims[1].at, claims[0].at) + 1570.781).abs() < 1e-6);
    }

    #[test]
    fn reads_coloured_lines() {
        let confirmed = events(LOG, CONFIRMED);
        assert_eq!(confirmed.len(), 1);
        assert_eq!(confirmed[0].number("claim_to_confirmed_ms"), Some(24.325218999999997));
    }

    #[test]
    fn first_since_skips_earlier_events() {
        let claim = &events(LOG, CLAIMED)[0];
        let changed = first_since(LOG, DEVICE_CHANGED, claim.at).unwrap();
        assert_eq!(changed.field("updated"), Some("2"));
        assert!((ms_between(claim.at, changed.at) - 6.708).abs() < 1e-6);
        assert!(first_since(LOG, DEVICE_CHANGED, claim.at + Duration::from_millis(7)).is_none());
        assert!(
            events(LOG, "claimed").is_empty(),
            "a prefix of a message is not the message"
        );
    }
}
