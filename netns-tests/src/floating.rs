//! The lab's HA branch site (`--floating-candidates K`): a site namespace whose LAN (a bridge) is joined to
//! the first K peers, and one floating prefix per family of `--floating-family` ([`FloatingFamily`]:
//! [`V4`] `203.0.113.0/24`, [`V6`] `2001:db8:5::/64`, or both) with those peers as its candidates.
//!
//! The site namespace is peer 1's site namespace (`NAME-p1s`, see [`Layout::site_netns`]), so `down`
//! removes it with the lab's others. Its bridge `br0` carries the site host's address of each family
//! ([`Site::host`]) with a default route through that family's gateway address ([`Site::gateway`]); peer
//! `i` (1..=K) joins the bridge with a veth whose end in the peer is [`LAN_IF`], with its own address of
//! each family ([`Site::lan_addr`]: a candidate has its own address on its LAN). IPv6 addresses skip
//! duplicate address detection (`nodad`), so they are usable at once. Every peer's `sdwand.toml` carries
//! the same `[[floating]]` entry per family (the registry API for floating prefixes is not used: a file
//! entry works with and without `[registry]`), in quorum mode with `--quorum` ([`quorum_witness`]); the
//! holder puts the gateway address on its [`LAN_IF`] (and announces it: gratuitous ARP, unsolicited
//! neighbour advertisement), every other peer routes the prefix to the holder.
//!
//! A floating site needs the registry: with an IPv4 prefix its network gets the IPv4 overlay prefix
//! [`OVERLAY_PREFIX_V4`], so every peer has a /32 on its WireGuard interface, the source its traffic to
//! the site host leaves with (WireGuard drops a packet whose source is not in the sender's allowed IPs,
//! such as an underlay address) and the address the site host answers through the holder and the tunnel.
//! IPv6 traffic leaves with the peer's overlay /128 in the same way.
//!
//! [`FloatingDoc`] is the lab document's view; the holder is read from the candidates' LAN interfaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::error::{LabError, Result};
use crate::lab::{ip_batch, Lab, UpOptions};
use crate::layout::Layout;
use crate::nodecfg::{FloatingSection, HealthSection};

/// The IPv4 floating prefix.
pub const PREFIX: &str = "203.0.113.0/24";
/// The registry network's IPv4 overlay prefix in a lab with an IPv4 floating site.
pub const OVERLAY_PREFIX_V4: &str = "198.51.100.0/24";
/// The IPv4 gateway address the holder puts on its LAN interface.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The site host's IPv4 address.
pub const SITE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The IPv6 floating prefix (outside the overlay `fd00:5d::/32` and its VIP pool).
pub const PREFIX_V6: &str = "2001:db8:5::/64";
/// The IPv6 gateway address the holder puts on its LAN interface.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1);
/// The site host's IPv6 address.
pub const SITE_ADDR_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x10);
/// A candidate's end of its veth to the site LAN.
pub const LAN_IF: &str = "lan";

/// One floating prefix of the site: the prefix, its gateway address and the site host's address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The prefix, as the daemons' configuration and metrics spell it.
    pub prefix: &'static str,
    /// Its prefix length.
    pub len: u8,
    /// The gateway address the holder puts on its LAN interface.
    pub gateway: IpAddr,
    /// The site host's address (its default route of this family goes through [`Site::gateway`]).
    pub host: IpAddr,
}

/// The IPv4 floating prefix [`PREFIX`].
pub const V4: Site = Site {
    prefix: PREFIX,
    len: 24,
    gateway: IpAddr::V4(GATEWAY),
    host: IpAddr::V4(SITE_ADDR),
};

/// The IPv6 floating prefix [`PREFIX_V6`].
pub const V6: Site = Site {
    prefix: PREFIX_V6,
    len: 64,
    gateway: IpAddr::V6(GATEWAY_V6),
    host: IpAddr::V6(SITE_ADDR_V6),
};

impl Site {
    /// Candidate `i`'s own address on the site LAN: the prefix's address `1 + i`.
    pub fn lan_addr(&self, i: usize) -> IpAddr {
        match self.gateway {
            IpAddr::V4(_) => IpAddr::V4(lan_addr(i)),
            IpAddr::V6(g) => IpAddr::V6(Ipv6Addr::from(u128::from(g) + i as u128)),
        }
    }

    /// `-4` or `-6`: the `ip` family switch of this prefix.
    fn family_flag(&self) -> &'static str {
        if self.gateway.is_ipv6() {
            "-6"
        } else {
            "-4"
        }
    }

    /// `ip addr add` options beyond the device: `nodad` for IPv6 (no duplicate address detection on the
    /// lab's LAN, so the address is usable at once).
    fn addr_flags(&self) -> &'static str {
        if self.gateway.is_ipv6() {
            " nodad"
        } else {
            ""
        }
    }
}

/// The families of the lab's floating site (`--floating-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatingFamily {
    /// The IPv4 prefix [`V4`] only (the default).
    #[default]
    Ipv4,
    /// The IPv6 prefix [`V6`] only.
    Ipv6,
    /// Both, as two `[[floating]]` entries with the same candidates.
    Dual,
}

impl FloatingFamily {
    /// The floating prefixes of this family, IPv4 first.
    pub fn sites(self) -> &'static [Site] {
        match self {
            FloatingFamily::Ipv4 => &[V4],
            FloatingFamily::Ipv6 => &[V6],
            FloatingFamily::Dual => &[V4, V6],
        }
    }

    /// Whether the site has an IPv4 prefix (and so needs the network's IPv4 overlay).
    pub fn has_ipv4(self) -> bool {
        self != FloatingFamily::Ipv6
    }
}

impl std::str::FromStr for FloatingFamily {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ipv4" => Ok(FloatingFamily::Ipv4),
            "ipv6" => Ok(FloatingFamily::Ipv6),
            "dual" => Ok(FloatingFamily::Dual),
            _ => Err(format!("{s:?} is not one of ipv4, ipv6, dual")),
        }
    }
}

/// A floating prefix of a [`crate::LabDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingDoc {
    /// The prefix.
    pub prefix: String,
    /// Candidate peer names, in rank order.
    pub candidates: Vec<String>,
    /// The one candidate that serves the gateway address (on its LAN interface, up); `null` when none or
    /// several do.
    pub holder: Option<String>,
    /// The site namespace.
    pub site_netns: String,
    /// The site host's address in the prefix.
    pub site_addr: String,
}

/// Refuses a floating site the lab cannot build: more candidates than peers, no registry, or next to pods
/// and site ranges (their ranges may overlap the floating prefixes and the floating overlay).
pub fn validate(opts: &UpOptions) -> Result<()> {
    let k = opts.floating_candidates;
    if k == 0 {
        return Ok(());
    }
    let problem = if k > opts.peers {
        Some(format!("{k} candidates but only {} peers", opts.peers))
    } else if k > 200 {
        Some("at most 200 candidates share the site LAN".to_owned())
    } else if !opts.registry {
        Some(
            "the site host answers the peers' overlay addresses, which the registry assigns: drop --no-registry"
                .to_owned(),
        )
    } else if opts.quorum && k.is_multiple_of(2) && opts.peers == k {
        Some(format!(
            "quorum mode with {k} candidates needs a witness: add a peer beyond the candidates"
        ))
    } else if opts.pods > 0 || !opts.site_ranges.is_empty() || !opts.pod_pools.is_empty() {
        Some(format!(
            "the floating prefixes {PREFIX}, {PREFIX_V6} and the IPv4 overlay {OVERLAY_PREFIX_V4} may overlap the pod and site ranges: drop --pods and --site-range"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(LabError::Format {
            context: "--floating-candidates".into(),
            message,
        }),
        None => Ok(()),
    }
}

/// The `[[floating]]` entries every peer gets, one per prefix of `family`: the prefix with its gateway on
/// [`LAN_IF`], candidates p1..pK, with `health` a TCP check of [`HEALTH_TARGET`] every 100 ms (healthy
/// after one pass, unhealthy after two failures), and with `quorum` (`Some(witnesses)`) quorum mode.
pub(crate) fn sections(
    k: usize,
    family: FloatingFamily,
    health: bool,
    quorum: Option<&[String]>,
) -> Vec<FloatingSection> {
    family
        .sites()
        .iter()
        .map(|site| FloatingSection {
            prefix: site.prefix.to_owned(),
            gateway: Some(site.gateway.to_string()),
            interface: Some(LAN_IF.to_owned()),
            candidates: (1..=k).map(Layout::peer_name).collect(),
            health: health.then(|| HealthSection::tcp(HEALTH_TARGET.into(), "100ms", 1, 2)),
            quorum: quorum.is_some(),
            witnesses: quorum.map(<[String]>::to_vec).unwrap_or_default(),
        })
        .collect()
}

/// The witness of the floating prefix in quorum mode: the last peer when the candidates are even (see
/// [`crate::vip::quorum_witness`]), none otherwise.
pub fn quorum_witness(opts: &UpOptions) -> Option<usize> {
    crate::vip::witness_of(opts, opts.floating_candidates)
}

/// The health check's target in every peer's namespace: its own daemon's metrics port (always
/// listening), which a test makes unreachable with [`Lab::fail_floating_health`].
pub const HEALTH_TARGET: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 9581);

/// The nftables table that fails a candidate's health check.
const FAIL_TABLE: &str = "sdwan_lab_health";

/// Candidate `i`'s own IPv4 address on the site LAN.
pub fn lan_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, (1 + i) as u8)
}

impl Lab {
    /// The floating prefixes' candidates (peer indexes, rank order; every prefix has the same); empty in a
    /// lab without a site.
    pub fn floating_candidates(&self) -> Vec<usize> {
        let Some(f) = self.state.peers.first().and_then(|p| p.config.floating.first()) else {
            return Vec::new();
        };
        f.candidates.iter().filter_map(|n| self.peer_index(n)).collect()
    }

    /// The lab's floating prefixes, as its peers' `[[floating]]` entries give them; empty without a site.
    pub fn floating_sites(&self) -> Vec<Site> {
        let Some(p) = self.state.peers.first() else {
            return Vec::new();
        };
        p.config
            .floating
            .iter()
            .filter_map(|f| [V4, V6].into_iter().find(|s| s.prefix == f.prefix))
            .collect()
    }

    /// The site namespace, its LAN and the candidates' veths onto it (see the module's docs).
    pub(crate) fn build_floating_site(&self, k: usize, family: FloatingFamily) -> Result<()> {
        let site = self.layout.site_netns(1);
        cmd::ip(&["netns", "add", &site])?;
        let mut script = String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
        for s in family.sites() {
            script.push_str(&format!("addr add {}/{} dev br0{}\n", s.host, s.len, s.addr_flags()));
        }
        ip_batch(Some(&site), &script)?;
        for i in 1..=k {
            let ns = self.netns(i)?;
            let mut script = format!("link add {LAN_IF} type veth peer name fp{i} netns {site}\n");
            for s in family.sites() {
                script.push_str(&format!(
                    "addr add {}/{} dev {LAN_IF}{}\n",
                    s.lan_addr(i),
                    s.len,
                    s.addr_flags()
                ));
            }
            script.push_str(&format!("link set {LAN_IF} up\n"));
            ip_batch(Some(&ns), &script)?;
            ip_batch(Some(&site), &format!("link set fp{i} master br0 up\n"))?;
        }
        for s in family.sites() {
            cmd::ip_in(
                &site,
                &[
                    s.family_flag(),
                    "route",
                    "add",
                    "default",
                    "via",
                    &s.gateway.to_string(),
                ],
            )?;
        }
        Ok(())
    }

    /// Makes peer `i`'s floating health check fail (`fail`: TCP to [`HEALTH_TARGET`] is reset in its
    /// namespace) or pass again (the table is removed).
    pub fn fail_floating_health(&self, i: usize, fail: bool) -> Result<()> {
        let (addr, port) = HEALTH_TARGET;
        let script = if fail {
            format!(
                "add table inet {FAIL_TABLE}\n\
                 add chain inet {FAIL_TABLE} out {{ type filter hook output priority 0; policy accept; }}\n\
                 add rule inet {FAIL_TABLE} out ip daddr {addr} tcp dport {port} reject with tcp reset\n"
            )
        } else {
            format!("delete table inet {FAIL_TABLE}\n")
        };
        self.nft(i, &script)
    }

    /// Whether peer `i` serves the gateway address of `site`: on its LAN interface, which is up (a dead
    /// node's link is down, its address left behind by the killed daemon serves nobody).
    pub fn has_gateway_of(&self, i: usize, site: &Site) -> Result<bool> {
        let ns = self.netns(i)?;
        let host_len = if site.gateway.is_ipv6() { 128 } else { 32 };
        let to = format!("{}/{host_len}", site.gateway);
        let out = cmd::ip_in(&ns, &[site.family_flag(), "-o", "addr", "show", "up", "to", &to])?;
        Ok(!out.trim().is_empty())
    }

    /// Whether peer `i` serves the gateway address of every floating prefix of the lab.
    pub fn has_gateway(&self, i: usize) -> Result<bool> {
        for site in self.floating_sites() {
            if !self.has_gateway_of(i, &site)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The candidates that have the gateway address of `site`, in index order: who serves that family on
    /// the site's LAN.
    pub fn gateway_holders_of(&self, site: &Site) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for i in self.floating_candidates() {
            if self.has_gateway_of(i, site)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// The candidates that have the gateway address of any floating prefix, in index order: who serves
    /// the site's LAN.
    pub fn gateway_holders(&self) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for i in self.floating_candidates() {
            for site in self.floating_sites() {
                if self.has_gateway_of(i, &site)? {
                    out.push(i);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Sets candidate `i`'s LAN link up or down (a dead machine does not answer on its LAN either).
    pub fn set_lan(&self, i: usize, up: bool) -> Result<()> {
        let ns = self.netns(i)?;
        cmd::ip_in(&ns, &["link", "set", LAN_IF, if up { "up" } else { "down" }]).map(drop)
    }

    /// Takes every gateway address off candidate `i`'s LAN interface, if it is there (what a reboot does to
    /// the addresses a killed daemon left behind).
    pub fn forget_gateway(&self, i: usize) -> Result<()> {
        let ns = self.netns(i)?;
        for site in self.floating_sites() {
            let host_len = if site.gateway.is_ipv6() { 128 } else { 32 };
            let to = format!("{}/{host_len}", site.gateway);
            cmd::ip_in(&ns, &[site.family_flag(), "addr", "flush", "dev", LAN_IF, "to", &to])?;
        }
        Ok(())
    }

    /// The Ethernet address of candidate `i`'s LAN interface (`aa:bb:…`, as `ip` prints it).
    pub fn lan_mac(&self, i: usize) -> Result<String> {
        let ns = self.netns(i)?;
        let out = cmd::ip_in(&ns, &["-j", "link", "show", "dev", LAN_IF])?;
        let parsed: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| LabError::Process(format!("`ip -j link show dev {LAN_IF}` in {ns}: {e}: {out}")))?;
        parsed[0]["address"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| LabError::Process(format!("{ns}: {LAN_IF} has no Ethernet address: {out}")))
    }

    /// The site host's neighbour entry for the gateway address of `site`: its link-layer address (`None`
    /// while unresolved) and its flags and states (`REACHABLE`, `STALE`, `router`, …); `None` when there is
    /// no entry.
    pub fn site_gateway_neighbour(&self, site: &Site) -> Result<Option<(Option<String>, Vec<String>)>> {
        let ns = self.layout.site_netns(1);
        let gateway = site.gateway.to_string();
        let out = cmd::ip_in(
            &ns,
            &[site.family_flag(), "-j", "neigh", "show", "dev", "br0", &gateway],
        )?;
        let parsed: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| LabError::Process(format!("`ip -j neigh show {gateway}` in {ns}: {e}: {out}")))?;
        let Some(entry) = parsed.as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        let words = |key: &str| -> Vec<String> {
            entry[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let mut flags = words("state");
        flags.extend(words("flags"));
        if entry.get("router").is_some() {
            flags.push("router".to_owned());
        }
        Ok(Some((entry["lladdr"].as_str().map(str::to_owned), flags)))
    }

    /// The prefixes the WireGuard device of peer `i` routes to peer `j` (its allowed IPs).
    pub fn allowed_ips(&self, i: usize, j: usize) -> Result<Vec<ipnet::IpNet>> {
        let key = self.peer(j)?.public_key.clone();
        let device = self.device(i)?;
        Ok(device
            .peers
            .iter()
            .find(|p| p.config.public_key.to_base64() == key)
            .map(|p| {
                p.config
                    .allowed_ips
                    .iter()
                    .filter_map(|a| ipnet::IpNet::new(a.address, a.cidr).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The lab document's floating prefixes.
    pub(crate) fn floating_docs(&self) -> Vec<FloatingDoc> {
        let candidates = self.floating_candidates();
        if candidates.is_empty() {
            return Vec::new();
        }
        self.floating_sites()
            .iter()
            .map(|site| {
                let holders = self.gateway_holders_of(site).unwrap_or_default();
                FloatingDoc {
                    prefix: site.prefix.to_owned(),
                    candidates: candidates.iter().map(|i| Layout::peer_name(*i)).collect(),
                    holder: match holders.as_slice() {
                        [one] => Some(Layout::peer_name(*one)),
                        _ => None,
                    },
                    site_netns: self.layout.site_netns(1),
                    site_addr: site.host.to_string(),
                }
            })
            .collect()
    }

    /// The lab's first floating prefix ([`V4`] unless the site is IPv6 only).
    fn first_site(&self) -> Site {
        self.floating_sites().first().copied().unwrap_or(V4)
    }

    /// Peer `i`'s role for the floating prefix `site` (`standby`, `holding`, `follower`, …; its metrics
    /// label the prefix as `vip="203.0.113.0/24"`).
    pub fn floating_role_of(&self, i: usize, site: &Site) -> Result<Option<String>> {
        self.one_hot(i, site.prefix, "sdwand_vip_role", "role")
    }

    /// Peer `i`'s role for the lab's first floating prefix.
    pub fn floating_role(&self, i: usize) -> Result<Option<String>> {
        self.floating_role_of(i, &self.first_site())
    }

    /// The holder (member name) of the floating prefix `site` that peer `i` believes in.
    pub fn floating_believed_holder_of(&self, i: usize, site: &Site) -> Result<Option<String>> {
        self.one_hot(i, site.prefix, "sdwand_vip_holder", "holder")
    }

    /// The holder (member name) of the lab's first floating prefix that peer `i` believes in.
    pub fn floating_believed_holder(&self, i: usize) -> Result<Option<String>> {
        self.floating_believed_holder_of(i, &self.first_site())
    }

    /// The floating prefixes' holder if they are settled on one: for every prefix, exactly that candidate
    /// serves the gateway address, its role is `holding`, and every running peer believes it holds (as
    /// [`Lab::vip_settled`] for the VIP).
    pub fn floating_settled(&self) -> Result<Option<usize>> {
        let [h] = self.gateway_holders()?[..] else {
            return Ok(None);
        };
        let name = Layout::peer_name(h);
        for site in self.floating_sites() {
            if self.gateway_holders_of(&site)? != [h] || self.floating_role_of(h, &site)?.as_deref() != Some("holding")
            {
                return Ok(None);
            }
            for i in 1..=self.peer_count() {
                if self.sdwand_pid(i)?.is_some()
                    && self.floating_believed_holder_of(i, &site)?.as_deref() != Some(name.as_str())
                {
                    return Ok(None);
                }
            }
        }
        Ok(Some(h))
    }

    /// Waits, at most `timeout`, until exactly one candidate holds the gateway address of every floating
    /// prefix (and no other candidate holds any).
    pub fn wait_floating_settled(&self, timeout: std::time::Duration) -> Result<usize> {
        let mut last = Vec::new();
        crate::wait_until(timeout, std::time::Duration::from_millis(20), || {
            last = self.gateway_holders().unwrap_or_default();
            matches!(last[..], [h] if self.has_gateway(h).unwrap_or(false))
        })
        .map_err(|e| {
            LabError::Process(format!(
                "the floating prefixes did not settle on one holder: {e}; holders {last:?}"
            ))
        })?;
        Ok(last[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_has_its_prefixes_and_a_candidate_its_own_address_in_each() {
        assert_eq!("ipv4".parse(), Ok(FloatingFamily::Ipv4));
        assert_eq!(
            "dual".parse::<FloatingFamily>().map(FloatingFamily::sites),
            Ok(&[V4, V6][..])
        );
        assert_eq!(
            "ipv6".parse::<FloatingFamily>().map(FloatingFamily::has_ipv4),
            Ok(false)
        );
        assert!("v6".parse::<FloatingFamily>().is_err());
        assert_eq!(V4.lan_addr(2), "203.0.113.3".parse::<IpAddr>().unwrap());
        assert_eq!(V6.lan_addr(2), "2001:db8:5::3".parse::<IpAddr>().unwrap());
        for site in [V4, V6] {
            let prefix: ipnet::IpNet = site.prefix.parse().unwrap();
            assert_eq!(prefix.prefix_len(), site.len);
            assert!(
                prefix.contains(&site.gateway) && prefix.contains(&site.host) && prefix.contains(&site.lan_addr(200))
            );
        }
    }
}
