//! Unsolicited neighbour advertisement: the IPv6 counterpart of [`super::garp`]. Tells a LAN that an
//! IPv6 address now lives at this host's interface, so the hosts that route through a floating prefix's
//! IPv6 gateway address switch to the new holder at once instead of when their neighbour entry for it
//! fails reachability confirmation. One advertisement (RFC 4861 §7.2.6: override flag set, solicited flag
//! clear, the target link-layer address option) to all nodes (`ff02::1`) with hop limit 255, sent through
//! a raw ICMPv6 socket (the kernel fills in the checksum) from the address itself.

use std::io;
use std::net::Ipv6Addr;

/// ICMPv6 type of a neighbour advertisement.
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The override flag (the first bit after R and S): replace the cached link-layer address.
const OVERRIDE: u8 = 0x20;
/// Hop limit every neighbour discovery message carries (a receiver drops any other).
const HOP_LIMIT: libc::c_int = 255;

/// Sends one unsolicited neighbour advertisement for `addr`, which must be on the Ethernet interface
/// `ifname`.
pub fn announce(ifname: &str, addr: Ipv6Addr) -> io::Result<()> {
    let (index, mac) = super::garp::link_layer(ifname)?;
    let packet = packet(mac, addr);
    // SAFETY: a plain socket(2) call; the descriptor is owned below and closed on every path.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = send(fd, index, addr, &packet);
    // SAFETY: `fd` is open and closed once.
    unsafe { libc::close(fd) };
    result
}

/// Sets the socket up (hop limit, interface, source `addr`) and sends `packet` to `ff02::1` on `index`.
fn send(fd: libc::c_int, index: i32, addr: Ipv6Addr, packet: &[u8]) -> io::Result<()> {
    let ifindex = index as libc::c_uint;
    set_int(fd, libc::IPV6_MULTICAST_HOPS, HOP_LIMIT)?;
    set_int(fd, libc::IPV6_MULTICAST_IF, ifindex as libc::c_int)?;
    // Not to this host itself, which would log that someone advertises its own address.
    set_int(fd, libc::IPV6_MULTICAST_LOOP, 0)?;
    let from = sockaddr(addr, 0);
    // SAFETY: `from` outlives the call; the length is its own.
    let rc = unsafe {
        libc::bind(
            fd,
            std::ptr::from_ref(&from).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let to = sockaddr(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), ifindex);
    // SAFETY: `packet` and `to` outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&to).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An IPv6 socket option of type int at level `IPPROTO_IPV6`.
fn set_int(fd: libc::c_int, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call; the length is its own.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `addr` with the scope (interface index) `scope`, port 0.
fn sockaddr(addr: Ipv6Addr, scope: libc::c_uint) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value that is filled in below.
    let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    s.sin6_addr.s6_addr = addr.octets();
    s.sin6_scope_id = scope;
    s
}

/// The ICMPv6 message announcing `addr` at `mac`: a neighbour advertisement with the override flag, the
/// target `addr` and a target link-layer address option (the checksum left to the kernel).
fn packet(mac: [u8; 6], addr: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = NEIGHBOR_ADVERTISEMENT;
    p[4] = OVERRIDE;
    p[8..24].copy_from_slice(&addr.octets());
    // Option 2 (target link-layer address), length 1 (in units of 8 bytes).
    p[24] = 2;
    p[25] = 1;
    p[26..32].copy_from_slice(&mac);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packet_is_an_overriding_advertisement_of_the_address_with_its_mac() {
        let addr: Ipv6Addr = "2001:db8:5::1".parse().unwrap();
        let p = packet([2, 0, 0, 0, 0, 1], addr);
        assert_eq!(&p[..8], &[136, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(&p[8..24], &addr.octets());
        assert_eq!(&p[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
    }
}
