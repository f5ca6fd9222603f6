//! Hostile failover traffic from inside a peer's namespace: crafted datagrams (encoded with the daemon's own
//! codec, [`sdwand::vip::Message`]) sent from a chosen address and port, as root or as `nobody`, with or
//! without `IPV6_FREEBIND`; and a squatter that holds a failover port so the daemon cannot bind it.
//!
//! Everything runs on a thread that joins the namespace (see [`crate::netns`]). Dropping to `nobody` uses the
//! raw `setresuid`/`setresgid`/`setgroups` system calls, which change only the calling thread (glibc's
//! wrappers would change every thread of the process), and that thread ends with the work. A [`Stream`]
//! keeps sending (a liar's heartbeats, say) until it is stopped or its bounds run out.

use std::fs;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sdwand::vip::{Body, Header, Message};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::layout::Layout;
use crate::netns::{run_in, spawn_in};

/// The longest a [`Stream`] may run, whatever its caller asks.
pub const MAX_STREAM: Duration = Duration::from_secs(60);

/// Who a crafted sender runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// root, with every capability (can bind privileged ports).
    Root,
    /// `nobody`: an unprivileged local user, no capabilities.
    Nobody,
}

/// How a crafted datagram leaves its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// Who owns the sending socket.
    pub user: User,
    /// `IPV6_FREEBIND`: bind an address that is not (or not yet) on any local interface.
    pub freebind: bool,
}

impl SendOptions {
    /// As root, no `IPV6_FREEBIND`.
    pub const ROOT: SendOptions = SendOptions {
        user: User::Root,
        freebind: false,
    };
    /// As `nobody`, no `IPV6_FREEBIND`.
    pub const NOBODY: SendOptions = SendOptions {
        user: User::Nobody,
        freebind: false,
    };
}

/// One failover datagram with the given header fields, encoded by the daemon's codec.
pub fn datagram(vip: Ipv6Addr, sender: Ipv6Addr, incarnation: u64, seq: u64, body: Body) -> Vec<u8> {
    Message {
        header: Header {
            vip,
            sender,
            incarnation,
            seq,
        },
        body,
    }
    .to_bytes()
}

/// An incarnation above any a daemon started before now can have (daemons use microseconds since the
/// epoch; this is nanoseconds), so a crafted datagram is never dropped as stale.
pub fn fresh_incarnation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(u64::MAX / 2, |d| d.as_nanos() as u64)
}

/// `nobody`'s uid and gid, from `/etc/passwd`.
fn nobody_ids() -> io::Result<(libc::uid_t, libc::gid_t)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "nobody").then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no user `nobody` in /etc/passwd"))
}

/// Makes the calling thread (only it) `user`. Irreversible for that thread.
pub fn become_user(user: User) -> io::Result<()> {
    if user == User::Root {
        return Ok(());
    }
    let (uid, gid) = nobody_ids()?;
    let check = |rc: libc::c_long| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls with integer arguments (and a null list for setgroups); raw syscalls so
    // only this thread changes identity.
    unsafe {
        check(libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()))?;
        check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
    }
    Ok(())
}

/// A UDP socket bound to `addr` (IPv6 only), with `IPV6_FREEBIND` when asked.
fn udp_bound(addr: SocketAddr, freebind: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        if freebind {
            socket.set_freebind_v6(true)?;
        }
    }
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    Ok(socket.into())
}

/// A socket that holds a UDP address in a peer's namespace until it is dropped (or [`Squatter::release`]d).
#[derive(Debug)]
pub struct Squatter {
    /// The bound socket; closing it frees the address.
    socket: UdpSocket,
    /// What it holds, for messages.
    addr: SocketAddr,
}

impl Squatter {
    /// The address it holds.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frees the address.
    pub fn release(self) {
        drop(self.socket);
    }
}

/// Datagrams sent at a fixed period from a thread in a peer's namespace, until [`Stream::stop`], drop, or its
/// time bound.
#[derive(Debug)]
pub struct Stream {
    /// Set to end the stream.
    stop: Arc<AtomicBool>,
    /// How many datagrams were sent so far.
    sent: Arc<AtomicU64>,
    /// The sending thread.
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Stream {
    /// How many datagrams were sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Ends the stream and waits for its thread; an error the thread met is returned.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Err(LabError::io("a datagram stream failed", e)),
            Some(Err(_)) => Err(LabError::Process("a datagram stream's thread panicked".into())),
            _ => Ok(self.sent()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Lab {
    /// Sends `make(n)` (n = 0, 1, …) to `to` every `period` from a socket bound to `from` in peer `i`'s
    /// namespace, as root, until the returned [`Stream`] is stopped or dropped, or `max` (at most
    /// [`MAX_STREAM`]) has passed.
    pub fn stream_crafted(
        &self,
        i: usize,
        from: SocketAddr,
        to: SocketAddr,
        period: Duration,
        max: Duration,
        mut make: impl FnMut(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<Stream> {
        let ns = self.netns(i)?;
        let socket = run_in(&ns, &format!("binding {from}"), move || udp_bound(from, false))?;
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (stop_t, sent_t) = (stop.clone(), sent.clone());
        let deadline = Instant::now() + max.min(MAX_STREAM);
        let thread = spawn_in(&ns, move || {
            while !stop_t.load(Ordering::SeqCst) && Instant::now() < deadline {
                let n = sent_t.load(Ordering::Relaxed);
                socket.send_to(&make(n), to)?;
                sent_t.store(n + 1, Ordering::Relaxed);
                std::thread::sleep(period);
            }
            Ok(())
        })?;
        Ok(Stream {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// The failover port peer `i`'s configuration gives its daemon (`[failover] port`).
    pub fn failover_port(&self, i: usize) -> Result<u16> {
        self.config(i)?
            .failover
            .as_ref()
            .map(|f| f.port)
            .ok_or_else(|| LabError::InvalidOption(format!("p{i} has no [failover] section (a lab without a VIP)")))
    }

    /// Peer `j`'s failover endpoint `[fd00:5d::j]:PORT`, with the port from peer `j`'s configuration.
    pub fn failover_addr(&self, j: usize) -> Result<SocketAddr> {
        Ok(SocketAddr::from((Layout::overlay_addr(j), self.failover_port(j)?)))
    }

    /// Sends every one of `payloads` to every one of `to`, from a socket bound to `from` in peer `i`'s
    /// namespace, opened as `opts.user` (with `IPV6_FREEBIND` when `opts.freebind`).
    pub fn send_crafted(
        &self,
        i: usize,
        from: SocketAddr,
        to: &[SocketAddr],
        payloads: &[Vec<u8>],
        opts: SendOptions,
    ) -> Result<()> {
        let ns = self.netns(i)?;
        let (to, payloads) = (to.to_vec(), payloads.to_vec());
        run_in(&ns, &format!("crafted UDP from {from} as {:?}", opts.user), move || {
            become_user(opts.user)?;
            let socket = udp_bound(from, opts.freebind)?;
            for dest in &to {
                for p in &payloads {
                    socket
                        .send_to(p, dest)
                        .map_err(|e| io::Error::new(e.kind(), format!("sending to {dest}: {e}")))?;
                }
            }
            Ok(())
        })
    }

    /// Binds `addr` in peer `i`'s namespace as root with `IPV6_FREEBIND` (so the address need not exist yet)
    /// and holds it: the daemon's own bind of that address then fails until the squatter is released.
    pub fn squat_udp(&self, i: usize, addr: SocketAddr) -> Result<Squatter> {
        let ns = self.netns(i)?;
        let socket = run_in(&ns, &format!("squatting {addr}"), move || udp_bound(addr, true))?;
        Ok(Squatter { socket, addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdwand::vip::{Claim, Epoch};

    #[test]
    fn crafted_datagrams_decode_with_the_daemons_codec() {
        let vip: Ipv6Addr = "fd00:5d:f::1".parse().unwrap();
        let me = Layout::overlay_addr(5);
        let body = Body::Ack {
            view: Claim {
                epoch: Epoch {
                    term: u64::MAX,
                    rank: 0,
                },
                holder: me,
            },
        };
        let bytes = datagram(vip, me, 1, 1, body.clone());
        // The review's 82-byte forged ack: magic, version 1, kind 3, body length 26.
        assert_eq!(bytes.len(), 82);
        assert_eq!(&bytes[..8], b"SDWV\x01\x03\x00\x1a");
        let msg = Message::decode(&bytes).unwrap();
        assert_eq!((msg.header.vip, msg.header.sender, msg.header.seq), (vip, me, 1));
        assert_eq!(msg.body, body);
    }

    #[test]
    fn fresh_incarnations_are_above_the_daemons_clock() {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        assert!(fresh_incarnation() > micros);
    }
}
