//! The nftables table sdwand owns for workload traffic (`inet sdwand`), as text for `nft -f -`.
//!
//! Pure: [`ruleset`] turns this node's [`Workload`] into a complete table definition, and [`script`]
//! wraps it so that one `nft -f -` transaction replaces whatever the table holds (or creates it): the
//! kernel applies the whole file or nothing. [`REMOVE`] deletes the table whether or not it exists.
//! Applying the text is the job of [`crate::net::nft`].
//!
//! The table:
//! - `postrouting` (NAT, `srcnat`): traffic leaving through the WireGuard interface is never translated;
//!   traffic to the network's internal destinations (pod pools, overlay prefixes, every member's prefixes)
//!   neither; what is left from this node's pod prefixes leaves the network through the underlay and is
//!   masqueraded (the pods' addresses are not routable outside). Site prefixes are never masqueraded: they
//!   are routed ranges an operator assigned.
//! - `forward` (filter, `mangle` priority): TCP SYNs forwarded out through the WireGuard interface get
//!   their MSS clamped to the route's MTU, so a pod's connection never relies on path MTU discovery
//!   across the tunnel (ICMP "packet too big" is often filtered on the way).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::Workload;

/// The table's family and name, as `nft` spells them.
pub const TABLE: &str = "inet sdwand";

/// An `nft -f -` script that removes the table, present or not (declaring an empty table first makes the
/// delete succeed when there was none).
pub const REMOVE: &str = "table inet sdwand\ndelete table inet sdwand\n";

/// The table sdwand wants for `workload` on interface `ifname`, or `None` when this node has no workload
/// prefixes of its own (nothing to forward, clamp or masquerade: the table is removed).
pub fn ruleset(ifname: &str, workload: &Workload) -> Option<String> {
    if workload.own.is_empty() {
        return None;
    }
    let (v4, v6) = split(workload.internal.iter().copied());
    let (pods_v4, pods_v6) = split(workload.own_pods());
    let mut t = String::new();
    let _ = writeln!(t, "table {TABLE} {{");
    let _ = writeln!(t, "\tchain postrouting {{");
    let _ = writeln!(t, "\t\ttype nat hook postrouting priority srcnat; policy accept;");
    let _ = writeln!(t, "\t\toifname \"{ifname}\" return");
    if !v4.is_empty() {
        let _ = writeln!(t, "\t\tip daddr {} return", set(&v4));
    }
    if !v6.is_empty() {
        let _ = writeln!(t, "\t\tip6 daddr {} return", set(&v6));
    }
    if !pods_v4.is_empty() {
        let _ = writeln!(t, "\t\tip saddr {} masquerade", set(&pods_v4));
    }
    if !pods_v6.is_empty() {
        let _ = writeln!(t, "\t\tip6 saddr {} masquerade", set(&pods_v6));
    }
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "\tchain forward {{");
    let _ = writeln!(t, "\t\ttype filter hook forward priority mangle; policy accept;");
    let _ = writeln!(
        t,
        "\t\toifname \"{ifname}\" tcp flags syn tcp option maxseg size set rt mtu"
    );
    let _ = writeln!(t, "\t}}");
    let _ = writeln!(t, "}}");
    Some(t)
}

/// An `nft -f -` script that makes the table exactly `ruleset` in one transaction: declare it (so the
/// delete works on a first run), delete it, define it whole.
pub fn script(ruleset: &str) -> String {
    format!("table {TABLE}\ndelete table {TABLE}\n{ruleset}")
}

/// The IPv4 and the IPv6 prefixes of `nets`, each sorted and without duplicates.
fn split(nets: impl Iterator<Item = IpNet>) -> (BTreeSet<IpNet>, BTreeSet<IpNet>) {
    nets.partition(|n| matches!(n, IpNet::V4(_)))
}

/// An anonymous nft set, `{ a, b }`. The prefixes overlap nothing sdwand accepted, but the network's pod
/// pools contain members' pod shares: `auto-merge` is for named sets only, so the shares inside a pool are
/// left out here (an anonymous set with overlapping intervals is refused).
fn set(nets: &BTreeSet<IpNet>) -> String {
    let outer: Vec<String> = nets
        .iter()
        .filter(|n| !nets.iter().any(|o| o != *n && o.contains(*n)))
        .map(ToString::to_string)
        .collect();
    format!("{{ {} }}", outer.join(", "))
}
