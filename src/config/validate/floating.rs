//! `[[floating]]`: floating prefixes (a site LAN or range behind several gateways) with their gateway
//! address, LAN interface, candidates, health checks and quorum mode (checked as `[[vip]]`'s).
//!
//! Validation only, like `failover.rs` for `[[vip]]`: candidate names stay names. A prefix must be a
//! routable range on its own (canonical, not a default route, not special) and overlap nothing else the
//! network routes: the overlay, a VIP, a member's address or routed prefix, another floating prefix. A
//! candidate's own LAN address inside the prefix is expected and never refused.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use toml::Spanned;

use super::failover::Voters;
use super::{valid_ifname, Ctx};
use crate::config::raw::{RawFloating, RawMember};
use crate::config::{host_net, FloatingConfig, VipConfig};

/// What the floating prefixes are checked against: the rest of the file as far as it parsed.
pub(super) struct Taken<'a> {
    /// `interface.overlay_prefix`, when the file gives it.
    pub(super) overlay: Option<Ipv6Net>,
    /// The valid `[[vip]]` entries.
    pub(super) vips: &'a [VipConfig],
    /// The `[[members]]` entries (their addresses and routed prefixes, as far as they parse).
    pub(super) members: &'a [Spanned<RawMember>],
}

impl Ctx<'_> {
    /// `[[floating]]`; with `[registry]` (`from_registry`) the candidates are not checked against
    /// `[[members]]`.
    pub(super) fn floating(
        &mut self,
        raw: &[Spanned<RawFloating>],
        taken: &Taken<'_>,
        from_registry: bool,
    ) -> Option<Vec<FloatingConfig>> {
        let names: HashSet<&str> = taken
            .members
            .iter()
            .map(|m| m.get_ref().name.get_ref().as_str())
            .collect();
        let others = others(taken);
        let mut out: Vec<FloatingConfig> = Vec::with_capacity(raw.len());
        let mut seen: Vec<(IpNet, usize)> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let before = self.errors.len();
            let r = spanned.get_ref();
            let at = |k: &str| format!("floating[{i}].{k}");
            let prefix = self.parse_str(
                &r.prefix,
                &at("prefix"),
                "the site's network, IPv4 or IPv6, e.g. \"203.0.113.0/24\" or \"2001:db8:5::/64\"",
                parse_prefix,
            );
            if let Some(p) = prefix {
                let clash = seen
                    .iter()
                    .find(|(q, _)| overlaps(q, &p))
                    .map(|(q, j)| format!("overlaps floating[{j}].prefix {q}"))
                    .or_else(|| {
                        others
                            .iter()
                            .find(|(q, _)| overlaps(q, &p))
                            .map(|(q, what)| format!("overlaps {what} {q}"))
                    });
                if let Some(why) = clash {
                    self.error(
                        r.prefix.span(),
                        at("prefix"),
                        format!("{p} {why}"),
                        "a floating prefix needs a range nothing else in the network routes",
                    );
                }
                seen.push((p, i));
            }
            let gateway = r.gateway.as_ref().and_then(|g| {
                self.parse_str(
                    g,
                    &at("gateway"),
                    "a host address inside the prefix, e.g. \"203.0.113.1\" (no prefix length)",
                    |s| parse_gateway(s, prefix),
                )
            });
            let interface = r.interface.as_ref().and_then(|f| {
                self.parse_str(
                    f,
                    &at("interface"),
                    "the name of the LAN interface the gateway address goes on, e.g. \"lan0\"",
                    |s| {
                        valid_ifname(s)
                            .then(|| s.to_owned())
                            .ok_or_else(|| "is not a valid interface name".to_owned())
                    },
                )
            });
            match (&r.gateway, &r.interface) {
                (Some(g), None) => self.error(
                    g.span(),
                    at("gateway"),
                    "is set without interface",
                    "add interface = \"lan0\" (the LAN interface the holder puts the gateway address on)",
                ),
                (None, Some(f)) => self.error(
                    f.span(),
                    at("interface"),
                    "is set without gateway",
                    "add gateway = \"203.0.113.1\" (the address the site's hosts route through), or remove interface",
                ),
                _ => {}
            }
            let candidates = self.candidates(
                &r.candidates,
                (!from_registry).then_some(&names),
                &at("candidates"),
                "floating prefix",
            );
            let health = r.health.as_ref().and_then(|h| self.health(h, &at("health")));
            let quorum = self.quorum(
                Voters {
                    quorum: r.quorum,
                    witnesses: r.witnesses.as_ref(),
                    key: at("witnesses"),
                    what: ("[[floating]]", "floating prefix"),
                },
                candidates.as_deref(),
                (!from_registry).then_some(&names),
            );
            if self.errors.len() == before {
                if let (Some(prefix), Some(candidates)) = (prefix, candidates) {
                    out.push(FloatingConfig {
                        prefix,
                        gateway,
                        interface,
                        candidates,
                        health,
                        quorum,
                        line: super::line_of(self.text, spanned.span().start),
                    });
                }
            }
        }
        (out.len() == raw.len()).then_some(out)
    }
}

/// The ranges a floating prefix must not overlap, with what each is.
fn others(taken: &Taken<'_>) -> Vec<(IpNet, String)> {
    let mut out: Vec<(IpNet, String)> = Vec::new();
    out.extend(
        taken
            .overlay
            .map(|o| (IpNet::V6(o), "interface.overlay_prefix".to_owned())),
    );
    for (j, v) in taken.vips.iter().enumerate() {
        out.push((IpNet::V6(host_net(v.address)), format!("vip[{j}].address")));
    }
    for (j, m) in taken.members.iter().enumerate() {
        let m = m.get_ref();
        if let Ok(a) = m.address.get_ref().parse::<Ipv6Addr>() {
            out.push((IpNet::V6(host_net(a)), format!("members[{j}].address")));
        }
        for p in &m.routed_prefixes {
            if let Ok(p) = p.get_ref().parse::<Ipv6Net>() {
                out.push((IpNet::V6(p), format!("a routed prefix of members[{j}]")));
            }
        }
    }
    out
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// A floating prefix: a canonical network of either family that is a routable range on its own.
fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| "is not a prefix (an address with a length)".to_owned())?;
    match crate::client::view::prefix_shape(&net) {
        Some((_, why)) => Err(format!("is refused: {why}")),
        None => Ok(net),
    }
}

/// A gateway address: a host address of `prefix` (not its network address nor, for IPv4, its broadcast).
fn parse_gateway(s: &str, prefix: Option<IpNet>) -> Result<IpAddr, String> {
    if s.contains('/') {
        return Err("has a prefix length; write the address alone (it gets the prefix's)".into());
    }
    let a: IpAddr = s.parse().map_err(|_| "is not an IP address".to_owned())?;
    let Some(p) = prefix else { return Ok(a) };
    if !p.contains(&a) {
        return Err(format!("is outside the prefix {p}"));
    }
    let broadcast = matches!(p, IpNet::V4(n) if n.prefix_len() < 31 && IpAddr::V4(n.broadcast()) == a);
    if a == p.network() || broadcast {
        return Err(format!("is not a host address of {p}"));
    }
    Ok(a)
}
