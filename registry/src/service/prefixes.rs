//! Workload prefixes: the checks of a network's IPv4 overlay prefix, pod pools and site ranges, the
//! allocation of a peer's /32 and pod shares at enrollment, their hold-down after the peer leaves, and the
//! checks of operator-assigned site prefixes.
//!
//! **Allocation** takes the lowest free share of each pod pool (and the lowest free address of the IPv4
//! overlay prefix, never its first and last address: the network and broadcast addresses of the subnet a
//! node may configure), so it is deterministic. A share is free when no peer holds it and no hold-down
//! covers it. Finding it reads the network's peers and hold-downs, only for networks that have pools or an
//! IPv4 overlay prefix, and tries at most one share more than there are taken ones.
//!
//! **Hold-down**: a removed or reaped peer's /32, pod shares and site prefixes are not handed out (nor
//! assignable) again before [`super::Ttls::prefix_hold_down`] has passed. Expired hold-downs are deleted
//! by the next allocation in the network, so the table never holds more than the pools have shares plus
//! the site prefixes released within one hold-down.
//!
//! Allocation reads only the prefixes the network's peers hold ([`ReadTx::held_prefixes`]), not whole
//! peers: it runs in the single writer, once per enrollment.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{code, ApiError};
use crate::model::{Network, Peer, PodPool, PrefixHold};
use crate::store::{ReadTx, WriteTx};
use sdwand::vocab::wire::CreateNetworkRequest;

/// The most shares a pod pool may be split into: 2^16, the limit of Kubernetes's node IPAM
/// (`kube-controller-manager` refuses a cluster CIDR more than 16 bits shorter than its node mask).
pub const MAX_SHARE_BITS: u8 = 16;
/// The longest share of an IPv4 pod pool: a /30 still holds a gateway and a pod.
pub const LONGEST_SHARE_V4: u8 = 30;
/// The longest share of an IPv6 pod pool.
pub const LONGEST_SHARE_V6: u8 = 120;
/// The shortest IPv4 overlay prefix (every daemon routes all of it through its interface).
pub const SHORTEST_OVERLAY_V4: u8 = 8;
/// The longest IPv4 overlay prefix: a /30 has two peer addresses besides its first and last.
pub const LONGEST_OVERLAY_V4: u8 = 30;
/// The most site ranges a network may have.
pub const MAX_SITE_RANGES: usize = 32;
/// The most site prefixes one peer may have.
pub const MAX_SITE_PREFIXES: usize = 64;

/// Address space no prefix of a network may touch, with what it is.
fn special_ranges() -> [(IpNet, &'static str); 8] {
    let v4 = |a: [u8; 4], len| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(a), len));
    let v6 = |a: Ipv6Addr, len| IpNet::V6(Ipv6Net::new_assert(a, len));
    [
        (v4([0, 0, 0, 0], 8), "unspecified (0.0.0.0/8)"),
        (v4([127, 0, 0, 0], 8), "loopback (127.0.0.0/8)"),
        (v4([169, 254, 0, 0], 16), "link-local (169.254.0.0/16)"),
        (v4([224, 0, 0, 0], 4), "multicast (224.0.0.0/4)"),
        (v4([240, 0, 0, 0], 4), "reserved and broadcast (240.0.0.0/4)"),
        (
            v6(Ipv6Addr::UNSPECIFIED, 8),
            "unspecified, loopback and IPv4-mapped (::/8)",
        ),
        (
            v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            "link-local (fe80::/10)",
        ),
        (
            v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
            "multicast (ff00::/8)",
        ),
    ]
}

/// Whether two prefixes share an address (never across families).
pub fn overlap(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The checks every prefix of a network passes: not a default route, host bits zero, no special space.
/// `field` names it in the message (e.g. `pod_pools[0].prefix`).
pub fn check_prefix(field: &str, net: IpNet) -> Result<(), String> {
    if net.prefix_len() == 0 {
        return Err(format!(
            "{field} {net} is a default route (/0): it would capture all traffic of every node; give a \
             private range, e.g. 10.42.0.0/16 or fd00:42::/48"
        ));
    }
    if net != net.trunc() {
        return Err(format!(
            "{field} {net} has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    if let Some((range, what)) = special_ranges().into_iter().find(|(r, _)| overlap(*r, net)) {
        return Err(format!(
            "{field} {net} overlaps {what} address space ({range}), which is never routed over the network: \
             use private space, e.g. 10.0.0.0/8 or fd00::/8"
        ));
    }
    Ok(())
}

fn family(net: IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// Checks a new network's workload prefixes (its IPv6 overlay prefix and VIP pool were checked before):
/// each prefix passes [`check_prefix`]; the IPv4 overlay prefix is a /[`SHORTEST_OVERLAY_V4`] to
/// /[`LONGEST_OVERLAY_V4`]; at most one pod pool per family, each node share longer than its pool, at most
/// a /30 (IPv4) or /120 (IPv6), and at most 2^[`MAX_SHARE_BITS`] shares; at most [`MAX_SITE_RANGES`] site
/// ranges; and no two of the pools, IPv4 overlay prefix, site ranges, overlay prefix and VIP pool overlap.
pub fn check_network(req: &CreateNetworkRequest) -> Result<(), String> {
    // Conflicts are looked for from the latest field back, so the VIP pool is named before the overlay
    // prefix that contains it.
    let mut fields: Vec<(String, IpNet)> = vec![
        ("overlay_prefix".to_owned(), IpNet::V6(req.overlay_prefix)),
        ("vip_pool".to_owned(), IpNet::V6(req.vip_pool)),
    ];
    let fixed = fields.len();
    if let Some(v4) = req.overlay_prefix_v4 {
        check_prefix("overlay_prefix_v4", IpNet::V4(v4))?;
        let len = v4.prefix_len();
        if !(SHORTEST_OVERLAY_V4..=LONGEST_OVERLAY_V4).contains(&len) {
            return Err(format!(
                "overlay_prefix_v4 {v4} is a /{len}: use a /{SHORTEST_OVERLAY_V4} to /{LONGEST_OVERLAY_V4} (each \
                 peer gets a /32 of it; e.g. a /24 of 10.0.0.0/8)"
            ));
        }
        fields.push(("overlay_prefix_v4".to_owned(), IpNet::V4(v4)));
    }
    for (i, pool) in req.pod_pools.iter().enumerate() {
        let field = format!("pod_pools[{i}]");
        check_pool(&field, pool)?;
        if let Some(j) = req.pod_pools[..i]
            .iter()
            .position(|p| family(p.prefix) == family(pool.prefix))
        {
            return Err(format!(
                "{field} {} is a second {} pod pool (pod_pools[{j}] is {}): a network has at most one pod pool \
                 per address family",
                pool.prefix,
                family(pool.prefix),
                req.pod_pools[j].prefix
            ));
        }
        fields.push((field, pool.prefix));
    }
    if req.site_ranges.len() > MAX_SITE_RANGES {
        return Err(format!(
            "site_ranges has {} ranges: at most {MAX_SITE_RANGES}; use fewer, larger ones",
            req.site_ranges.len()
        ));
    }
    for (i, range) in req.site_ranges.iter().enumerate() {
        let field = format!("site_ranges[{i}]");
        check_prefix(&field, *range)?;
        fields.push((field, *range));
    }
    for i in fixed..fields.len() {
        let (field, net) = &fields[i];
        let earlier = fields[..i].iter().rev().find(|(_, other)| overlap(*other, *net));
        if let Some((other_field, other)) = earlier {
            return Err(format!(
                "{field} {net} overlaps {other_field} {other}: a network's pod pools, IPv4 overlay prefix, site \
                 ranges, overlay prefix and VIP pool must not overlap"
            ));
        }
    }
    Ok(())
}

fn check_pool(field: &str, pool: &PodPool) -> Result<(), String> {
    check_prefix(field, pool.prefix)?;
    let len = pool.prefix.prefix_len();
    let longest = match pool.prefix {
        IpNet::V4(_) => LONGEST_SHARE_V4,
        IpNet::V6(_) => LONGEST_SHARE_V6,
    };
    if pool.node_len <= len {
        return Err(format!(
            "{field} node_len {} must be longer than the pool's /{len}: each node gets a part of {}",
            pool.node_len, pool.prefix
        ));
    }
    if pool.node_len > longest {
        return Err(format!(
            "{field} node_len {} is longer than /{longest}: a node's share must hold a gateway and pods",
            pool.node_len
        ));
    }
    if pool.node_len - len > MAX_SHARE_BITS {
        return Err(format!(
            "{field} {} split in /{}s makes 2^{} shares; at most 2^{MAX_SHARE_BITS} (the limit of Kubernetes's \
             node IPAM): use a longer pool or a shorter node_len",
            pool.prefix,
            pool.node_len,
            pool.node_len - len
        ));
    }
    Ok(())
}

/// The `i`-th prefix of length `len` in `pool` (`i` below 2^(len - pool length), which callers ensure).
fn nth(pool: IpNet, len: u8, i: u128) -> Option<IpNet> {
    match pool {
        IpNet::V4(p) => {
            let step = u32::try_from(i).ok()?.checked_shl(32 - u32::from(len))?;
            let base = u32::from(p.network()).checked_add(step)?;
            Ipv4Net::new(Ipv4Addr::from(base), len).ok().map(IpNet::V4)
        }
        IpNet::V6(p) => {
            let step = i.checked_shl(128 - u32::from(len))?;
            let base = u128::from(p.network()).checked_add(step)?;
            Ipv6Net::new(Ipv6Addr::from(base), len).ok().map(IpNet::V6)
        }
    }
}

/// The lowest prefix of length `len` in `pool` that is not in `taken`; `skip_ends`: never the first
/// nor the last one. Tries at most `taken.len() + 1` candidates.
fn lowest_free(pool: IpNet, len: u8, skip_ends: bool, taken: &HashSet<IpNet>) -> Option<IpNet> {
    let count = 1u128.checked_shl(u32::from(len - pool.prefix_len()))?;
    let (first, end) = if skip_ends {
        (1, count.saturating_sub(1))
    } else {
        (0, count)
    };
    (first..end)
        .take(taken.len().saturating_add(1))
        .filter_map(|i| nth(pool, len, i))
        .find(|p| !taken.contains(p))
}

/// What a new peer gets beside its /128.
#[derive(Debug, Default)]
pub(super) struct Allocation {
    /// Its /32, if the network has an IPv4 overlay prefix.
    pub address_v4: Option<Ipv4Addr>,
    /// Its share of each pod pool, in the order of the pools.
    pub pod_prefixes: Vec<IpNet>,
}

/// Allocates a new peer's /32 and pod shares in `network` at `now_ms` (see the module documentation), and
/// deletes the network's expired hold-downs. No free share in a pool: 409 `pool_exhausted` naming it.
pub(super) fn allocate(tx: &mut dyn WriteTx, network: &Network, now_ms: u64) -> Result<Allocation, ApiError> {
    if network.overlay_prefix_v4.is_none() && network.pod_pools.is_empty() {
        return Ok(Allocation::default());
    }
    let by_peers = tx.held_prefixes(&network.id)?;
    let holds = tx.prefix_holds(&network.id)?;
    let (live, expired): (Vec<PrefixHold>, Vec<PrefixHold>) = holds.into_iter().partition(|h| h.until_ms > now_ms);
    let mut taken: HashSet<IpNet> = by_peers.iter().copied().collect();
    taken.extend(live.iter().map(|h| h.prefix));
    let exhausted = |what: String, pool: IpNet, len: u8| {
        let held_down: Vec<&PrefixHold> = live.iter().filter(|h| pool.contains(&h.prefix)).collect();
        let free_at = held_down.iter().map(|h| h.until_ms).min();
        let by_peers = by_peers.iter().filter(|p| pool.contains(*p)).count();
        let wait = free_at.map_or(String::new(), |at| {
            format!(
                "; the first hold-down ends in {} s",
                at.saturating_sub(now_ms).div_ceil(1000)
            )
        });
        ApiError::conflict(
            code::POOL_EXHAUSTED,
            format!(
                "{what} {pool} has no free /{len} left: {by_peers} held by peers, {} held down after removals{wait}. \
                 Remove peers, wait for the hold-downs, or use a network with a larger pool",
                held_down.len()
            ),
        )
    };
    let mut allocation = Allocation::default();
    if let Some(v4) = network.overlay_prefix_v4 {
        let pool = IpNet::V4(v4);
        let free =
            lowest_free(pool, 32, true, &taken).ok_or_else(|| exhausted("overlay_prefix_v4".into(), pool, 32))?;
        if let IpAddr::V4(a) = free.network() {
            allocation.address_v4 = Some(a);
        }
        taken.insert(free);
    }
    for (i, pool) in network.pod_pools.iter().enumerate() {
        let share = lowest_free(pool.prefix, pool.node_len, false, &taken)
            .ok_or_else(|| exhausted(format!("pod pool pod_pools[{i}]"), pool.prefix, pool.node_len))?;
        allocation.pod_prefixes.push(share);
        taken.insert(share);
    }
    for hold in &expired {
        tx.delete_prefix_hold(&hold.network_id, hold.prefix)?;
    }
    Ok(allocation)
}

/// Holds down everything `peer` held beyond its /128 until `until_ms` (it is being removed).
pub(super) fn release(tx: &mut dyn WriteTx, peer: &Peer, until_ms: u64) -> Result<Vec<IpNet>, ApiError> {
    let held = peer.held();
    for prefix in &held {
        tx.put_prefix_hold(&PrefixHold {
            network_id: peer.network_id.clone(),
            prefix: *prefix,
            until_ms,
            released_by: peer.name.clone(),
        })?;
    }
    Ok(held)
}

/// Checks the site prefixes an operator assigns to `peer` of `network` at `now_ms`: at most
/// [`MAX_SITE_PREFIXES`], each passing [`check_prefix`], inside one of the network's site ranges (which
/// overlap neither the overlay prefixes, the VIP pool nor the pod pools: [`check_network`]), none
/// overlapping another of the list (400), another peer's /32, pod share or site prefix, or a floating
/// prefix (409 `prefix_conflict`), or a hold-down (409 `prefix_held_down`).
pub(super) fn check_site_prefixes(
    tx: &mut dyn ReadTx,
    network: &Network,
    peer: &Peer,
    prefixes: &[IpNet],
    now_ms: u64,
) -> Result<(), ApiError> {
    if prefixes.len() > MAX_SITE_PREFIXES {
        return Err(ApiError::bad_request(format!(
            "{} site prefixes: a peer has at most {MAX_SITE_PREFIXES}; use fewer, larger ones",
            prefixes.len()
        )));
    }
    for (i, net) in prefixes.iter().enumerate() {
        let field = format!("prefixes[{i}]");
        check_prefix(&field, *net).map_err(ApiError::bad_request)?;
        if network.site_ranges.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{field} {net}: network {:?} has no site_ranges, so no site prefix can be assigned in it (site \
                 ranges are set when the network is created)",
                network.name
            )));
        }
        if !network.site_ranges.iter().any(|r| r.contains(net)) {
            let ranges: Vec<String> = network.site_ranges.iter().map(ToString::to_string).collect();
            return Err(ApiError::bad_request(format!(
                "{field} {net} is not inside any of the network's site_ranges ({})",
                ranges.join(", ")
            )));
        }
        if let Some(j) = prefixes[..i].iter().position(|p| overlap(*p, *net)) {
            return Err(ApiError::bad_request(format!(
                "{field} {net} overlaps prefixes[{j}] {}",
                prefixes[j]
            )));
        }
    }
    for other in tx.peers(&network.id)?.iter().filter(|p| p.id != peer.id) {
        let held = other
            .address_v4
            .map(|a| (IpNet::V4(Ipv4Net::from(a)), "/32"))
            .into_iter()
            .chain(other.pod_prefixes.iter().map(|p| (*p, "pod prefix")))
            .chain(other.site_prefixes.iter().map(|p| (*p, "site prefix")));
        for (theirs, what) in held {
            if let Some(i) = prefixes.iter().position(|p| overlap(*p, theirs)) {
                return Err(ApiError::conflict(
                    code::PREFIX_CONFLICT,
                    format!(
                        "prefixes[{i}] {} overlaps {what} {theirs} of peer {:?} (id {}): take it off that peer first",
                        prefixes[i], other.name, other.id
                    ),
                ));
            }
        }
    }
    for floating in tx.floatings(&network.id)? {
        if let Some(i) = prefixes.iter().position(|p| overlap(*p, floating.prefix)) {
            return Err(ApiError::conflict(
                code::PREFIX_CONFLICT,
                format!(
                    "prefixes[{i}] {} overlaps floating prefix {} (id {}): delete it first, or give another prefix",
                    prefixes[i], floating.prefix, floating.id
                ),
            ));
        }
    }
    for hold in tx.prefix_holds(&network.id)?.iter().filter(|h| h.until_ms > now_ms) {
        if let Some(i) = prefixes.iter().position(|p| overlap(*p, hold.prefix)) {
            return Err(ApiError::conflict(
                code::PREFIX_HELD_DOWN,
                format!(
                    "prefixes[{i}] {} overlaps {}, which removed peer {:?} held: it is held down for {} s more, so \
                     that no node still routing it to that peer sends this peer's traffic there",
                    prefixes[i],
                    hold.prefix,
                    hold.released_by,
                    hold.until_ms.saturating_sub(now_ms).div_ceil(1000)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn shares_are_the_lowest_free_ones() {
        let pool = net("198.51.100.0/24");
        let mut taken = HashSet::new();
        assert_eq!(lowest_free(pool, 28, false, &taken), Some(net("198.51.100.0/28")));
        taken.insert(net("198.51.100.0/28"));
        taken.insert(net("198.51.100.32/28"));
        assert_eq!(lowest_free(pool, 28, false, &taken), Some(net("198.51.100.16/28")));
        let v6 = net("fd00:42::/48");
        assert_eq!(lowest_free(v6, 64, false, &HashSet::new()), Some(net("fd00:42::/64")));
        taken.insert(net("fd00:42::/64"));
        assert_eq!(lowest_free(v6, 64, false, &taken), Some(net("fd00:42:0:1::/64")));
    }

    #[test]
    fn addresses_skip_the_first_and_last_and_run_out() {
        let pool = net("192.0.2.0/30");
        let mut taken = HashSet::new();
        let mut got = Vec::new();
        while let Some(a) = lowest_free(pool, 32, true, &taken) {
            got.push(a);
            taken.insert(a);
            assert!(got.len() <= 4, "bounded");
        }
        assert_eq!(got, [net("192.0.2.1/32"), net("192.0.2.2/32")]);
        let full: HashSet<IpNet> = ["192.0.2.0/31", "192.0.2.2/31"].map(net).into();
        assert_eq!(lowest_free(pool, 31, false, &full), None);
    }

    #[test]
    fn special_space_and_default_routes_are_refused() {
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "127.0.0.0/16",
            "169.254.0.0/16",
            "224.0.0.0/8",
            "fe80::/64",
            "ff02::/16",
        ] {
            assert!(check_prefix("x", net(bad)).is_err(), "{bad}");
        }
        assert!(check_prefix("x", net("10.0.0.0/7")).is_ok());
        assert!(check_prefix("x", net("192.0.2.1/24"))
            .expect_err("host bits")
            .contains("192.0.2.0/24"));
    }
}
