//! The lab's HA branch site (`--floating-candidates K`): a site namespace whose LAN (a bridge) is joined to
//! the first K peers, and the floating prefix [`PREFIX`] with those peers as its candidates.
//!
//! The site namespace is peer 1's site namespace (`NAME-p1s`, see [`Layout::site_netns`]), so `down`
//! removes it with the lab's others. Its bridge `br0` carries the site host's address [`SITE_ADDR`] with a
//! default route through the gateway address [`GATEWAY`]; peer `i` (1..=K) joins the bridge with a veth
//! whose end in the peer is [`LAN_IF`], addressed `203.0.113.(1+i)/24` (a candidate has its own address on
//! its LAN). Every peer's `sdwand.toml` carries the same `[[floating]]` entry (the registry API for
//! floating prefixes is not used: a file entry works with and without `[registry]`), in quorum mode with
//! `--quorum` ([`quorum_witness`]); the holder puts [`GATEWAY`] on its [`LAN_IF`], every other peer routes
//! the prefix to the holder.
//!
//! A floating site needs the registry: its network gets the IPv4 overlay prefix [`OVERLAY_PREFIX_V4`], so
//! every peer has a /32 on its WireGuard interface, the source its traffic to the site host leaves with
//! (WireGuard drops a packet whose source is not in the sender's allowed IPs, such as an underlay address)
//! and the address the site host answers through the holder and the tunnel.
//!
//! [`FloatingDoc`] is the lab document's view; the holder is read from the candidates' LAN interfaces.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::error::{LabError, Result};
use crate::lab::{ip_batch, Lab, UpOptions};
use crate::layout::Layout;
use crate::nodecfg::{FloatingSection, HealthSection};

/// The floating prefix.
pub const PREFIX: &str = "203.0.113.0/24";
/// The registry network's IPv4 overlay prefix in a lab with a floating site.
pub const OVERLAY_PREFIX_V4: &str = "198.51.100.0/24";
/// The gateway address the holder puts on its LAN interface.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The site host's address.
pub const SITE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// A candidate's end of its veth to the site LAN.
pub const LAN_IF: &str = "lan";

/// The floating prefix of a [`crate::LabDoc`].
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
    /// The site host's address.
    pub site_addr: String,
}

/// Refuses a floating site the lab cannot build: more candidates than peers, no registry, or next to pods
/// and site ranges (their IPv4 ranges are the floating prefix's and the floating overlay's).
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
            "the site host answers the peers' IPv4 overlay /32s, which the registry assigns: drop --no-registry"
                .to_owned(),
        )
    } else if opts.quorum && k.is_multiple_of(2) && opts.peers == k {
        Some(format!(
            "quorum mode with {k} candidates needs a witness: add a peer beyond the candidates"
        ))
    } else if opts.pods > 0 || !opts.site_ranges.is_empty() || !opts.pod_pools.is_empty() {
        Some(format!(
            "the floating prefix {PREFIX} and the IPv4 overlay {OVERLAY_PREFIX_V4} overlap the pod and site ranges: drop --pods and --site-range"
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

/// The `[[floating]]` entry every peer gets: [`PREFIX`] with its gateway on [`LAN_IF`], candidates p1..pK,
/// with `health` a TCP check of [`HEALTH_TARGET`] every 100 ms (healthy after one pass, unhealthy after two
/// failures), and with `quorum` (`Some(witnesses)`) quorum mode.
pub(crate) fn section(k: usize, health: bool, quorum: Option<&[String]>) -> FloatingSection {
    FloatingSection {
        prefix: PREFIX.to_owned(),
        gateway: Some(GATEWAY.to_string()),
        interface: Some(LAN_IF.to_owned()),
        candidates: (1..=k).map(Layout::peer_name).collect(),
        health: health.then(|| HealthSection::tcp(HEALTH_TARGET.into(), "100ms", 1, 2)),
        quorum: quorum.is_some(),
        witnesses: quorum.map(<[String]>::to_vec).unwrap_or_default(),
    }
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

/// Candidate `i`'s own address on the site LAN.
pub fn lan_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, (1 + i) as u8)
}

impl Lab {
    /// The floating prefix's candidates (peer indexes, rank order); empty in a lab without a site.
    pub fn floating_candidates(&self) -> Vec<usize> {
        let Some(f) = self.state.peers.first().and_then(|p| p.config.floating.first()) else {
            return Vec::new();
        };
        f.candidates.iter().filter_map(|n| self.peer_index(n)).collect()
    }

    /// The site namespace, its LAN and the candidates' veths onto it (see the module's docs).
    pub(crate) fn build_floating_site(&self, k: usize) -> Result<()> {
        let site = self.layout.site_netns(1);
        cmd::ip(&["netns", "add", &site])?;
        let mut script = String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
        script.push_str(&format!("addr add {SITE_ADDR}/24 dev br0\n"));
        ip_batch(Some(&site), &script)?;
        for i in 1..=k {
            let ns = self.netns(i)?;
            ip_batch(
                Some(&ns),
                &format!(
                    "link add {LAN_IF} type veth peer name fp{i} netns {site}\naddr add {}/24 dev {LAN_IF}\nlink set {LAN_IF} up\n",
                    lan_addr(i)
                ),
            )?;
            ip_batch(Some(&site), &format!("link set fp{i} master br0 up\n"))?;
        }
        cmd::ip_in(&site, &["route", "add", "default", "via", &GATEWAY.to_string()])?;
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

    /// Whether peer `i` serves the gateway address: on its LAN interface, which is up (a dead node's
    /// link is down, its address left behind by the killed daemon serves nobody).
    pub fn has_gateway(&self, i: usize) -> Result<bool> {
        let ns = self.netns(i)?;
        let out = cmd::ip_in(&ns, &["-4", "-o", "addr", "show", "up", "to", &format!("{GATEWAY}/32")])?;
        Ok(!out.trim().is_empty())
    }

    /// The candidates that have the gateway address, in index order: who serves the site's LAN.
    pub fn gateway_holders(&self) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for i in self.floating_candidates() {
            if self.has_gateway(i)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Sets candidate `i`'s LAN link up or down (a dead machine does not answer on its LAN either).
    pub fn set_lan(&self, i: usize, up: bool) -> Result<()> {
        let ns = self.netns(i)?;
        cmd::ip_in(&ns, &["link", "set", LAN_IF, if up { "up" } else { "down" }]).map(drop)
    }

    /// Takes the gateway address off candidate `i`'s LAN interface, if it is there (what a reboot does to
    /// the address a killed daemon left behind).
    pub fn forget_gateway(&self, i: usize) -> Result<()> {
        let ns = self.netns(i)?;
        cmd::ip_in(
            &ns,
            &["-4", "addr", "flush", "dev", LAN_IF, "to", &format!("{GATEWAY}/32")],
        )
        .map(drop)
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
        let holders = self.gateway_holders().unwrap_or_default();
        vec![FloatingDoc {
            prefix: PREFIX.to_owned(),
            candidates: candidates.iter().map(|i| Layout::peer_name(*i)).collect(),
            holder: match holders.as_slice() {
                [one] => Some(Layout::peer_name(*one)),
                _ => None,
            },
            site_netns: self.layout.site_netns(1),
            site_addr: SITE_ADDR.to_string(),
        }]
    }

    /// Peer `i`'s role for the floating prefix (`standby`, `holding`, `follower`, …; its metrics label the
    /// prefix as `vip="203.0.113.0/24"`).
    pub fn floating_role(&self, i: usize) -> Result<Option<String>> {
        self.one_hot(i, PREFIX, "sdwand_vip_role", "role")
    }

    /// The holder (member name) of the floating prefix that peer `i` believes in.
    pub fn floating_believed_holder(&self, i: usize) -> Result<Option<String>> {
        self.one_hot(i, PREFIX, "sdwand_vip_holder", "holder")
    }

    /// The floating prefix's holder if it is settled: exactly one candidate serves the gateway address, its
    /// role is `holding`, and every running peer believes it holds (as [`Lab::vip_settled`] for the VIP).
    pub fn floating_settled(&self) -> Result<Option<usize>> {
        let [h] = self.gateway_holders()?[..] else {
            return Ok(None);
        };
        if self.floating_role(h)?.as_deref() != Some("holding") {
            return Ok(None);
        }
        let name = Layout::peer_name(h);
        for i in 1..=self.peer_count() {
            if self.sdwand_pid(i)?.is_some() && self.floating_believed_holder(i)?.as_deref() != Some(name.as_str()) {
                return Ok(None);
            }
        }
        Ok(Some(h))
    }

    /// Waits, at most `timeout`, until exactly one candidate holds the gateway address.
    pub fn wait_floating_settled(&self, timeout: std::time::Duration) -> Result<usize> {
        let mut last = Vec::new();
        crate::wait_until(timeout, std::time::Duration::from_millis(20), || {
            last = self.gateway_holders().unwrap_or_default();
            last.len() == 1
        })
        .map_err(|e| {
            LabError::Process(format!(
                "the floating prefix did not settle on one holder: {e}; holders {last:?}"
            ))
        })?;
        Ok(last[0])
    }
}
