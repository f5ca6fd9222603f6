//! Address allocation: pure arithmetic on a network's prefixes and counters.
//!
//! Both counters only grow, so an address is handed out at most once in a network's life: a daemon that
//! pinned an address to a key never sees that address come back with another key. Offset 0 (the
//! subnet-router anycast address) is never used.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::model::Network;

/// The address at `offset` in `prefix`, or `None` past its end.
fn at(prefix: Ipv6Net, offset: u128) -> Option<Ipv6Addr> {
    let host_bits = 128 - u32::from(prefix.prefix_len());
    if host_bits < 128 && offset >> host_bits != 0 {
        return None;
    }
    Some(Ipv6Addr::from(u128::from(prefix.network()) | offset))
}

/// The next peer address of `network` and the counter value after it; `None` when the prefix is full.
/// The VIP pool's range inside the prefix is skipped.
pub fn next_peer_address(network: &Network) -> Option<(Ipv6Addr, u64)> {
    let base = u128::from(network.overlay_prefix.network());
    let pool_start = u128::from(network.vip_pool.network()).checked_sub(base)?;
    let pool_end = u128::from(network.vip_pool.broadcast()).checked_sub(base)?;
    let mut offset = u128::from(network.next_peer_offset.max(1));
    if (pool_start..=pool_end).contains(&offset) {
        offset = pool_end.checked_add(1)?;
    }
    let address = at(network.overlay_prefix, offset)?;
    Some((address, u64::try_from(offset + 1).ok()?))
}

/// The next VIP address of `network` and the counter value after it; `None` when the pool is full.
pub fn next_vip_address(network: &Network) -> Option<(Ipv6Addr, u64)> {
    let offset = network.next_vip_offset.max(1);
    let address = at(network.vip_pool, u128::from(offset))?;
    Some((address, offset.checked_add(1)?))
}

/// The shortest overlay prefix a network may have: a longer one captures a good part of the IPv6 space
/// (every daemon routes the whole overlay prefix through its interface).
pub const SHORTEST_OVERLAY: u8 = 16;
/// The longest overlay prefix a network may have (room for a VIP pool and a few peers).
pub const LONGEST_OVERLAY: u8 = 120;

/// Checks a new network's prefixes: a unicast overlay prefix between /[`SHORTEST_OVERLAY`] and
/// /[`LONGEST_OVERLAY`] outside the reserved `::/8` (unspecified, loopback, IPv4-mapped), multicast and
/// link-local space; no host bits set; and the pool strictly inside the overlay prefix, with room for an
/// address. Unique local addresses (`fd00::/8`) are what networks are meant to use.
pub fn check_prefixes(overlay: Ipv6Net, pool: Ipv6Net) -> Result<(), String> {
    let len = overlay.prefix_len();
    if !(SHORTEST_OVERLAY..=LONGEST_OVERLAY).contains(&len) {
        return Err(format!(
            "overlay_prefix {overlay} is a /{len}: use a /{SHORTEST_OVERLAY} to /{LONGEST_OVERLAY} (e.g. a /48 of \
             fd00::/8)"
        ));
    }
    let network = overlay.network();
    let reserved: Ipv6Net = Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 8).map_err(|e| e.to_string())?;
    let why = if network.is_multicast() {
        Some("multicast")
    } else if network.is_unicast_link_local() {
        Some("link-local")
    } else if reserved.contains(&network) {
        Some("reserved (unspecified, loopback, IPv4-mapped)")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(format!(
            "overlay_prefix {overlay} is {why} address space: use unicast space, e.g. a /48 of fd00::/8"
        ));
    }
    if overlay != overlay.trunc() {
        return Err(format!(
            "overlay_prefix {overlay} has host bits set (did you mean {}?)",
            overlay.trunc()
        ));
    }
    if pool != pool.trunc() {
        return Err(format!(
            "vip_pool {pool} has host bits set (did you mean {}?)",
            pool.trunc()
        ));
    }
    if !overlay.contains(&pool) || pool.prefix_len() <= overlay.prefix_len() {
        return Err(format!(
            "vip_pool {pool} must lie strictly inside overlay_prefix {overlay}"
        ));
    }
    if pool.prefix_len() == 128 {
        return Err(format!("vip_pool {pool} holds no usable address: use /127 or larger"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(overlay: &str, pool: &str) -> Network {
        Network {
            id: "n".into(),
            account_id: "a".into(),
            name: "n".into(),
            overlay_prefix: overlay.parse().expect("prefix"),
            vip_pool: pool.parse().expect("prefix"),
            revision: 0,
            next_peer_offset: 0,
            next_vip_offset: 0,
            overlay_prefix_v4: None,
            pod_pools: Vec::new(),
            site_ranges: Vec::new(),
            created_at_ms: 0,
        }
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("address")
    }

    #[test]
    fn peers_skip_offset_zero_and_the_pool() {
        let mut n = network("fd00:1::/120", "fd00:1::/124");
        let (a, next) = next_peer_address(&n).expect("room");
        assert_eq!(a, addr("fd00:1::10"));
        n.next_peer_offset = next;
        assert_eq!(next_peer_address(&n).map(|x| x.0), Some(addr("fd00:1::11")));

        let mut n = network("fd00:1::/120", "fd00:1::f0/124");
        assert_eq!(next_peer_address(&n).map(|x| x.0), Some(addr("fd00:1::1")));
        n.next_peer_offset = 0xef;
        assert_eq!(next_peer_address(&n).map(|x| x.0), Some(addr("fd00:1::ef")));
        n.next_peer_offset = 0xf0;
        assert_eq!(next_peer_address(&n), None, "the pool ends the prefix");
    }

    #[test]
    fn peer_addresses_run_out() {
        let mut n = network("fd00:1::/120", "fd00:1::80/126");
        n.next_peer_offset = 0xff;
        assert_eq!(next_peer_address(&n).map(|x| x.0), Some(addr("fd00:1::ff")));
        n.next_peer_offset = 0x100;
        assert_eq!(next_peer_address(&n), None);
    }

    #[test]
    fn vips_come_from_the_pool_and_run_out() {
        let mut n = network("fd00:1::/64", "fd00:1::ffff:0/126");
        let mut got = Vec::new();
        while let Some((a, next)) = next_vip_address(&n) {
            got.push(a);
            n.next_vip_offset = next;
        }
        assert_eq!(
            got,
            [addr("fd00:1::ffff:1"), addr("fd00:1::ffff:2"), addr("fd00:1::ffff:3")]
        );
    }

    #[test]
    fn prefixes_are_checked() {
        let p = |s: &str| s.parse::<Ipv6Net>().expect("prefix");
        assert!(check_prefixes(p("fd00:1::/64"), p("fd00:1:0:0:ffff::/80")).is_ok());
        assert!(check_prefixes(p("fd00:1::1/64"), p("fd00:1::/80")).is_err());
        assert!(check_prefixes(p("fd00:1::/64"), p("fd00:2::/80")).is_err());
        assert!(check_prefixes(p("fd00:1::/64"), p("fd00:1::/64")).is_err());
        assert!(check_prefixes(p("fd00:1::/64"), p("fd00:1::5/128")).is_err());
        assert!(check_prefixes(p("fd00:1::/124"), p("fd00:1::/126")).is_err());
        for overlay in [
            "::/0",
            "ff00::/8",
            "fe80::/10",
            "fd00::/121",
            "fd00::1/64",
            "fd00::/15",
            "::/16",
        ] {
            let o = p(overlay);
            assert!(check_prefixes(o, p("fd00::/126")).is_err(), "{overlay}");
        }
        assert!(check_prefixes(p("::ffff:0:0/96"), p("::ffff:0:0/112")).is_err());
        assert!(check_prefixes(p("fd00::/16"), p("fd00::ffff:0/112")).is_ok());
        assert!(check_prefixes(p("fd00::/120"), p("fd00::80/126")).is_ok());
        assert!(check_prefixes(p("2001:db8::/32"), p("2001:db8::/64")).is_ok());
    }
}
