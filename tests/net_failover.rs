//! Privileged test of the failover socket (`sdwand::net::failover`) against the real kernel: it receives
//! what arrives through its interface and nothing a local process loops back to it, even from another
//! member's address bound with `IPV6_FREEBIND` (review finding H1, second variant; netns test P8).
//!
//! The test runs on its own thread in a fresh network namespace (`unshare(CLONE_NEWNET)`, which
//! disappears with the thread, and everything in it). The interface is a TUN device: writing an IPv6
//! packet to its file descriptor makes the kernel receive it on that interface, as WireGuard's decrypted
//! packets are. Needs root, and fails without it.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const ME: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 1);
const PEER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 2);
const PORT: u16 = 851;
/// A second port, for the control socket that has no filter.
const CONTROL_PORT: u16 = 852;
const IFACE: &str = "sdf0";

fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates the TUN interface `name` (no packet information header) and returns its file descriptor.
fn tun(name: &str) -> File {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("opening /dev/net/tun");
    // struct ifreq: the name (16 bytes), then the flags (a short), padded to 40 bytes.
    let mut ifreq = [0u8; 40];
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads (and writes back) a struct ifreq, which `ifreq` is large enough to hold.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", io::Error::last_os_error());
    file
}

/// An IPv6/UDP packet from `[src]:sport` to `[dst]:dport` with a correct checksum.
fn udp_packet(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::with_capacity(udp_len as usize);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&udp);
    if pseudo.len() % 2 == 1 {
        pseudo.push(0);
    }
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[17, 64]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&udp);
    packet
}

/// Sends `payload` to `[ME]:port` from `[PEER]:PORT` bound on this host with `IPV6_FREEBIND`: the
/// kernel delivers it through loopback.
fn spoof_through_loopback(port: u16, payload: &[u8]) {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_freebind_v6(true).expect("IPV6_FREEBIND");
    s.bind(&SocketAddr::V6(SocketAddrV6::new(PEER, PORT, 0, 0)).into())
        .expect("binding the peer's address with IPV6_FREEBIND");
    let sent = s
        .send_to(payload, &SocketAddr::V6(SocketAddrV6::new(ME, port, 0, 0)).into())
        .expect("sending through loopback");
    assert_eq!(sent, payload.len());
}

/// The next datagram on `socket`, waiting at most a few seconds.
fn recv_within(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).expect("a datagram within 5 s");
    (buf[..n].to_vec(), from)
}

/// Whether a datagram is queued on `socket` right now.
fn queued(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 1500];
    let got = match socket.recv_from(&mut buf) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("recv_from: {e}"),
    };
    socket.set_nonblocking(false).expect("blocking");
    got
}

#[test]
fn the_failover_socket_receives_from_its_interface_and_nothing_looped_back() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (a network namespace and a TUN device)"
    );
    let thread = std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", io::Error::last_os_error());
        let mut tun = tun(IFACE);
        ip("link set lo up");
        ip(&format!("link set {IFACE} up"));
        ip(&format!("-6 addr add {ME}/128 dev {IFACE} nodad"));
        let name = std::ffi::CString::new(IFACE).expect("no NUL in the name");
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "if_nametoindex({IFACE}): {}", io::Error::last_os_error());

        let socket = sdwand::net::failover::bind(ME, PORT, IFACE, ifindex).expect("binding the failover socket");
        socket.set_nonblocking(false).expect("blocking, for the test");
        // Control: the same binding without the filter, to show the looped-back datagram does get past
        // SO_BINDTODEVICE and that the filter is what drops it.
        let control = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        control.bind_device(Some(IFACE.as_bytes())).expect("SO_BINDTODEVICE");
        control
            .bind(&SocketAddr::V6(SocketAddrV6::new(ME, CONTROL_PORT, 0, 0)).into())
            .expect("binding the control socket");
        let control: UdpSocket = control.into();

        spoof_through_loopback(CONTROL_PORT, b"spoofed");
        let (payload, from) = recv_within(&control);
        assert_eq!(
            payload, b"spoofed",
            "SO_BINDTODEVICE alone lets the looped-back datagram in"
        );
        assert_eq!(from, SocketAddr::V6(SocketAddrV6::new(PEER, PORT, 0, 0)));

        // The spoofed datagram goes first: had the filter let it through, it would be received first.
        spoof_through_loopback(PORT, b"spoofed");
        tun.write_all(&udp_packet(PEER, PORT, ME, PORT, b"genuine"))
            .expect("injecting through the TUN device");
        let (payload, from) = recv_within(&socket);
        assert_eq!(payload, b"genuine", "the looped-back datagram was received");
        assert_eq!(from, SocketAddr::V6(SocketAddrV6::new(PEER, PORT, 0, 0)));

        // And after a second spoof, nothing is queued once a later genuine datagram has arrived.
        spoof_through_loopback(PORT, b"spoofed again");
        tun.write_all(&udp_packet(PEER, PORT, ME, PORT, b"genuine again"))
            .expect("injecting through the TUN device");
        let (payload, _) = recv_within(&socket);
        assert_eq!(payload, b"genuine again");
        assert!(!queued(&socket), "a looped-back datagram is queued");
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
