//! `[[members]]`: the static member list, checked for unique names, keys and prefixes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use ipnet::Ipv6Net;
use toml::Spanned;
use wireguard_control::Key;

use super::{line_of, parse_host, Ctx, PartialInterface};
use crate::config::raw::RawMember;
use crate::config::{host_net, Member};
use crate::vocab::name::{self, PeerName};

impl Ctx<'_> {
    pub(super) fn members(
        &mut self,
        raw: &[Spanned<RawMember>],
        iface: Option<&PartialInterface>,
    ) -> Option<Vec<Member>> {
        let mut out = Vec::with_capacity(raw.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut keys: HashMap<[u8; 32], usize> = HashMap::new();
        // Every prefix a member is reached at, with its owner's index: two members claiming one prefix
        // would make WireGuard move it back and forth.
        let mut claimed: BTreeMap<Ipv6Net, usize> = BTreeMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let r = spanned.get_ref();
            let at = |k: &str| format!("members[{i}].{k}");
            let line = line_of(self.text, spanned.span().start);
            let name = self.parse_str(&r.name, &at("name"), name::RULE, |s| {
                PeerName::parse(s)
                    .map(String::from)
                    .map_err(|e| format!("is not a valid member name: it {}", e.problem()))
            });
            let key = self.parse_str(
                &r.public_key,
                &at("public_key"),
                "the base64 public key printed by `wg pubkey` (44 characters)",
                |s| Key::from_base64(s.trim()).map_err(|_| "is not a base64 WireGuard key".to_owned()),
            );
            let endpoint = r.endpoint.as_ref().and_then(|e| {
                self.parse_str(
                    e,
                    &at("endpoint"),
                    "an underlay address and port, e.g. \"192.0.2.12:51820\" or \"[2001:db8::2]:51820\"",
                    |s| s.parse::<SocketAddr>().map_err(|_| "is not an address:port".to_owned()),
                )
            });
            let address = self.parse_str(
                &r.address,
                &at("address"),
                "the member's IPv6 overlay address, e.g. \"fd00:5d::2\"",
                parse_host,
            );
            let mut routed = Vec::new();
            for (j, p) in r.routed_prefixes.iter().enumerate() {
                if let Some(net) = self.parse_str(
                    p,
                    &format!("members[{i}].routed_prefixes[{j}]"),
                    "an IPv6 network such as \"fd00:5e::/48\"",
                    |s| {
                        let net: Ipv6Net = s.parse().map_err(|_| "is not an IPv6 prefix".to_owned())?;
                        (net == net.trunc())
                            .then_some(net)
                            .ok_or_else(|| format!("has host bits set (did you mean {}?)", net.trunc()))
                    },
                ) {
                    routed.push(net);
                }
            }
            if let Some(n) = &name {
                if let Some(first) = names.insert(n.clone(), i) {
                    self.error(
                        r.name.span(),
                        at("name"),
                        format!("{n:?} is also the name of members[{first}]"),
                        "give every member a unique name",
                    );
                }
            }
            if let Some(k) = &key {
                if let Some(first) = keys.insert(k.0, i) {
                    self.error(
                        r.public_key.span(),
                        at("public_key"),
                        format!("is also the key of members[{first}]"),
                        "every member needs its own key pair",
                    );
                }
            }
            if let (Some(a), Some(prefix)) = (address, iface.and_then(|i| i.overlay_prefix)) {
                if !prefix.contains(&a) {
                    self.error(
                        r.address.span(),
                        at("address"),
                        format!("{a} is outside overlay_prefix {prefix}"),
                        "pick an address inside interface.overlay_prefix",
                    );
                }
            }
            if let Some(a) = address {
                for (j, net) in std::iter::once(host_net(a)).chain(routed.iter().copied()).enumerate() {
                    if let Some((other_net, owner)) = claimed.iter().find(|(n, _)| n.contains(&net) || net.contains(*n))
                    {
                        let key = if j == 0 {
                            at("address")
                        } else {
                            format!("members[{i}].routed_prefixes[{}]", j - 1)
                        };
                        let span = if j == 0 {
                            r.address.span()
                        } else {
                            r.routed_prefixes[j - 1].span()
                        };
                        self.error(
                            span,
                            key,
                            format!("{net} overlaps {other_net} of members[{owner}]"),
                            "each address or prefix may belong to one member only",
                        );
                    } else {
                        claimed.insert(net, i);
                    }
                }
            }
            if let (Some(name), Some(public_key), Some(address)) = (name, key, address) {
                if r.endpoint.is_none() || endpoint.is_some() {
                    out.push(Member {
                        name,
                        public_key,
                        endpoint,
                        address,
                        routed_prefixes: routed,
                        address_v4: None,
                        workload: Vec::new(),
                        line,
                    });
                }
            }
        }
        (out.len() == raw.len()).then_some(out)
    }
}
