//! `ping` (iputils) summaries: how many echo requests went out and how many came back.

use std::time::Duration;

/// The result of one `ping` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests asked for (`-c`).
    pub requested: u32,
    /// Echo requests sent (`N packets transmitted`).
    pub transmitted: u32,
    /// Echo replies received (`M received`).
    pub received: u32,
}

impl PingStats {
    /// Requests that got no reply, counting any that were never sent (e.g. the deadline cut the run short).
    pub fn lost(&self) -> u32 {
        self.requested.saturating_sub(self.received)
    }

    /// Loss in percent of the requested count.
    pub fn loss_percent(&self) -> f64 {
        if self.requested == 0 {
            0.0
        } else {
            100.0 * f64::from(self.lost()) / f64::from(self.requested)
        }
    }
}

impl std::fmt::Display for PingStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} replies ({} sent, {:.0}% lost)",
            self.received,
            self.requested,
            self.transmitted,
            self.loss_percent()
        )
    }
}

/// The argv of a bounded ping: exactly `count` requests every `interval`, the last reply awaited at most 1 s.
/// (No `-w`: with a deadline, ping keeps sending until it has `count` replies, which hides loss.) `timeout`
/// interrupts it (SIGINT, so it still prints its summary) should it hang past `count × interval + 5 s`.
pub fn ping_argv(to: &str, count: u32, interval: Duration) -> Vec<String> {
    let deadline = (interval.as_secs_f64() * f64::from(count)).ceil() as u64 + 5;
    let mut argv: Vec<String> = vec!["timeout".into(), "-s".into(), "INT".into(), deadline.to_string()];
    argv.extend(["ping", "-n", "-c"].map(String::from));
    argv.push(count.to_string());
    argv.push("-i".into());
    argv.push(format!("{:.3}", interval.as_secs_f64()));
    argv.extend(["-W", "1"].map(String::from));
    argv.push(to.into());
    argv
}

/// Reads `N packets transmitted, M received` from ping's output. `None` if there is no summary line.
pub fn parse_summary(output: &str, requested: u32) -> Option<PingStats> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut transmitted = None;
    let mut received = None;
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        match what {
            "packets" => transmitted = n.parse().ok(),
            "received" => received = n.parse().ok(),
            _ => {}
        }
    }
    Some(PingStats {
        requested,
        transmitted: transmitted?,
        received: received?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_summaries() {
        let ok = "--- fd00:5d::2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\n";
        assert_eq!(
            parse_summary(ok, 3),
            Some(PingStats {
                requested: 3,
                transmitted: 3,
                received: 3
            })
        );
        let bad = "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4090ms";
        let s = parse_summary(bad, 5).unwrap();
        assert_eq!((s.transmitted, s.received, s.lost()), (5, 0, 5));
        assert_eq!(parse_summary("connect: Network is unreachable", 1), None);
        let cut = parse_summary("8 packets transmitted, 8 received, 0% packet loss", 10).unwrap();
        assert_eq!(cut.lost(), 2);
    }

    #[test]
    fn argv_is_bounded() {
        let argv = ping_argv("fd00:5d::2", 200, Duration::from_millis(50));
        assert_eq!(argv[..4], ["timeout", "-s", "INT", "15"]);
        assert!(!argv.contains(&"-w".to_string()));
        assert_eq!(argv.last().map(String::as_str), Some("fd00:5d::2"));
        assert!(argv.contains(&"0.050".to_string()));
    }
}
