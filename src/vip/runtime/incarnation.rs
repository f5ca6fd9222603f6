//! Incarnations: the number that tells a restarted (or re-created) VIP machine's datagrams from its
//! predecessor's, so peers' replay windows accept them although `seq` starts again at 1.
//!
//! Every new machine gets its own incarnation, greater than every earlier one of this node: the larger
//! of the wall clock in microseconds and the last one handed out plus one. The last one is kept in
//! `<state_dir>/incarnation`, written durably (temporary file, fsync, rename, directory fsync, mode
//! 0600), so a clock that went back across a restart does not reuse one. A value the file should never
//! hold (empty after a power cut, garbage, or 2^63 and above, which would exhaust the space) is refused
//! with a warning and the clock is used instead.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Incarnations at or above this are refused: they leave too little room to grow.
pub(crate) const LIMIT: u64 = 1 << 63;

/// What the incarnation file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// No file (first start).
    Missing,
    /// A usable incarnation.
    Valid(u64),
    /// Something that cannot be used, and why.
    Refused(String),
}

impl Recorded {
    /// Reads the file's text.
    pub(crate) fn parse(text: &str) -> Recorded {
        let text = text.trim();
        if text.is_empty() {
            return Recorded::Refused("the file is empty (a crash while it was written?)".into());
        }
        match text.parse::<u64>() {
            Ok(v) if v < LIMIT => Recorded::Valid(v),
            Ok(v) => Recorded::Refused(format!("{v} is 2^63 or more")),
            Err(_) => Recorded::Refused(format!("{:?} is not a decimal number", truncate(text))),
        }
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

/// The incarnation after `last` with the wall clock at `clock` (µs since the epoch): never below the
/// clock, always above `last`, always below [`LIMIT`].
pub(crate) fn after(last: Option<u64>, clock: u64) -> u64 {
    match last {
        Some(last) if last + 1 < LIMIT => clock.max(last + 1),
        _ => clock,
    }
    .min(LIMIT - 1)
}

/// Hands out incarnations and records each one before it is used.
#[derive(Debug)]
pub(crate) struct Incarnations {
    path: PathBuf,
    last: Option<u64>,
}

impl Incarnations {
    /// Reads `<state_dir>/incarnation`, warning about a value it refuses.
    pub(crate) fn load(state_dir: &Path) -> Incarnations {
        let path = state_dir.join("incarnation");
        let recorded = match std::fs::read_to_string(&path) {
            Ok(text) => Recorded::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Recorded::Missing,
            Err(e) => Recorded::Refused(format!("reading it failed: {e}")),
        };
        let last = match recorded {
            Recorded::Valid(v) => Some(v),
            Recorded::Missing => None,
            Recorded::Refused(why) => {
                tracing::warn!(path = %path.display(), "ignoring the recorded incarnation: {why}; using the clock (peers that still remember a higher one ignore this node until they restart or forget it)");
                None
            }
        };
        Incarnations { path, last }
    }

    /// A fresh incarnation, greater than every one this node handed out before (as far as the file and
    /// the clock tell). If it cannot be recorded, it is used anyway and the failure is logged.
    pub(crate) fn next(&mut self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let next = after(self.last, clock);
        self.last = Some(next);
        if let Err(e) = write_durably(&self.path, &format!("{next}\n")) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record the incarnation; a restart with the clock set back could reuse it");
        }
        next
    }
}

/// Writes `contents` to `path` durably ([`crate::statedir::write_atomic`]), creating the state directory
/// ([`crate::statedir::create_dir`], 0700) when it is missing.
fn write_durably(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::statedir::create_dir(dir)?;
    crate::statedir::write_atomic(path, contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_file_corpus_is_read_or_refused() {
        assert_eq!(
            Recorded::parse("1733300000000000\n"),
            Recorded::Valid(1_733_300_000_000_000)
        );
        assert_eq!(Recorded::parse(" 42 "), Recorded::Valid(42));
        assert_eq!(Recorded::parse(&(LIMIT - 1).to_string()), Recorded::Valid(LIMIT - 1));
        for bad in [
            "",
            "\n",
            "garbage",
            "-1",
            "1.5",
            "18446744073709551616",
            "18446744073709551615",
            "9223372036854775808",
        ] {
            assert!(
                matches!(Recorded::parse(bad), Recorded::Refused(_)),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn the_next_incarnation_grows_past_the_last_and_never_reaches_the_limit() {
        let clock = 1_000_000;
        assert_eq!(after(None, clock), clock);
        assert_eq!(after(Some(5), clock), clock, "the clock when it is ahead");
        assert_eq!(after(Some(2_000_000), clock), 2_000_001, "the clock went back");
        assert_eq!(after(Some(LIMIT - 2), clock), LIMIT - 1);
        assert_eq!(after(Some(LIMIT - 1), clock), clock, "exhausted: back to the clock");
        assert!(after(None, u64::MAX) < LIMIT);
    }

    #[test]
    fn refused_files_are_replaced_and_every_next_is_fresh() {
        for corpus in ["", "garbage", "18446744073709551615", "9223372036854775808"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("incarnation");
            std::fs::write(&path, corpus).unwrap();
            let mut inc = Incarnations::load(dir.path());
            let first = inc.next();
            assert!(first < LIMIT, "{corpus:?}: {first}");
            let stored: u64 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
            assert_eq!(stored, first, "{corpus:?}: the file was not replaced");
            let second = inc.next();
            assert!(second > first, "{corpus:?}: {second} <= {first}");
            // A restart (a new allocator from the same file) continues above.
            assert!(Incarnations::load(dir.path()).next() > second);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_clock_behind_the_file_still_gives_a_higher_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let far = LIMIT - 10;
        std::fs::write(dir.path().join("incarnation"), far.to_string()).unwrap();
        let mut inc = Incarnations::load(dir.path());
        assert_eq!(inc.next(), far + 1);
        assert_eq!(inc.next(), far + 2);
    }

    #[test]
    fn a_missing_state_directory_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = Incarnations::load(&state).next();
        assert_eq!(Incarnations::load(&state).last, Some(first));
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_leftover_temporary_file_does_not_keep_a_wider_mode() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("incarnation.tmp");
        std::fs::write(&tmp, "junk").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        Incarnations::load(dir.path()).next();
        let mode = std::fs::metadata(dir.path().join("incarnation"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
