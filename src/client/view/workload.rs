//! Pure: the checks of a view's workload part (the network's IPv4 overlay prefix, pod pools and site
//! ranges; each member's /32 and `prefixes`). A bad network-wide range is ignored, a bad /32 or prefix is
//! taken off its member (with its legacy copy in `routed_prefixes`; the member stays reachable at its
//! /128); nothing here refuses a whole view. Members
//! established on this node (pinned, or this node) are checked first, so a new member cannot take a
//! prefix an established one routes by being listed before it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{special_nets, Problem, Rule, Trust};
use crate::vocab::wire::{MemberView, MembersResponse};
use crate::vocab::PrefixKind;

/// The shortest IPv4 prefix a member may route (`0.0.0.0/0` and the like are never taken).
pub const MIN_ROUTED_PREFIX_LEN_V4: u8 = 8;

/// IPv4 ranges no member may route: "this network", loopback, link-local, multicast, reserved (with the
/// broadcast address).
fn special_nets_v4() -> [Ipv4Net; 5] {
    [
        "0.0.0.0/8".parse().expect("valid"),
        "127.0.0.0/8".parse().expect("valid"),
        "169.254.0.0/16".parse().expect("valid"),
        "224.0.0.0/4".parse().expect("valid"),
        "240.0.0.0/4".parse().expect("valid"),
    ]
}

/// The underlay addresses no prefix of the view may capture, each with what it is: every member's endpoint
/// and the registry replicas' addresses.
pub(super) fn underlay_addresses(view: &MembersResponse, trust: &Trust<'_>) -> Vec<(IpAddr, String)> {
    view.members
        .iter()
        .filter_map(|m| Some((m.endpoint?.ip(), format!("member {}'s underlay endpoint", m.name))))
        .chain(trust.registry.iter().map(|a| (*a, "the registry's address".to_owned())))
        .collect()
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// What is wrong with `net` as a routed range on its own (not canonical, too short, special), if anything.
pub(crate) fn shape(net: &IpNet) -> Option<(Rule, String)> {
    if net.trunc() != *net {
        return Some((
            Rule::NotCanonical,
            format!("{net} has host bits set (did you mean {}?)", net.trunc()),
        ));
    }
    match net {
        IpNet::V4(n) => {
            if n.prefix_len() < MIN_ROUTED_PREFIX_LEN_V4 {
                return Some((
                    Rule::ShortPrefix,
                    format!("{net} is shorter than /{MIN_ROUTED_PREFIX_LEN_V4}"),
                ));
            }
            let hit = special_nets_v4().into_iter().find(|s| s.contains(n) || n.contains(s));
            hit.map(|s| (Rule::Special, format!("{net} overlaps {s}")))
        }
        IpNet::V6(n) => {
            if n.prefix_len() < super::MIN_ROUTED_PREFIX_LEN {
                let min = super::MIN_ROUTED_PREFIX_LEN;
                return Some((Rule::ShortPrefix, format!("{net} is shorter than /{min}")));
            }
            let hit = special_nets().into_iter().find(|s| s.contains(n) || n.contains(s));
            hit.map(|s| (Rule::Special, format!("{net} overlaps {s}")))
        }
    }
}

/// Checks the workload part of `view` (its members already checked by the address and legacy-prefix
/// passes): drops what breaks a rule from the view and reports it in `dropped`. `legacy` are the legacy
/// routed prefixes accepted by the earlier pass; `established` says whether a member is established.
pub(super) fn check(
    view: &mut MembersResponse,
    trust: &Trust<'_>,
    legacy: &[IpNet],
    established: &dyn Fn(&MemberView) -> bool,
    dropped: &mut Vec<Problem>,
) {
    let id = trust.identity;
    let mut drop = |entry: String, rule: Rule, detail: String| dropped.push(Problem { entry, rule, detail });
    // The underlay: every member's endpoint and the registry, for every member; this host's own addresses,
    // for every member but this node (its own pod prefix holds its bridge's address).
    let underlay = underlay_addresses(view, trust);
    let local: Vec<(IpAddr, String)> = trust
        .local
        .iter()
        .map(|a| (*a, "this node's own address".to_owned()))
        .collect();

    // The network's ranges. This node's own /32 is on its interface (a local address) from its first run
    // on: the prefix holding it captures nothing.
    let own_v4 = view
        .members
        .iter()
        .find(|m| m.address == id.address)
        .and_then(|m| m.address_v4)
        .map(IpAddr::V4);
    if let Some(v4) = view.overlay_prefix_v4 {
        let net = IpNet::V4(v4);
        let problem = shape(&net).or_else(|| {
            underlay
                .iter()
                .chain(local.iter().filter(|(a, _)| Some(*a) != own_v4))
                .find(|(a, _)| net.contains(a))
                .map(|(a, what)| (Rule::Underlay, format!("{net} captures {what} {a}")))
        });
        if let Some((rule, detail)) = problem {
            drop(
                "view".into(),
                rule,
                format!("IPv4 overlay prefix {detail}; ignored (no member gets a /32)"),
            );
            view.overlay_prefix_v4 = None;
        }
    }
    view.pod_pools.retain(|p| match shape(&p.prefix) {
        Some((rule, detail)) => {
            drop("view".into(), rule, format!("pod pool {detail}; ignored"));
            false
        }
        None => true,
    });
    view.site_ranges.retain(|r| match shape(r) {
        Some((rule, detail)) => {
            drop("view".into(), rule, format!("site range {detail}; ignored"));
            false
        }
        None => true,
    });

    // What no member prefix may overlap: the overlays and the VIP pool.
    let mut reserved: Vec<(IpNet, String)> = vec![(IpNet::V6(id.overlay_prefix), "the overlay prefix".into())];
    reserved.extend(view.vip_pool.map(|p| (IpNet::V6(p), "the VIP pool".into())));
    reserved.extend(
        view.overlay_prefix_v4
            .map(|p| (IpNet::V4(p), "the IPv4 overlay prefix".into())),
    );
    let addresses: Vec<(IpNet, String)> = view
        .members
        .iter()
        .map(|m| {
            (
                IpNet::V6(Ipv6Net::from(m.address)),
                format!("member {}'s address", m.name),
            )
        })
        .collect();

    // Established members first, then the others, each in view order.
    let mut order: Vec<usize> = (0..view.members.len()).collect();
    order.sort_by_key(|&i| !established(&view.members[i]));
    let mut slash32: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut taken: Vec<(IpNet, String)> = legacy.iter().map(|n| (*n, "a routed prefix".to_owned())).collect();
    let pools = view.pod_pools.clone();
    let ranges = view.site_ranges.clone();
    for i in order {
        let m = &mut view.members[i];
        let entry = format!("member {} ({})", m.name, m.address);
        let is_self = m.address == id.address;
        if let Some(a) = m.address_v4 {
            let problem = match view.overlay_prefix_v4 {
                None => Some((
                    Rule::OutsideOverlay,
                    "the network has no (valid) IPv4 overlay prefix".to_owned(),
                )),
                Some(o) if !o.contains(&a) || a == o.network() || a == o.broadcast() => Some((
                    Rule::OutsideOverlay,
                    format!("is not a host address of the IPv4 overlay prefix {o}"),
                )),
                Some(_) => slash32
                    .get(&a)
                    .map(|other| (Rule::Duplicate, format!("is also member {other}'s /32"))),
            };
            match problem {
                Some((rule, detail)) => {
                    drop(entry.clone(), rule, format!("IPv4 address {a} {detail}; dropped"));
                    m.address_v4 = None;
                }
                None => {
                    slash32.insert(a, m.name.clone());
                }
            }
        }
        let mut kept = Vec::with_capacity(m.prefixes.len());
        for p in std::mem::take(&mut m.prefixes) {
            let net = p.prefix;
            let problem = shape(&net)
                .or_else(|| {
                    let (inside, what) = match p.kind {
                        PrefixKind::Pod => (pools.iter().any(|pool| pool.prefix.contains(&net)), "pod pools"),
                        PrefixKind::Site => (ranges.iter().any(|r| r.contains(&net)), "site ranges"),
                    };
                    (!inside).then(|| (Rule::OutsideRange, format!("is outside the network's {what}")))
                })
                .or_else(|| {
                    reserved
                        .iter()
                        .chain(&addresses)
                        .chain(&taken)
                        .find(|(other, _)| overlaps(other, &net))
                        .map(|(other, what)| (Rule::Overlap, format!("overlaps {what} {other}")))
                })
                .or_else(|| {
                    let own_local = (!is_self).then_some(&local).into_iter().flatten();
                    underlay
                        .iter()
                        .chain(own_local)
                        .find(|(a, _)| net.contains(a))
                        .map(|(a, what)| (Rule::Underlay, format!("captures {what} {a}")))
                });
            match problem {
                Some((rule, detail)) => {
                    drop(
                        entry.clone(),
                        rule,
                        format!("{} prefix {net} {detail}; dropped", p.kind),
                    );
                    // Its legacy copy (the IPv6 ones are in `routed_prefixes` too) goes with it.
                    m.routed_prefixes.retain(|r| IpNet::V6(*r) != net);
                }
                None => {
                    taken.push((net, format!("member {}'s prefix", m.name)));
                    kept.push(p);
                }
            }
        }
        m.prefixes = kept;
    }
}
