//! Pure: what a registry view means for this node. Pinning of (address, public key), the validation of a
//! view before it is persisted or applied (the registry is trusted for membership, not to re-route
//! established members' addresses or the underlay), the effective configuration (the file plus the
//! registry's identity, members and VIPs), and the manual moves to act on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use wireguard_control::Key;

use super::state::{Identity, Pins};
use crate::config::{host_net, Config, ConfigError, ConfigErrors, FloatingConfig, Member, NetworkPrefixes, VipConfig};
use crate::vocab::wire::{MemberView, MembersResponse, QuorumView};
use crate::vocab::MAX_CANDIDATES;
use crate::vocab::MAX_TERM;
use crate::vocab::{PrefixKind, RoutedPrefix};

mod floating;
mod workload;
pub(crate) use workload::shape as prefix_shape;

/// A member the registry re-keyed: its address was pinned to another public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The member's name in the refused view.
    pub name: String,
    /// Its address.
    pub address: Ipv6Addr,
    /// The key pinned for the address.
    pub pinned: String,
    /// The key the registry offered.
    pub offered: String,
}

/// Filters `view` through `pins`: a member whose address is pinned to another key is taken out (and
/// returned). The pins are not changed: new members are pinned once the view is accepted
/// ([`Pins::refresh`]).
pub fn refuse_rekeys(mut view: MembersResponse, pins: &Pins) -> (MembersResponse, Vec<Refused>) {
    let mut refused = Vec::new();
    view.members.retain(|m| match pins.key(&m.address) {
        Some(pinned) if pinned != m.public_key => {
            refused.push(Refused {
                name: m.name.clone(),
                address: m.address,
                pinned: pinned.to_owned(),
                offered: m.public_key.clone(),
            });
            false
        }
        _ => true,
    });
    (view, refused)
}

/// What a view is checked against: what this node knows without the registry.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// This node's identity (network, overlay prefix, address).
    pub identity: &'a Identity,
    /// This node's public key, base64.
    pub own_key: &'a str,
    /// The pins: a member whose (address, key) is pinned is an established one.
    pub pins: &'a Pins,
    /// The registry replicas' own addresses, where their URLs name one: nothing may route them into the
    /// tunnel.
    pub registry: &'a [IpAddr],
    /// This host's own addresses (underlay included, [`crate::net::local_addresses`]): no other member's
    /// prefix may capture one, or this node's WireGuard UDP would be routed into its own tunnel.
    pub local: &'a [IpAddr],
}

/// A rule of [`validate`]; its name is the `reason` label of the refusal metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The view is for another network or overlay prefix than this node's identity.
    Network,
    /// A member carries this node's address with another key, or this node's key at another address.
    SelfImpersonation,
    /// A member's address or a VIP is outside the overlay prefix.
    OutsideOverlay,
    /// A VIP is outside the network's VIP pool.
    OutsidePool,
    /// Two members (or two VIPs) share an address.
    Duplicate,
    /// A routed prefix shorter than /16 (the default route included).
    ShortPrefix,
    /// A loopback, unspecified, IPv4-mapped, link-local or multicast address or prefix.
    Special,
    /// A routed prefix or VIP overlaps another member's /128 or routed prefix.
    Overlap,
    /// A routed prefix or VIP captures a member's underlay endpoint or the registry's address.
    Underlay,
    /// A VIP lists more than [`MAX_CANDIDATES`] candidates (refused, never truncated).
    TooManyCandidates,
    /// A VIP's epoch floor is above [`MAX_TERM`].
    TermFloor,
    /// A prefix with host bits set (`198.51.100.1/24` instead of `198.51.100.0/24`).
    NotCanonical,
    /// A pod prefix outside the network's pod pools, or a site prefix outside its site ranges.
    OutsideRange,
}

impl Rule {
    /// The rule's metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Network => "network",
            Rule::SelfImpersonation => "self_impersonation",
            Rule::OutsideOverlay => "outside_overlay",
            Rule::OutsidePool => "outside_pool",
            Rule::Duplicate => "duplicate",
            Rule::ShortPrefix => "short_prefix",
            Rule::Special => "special_address",
            Rule::Overlap => "overlap",
            Rule::Underlay => "underlay",
            Rule::TooManyCandidates => "too_many_candidates",
            Rule::TermFloor => "term_floor",
            Rule::NotCanonical => "not_canonical",
            Rule::OutsideRange => "outside_range",
        }
    }
}

/// One broken rule: the entry it concerns (`member NAME (ADDR)`, `VIP ADDR`, `view`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry.
    pub entry: String,
    /// The rule.
    pub rule: Rule,
    /// What is wrong, in words.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} [{}]", self.entry, self.detail, self.rule.as_str())
    }
}

/// The shortest routed prefix a view may carry.
pub const MIN_ROUTED_PREFIX_LEN: u8 = 16;

/// Ranges no member may route and no VIP may use.
fn special_nets() -> [Ipv6Net; 5] {
    [
        "::/128".parse().expect("valid"),
        "::1/128".parse().expect("valid"),
        "::ffff:0:0/96".parse().expect("valid"),
        "fe80::/10".parse().expect("valid"),
        "ff00::/8".parse().expect("valid"),
    ]
}

fn overlaps(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(b) || b.contains(a)
}

/// Checks a (re-key filtered) view the way a configuration file is checked, before it is persisted or
/// applied: members inside the overlay prefix with unique addresses; routed prefixes at least
/// /[`MIN_ROUTED_PREFIX_LEN`], not special, overlapping no other member's /128 or prefix and capturing no
/// underlay endpoint nor the registry; VIPs unique, not special, inside the overlay prefix and the
/// network's VIP pool (when the registry names it; a pool outside the overlay refuses the view), not a
/// member's /128, not inside a routed prefix, not an underlay address, with at most [`MAX_CANDIDATES`]
/// candidates.
///
/// An offending member or VIP is dropped and the rest is kept (`Ok` with the drops), except when the
/// problem concerns an established member (pinned with its key, or this node): a view that would move a
/// pinned address to someone else, or change what an established member routes into something invalid, is
/// refused as a whole (`Err`) and the last good view stays. A floor above [`MAX_TERM`] is removed from its
/// VIP (reported with [`Rule::TermFloor`]); the VIP stays.
pub fn validate(mut view: MembersResponse, trust: &Trust<'_>) -> Result<(MembersResponse, Vec<Problem>), Vec<Problem>> {
    let id = trust.identity;
    let mut refusals = Vec::new();
    if let Some(pool) = view.vip_pool.filter(|p| !id.overlay_prefix.contains(p)) {
        refusals.push(Problem {
            entry: "view".into(),
            rule: Rule::Network,
            detail: format!("VIP pool {pool} is outside the overlay prefix {}", id.overlay_prefix),
        });
        return Err(refusals);
    }
    if view.network_id != id.network_id || view.overlay_prefix.is_some_and(|p| p != id.overlay_prefix) {
        refusals.push(Problem {
            entry: "view".into(),
            rule: Rule::Network,
            detail: format!(
                "is for network {} with overlay prefix {}, but this node enrolled in {} with {}",
                view.network_id,
                view.overlay_prefix.map_or("(none)".into(), |p| p.to_string()),
                id.network_id,
                id.overlay_prefix
            ),
        });
        return Err(refusals);
    }
    let specials = special_nets();
    let member_entry = |m: &MemberView| format!("member {} ({})", m.name, m.address);
    let established =
        |m: &MemberView| m.address == id.address || trust.pins.key(&m.address).is_some_and(|k| k == m.public_key);
    let mut out = Verdicts {
        refusals,
        dropped: Vec::new(),
    };
    let mut drop_member = vec![false; view.members.len()];

    // Pass 1: addresses.
    let mut owner: HashMap<Ipv6Addr, usize> = HashMap::new();
    for (i, m) in view.members.iter().enumerate() {
        let est = established(m);
        if (m.address == id.address) != (m.public_key == trust.own_key) {
            out.refusals.push(Problem {
                entry: member_entry(m),
                rule: Rule::SelfImpersonation,
                detail: format!(
                    "carries this node's {} but not its {}",
                    if m.address == id.address {
                        "address"
                    } else {
                        "public key"
                    },
                    if m.address == id.address {
                        "public key"
                    } else {
                        "address"
                    }
                ),
            });
            continue;
        }
        if !id.overlay_prefix.contains(&m.address) {
            let detail = format!("address is outside the overlay prefix {}", id.overlay_prefix);
            drop_member[i] |= out.add(member_entry(m), Rule::OutsideOverlay, detail, est);
            continue;
        }
        if let Some(&first) = owner.get(&m.address) {
            let detail = format!("address is also member {}'s", view.members[first].name);
            drop_member[i] |= out.add(member_entry(m), Rule::Duplicate, detail, est);
            continue;
        }
        owner.insert(m.address, i);
    }
    let underlay: Vec<(Ipv6Addr, String)> = view
        .members
        .iter()
        .filter_map(|m| match m.endpoint.map(|e| e.ip()) {
            Some(IpAddr::V6(a)) => Some((a, format!("member {}'s underlay endpoint", m.name))),
            _ => None,
        })
        .chain(trust.registry.iter().filter_map(|a| match a {
            IpAddr::V6(a) => Some((*a, "the registry's address".to_owned())),
            IpAddr::V4(_) => None,
        }))
        .collect();
    let local_v6: Vec<(Ipv6Addr, String)> = trust
        .local
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some((*a, "this node's own address".to_owned())),
            IpAddr::V4(_) => None,
        })
        .collect();
    // The new `prefixes` field supersedes the legacy one: a prefix in both is checked once, as the new
    // field says (its kind, by `workload::check`), and only the legacy-only ones go through pass 2 (as
    // site prefixes).
    let legacy_only = |m: &MemberView| -> Vec<Ipv6Net> {
        m.routed_prefixes
            .iter()
            .filter(|p| !m.prefixes.iter().any(|q| q.prefix == IpNet::V6(**p)))
            .copied()
            .collect()
    };

    // Pass 2: routed prefixes, against every member address, the prefixes accepted before, the underlay.
    let mut routed: Vec<(Ipv6Net, usize)> = Vec::new();
    for (i, m) in view.members.iter().enumerate() {
        if drop_member[i] || owner.get(&m.address).is_none_or(|&o| o != i) {
            continue;
        }
        let est = established(m);
        let mut problems: Vec<(Rule, String, bool)> = Vec::new();
        let mut problem = |rule, detail: String, victim_established: bool| {
            problems.push((rule, detail, est || victim_established));
        };
        let legacy = legacy_only(m);
        for net in &legacy {
            if net.prefix_len() < MIN_ROUTED_PREFIX_LEN {
                problem(
                    Rule::ShortPrefix,
                    format!("routed prefix {net} is shorter than /{MIN_ROUTED_PREFIX_LEN}"),
                    false,
                );
            }
            if let Some(s) = specials.iter().find(|s| overlaps(s, net)) {
                problem(Rule::Special, format!("routed prefix {net} overlaps {s}"), false);
            }
            for (a, &o) in owner.iter().filter(|(a, _)| net.contains(*a)) {
                let victim = &view.members[o];
                problem(
                    Rule::Overlap,
                    format!("routed prefix {net} covers member {}'s address {a}", victim.name),
                    established(victim),
                );
            }
            for (other, o) in routed.iter().filter(|(other, _)| overlaps(other, net)) {
                let victim = &view.members[*o];
                problem(
                    Rule::Overlap,
                    format!("routed prefix {net} overlaps {other}, routed to member {}", victim.name),
                    established(victim),
                );
            }
            let others_local = (m.address != id.address).then_some(&local_v6).into_iter().flatten();
            for (a, what) in underlay.iter().chain(others_local).filter(|(a, _)| net.contains(a)) {
                problem(
                    Rule::Underlay,
                    format!("routed prefix {net} captures {what} {a}"),
                    false,
                );
            }
        }
        if problems.is_empty() {
            routed.extend(legacy.iter().map(|n| (*n, i)));
        }
        for (rule, detail, refuse) in problems {
            drop_member[i] |= out.add(member_entry(m), rule, detail, refuse);
        }
    }

    // VIPs.
    let mut seen_vips = std::collections::HashSet::new();
    let mut keep_vip = vec![true; view.vips.len()];
    for (i, v) in view.vips.iter_mut().enumerate() {
        let entry = format!("VIP {}", v.address);
        let host = host_net(v.address);
        let mut problems: Vec<(Rule, String, bool)> = Vec::new();
        if !seen_vips.insert(v.address) {
            problems.push((Rule::Duplicate, "is listed twice".into(), false));
        }
        if v.candidates.len() > MAX_CANDIDATES {
            problems.push((
                Rule::TooManyCandidates,
                format!("has {} candidates, more than {MAX_CANDIDATES}", v.candidates.len()),
                false,
            ));
        }
        if let Some(s) = specials.iter().find(|s| s.contains(&host)) {
            problems.push((Rule::Special, format!("is inside {s}"), false));
        } else if !id.overlay_prefix.contains(&v.address) {
            let detail = format!("is outside the overlay prefix {}", id.overlay_prefix);
            problems.push((Rule::OutsideOverlay, detail, false));
        } else if let Some(pool) = view.vip_pool.filter(|p| !p.contains(&v.address)) {
            problems.push((
                Rule::OutsidePool,
                format!("is outside the network's VIP pool {pool}"),
                false,
            ));
        }
        if let Some(&o) = owner.get(&v.address) {
            let victim = &view.members[o];
            problems.push((
                Rule::Overlap,
                format!("is member {}'s address", victim.name),
                established(victim),
            ));
        } else if v.address == id.address {
            problems.push((Rule::Overlap, "is this node's address".into(), true));
        }
        for (net, o) in routed.iter().filter(|(net, _)| net.contains(&v.address)) {
            let victim = &view.members[*o];
            problems.push((
                Rule::Overlap,
                format!("is inside {net}, routed to member {}", victim.name),
                established(victim),
            ));
        }
        for (_, what) in underlay.iter().filter(|(a, _)| *a == v.address) {
            problems.push((Rule::Underlay, format!("is {what}"), false));
        }
        if v.epoch.is_some_and(|e| e.term > MAX_TERM) {
            let term = v.epoch.take().map_or(0, |e| e.term);
            out.dropped.push(Problem {
                entry: entry.clone(),
                rule: Rule::TermFloor,
                detail: format!("epoch floor {term} is above the highest term {MAX_TERM}; floor ignored"),
            });
        }
        for (rule, detail, refuse) in problems {
            keep_vip[i] &= !out.add(entry.clone(), rule, detail, refuse);
        }
    }
    if !out.refusals.is_empty() {
        return Err(out.refusals);
    }
    let mut i = 0;
    view.members.retain(|_| {
        i += 1;
        !drop_member[i - 1]
    });
    let routed: Vec<IpNet> = routed.iter().map(|(n, _)| IpNet::V6(*n)).collect();
    workload::check(&mut view, trust, &routed, &established, &mut out.dropped);
    let mut i = 0;
    view.vips.retain(|_| {
        i += 1;
        keep_vip[i - 1]
    });
    floating::check(&mut view, trust, &mut out.dropped);
    Ok((view, out.dropped))
}

/// The problems [`validate`] found so far.
struct Verdicts {
    /// Problems that refuse the whole view.
    refusals: Vec<Problem>,
    /// Problems that drop their entry.
    dropped: Vec<Problem>,
}

impl Verdicts {
    /// Records a problem of `entry`: refusing the view when `refuse`, else dropping the entry (returns
    /// whether the entry is to be dropped).
    fn add(&mut self, entry: String, rule: Rule, detail: String, refuse: bool) -> bool {
        let problem = Problem { entry, rule, detail };
        if refuse {
            self.refusals.push(problem);
            false
        } else {
            self.dropped.push(problem);
            true
        }
    }
}

/// Checks the identity against the `interface.address` / `overlay_prefix` the file gives, if any.
pub fn check_identity(file: &Config, identity: &Identity) -> Result<(), ConfigErrors> {
    let Some(reg) = &file.registry else { return Ok(()) };
    let mut errors = Vec::new();
    let mut mismatch = |key: &str, given: String, assigned: String| {
        errors.push(ConfigError {
            path: file.source.clone(),
            line: reg.line_of(key),
            key: key.into(),
            message: format!("is {given} but the registry assigned {assigned} to this node"),
            hint: format!("remove {key} (it comes from enrollment) or set it to {assigned}"),
        });
    };
    if let Some(a) = reg.file_address.filter(|a| *a != identity.address) {
        mismatch("interface.address", a.to_string(), identity.address.to_string());
    }
    if let Some(p) = reg.file_overlay_prefix.filter(|p| *p != identity.overlay_prefix) {
        mismatch(
            "interface.overlay_prefix",
            p.to_string(),
            identity.overlay_prefix.to_string(),
        );
    }
    if !reg.urls.contains(&identity.registry_url) {
        errors.push(ConfigError {
            path: file.source.clone(),
            line: reg.line_of("registry.url"),
            key: "registry.url".into(),
            message: format!(
                "is {} but this node enrolled with {}",
                reg.urls_shown(),
                identity.registry_url
            ),
            hint: "keep the URL this node enrolled with among the registry's URLs (replicas of one registry may be \
                   added beside it), or remove the registry state directory to enroll again"
                .into(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The configuration the daemon runs on: `file` with the identity's address and prefix, the view's members
/// (this node included, as in a static configuration) and VIPs (after the file's own `[[vip]]`, which win
/// on the same address). `[k3s.health]` applies to every cluster VIP this node is a candidate of.
/// Members whose key does not decode are left out and returned as notes.
pub fn effective_config(file: &Config, identity: &Identity, view: &MembersResponse) -> (Config, Vec<String>) {
    let mut notes = Vec::new();
    let mut cfg = file.clone();
    cfg.interface.address = identity.address;
    cfg.interface.overlay_prefix = identity.overlay_prefix;
    cfg.prefixes = NetworkPrefixes {
        overlay_prefix_v4: view.overlay_prefix_v4,
        pod_pools: view.pod_pools.clone(),
        site_ranges: view.site_ranges.clone(),
    };
    cfg.members = view
        .members
        .iter()
        .filter_map(|m| match Key::from_base64(&m.public_key) {
            Ok(public_key) => Some(Member {
                name: m.name.clone(),
                public_key,
                endpoint: m.endpoint,
                address: m.address,
                routed_prefixes: Vec::new(),
                address_v4: m.address_v4,
                workload: workload_of(m),
                line: 0,
            }),
            Err(_) => {
                notes.push(format!(
                    "member {} ({}) has an invalid public key; left out",
                    m.name, m.address
                ));
                None
            }
        })
        .collect();
    let health = file.k3s.as_ref().and_then(|k| k.health.clone());
    for v in &view.vips {
        if cfg.vips.iter().any(|f| f.address == v.address) {
            notes.push(format!(
                "VIP {} is configured in the file and in the registry; the file's [[vip]] is used",
                v.address
            ));
            continue;
        }
        // At most MAX_CANDIDATES: a longer list was refused by `validate`.
        let candidates: Vec<String> = v.candidates.iter().map(|c| c.name.clone()).collect();
        if candidates.is_empty() {
            continue;
        }
        let mine = v.cluster_id.is_some() && candidates.contains(&identity.name);
        let quorum = witnesses_of(
            v.quorum.as_ref(),
            &candidates,
            &format!("VIP {}", v.address),
            &mut notes,
        );
        cfg.vips.push(VipConfig {
            address: v.address,
            candidates,
            health: if mine { health.clone() } else { None },
            quorum,
            line: 0,
        });
    }
    for f in &view.floating {
        if file.floating.iter().any(|c| c.prefix == f.prefix) {
            notes.push(format!(
                "floating prefix {} is configured in the file and in the registry; the file's [[floating]] is used",
                f.prefix
            ));
            continue;
        }
        let candidates: Vec<String> = f.candidates.iter().map(|c| c.name.clone()).collect();
        if candidates.is_empty() {
            continue;
        }
        let quorum = witnesses_of(
            f.quorum.as_ref(),
            &candidates,
            &format!("floating prefix {}", f.prefix),
            &mut notes,
        );
        // The LAN interface is a local fact the registry cannot know: without the file's entry the
        // gateway address is not put anywhere.
        cfg.floating.push(FloatingConfig {
            prefix: f.prefix,
            gateway: None,
            interface: None,
            candidates,
            health: None,
            quorum,
            line: 0,
        });
    }
    (cfg, notes)
}

/// The witnesses of a registry VIP or floating prefix (`what`, for notes) in quorum mode, by name; `None`
/// when quorum mode is off. The registry never makes a candidate a witness; a view that does is not
/// followed there (a note says so).
fn witnesses_of(
    quorum: Option<&QuorumView>,
    candidates: &[String],
    what: &str,
    notes: &mut Vec<String>,
) -> Option<Vec<String>> {
    let q = quorum?;
    let (kept, both): (Vec<String>, Vec<String>) = q
        .witnesses
        .iter()
        .map(|w| w.name.clone())
        .partition(|w| !candidates.contains(w));
    if !both.is_empty() {
        notes.push(format!(
            "{what}: {} listed as witness and as candidate; counted as candidate only",
            both.join(", ")
        ));
    }
    Some(kept)
}

/// A member's workload prefixes: its `prefixes`, then the legacy `routed_prefixes` not among them, as
/// site prefixes (an older registry fills only those).
fn workload_of(m: &MemberView) -> Vec<RoutedPrefix> {
    let mut out = m.prefixes.clone();
    for p in &m.routed_prefixes {
        let prefix = IpNet::V6(*p);
        if !out.iter().any(|q| q.prefix == prefix) {
            out.push(RoutedPrefix {
                prefix,
                kind: PrefixKind::Site,
            });
        }
    }
    out
}

/// The manual moves to perform: VIPs this node holds (`holding`) with a `move_request` whose seq is above
/// the last one seen (`seen`, updated here for those VIPs only: a request stays pending for a node that
/// becomes holder later). Returns (VIP, target peer name).
pub fn new_moves(
    view: &MembersResponse,
    seen: &mut HashMap<Ipv6Addr, u64>,
    holding: &[Ipv6Addr],
) -> Vec<(Ipv6Addr, String)> {
    let mut out = Vec::new();
    for v in view.vips.iter().filter(|v| holding.contains(&v.address)) {
        let Some(req) = &v.move_request else { continue };
        let last = seen.insert(v.address, req.seq);
        if last.is_none_or(|s| req.seq > s) {
            out.push((v.address, req.to.clone()));
        } else if let Some(s) = last {
            seen.insert(v.address, s.max(req.seq));
        }
    }
    out
}

/// Marks every move request of `view` as seen (the view a restarted daemon starts from: the previous run
/// saw them).
pub fn seen_moves(view: &MembersResponse) -> HashMap<Ipv6Addr, u64> {
    view.vips
        .iter()
        .filter_map(|v| v.move_request.as_ref().map(|r| (v.address, r.seq)))
        .collect()
}

#[cfg(test)]
mod tests;
