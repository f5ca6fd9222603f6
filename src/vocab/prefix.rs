//! Workload prefixes: the IPv4 and IPv6 ranges a network routes to its peers beside their overlay addresses
//! (pod and container prefixes, each node's share of them, and operator-assigned site prefixes), as the
//! registry hands them out and the daemon routes them.

use std::fmt;

use std::net::Ipv6Addr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why a prefix is routed to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixKind {
    /// The node's share of one of the network's pod pools, allocated at enrollment: its pods and containers
    /// take their addresses from it (the CNI configuration and `sdwanctl docker-network` use it).
    Pod,
    /// Assigned by an operator: a LAN or range behind the peer (a site behind an edge gateway).
    Site,
}

impl PrefixKind {
    /// The name used on the wire, in metrics and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefixKind::Pod => "pod",
            PrefixKind::Site => "site",
        }
    }
}

impl fmt::Display for PrefixKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One prefix routed to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoutedPrefix {
    /// The prefix, IPv4 or IPv6, in canonical form (host bits zero).
    pub prefix: IpNet,
    /// Why it is routed there.
    pub kind: PrefixKind,
}

/// A network's pod pool for one address family: each node gets one `node_len` prefix of `prefix` (k3s's
/// `cluster-cidr` is the pool, its `node-cidr-mask-size` is `node_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodPool {
    /// The pool, e.g. `10.42.0.0/16` or `fd00:42::/48` (tests: `198.51.100.0/24`).
    pub prefix: IpNet,
    /// The length of each node's share, e.g. 24 in an IPv4 /16, 64 in an IPv6 /48; longer than the pool's
    /// and at most 30 (IPv4) or 120 (IPv6) so a share holds a gateway and pods.
    pub node_len: u8,
}

/// The key that names a floating prefix in the failover protocol (the header's VIP field, one machine per
/// key): the prefix's network address, IPv4 prefixes as IPv4-mapped IPv6 addresses. Keys are unique within a
/// network because floating prefixes and VIPs never overlap (the registry and the daemon refuse it), and a
/// VIP's key is its own address.
pub fn floating_key(prefix: IpNet) -> Ipv6Addr {
    match prefix.trunc() {
        IpNet::V4(n) => n.network().to_ipv6_mapped(),
        IpNet::V6(n) => n.network(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floating_keys_are_network_addresses() {
        let v4: IpNet = "203.0.113.0/24".parse().unwrap();
        assert_eq!(floating_key(v4), "::ffff:203.0.113.0".parse::<Ipv6Addr>().unwrap());
        let v6: IpNet = "2001:db8:5::/48".parse().unwrap();
        assert_eq!(floating_key(v6), "2001:db8:5::".parse::<Ipv6Addr>().unwrap());
    }
}
