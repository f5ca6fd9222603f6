//! Unsolicited neighbour advertisement: the IPv6 counterpart of [`super::garp`]. Tells a LAN that an
//! IPv6 address now lives at this host's interface, so the hosts that route through a floating prefix's
//! IPv6 gateway address switch to the new holder at once instead of when their neighbour entry for it
//! fails reachability confirmation. One advertisement (RFC 4861 §7.2.6: router and override flags set,
//! solicited flag clear, the target link-layer address option) to all nodes (`ff02::1`) with hop limit
//! 255, sent through a raw ICMPv6 socket (the kernel fills in the checksum; `socket2` sets close-on-exec)
//! from the address itself.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};

/// ICMPv6 type of a neighbour advertisement.
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The router flag: the sender is a router. A floating gateway address is the site's router (its holder
/// forwards, and the kernel's own answers for the address carry the flag), and a host clears the flag
/// of its neighbour entry on an advertisement without it (RFC 4861 §7.2.5: it drops the address from its
/// default router list).
const ROUTER: u8 = 0x80;
/// The override flag (the first bit after R and S): replace the cached link-layer address.
const OVERRIDE: u8 = 0x20;
/// Hop limit every neighbour discovery message carries (a receiver drops any other).
const HOP_LIMIT: u32 = 255;

/// Sends one unsolicited neighbour advertisement for `addr`, which must be on the Ethernet interface
/// `ifname`.
pub fn announce(ifname: &str, addr: Ipv6Addr) -> io::Result<()> {
    let (index, mac) = super::garp::link_layer(ifname)?;
    let index = u32::try_from(index).map_err(|_| io::Error::other(format!("{ifname}: no interface index")))?;
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.set_multicast_hops_v6(HOP_LIMIT)?;
    socket.set_multicast_if_v6(index)?;
    // Not to this host itself, which would log that someone advertises its own address.
    socket.set_multicast_loop_v6(false)?;
    socket.bind(&SocketAddrV6::new(addr, 0, 0, 0).into())?;
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    socket.send_to(&packet(mac, addr), &all_nodes.into())?;
    Ok(())
}

/// The ICMPv6 message announcing `addr` at `mac`: a neighbour advertisement with the router and override
/// flags, the target `addr` and a target link-layer address option (the checksum left to the kernel).
fn packet(mac: [u8; 6], addr: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = NEIGHBOR_ADVERTISEMENT;
    p[4] = ROUTER | OVERRIDE;
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
    fn the_packet_is_an_overriding_router_advertisement_of_the_address_with_its_mac() {
        let addr: Ipv6Addr = "2001:db8:5::1".parse().unwrap();
        let p = packet([2, 0, 0, 0, 0, 1], addr);
        assert_eq!(&p[..8], &[136, 0, 0, 0, 0xa0, 0, 0, 0]);
        assert_eq!(&p[8..24], &addr.octets());
        assert_eq!(&p[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
    }
}
