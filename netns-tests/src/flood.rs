//! Slow and idle HTTP clients against a lab server (slowloris): many TCP connections, opened from inside a
//! namespace (as root or `nobody`), that send part of a request (or nothing) and then stall; how many of
//! them the server has closed; and how many files a process holds open.
//!
//! Counts are bounded by the caller; the connections close when the [`Stalled`] value is dropped.

use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::forge::{become_user, User};
use crate::netns::run_in;
use crate::wait::wait_until;

/// The most connections one [`stall_tcp`] may open (the test process's own file limit is the real bound).
pub const MAX_STALLED: usize = 5_000;

/// How long one connect may take: a server slower to accept than the client connects overflows its accept
/// queue, and the kernel then retries the SYN after 1 s, then 3 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections that sent `prefix` and then nothing more.
#[derive(Debug)]
pub struct Stalled {
    /// The open connections.
    streams: Vec<TcpStream>,
    /// Where they go, for messages.
    target: SocketAddr,
}

/// Opens `count` TCP connections to `target` from inside `netns`, as `user`, each sending `prefix` (may be
/// empty) and then stalling. Fails if one cannot be opened within 5 s.
pub fn stall_tcp(netns: &str, target: SocketAddr, count: usize, prefix: &[u8], user: User) -> Result<Stalled> {
    if count > MAX_STALLED {
        return Err(LabError::InvalidOption(format!(
            "{count} stalled connections: at most {MAX_STALLED}"
        )));
    }
    let prefix = prefix.to_vec();
    let streams = run_in(netns, &format!("{count} stalled connections to {target}"), move || {
        become_user(user)?;
        let mut streams = Vec::with_capacity(count);
        for n in 0..count {
            let mut s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
                .map_err(|e| io::Error::new(e.kind(), format!("connection {} of {count}: {e}", n + 1)))?;
            // A server at its connection cap may close a new connection at once: that one is closed, not
            // an error.
            if let Err(e) = s.write_all(&prefix) {
                if !matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
                    return Err(e);
                }
            }
            streams.push(s);
        }
        Ok(streams)
    })?;
    Ok(Stalled { streams, target })
}

impl Stalled {
    /// How many connections there are.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Where they go.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// How many the server has closed (FIN or RST seen), without reading or waiting.
    pub fn closed_by_server(&self) -> usize {
        let mut fds: Vec<libc::pollfd> = self
            .streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds on open sockets; timeout 0 never blocks.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if rc <= 0 {
            return 0;
        }
        fds.iter()
            .filter(|p| p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
            .count()
    }

    /// Waits, at most `timeout`, until the server has closed every connection. Returns how long it took, or
    /// how many were still open at the deadline.
    pub fn wait_all_closed(&self, timeout: Duration) -> std::result::Result<Duration, usize> {
        wait_until(timeout, Duration::from_millis(100), || {
            self.closed_by_server() == self.len()
        })
        .map_err(|_| self.len() - self.closed_by_server())
    }
}

/// How many files process `pid` has open (`/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    fs::read_dir(&dir)
        .map(Iterator::count)
        .map_err(|e| LabError::io(format!("cannot list {dir}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn sees_which_connections_the_server_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let streams: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(target).unwrap()).collect();
        let stalled = Stalled { streams, target };
        let mut accepted: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        assert_eq!(stalled.closed_by_server(), 0);
        drop(accepted.remove(0));
        wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
            stalled.closed_by_server() == 1
        })
        .unwrap();
        assert_eq!(stalled.wait_all_closed(Duration::from_millis(50)), Err(2));
        assert!(open_fds(std::process::id()).unwrap() >= 6);
    }
}
