//! Processes the lab started or adopted, identified so that a recycled PID is never signalled.
//!
//! A [`ProcId`] is a PID plus the process's start time (field 22 of `/proc/PID/stat`), which together name one
//! process for the life of the machine. Signals go through a pidfd: the lab opens it, then checks that the
//! process behind the PID still has the recorded start time, then signals the pidfd. If the process died and
//! its PID was reused between the two steps, the pidfd still refers to the dead process and the check fails;
//! after the check, the pidfd can only ever reach the checked process.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One process: its PID and its start time in clock ticks after boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// The PID.
    pub pid: u32,
    /// Start time (jiffies after boot), which tells this process from a later one with the same PID.
    pub start_time: u64,
}

/// What `/proc/PID/stat` says about a PID right now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    /// The state letter (`R`, `S`, `Z`, …).
    state: char,
    /// Start time in jiffies after boot.
    start_time: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or ')': fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); start time is field 22.
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// The command name (`/proc/PID/comm`, at most 15 bytes) of a PID, if it exists.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

impl ProcId {
    /// Identifies the process that has `pid` now. `None` when there is none.
    pub fn of(pid: u32) -> Option<ProcId> {
        read_stat(pid).map(|s| ProcId {
            pid,
            start_time: s.start_time,
        })
    }

    /// Whether this very process still runs (a zombie counts as gone: it runs no code and holds no
    /// sockets or interfaces).
    pub fn is_alive(&self) -> bool {
        matches!(read_stat(self.pid), Some(s) if s.start_time == self.start_time && s.state != 'Z')
    }

    /// A pidfd for this process, or `None` when it is gone or its PID now names another process.
    fn pidfd(&self) -> io::Result<Option<OwnedFd>> {
        let pid = libc::pid_t::try_from(self.pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked after opening: from here on the pidfd can only reach the process with this start time.
        if self.is_alive() {
            Ok(Some(fd))
        } else {
            Ok(None)
        }
    }

    /// Sends `signal` to this process. `Ok(false)` when it is gone (or its PID was reused): nothing is sent.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<bool> {
        let Some(fd) = self.pidfd()? else { return Ok(false) };
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESRCH) => Ok(false),
                _ => Err(err),
            };
        }
        Ok(true)
    }

    /// Waits, at most `timeout`, until this process is gone. Returns whether it is.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let fd = match self.pidfd() {
            Ok(Some(fd)) => fd,
            Ok(None) => return true,
            // No pidfd (should not happen on Linux >= 5.3): fall back to polling /proc.
            Err(_) => return crate::wait::wait_until(timeout, Duration::from_millis(20), || !self.is_alive()).is_ok(),
        };
        loop {
            // A pidfd polls readable when the process exits (before it is reaped). A zombie is "gone".
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc > 0 || !self.is_alive() {
                return true;
            }
            if rc == 0 || Instant::now() >= deadline {
                return !self.is_alive();
            }
            // rc < 0: EINTR; go round again until the deadline.
        }
    }

    /// Stops this process: `first` (usually SIGTERM), up to `grace` to exit, then SIGKILL and up to 2 s more.
    /// Returns whether it is gone.
    pub fn stop(&self, first: libc::c_int, grace: Duration) -> io::Result<bool> {
        if !self.signal(first)? {
            return Ok(true);
        }
        if self.wait_gone(grace) {
            return Ok(true);
        }
        self.signal(libc::SIGKILL)?;
        Ok(self.wait_gone(Duration::from_secs(2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_itself() {
        let me = ProcId::of(std::process::id()).expect("own stat");
        assert!(me.is_alive());
        let other = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        // Signal 0 checks without sending; the wrong start time must not reach us.
        assert!(me.signal(0).unwrap());
        assert!(!other.signal(0).unwrap());
    }

    #[test]
    fn waits_for_a_child() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcId::of(child.id()).unwrap();
        assert!(!id.wait_gone(Duration::from_millis(50)));
        assert!(id.stop(libc::SIGTERM, Duration::from_secs(2)).unwrap());
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!id.is_alive());
    }
}
