//! Starting and watching the userspace WireGuard implementation (`wireguard-go -f IFACE`).
//!
//! The implementation runs in its own process group, so it outlives sdwand: a daemon restart adopts the
//! running process (found through its UAPI socket) instead of recreating the interface, and traffic keeps
//! flowing. Its exit is watched through a pidfd, which works for adopted processes too.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
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
        let mut child = Command::new(path)
            .arg("-f")
            .arg(ifname)
            .env("LOG_LEVEL", "error")
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
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
    /// and UAPI socket go with it.
    pub async fn stop(mut self) {
        // SAFETY: plain kill(2) on the PID whose pidfd we hold; the pidfd keeps the PID from being reused
        // while it is open.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(3), self.exited())
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, iface = %self.ifname, "userspace WireGuard ignored SIGTERM; killing it");
            // SAFETY: as above.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            let _ = tokio::time::timeout(Duration::from_secs(3), self.exited()).await;
        }
    }
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
