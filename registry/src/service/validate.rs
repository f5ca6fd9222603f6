//! Checks of what an enrollee says about itself: its WireGuard public key and its underlay endpoint.
//!
//! Every daemon of the network copies both into its WireGuard device, so a bad value is pushed to every
//! node: a key no handshake can ever complete with, or an endpoint that points every node's handshake
//! initiations at a local service or at a multicast group.

use std::net::{IpAddr, SocketAddr};

use wireguard_control::Key;

/// A scalar for the low-order test: X25519 clamps it to a multiple of the cofactor 8, so the product with
/// a point of small order (the all-zero key among them) is the all-zero point.
const PROBE_SCALAR: [u8; 32] = [0x5d; 32];

/// Parses a WireGuard public key: canonical base64 of 32 bytes (44 characters, no whitespace), and not a
/// point of small order (with which every Diffie-Hellman result is all zeros, so no handshake succeeds).
pub(super) fn public_key(text: &str) -> Result<Key, String> {
    let key = Key::from_base64(text)
        .ok()
        .filter(|k| k.to_base64() == text)
        .ok_or_else(|| {
            format!(
                "public_key {text:?} is not a WireGuard public key (44 characters of base64, as `wg pubkey` prints)"
            )
        })?;
    if x25519_dalek::x25519(PROBE_SCALAR, key.0) == [0; 32] {
        return Err(format!(
            "public_key {text:?} is a low-order point no handshake can succeed with: use the key of \
             `wg pubkey < private-key`"
        ));
    }
    Ok(key)
}

/// Checks an endpoint others would send handshakes to: a port, and a unicast address that is not this
/// host's own (unspecified, loopback) nor link-scoped (link-local) nor a group (multicast, broadcast).
/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
pub(super) fn endpoint(endpoint: SocketAddr) -> Result<(), String> {
    if endpoint.port() == 0 {
        return Err(format!(
            "endpoint {endpoint} has port 0: name the port WireGuard listens on"
        ));
    }
    let ip = match endpoint.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let why = match ip {
        ip if ip.is_unspecified() => Some("unspecified"),
        ip if ip.is_loopback() => Some("loopback"),
        ip if ip.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        _ => None,
    };
    match why {
        Some(why) => Err(format!(
            "endpoint {endpoint} is a {why} address, which other nodes cannot reach this peer at: name its \
             public (or site-routable) address, or leave endpoint out"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_canonical_and_not_of_low_order() {
        let good = Key::generate_private().get_public().to_base64();
        assert!(public_key(&good).is_ok());
        let bad = [
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            // 1 (order 4 on the curve) and p - 1 (order 2): small-order points.
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            "7P///////////////////////////////////////38=".to_owned(),
            good[..43].to_owned(),
            format!("{good}A"),
            format!(" {good}"),
            format!("{good}\n"),
            String::new(),
        ];
        for key in bad {
            assert!(public_key(&key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn endpoints_must_be_reachable_unicast_with_a_port() {
        for ok in ["192.0.2.1:51820", "[2001:db8::1]:51820", "10.0.0.1:1"] {
            assert!(endpoint(ok.parse().expect("addr")).is_ok(), "{ok}");
        }
        let bad = [
            "0.0.0.0:0",
            "[::]:51820",
            "127.0.0.1:22",
            "[::1]:51820",
            "[ff02::1]:51820",
            "224.0.0.1:51820",
            "255.255.255.255:51820",
            "169.254.1.1:51820",
            "[fe80::1]:51820",
            "[::ffff:127.0.0.1]:51820",
            "192.0.2.1:0",
        ];
        for b in bad {
            assert!(endpoint(b.parse().expect("addr")).is_err(), "{b}");
        }
    }
}
