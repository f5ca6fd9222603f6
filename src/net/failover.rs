//! The failover socket: UDP on this node's overlay /128 that only ever receives what came through the
//! WireGuard interface.
//!
//! `SO_BINDTODEVICE` alone does not give that: IPv6 local delivery sets the receive interface of a
//! datagram a local process sends to the node's own address to the interface that owns the address, so
//! a process on this node that binds another member's address with `IPV6_FREEBIND` (no privilege
//! needed) passes it and can speak as that member to the local daemon. A classic BPF socket filter
//! closes that: it accepts only packets whose receiving device (`skb->dev`) is the WireGuard interface,
//! and a looped-back packet's device is `lo`. The filter is attached before the bind, so no datagram is
//! queued unfiltered.
//!
//! This module holds no decisions: which address, port and interface is the caller's business.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

/// The classic BPF program that accepts a packet only when it was received on interface `ifindex`.
fn only_from(ifindex: u32) -> [SockFilter; 4] {
    // A ld of an ancillary field: the kernel computes it instead of reading the packet.
    let ifindex_field = (libc::SKF_AD_OFF + libc::SKF_AD_IFINDEX) as u32;
    let code = |c: u32| c as u16;
    [
        // A = skb->dev->ifindex (0 when the packet has no device: then it is dropped too)
        SockFilter::new(code(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS), 0, 0, ifindex_field),
        // A == ifindex ? accept : drop
        SockFilter::new(code(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K), 0, 1, ifindex),
        // accept: keep the whole packet
        SockFilter::new(code(libc::BPF_RET | libc::BPF_K), 0, 0, u32::MAX),
        // drop
        SockFilter::new(code(libc::BPF_RET | libc::BPF_K), 0, 0, 0),
    ]
}

/// A non-blocking UDP socket on `[me]:port`, bound to the interface `ifname` whose index is `ifindex`,
/// that receives only datagrams that arrived through that interface (see the module documentation).
/// `IPV6_FREEBIND` lets it bind before the address is on the interface.
///
/// Needs `CAP_NET_RAW` for `SO_BINDTODEVICE` before Linux 5.7, and `CAP_NET_BIND_SERVICE` for a port
/// below 1024. The error names the address, the port and what to change.
pub fn bind(me: Ipv6Addr, port: u16, ifname: &str, ifindex: u32) -> io::Result<std::net::UdpSocket> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{what} of the failover socket [{me}]:{port} on {ifname}: {e}"),
        )
    };
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| context("creation", e))?;
    socket.set_only_v6(true).map_err(|e| context("IPV6_V6ONLY", e))?;
    socket.set_freebind_v6(true).map_err(|e| context("IPV6_FREEBIND", e))?;
    socket
        .attach_filter(&only_from(ifindex))
        .map_err(|e| context("the receive filter (SO_ATTACH_FILTER)", e))?;
    socket.bind_device(Some(ifname.as_bytes())).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (needs CAP_NET_RAW before Linux 5.7)"
        } else {
            ""
        };
        context("SO_BINDTODEVICE", io::Error::new(e.kind(), format!("{e}{hint}")))
    })?;
    socket.set_nonblocking(true).map_err(|e| context("O_NONBLOCK", e))?;
    let addr = SocketAddr::V6(SocketAddrV6::new(me, port, 0, 0));
    socket.bind(&addr.into()).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                " (another process holds the port: find it with `ss -ulpn sport = :PORT`, or change failover.port)"
            }
            Some(libc::EACCES) => " (a port below 1024 needs CAP_NET_BIND_SERVICE, or change failover.port)",
            _ => " (change failover.port)",
        };
        let hint = hint.replace("PORT", &port.to_string());
        context("binding", io::Error::new(e.kind(), format!("{e}{hint}")))
    })?;
    Ok(socket.into())
}
