//! Pure: what a registry view means for this node. Pinning of (address, public key), the validation of a
//! view before it is persisted or applied (the registry is trusted for membership, not to re-route
//! established members' addresses or the underlay), the effective configuration (the file plus the
//! registry's identity, members and VIPs), and the manual moves to act on.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::Ipv6Net;
use wireguard_control::Key;

use super::state::{Identity, Pins};
use crate::config::{host_net, Config, ConfigError, ConfigErrors, Member, VipConfig};
use crate::registry::wire::{MemberView, MembersResponse};
use crate::vocab::MAX_CANDIDATES;
use crate::vocab::MAX_TERM;

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
    /// The registry's own address when its URL names one: nothing may route it into the tunnel.
    pub registry: Option<Ipv6Addr>,
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
        .chain(trust.registry.map(|a| (a, "the registry's address".to_owned())))
        .collect();

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
        for net in &m.routed_prefixes {
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
            for (a, what) in underlay.iter().filter(|(a, _)| net.contains(a)) {
                problem(
                    Rule::Underlay,
                    format!("routed prefix {net} captures {what} {a}"),
                    false,
                );
            }
        }
        if problems.is_empty() {
            routed.extend(m.routed_prefixes.iter().map(|n| (*n, i)));
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
    let mut i = 0;
    view.vips.retain(|_| {
        i += 1;
        keep_vip[i - 1]
    });
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
            line: reg.line,
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
    if identity.registry_url != reg.url {
        errors.push(ConfigError {
            path: file.source.clone(),
            line: reg.line,
            key: "registry.url".into(),
            message: format!("is {} but this node enrolled with {}", reg.url, identity.registry_url),
            hint: "set registry.url back, or remove the registry state directory to enroll again".into(),
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
    cfg.members = view
        .members
        .iter()
        .filter_map(|m| match Key::from_base64(&m.public_key) {
            Ok(public_key) => Some(Member {
                name: m.name.clone(),
                public_key,
                endpoint: m.endpoint,
                address: m.address,
                routed_prefixes: m.routed_prefixes.clone(),
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
        cfg.vips.push(VipConfig {
            address: v.address,
            candidates,
            health: if mine { health.clone() } else { None },
            line: 0,
        });
    }
    (cfg, notes)
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
mod tests {
    use super::*;
    use crate::registry::wire::{CandidateView, EpochView, MoveRequestView, VipView};
    use crate::vocab::Lifecycle;
    use std::path::Path;

    const K1: &str = "i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=";
    const K2: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";
    const K3: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn member(name: &str, addr: &str, key: &str) -> MemberView {
        MemberView {
            peer_id: format!("id-{name}"),
            name: name.into(),
            public_key: key.into(),
            endpoint: None,
            address: addr.parse().unwrap(),
            routed_prefixes: vec![],
            lifecycle: Lifecycle::Persistent,
            roles: vec![],
            last_seen_ms: 0,
        }
    }

    fn vip(addr: &str, cluster: Option<&str>, candidates: &[&str]) -> VipView {
        VipView {
            vip_id: format!("v-{addr}"),
            address: addr.parse().unwrap(),
            cluster_id: cluster.map(str::to_owned),
            candidates: candidates
                .iter()
                .map(|n| CandidateView {
                    peer_id: format!("id-{n}"),
                    name: (*n).into(),
                    address: "fd00:5d::99".parse().unwrap(),
                })
                .collect(),
            holder: None,
            epoch: None,
            confirmed_peers: None,
            move_request: None,
        }
    }

    fn view(members: Vec<MemberView>, vips: Vec<VipView>) -> MembersResponse {
        MembersResponse {
            network_id: "n1".into(),
            revision: 7,
            overlay_prefix: Some("fd00:5d::/32".parse().unwrap()),
            vip_pool: None,
            members,
            vips,
        }
    }

    fn identity() -> Identity {
        Identity {
            peer_id: "id-a".into(),
            name: "a".into(),
            network_id: "n1".into(),
            address: "fd00:5d::1".parse().unwrap(),
            overlay_prefix: "fd00:5d::/32".parse().unwrap(),
            peer_token: "secret".into(),
            registry_url: "https://reg".into(),
        }
    }

    fn file(extra: &str) -> Config {
        let text = format!("[interface]\nname = \"sdw0\"\n[registry]\nurl = \"https://reg\"\n{extra}");
        crate::config::parse(Path::new("/etc/sdwand/sdwand.toml"), &text).unwrap()
    }

    #[test]
    fn pins_refuse_a_rekeyed_address_and_keep_the_rest() {
        let mut pins = Pins::new();
        let first = view(
            vec![member("a", "fd00:5d::1", K1), member("b", "fd00:5d::2", K2)],
            vec![],
        );
        let (kept, refused) = refuse_rekeys(first, &pins);
        assert!(pins.refresh(&kept, &[], 100, 1000));
        assert_eq!((kept.members.len(), refused.len(), pins.len()), (2, 0, 2));
        let rekeyed = view(
            vec![
                member("a", "fd00:5d::1", K1),
                member("b2", "fd00:5d::2", K3),
                member("c", "fd00:5d::3", K3),
            ],
            vec![],
        );
        let (kept, refused) = refuse_rekeys(rekeyed, &pins);
        let names: Vec<&str> = kept.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(
            refused,
            [Refused {
                name: "b2".into(),
                address: "fd00:5d::2".parse().unwrap(),
                pinned: K2.into(),
                offered: K3.into(),
            }]
        );
        assert_eq!(pins.len(), 2, "refusing pins nothing");
        assert!(pins.refresh(&kept, &[], 200, 1000));
        assert_eq!(pins.key(&"fd00:5d::2".parse().unwrap()), Some(K2), "the pin is kept");
        assert_eq!(pins.len(), 3, "the new member is pinned");
    }

    /// A pinned network: a (this node, K1) and b (K2) established; the registry at 2001:db8::100.
    fn pinned() -> Pins {
        let mut pins = Pins::new();
        pins.pin("fd00:5d::1".parse().unwrap(), K1);
        pins.pin("fd00:5d::2".parse().unwrap(), K2);
        pins
    }

    fn check(v: MembersResponse, pins: &Pins) -> Result<(MembersResponse, Vec<Problem>), Vec<Problem>> {
        let id = identity();
        validate(
            v,
            &Trust {
                identity: &id,
                own_key: K1,
                pins,
                registry: Some("2001:db8::100".parse().unwrap()),
            },
        )
    }

    fn base(extra_members: Vec<MemberView>, vips: Vec<VipView>) -> MembersResponse {
        let mut b = member("b", "fd00:5d::2", K2);
        b.endpoint = Some("[2001:db8::2]:51820".parse().unwrap());
        let mut members = vec![member("a", "fd00:5d::1", K1), b];
        members.extend(extra_members);
        view(members, vips)
    }

    fn routed(name: &str, addr: &str, prefixes: &[&str]) -> MemberView {
        let mut m = member(name, addr, K3);
        m.routed_prefixes = prefixes.iter().map(|p| p.parse().unwrap()).collect();
        m
    }

    fn rules(problems: &[Problem]) -> Vec<Rule> {
        problems.iter().map(|p| p.rule).collect()
    }

    #[test]
    fn a_clean_view_passes_unchanged() {
        let mut v = base(
            vec![routed("x", "fd00:5d::3", &["fd00:77::/48"])],
            vec![vip("fd00:5d:f::1", Some("c1"), &["a", "b"])],
        );
        v.vips[0].epoch = Some(EpochView { term: 9, rank: 0 });
        let (kept, dropped) = check(v.clone(), &pinned()).unwrap();
        assert_eq!((kept, dropped), (v, vec![]));
    }

    #[test]
    fn e5a_a_routed_prefix_on_a_pinned_members_address_refuses_the_view() {
        let v = base(vec![routed("x", "fd00:5d::3", &["fd00:5d::2/128"])], vec![]);
        let refused = check(v.clone(), &pinned()).unwrap_err();
        assert_eq!(rules(&refused), [Rule::Overlap]);
        assert!(refused[0].to_string().contains("member x (fd00:5d::3)"), "{refused:?}");
        assert!(refused[0].detail.contains("member b's address"), "{refused:?}");
        // The same overlap between two new members drops the one whose prefix covers the other.
        let mut pins = Pins::new();
        pins.pin("fd00:5d::1".parse().unwrap(), K1);
        let (kept, dropped) = check(v, &pins).unwrap();
        assert_eq!(rules(&dropped), [Rule::Overlap]);
        assert_eq!(
            kept.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn e5b_the_default_route_and_short_prefixes_are_never_taken() {
        let refused = check(base(vec![routed("x", "fd00:5d::3", &["::/0"])], vec![]), &pinned()).unwrap_err();
        assert!(
            rules(&refused).contains(&Rule::Overlap),
            "::/0 covers pinned members: {refused:?}"
        );
        let (kept, dropped) = check(base(vec![routed("x", "fd00:5d::3", &["3000::/8"])], vec![]), &pinned()).unwrap();
        assert_eq!(rules(&dropped), [Rule::ShortPrefix]);
        assert_eq!(kept.members.len(), 2);
        let (_, dropped) = check(base(vec![routed("x", "fd00:5d::3", &["ff02::/16"])], vec![]), &pinned()).unwrap();
        assert_eq!(rules(&dropped), [Rule::Special]);
        // An established member whose prefixes turn hostile refuses the view (it stays as it was).
        let mut b = member("b", "fd00:5d::2", K2);
        b.routed_prefixes = vec!["4000::/3".parse().unwrap()];
        let v = view(vec![member("a", "fd00:5d::1", K1), b], vec![]);
        assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::ShortPrefix]);
    }

    #[test]
    fn e5c_a_vip_on_a_members_address_is_refused_or_dropped() {
        let v = base(vec![], vec![vip("fd00:5d::2", None, &["a"])]);
        let refused = check(v, &pinned()).unwrap_err();
        assert_eq!(rules(&refused), [Rule::Overlap]);
        assert!(refused[0].to_string().contains("VIP fd00:5d::2"), "{refused:?}");
        // On a new member's address, or inside a new member's routed prefix: the VIP goes.
        let v = base(
            vec![routed("x", "fd00:5d::3", &["fd00:77::/48"])],
            vec![
                vip("fd00:5d::3", None, &["a"]),
                vip("fd00:77::9", None, &["a"]),
                vip("fd00:5d:f::1", None, &["a"]),
            ],
        );
        let (kept, dropped) = check(v, &pinned()).unwrap();
        assert_eq!(rules(&dropped), [Rule::Overlap, Rule::OutsideOverlay, Rule::Overlap]);
        assert_eq!(kept.vips.len(), 1);
        assert_eq!(kept.vips[0].address.to_string(), "fd00:5d:f::1");
        // Inside an established member's routed prefix: refused.
        let mut b = member("b", "fd00:5d::2", K2);
        b.routed_prefixes = vec!["fd00:78::/48".parse().unwrap()];
        let v = view(
            vec![member("a", "fd00:5d::1", K1), b],
            vec![vip("fd00:78::1", None, &["a"])],
        );
        assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Overlap]);
    }

    #[test]
    fn e5d_a_vip_or_prefix_on_the_underlay_is_dropped() {
        let v = base(
            vec![routed("x", "fd00:5d::3", &["2001:db8::/64"])],
            vec![
                vip("2001:db8::2", None, &["a"]),
                vip("2001:db8::100", None, &["a"]),
                vip("::1", None, &["a"]),
            ],
        );
        let (kept, dropped) = check(v, &pinned()).unwrap();
        assert!(kept.vips.is_empty() && kept.members.len() == 2, "{kept:?}");
        let found: Vec<(&str, Rule, bool, bool)> = dropped
            .iter()
            .map(|p| {
                (
                    p.entry.as_str(),
                    p.rule,
                    p.detail.contains("member b's underlay endpoint"),
                    p.detail.contains("the registry's address"),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("member x (fd00:5d::3)", Rule::Underlay, true, false),
                ("member x (fd00:5d::3)", Rule::Underlay, false, true),
                ("VIP 2001:db8::2", Rule::OutsideOverlay, false, false),
                ("VIP 2001:db8::2", Rule::Underlay, true, false),
                ("VIP 2001:db8::100", Rule::OutsideOverlay, false, false),
                ("VIP 2001:db8::100", Rule::Underlay, false, true),
                ("VIP ::1", Rule::Special, false, false),
            ]
        );
    }

    #[test]
    fn e5e_a_member_outside_the_overlay_is_dropped_and_duplicates_too() {
        let v = base(
            vec![member("x", "fd00:99::5", K3), member("y", "fd00:5d::2", K3)],
            vec![],
        );
        let (kept, dropped) = check(v, &Pins::new()).unwrap();
        assert_eq!(rules(&dropped), [Rule::OutsideOverlay, Rule::Duplicate]);
        assert_eq!(
            kept.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_vip_outside_the_networks_pool_is_dropped_and_a_pool_outside_the_overlay_refuses_the_view() {
        let mut v = base(
            vec![],
            vec![vip("fd00:5d:f::1", None, &["a"]), vip("fd00:5d::77", None, &["a"])],
        );
        v.vip_pool = Some("fd00:5d:f::/64".parse().unwrap());
        let (kept, dropped) = check(v.clone(), &pinned()).unwrap();
        assert_eq!(rules(&dropped), [Rule::OutsidePool]);
        assert_eq!(dropped[0].entry, "VIP fd00:5d::77");
        assert_eq!(kept.vips.len(), 1);
        v.vip_pool = Some("fd00:77::/64".parse().unwrap());
        assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Network]);
    }

    #[test]
    fn too_many_candidates_drop_the_vip_and_absurd_floors_are_removed() {
        let names: Vec<String> = (0..=MAX_CANDIDATES).map(|i| format!("n{i}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut v = base(
            vec![],
            vec![
                vip("fd00:5d:f::1", None, &all),
                vip("fd00:5d:f::2", None, &all[..MAX_CANDIDATES]),
                vip("fd00:5d:f::2", None, &["a"]),
            ],
        );
        v.vips[1].epoch = Some(EpochView {
            term: u64::MAX,
            rank: 0,
        });
        let (kept, dropped) = check(v, &pinned()).unwrap();
        assert_eq!(
            rules(&dropped),
            [Rule::TooManyCandidates, Rule::TermFloor, Rule::Duplicate]
        );
        assert_eq!(kept.vips.len(), 1, "33 candidates refused, never truncated");
        assert_eq!(kept.vips[0].candidates.len(), MAX_CANDIDATES);
        assert_eq!(kept.vips[0].epoch, None, "the floor is gone, the VIP stays");
    }

    #[test]
    fn another_network_or_an_impersonation_of_this_node_refuses_the_view() {
        let mut v = base(vec![], vec![]);
        v.overlay_prefix = Some("fd00:6e::/48".parse().unwrap());
        assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Network]);
        let mut v = base(vec![], vec![]);
        v.network_id = "n2".into();
        assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Network]);
        let v = view(vec![member("evil", "fd00:5d::1", K3)], vec![]);
        assert_eq!(rules(&check(v, &Pins::new()).unwrap_err()), [Rule::SelfImpersonation]);
        let v = view(vec![member("evil", "fd00:5d::9", K1)], vec![]);
        assert_eq!(rules(&check(v, &Pins::new()).unwrap_err()), [Rule::SelfImpersonation]);
    }

    #[test]
    fn effective_config_takes_identity_members_and_vips() {
        let f = file(
            "[k3s]\nrole = \"server\"\n[k3s.health]\nkind = \"tcp\"\ntarget = \"[::1]:6443\"\n\
             [[vip]]\naddress = \"fd00:9::1\"\ncandidates = [\"b\"]\n",
        );
        let v = view(
            vec![member("a", "fd00:5d::1", K1), member("b", "fd00:5d::2", K2)],
            vec![
                vip("fd00:5d:f::1", Some("c1"), &["a", "b"]),
                vip("fd00:5d:f::2", Some("c2"), &["b"]),
                vip("fd00:5d:f::3", None, &[]),
                vip("fd00:9::1", None, &["a"]),
            ],
        );
        let (cfg, notes) = effective_config(&f, &identity(), &v);
        assert_eq!(cfg.interface.address, identity().address);
        assert_eq!(cfg.interface.overlay_prefix, identity().overlay_prefix);
        assert_eq!(
            cfg.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(cfg.members[1].public_key, Key::from_base64(K2).unwrap());
        let vips: Vec<(String, Vec<String>, bool)> = cfg
            .vips
            .iter()
            .map(|v| (v.address.to_string(), v.candidates.clone(), v.health.is_some()))
            .collect();
        assert_eq!(
            vips,
            [
                ("fd00:9::1".into(), vec!["b".into()], false),
                ("fd00:5d:f::1".into(), vec!["a".into(), "b".into()], true),
                ("fd00:5d:f::2".into(), vec!["b".into()], false),
            ],
            "file VIP first and kept; k3s health only on this node's cluster VIP; no empty VIP"
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        cfg.check_identity(&Key::from_base64(K1).unwrap()).unwrap();
    }

    #[test]
    fn invalid_keys_are_left_out_with_a_note() {
        let v = view(
            vec![member("a", "fd00:5d::1", K1), member("x", "fd00:5d::9", "nope")],
            vec![],
        );
        let (cfg, notes) = effective_config(&file(""), &identity(), &v);
        assert_eq!(cfg.members.len(), 1);
        assert!(notes[0].contains("fd00:5d::9"), "{notes:?}");
    }

    #[test]
    fn identity_must_match_the_file() {
        let mut f = file("");
        check_identity(&f, &identity()).unwrap();
        let reg = f.registry.as_mut().unwrap();
        reg.file_address = Some("fd00:5d::7".parse().unwrap());
        reg.url = "https://other".into();
        let e = check_identity(&f, &identity()).unwrap_err().0;
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["interface.address", "registry.url"]);
        assert!(e[0].message.contains("fd00:5d::1"), "{e:?}");
    }

    #[test]
    fn each_move_request_is_acted_on_once() {
        let mut v = view(vec![], vec![vip("fd00:5d:f::1", Some("c1"), &["a", "b"])]);
        v.vips[0].move_request = Some(MoveRequestView { to: "b".into(), seq: 1 });
        let held: Ipv6Addr = "fd00:5d:f::1".parse().unwrap();
        let mut seen = seen_moves(&v);
        assert!(
            new_moves(&v, &mut seen, &[held]).is_empty(),
            "a stored request was handled before"
        );
        v.vips[0].move_request = Some(MoveRequestView { to: "a".into(), seq: 2 });
        assert!(
            new_moves(&v, &mut seen, &[]).is_empty(),
            "not for a node that does not hold the VIP"
        );
        assert_eq!(
            new_moves(&v, &mut seen, &[held]),
            [(held, "a".to_owned())],
            "still pending"
        );
        assert!(new_moves(&v, &mut seen, &[held]).is_empty());
        let mut fresh = HashMap::new();
        assert_eq!(new_moves(&v, &mut fresh, &[held]).len(), 1);
    }
}
