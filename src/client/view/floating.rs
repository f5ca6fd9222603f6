//! Pure: the checks of a view's floating prefixes, after its members and workload part were checked.
//! A floating prefix that breaks a rule is dropped from the view (never the whole view): it must be a
//! routable range on its own (see [`super::prefix_shape`]), list at most [`MAX_CANDIDATES`] candidates,
//! keep its gateway inside itself, and overlap nothing else the network routes (the overlays, the VIP pool,
//! the pod pools, members' addresses and workload prefixes, another floating prefix) nor capture a member's
//! underlay endpoint or the registry. This node's own addresses are not checked: a candidate naturally has
//! one inside its LAN's prefix.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};

use super::{Problem, Rule, Trust};
use crate::vocab::wire::MembersResponse;
use crate::vocab::{MAX_CANDIDATES, MAX_TERM};

/// Drops the floating prefixes of `view` that break a rule and reports each in `dropped`; removes an epoch
/// floor above [`MAX_TERM`] (reported, the prefix stays).
pub(super) fn check(view: &mut MembersResponse, trust: &Trust<'_>, dropped: &mut Vec<Problem>) {
    let id = trust.identity;
    let mut taken: Vec<(IpNet, String)> = vec![(IpNet::V6(id.overlay_prefix), "the overlay prefix".into())];
    taken.extend(view.vip_pool.map(|p| (IpNet::V6(p), "the VIP pool".into())));
    taken.extend(
        view.overlay_prefix_v4
            .map(|p| (IpNet::V4(p), "the IPv4 overlay prefix".into())),
    );
    taken.extend(view.pod_pools.iter().map(|p| (p.prefix, "a pod pool".into())));
    taken.extend(
        view.vips
            .iter()
            .map(|v| (IpNet::V6(Ipv6Net::from(v.address)), "a VIP".into())),
    );
    for m in &view.members {
        taken.push((
            IpNet::V6(Ipv6Net::from(m.address)),
            format!("member {}'s address", m.name),
        ));
        taken.extend(
            m.address_v4
                .map(|a| (IpNet::from(IpAddr::V4(a)), format!("member {}'s /32", m.name))),
        );
        taken.extend(
            m.prefixes
                .iter()
                .map(|p| (p.prefix, format!("member {}'s prefix", m.name))),
        );
        taken.extend(
            m.routed_prefixes
                .iter()
                .map(|p| (IpNet::V6(*p), format!("member {}'s routed prefix", m.name))),
        );
    }
    let underlay = super::workload::underlay_addresses(view, trust);
    view.floating.retain_mut(|f| {
        let net = f.prefix;
        let entry = format!("floating prefix {net}");
        let problem = super::prefix_shape(&net)
            .or_else(|| {
                (f.candidates.len() > MAX_CANDIDATES).then(|| {
                    (
                        Rule::TooManyCandidates,
                        format!("has {} candidates, more than {MAX_CANDIDATES}", f.candidates.len()),
                    )
                })
            })
            .or_else(|| {
                f.gateway.filter(|g| !net.contains(g) || *g == net.network()).map(|g| {
                    (
                        Rule::OutsideRange,
                        format!("gateway {g} is not a host address of {net}"),
                    )
                })
            })
            .or_else(|| {
                taken
                    .iter()
                    .find(|(other, _)| other.contains(&net) || net.contains(other))
                    .map(|(other, what)| (Rule::Overlap, format!("overlaps {what} {other}")))
            })
            .or_else(|| {
                underlay
                    .iter()
                    .find(|(a, _)| net.contains(a))
                    .map(|(a, what)| (Rule::Underlay, format!("captures {what} {a}")))
            });
        if let Some((rule, detail)) = problem {
            dropped.push(Problem {
                entry,
                rule,
                detail: format!("{detail}; dropped"),
            });
            return false;
        }
        if f.epoch.is_some_and(|e| e.term > MAX_TERM) {
            let term = f.epoch.take().map_or(0, |e| e.term);
            dropped.push(Problem {
                entry,
                rule: Rule::TermFloor,
                detail: format!("epoch floor {term} is above the highest term {MAX_TERM}; floor ignored"),
            });
        }
        taken.push((net, "another floating prefix".into()));
        true
    });
}
