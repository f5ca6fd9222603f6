//! Gratuitous ARP: tells a LAN that an IPv4 address now lives at this host's interface, so the hosts
//! that route through a floating prefix's gateway address switch to the new holder at once instead of
//! when their ARP entry for it expires (tens of seconds). Linux updates an existing entry on a gratuitous
//! ARP whatever its lock time. One ARP request (sender and target both the address) to the broadcast
//! address, sent through an `AF_PACKET` socket.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;

/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;

/// Sends one gratuitous ARP for `addr` on the Ethernet interface `ifname`.
pub fn announce(ifname: &str, addr: Ipv4Addr) -> io::Result<()> {
    let (index, mac) = link_layer(ifname)?;
    let packet = packet(mac, addr);
    // SAFETY: a plain socket(2) call; the descriptor is owned below and closed on every path.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value that is filled in below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = index;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `packet` and `to` outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let result = if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: `fd` is open and closed once.
    unsafe { libc::close(fd) };
    result
}

/// The ARP request announcing `addr` at `mac` (hardware Ethernet, protocol IPv4, operation request,
/// sender and target protocol address both `addr`).
fn packet(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes());
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&addr.octets());
    p[24..28].copy_from_slice(&addr.octets());
    p
}

/// The interface index and Ethernet address of `ifname`, from `getifaddrs(3)`'s `AF_PACKET` entry.
pub(super) fn link_layer(ifname: &str) -> io::Result<(i32, [u8; 6])> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own and free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not freed yet.
        let entry = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) };
        // SAFETY: ifa_addr, when not null, points to a sockaddr whose family says which struct it is.
        if !entry.ifa_addr.is_null()
            && name.to_bytes() == ifname.as_bytes()
            && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_PACKET
        {
            // SAFETY: AF_PACKET: the sockaddr is a sockaddr_ll.
            let ll = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_ll) };
            if ll.sll_halen == 6 {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&ll.sll_addr[..6]);
                found = Some((ll.sll_ifindex, mac));
            }
        }
        cur = entry.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{ifname} has no Ethernet address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packet_is_an_arp_request_for_the_address_itself() {
        let p = packet([2, 0, 0, 0, 0, 1], Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[14..18], &[203, 0, 113, 1]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[203, 0, 113, 1]);
    }
}
