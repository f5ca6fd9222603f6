//! Starting and watching the userspace WireGuard implementation (`wireguard-go -f IFACE`).
//!
//! The implementation runs in its own process group, so it outlives sdwand: a daemon restart adopts the
//! running process (found through its UAPI socket) instead of recreating the interface, and traffic keeps
//! flowing. Its exit is watched, and it is signalled, through a pidfd, which works for adopted processes
//! too and can never reach another process that reused the PID. It starts with a cleared environment
//! (only `PATH`, `LOG_LEVEL` and `WG_PROCESS_FOREGROUND`), so nothing of sdwand's environment (e.g.
//! `WG_TUN_FD`, `WG_UAPI_FD`) changes what it opens. A crashing implementation is restarted with an
//! increasing delay ([`RestartBackoff`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use super::{uapi, WgError};

/// How long a freshly started implementation may take to open its UAPI socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The `PATH` the implementation runs with.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Delays between restarts of an implementation that keeps exiting: from [`RestartBackoff::FIRST`],
/// doubling up to [`RestartBackoff::MAX`]; back to the first once it ran [`RestartBackoff::STABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    next: Duration,
}

impl RestartBackoff {
    /// The delay before the first restart.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(60);
    /// A run at least this long resets the delay.
    pub const STABLE: Duration = Duration::from_secs(60);

    /// A backoff at its first delay.
    pub fn new() -> RestartBackoff {
        RestartBackoff { next: Self::FIRST }
    }

    /// The delay before the next restart of an implementation that ran for `ran_for` (or whose start
    /// failed: zero), and the delay after that one grows.
    pub fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::STABLE {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self::new()
    }
}

/// How sdwand came to supervise the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It was already serving the interface (daemon restart).
    Adopted,
    /// sdwand started it.
    Spawned,
}

/// A supervised userspace implementation serving one interface.
#[derive(Debug)]
pub struct Supervisor {
    ifname: String,
    pid: u32,
    origin: Origin,
    /// Set when sdwand started the process: kept to reap it once it exits.
    child: Option<Child>,
    /// Becomes readable when the process exits.
    pidfd: AsyncFd<OwnedFd>,
}

impl Supervisor {
    /// Adopts the process serving `ifname`'s UAPI socket, or starts `path -f ifname` and waits (bounded)
    /// until it serves the socket. A stale socket file (nothing listening) is removed first.
    pub async fn adopt_or_start(ifname: &str, path: &Path) -> Result<Self, WgError> {
        let err = |message: String| WgError::Userspace {
            iface: ifname.to_owned(),
            message,
        };
        if let Some(pid) = uapi::server_pid(ifname).map_err(|e| err(format!("probing the UAPI socket: {e}")))? {
            let pidfd = pidfd(pid).map_err(|e| err(format!("watching adopted process {pid}: {e}")))?;
            return Ok(Supervisor {
                ifname: ifname.to_owned(),
                pid,
                origin: Origin::Adopted,
                child: None,
                pidfd,
            });
        }
        let socket = uapi::socket_path(ifname);
        match std::fs::remove_file(&socket) {
            Ok(()) => tracing::info!(socket = %socket.display(), "removed stale UAPI socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(format!("removing stale socket {}: {e}", socket.display()))),
        }
        let mut child = command(path, ifname).spawn().map_err(|e| {
            err(format!(
                "starting {}: {e} (check backend.userspace_path)",
                path.display()
            ))
        })?;
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| err(e.to_string()))? {
                return Err(err(format!(
                    "{} exited at start with {status}; is {ifname} in use, or is /dev/net/tun missing?",
                    path.display()
                )));
            }
            if uapi::server_pid(ifname).ok().flatten() == Some(pid) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "{} did not open {} within {START_TIMEOUT:?}",
                    path.display(),
                    socket.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pidfd = pidfd(pid).map_err(|e| err(format!("watching process {pid}: {e}")))?;
        Ok(Supervisor {
            ifname: ifname.to_owned(),
            pid,
            origin: Origin::Spawned,
            child: Some(child),
            pidfd,
        })
    }

    /// PID of the implementation.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it was adopted or started.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Resolves when the process has exited (and reaps it when sdwand started it). Cancel-safe.
    pub async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.pidfd.readable().await {
            // A pidfd stays readable once the process is gone: keep the readiness.
            Ok(mut guard) => guard.retain_ready(),
            Err(e) => tracing::warn!(error = %e, pid = self.pid, "pidfd poll failed; treating the process as gone"),
        }
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still there after a bounded wait. Its interface
    /// and UAPI socket go with it. The signals go through the pidfd, so they reach this process or
    /// nobody.
    pub async fn stop(mut self) {
        if let Err(e) = signal(self.pidfd.get_ref(), libc::SIGTERM) {
            tracing::debug!(pid = self.pid, error = %e, "SIGTERM through the pidfd failed (already gone?)");
        }
        if tokio::time::timeout(Duration::from_secs(3), self.exited())
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, iface = %self.ifname, "userspace WireGuard ignored SIGTERM; killing it");
            if let Err(e) = signal(self.pidfd.get_ref(), libc::SIGKILL) {
                tracing::debug!(pid = self.pid, error = %e, "SIGKILL through the pidfd failed (already gone?)");
            }
            let _ = tokio::time::timeout(Duration::from_secs(3), self.exited()).await;
        }
    }
}

/// The command that starts the implementation for `ifname`: foreground, errors-only logging, its own
/// process group (it outlives sdwand), no stdin, and a cleared environment.
fn command(path: &Path, ifname: &str) -> Command {
    let mut command = Command::new(path);
    command
        .arg("-f")
        .arg(ifname)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("LOG_LEVEL", "error")
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdin(Stdio::null())
        .process_group(0);
    command
}

/// Sends `sig` to the process of `pidfd` (`pidfd_send_signal(2)`): ESRCH once it has exited, never
/// another process.
fn signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a pidfd, a signal number, a null siginfo and zero flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd(pid: u32) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the descriptor is owned by the AsyncFd from here on and closed only when it drops.
    unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn raw_pidfd(pid: u32) -> OwnedFd {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    #[test]
    fn signals_reach_the_process_of_the_pidfd_and_nobody_once_it_is_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = raw_pidfd(child.id());
        signal(&fd, libc::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Reaped: its PID may be reused by anyone; the pidfd still names the dead process only.
        let err = signal(&fd, libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn the_implementation_starts_with_a_cleared_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = dir.path().join("dump");
        std::fs::write(&script, format!("env > {}\n", out.display())).unwrap();
        // `sh -f SCRIPT` runs the script (`-f` only turns globbing off), standing in for `wg-go -f IFACE`.
        let status = command(Path::new("/bin/sh"), script.to_str().unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        let env = std::fs::read_to_string(&out).unwrap();
        for wanted in [
            format!("PATH={CHILD_PATH}"),
            "LOG_LEVEL=error".to_owned(),
            "WG_PROCESS_FOREGROUND=1".to_owned(),
        ] {
            assert!(env.lines().any(|l| l == wanted), "{wanted} missing from:\n{env}");
        }
        // cargo runs tests with CARGO_* variables set: none may leak to the child.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        assert!(
            !env.contains("CARGO_"),
            "the child inherited sdwand's environment:\n{env}"
        );
    }

    #[test]
    fn restarts_back_off_and_a_stable_run_resets_the_delay() {
        let mut b = RestartBackoff::new();
        let crash = Duration::from_millis(50);
        let delays: Vec<u64> = (0..9).map(|_| b.delay(crash).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(RestartBackoff::STABLE), RestartBackoff::FIRST);
        assert_eq!(b.delay(Duration::ZERO), Duration::from_secs(2));
    }
}
