//! The lab's naming and addressing plan: pure functions of the lab name and the peer index.
//!
//! Every name starts with `NAME-`. `-` is not allowed in a lab name, so the prefix of one lab is never the
//! prefix of another (`ab-` vs `ab1-`), and cleanup by name can never touch another lab.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::error::{LabError, Result};

/// Root of all lab state directories.
pub const STATE_ROOT: &str = "/run/sdwan-lab";
/// Most peers a lab may have: underlay addresses are 192.0.2.(10+i).
pub const MAX_PEERS: usize = 200;
/// UDP port of every peer's WireGuard interface.
pub const LISTEN_PORT: u16 = 51820;
/// The overlay prefix every peer's /128 lives in.
pub const OVERLAY_PREFIX: &str = "fd00:5d::/64";
/// Prefix length of the underlay subnet 192.0.2.0/24.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The lab's one virtual IP, outside the overlay prefix so that the daemons' VIP route is exercised.
pub const VIP_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0xf, 0, 0, 0, 0, 1);
/// UDP port of every peer's failover endpoint (on its overlay /128).
pub const FAILOVER_PORT: u16 = 51821;
/// UDP port of the echo responder that runs in every VIP candidate's namespace (bound to the VIP).
pub const RESPONDER_PORT: u16 = 9099;
/// Most VIP candidates a lab may have (the failover wire format's limit).
pub const MAX_VIP_CANDIDATES: usize = sdwand::vocab::MAX_CANDIDATES;
/// The registry's underlay address (on the lab's underlay subnet, below every peer's).
pub const REGISTRY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// TCP port of the registry's HTTP API.
pub const REGISTRY_PORT: u16 = 7443;
/// Most registry replicas a lab may have (`--registry-replicas`): replica 1 at [`REGISTRY_ADDR`], replica
/// `r` >= 2 at 192.0.2.(4+r), between the etcd members' addresses and the peers'.
pub const MAX_REGISTRY_REPLICAS: usize = 5;
/// Members of the lab's etcd cluster (`--registry-backend etcd`), at 192.0.2.3 to 192.0.2.5.
pub const ETCD_MEMBERS: usize = 3;
/// TCP port of every etcd member's client API.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// TCP port of every etcd member's peer (raft) traffic.
pub const ETCD_PEER_PORT: u16 = 2380;
/// The IPv4 overlay prefix of a registry network with pods (each peer's /32, its IPv4 `node-ip`): the
/// lower half of 203.0.113.0/24, so that [`SITE_RANGE_V4`] is free for site ranges.
pub const REGISTRY_OVERLAY_PREFIX_V4: &str = "203.0.113.0/25";
/// The IPv4 test range a lab's network can take site ranges from (`--site-range`): the upper half of
/// 203.0.113.0/24, beside [`REGISTRY_OVERLAY_PREFIX_V4`] (the registry refuses ranges that overlap it).
pub const SITE_RANGE_V4: &str = "203.0.113.128/25";

/// The overlay prefix of the registry's network (peers' /128s are allocated from it in enrollment order).
/// A /32, not the /48 the issue's contract says: the registry needs the VIP pool strictly inside the overlay
/// prefix, and `fd00:5d:f::/64` is not inside `fd00:5d::/48` (that is `fd00:5d:0::/48`).
pub const REGISTRY_OVERLAY_PREFIX: &str = "fd00:5d::/32";
/// The VIP pool of the registry's network: the first cluster VIP is [`VIP_ADDR`].
pub const REGISTRY_VIP_POOL: &str = "fd00:5d:f::/64";
/// Longest lab name: `NAME-p200` must fit the kernel's 15-byte interface names.
pub const MAX_NAME_LEN: usize = 6;

/// Checks a lab name: 1-6 characters of `[a-z0-9]`.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 6 characters (interface names are limited to 15)")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        Some("it has a character outside [a-z0-9]")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LabError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a peer count.
pub fn validate_peer_count(peers: usize) -> Result<()> {
    if (1..=MAX_PEERS).contains(&peers) {
        Ok(())
    } else {
        Err(LabError::InvalidPeerCount(peers))
    }
}

/// Names and addresses of one lab. Cheap to build; holds only the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The validated lab name.
    name: String,
}

impl Layout {
    /// The layout of lab `name`, which must be valid.
    pub fn new(name: &str) -> Result<Self> {
        validate_name(name)?;
        Ok(Layout { name: name.to_owned() })
    }

    /// The lab name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hub namespace, holding the bridge every underlay link plugs into.
    pub fn hub_netns(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// The bridge in the hub namespace.
    pub fn bridge(&self) -> String {
        format!("{}-br", self.name)
    }

    /// Short peer name, used in documents and member lists: `p1`.
    pub fn peer_name(i: usize) -> String {
        format!("p{i}")
    }

    /// Peer `i`'s namespace.
    pub fn peer_netns(&self, i: usize) -> String {
        format!("{}-p{i}", self.name)
    }

    /// Peer `i`'s end of its underlay veth (in the peer namespace).
    pub fn underlay_if(&self, i: usize) -> String {
        format!("{}-u{i}", self.name)
    }

    /// The hub's end of peer `i`'s underlay veth (a bridge port).
    pub fn hub_port(&self, i: usize) -> String {
        format!("{}-b{i}", self.name)
    }

    /// Peer `i`'s WireGuard interface; unique on the machine because the UAPI socket path is global.
    pub fn wg_if(&self, i: usize) -> String {
        format!("{}-p{i}", self.name)
    }

    /// Peer `i`'s underlay address.
    pub fn underlay_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, (10 + i) as u8)
    }

    /// Peer `i`'s overlay /128: `fd00:5d::i` (the index written in hex).
    pub fn overlay_addr(i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, i as u16)
    }

    /// The registry's namespace.
    pub fn registry_netns(&self) -> String {
        format!("{}-reg", self.name)
    }

    /// The registry's end of its underlay veth (in the registry namespace).
    pub fn registry_if(&self) -> String {
        format!("{}-ureg", self.name)
    }

    /// The hub's end of the registry's underlay veth (a bridge port).
    pub fn registry_hub_port(&self) -> String {
        format!("{}-breg", self.name)
    }

    /// Registry replica `r`'s namespace: `NAME-reg` for the first, `NAME-regR` for the others.
    pub fn replica_netns(&self, r: usize) -> String {
        match r {
            1 => self.registry_netns(),
            _ => format!("{}-reg{r}", self.name),
        }
    }

    /// Registry replica `r`'s end of its underlay veth.
    pub fn replica_if(&self, r: usize) -> String {
        match r {
            1 => self.registry_if(),
            _ => format!("{}-ureg{r}", self.name),
        }
    }

    /// The hub's end of registry replica `r`'s underlay veth.
    pub fn replica_hub_port(&self, r: usize) -> String {
        match r {
            1 => self.registry_hub_port(),
            _ => format!("{}-breg{r}", self.name),
        }
    }

    /// Registry replica `r`'s underlay address ([`REGISTRY_ADDR`] for the first).
    pub fn replica_addr(r: usize) -> Ipv4Addr {
        match r {
            1 => REGISTRY_ADDR,
            _ => Ipv4Addr::new(192, 0, 2, (4 + r) as u8),
        }
    }

    /// The URL of registry replica `r`'s API over the underlay.
    pub fn replica_url(r: usize) -> String {
        format!("http://{}:{}", Self::replica_addr(r), REGISTRY_PORT)
    }

    /// Registry replica `r`'s log: `registry/registry.log` for the first, `registry/replicaR.log` for the others.
    pub fn replica_log(&self, r: usize) -> PathBuf {
        match r {
            1 => self.registry_dir().join("registry.log"),
            _ => self.registry_dir().join(format!("replica{r}.log")),
        }
    }

    /// etcd member `m`'s name in the cluster: `e1`.
    pub fn etcd_name(m: usize) -> String {
        format!("e{m}")
    }

    /// etcd member `m`'s namespace: `NAME-eM`.
    pub fn etcd_netns(&self, m: usize) -> String {
        format!("{}-e{m}", self.name)
    }

    /// etcd member `m`'s end of its underlay veth.
    pub fn etcd_if(&self, m: usize) -> String {
        format!("{}-ue{m}", self.name)
    }

    /// The hub's end of etcd member `m`'s underlay veth.
    pub fn etcd_hub_port(&self, m: usize) -> String {
        format!("{}-be{m}", self.name)
    }

    /// etcd member `m`'s underlay address: 192.0.2.(2+m).
    pub fn etcd_addr(m: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, (2 + m) as u8)
    }

    /// etcd member `m`'s client URL (what the registry replicas' `[store] endpoints` list).
    pub fn etcd_client_url(m: usize) -> String {
        format!("http://{}:{}", Self::etcd_addr(m), ETCD_CLIENT_PORT)
    }

    /// etcd member `m`'s peer URL.
    pub fn etcd_peer_url(m: usize) -> String {
        format!("http://{}:{}", Self::etcd_addr(m), ETCD_PEER_PORT)
    }

    /// The etcd cluster's directory: `eM/` (member `m`'s data) and `eM.log`.
    pub fn etcd_dir(&self) -> PathBuf {
        self.state_dir().join("etcd")
    }

    /// The etcd key prefix the lab's registry replicas share.
    pub fn etcd_key_prefix(&self) -> String {
        format!("/sdwan-lab/{}/", self.name)
    }

    /// The registry's directory: its configuration, log, store and the network's enrollment token.
    pub fn registry_dir(&self) -> PathBuf {
        self.state_dir().join("registry")
    }

    /// The lab's state directory.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.name)
    }

    /// The lab's state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("lab.json")
    }

    /// Peer `i`'s directory (config, key, log, daemon state).
    pub fn peer_dir(&self, i: usize) -> PathBuf {
        self.state_dir().join(Self::peer_name(i))
    }

    /// Peer `i`'s `sdwand` control socket (`daemon.control_socket`, what `sdwanctl --socket` talks to).
    pub fn control_socket(&self, i: usize) -> PathBuf {
        self.peer_dir(i).join("state").join("sdwand.sock")
    }

    /// Where peer `i`'s daemon writes its k3s config drop-in (registry labs with a VIP).
    pub fn k3s_config(&self, i: usize) -> PathBuf {
        self.peer_dir(i).join("k3s").join("50-sdwand.yaml")
    }

    /// Peer `i`'s echo responder log.
    pub fn responder_log(&self, i: usize) -> PathBuf {
        self.peer_dir(i).join("responder.log")
    }

    /// Peer `i`'s site namespace: a host on a LAN behind the peer (see [`crate::sites`]).
    pub fn site_netns(&self, i: usize) -> String {
        format!("{}-p{i}s", self.name)
    }

    /// Whether `netns` is one of this lab's namespaces: `NAME-hub`, `NAME-reg`, a further registry
    /// replica's `NAME-regR`, an etcd member's `NAME-eM`, `NAME-p<digits>`, a site's `NAME-p<digits>s` or a
    /// pod's `NAME-p<digits>q<digits>`.
    pub fn owns_netns(&self, netns: &str) -> bool {
        netns == self.hub_netns()
            || (1..=MAX_REGISTRY_REPLICAS).any(|r| netns == self.replica_netns(r))
            || (1..=ETCD_MEMBERS).any(|m| netns == self.etcd_netns(m))
            || self.peer_index_of(netns).is_some()
            || netns
                .strip_suffix('s')
                .is_some_and(|peer| self.peer_index_of(peer).is_some())
            || netns.rsplit_once('q').is_some_and(|(peer, pod)| {
                self.peer_index_of(peer).is_some()
                    && !pod.is_empty()
                    && pod.bytes().all(|b| b.is_ascii_digit())
                    && !pod.starts_with('0')
            })
    }

    /// The peer index in a `NAME-p<digits>` name (namespace or WireGuard interface).
    pub fn peer_index_of(&self, s: &str) -> Option<usize> {
        let digits = s.strip_prefix(&self.name)?.strip_prefix("-p")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
            return None;
        }
        digits.parse().ok()
    }
}

/// The name of the cluster p1 bootstraps.
pub const CLUSTER_NAME: &str = "lab";

/// The URL of the lab registry's API over the underlay.
pub fn registry_url() -> String {
    format!("http://{}:{}", REGISTRY_ADDR, REGISTRY_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("demo").is_ok());
        assert!(validate_name("a1b2c3").is_ok());
        for bad in ["", "abcdefg", "Demo", "a-b", "a_b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_peer_name_follows_the_peer_name_rule() {
        for i in 1..=MAX_PEERS {
            let name = Layout::peer_name(i);
            assert!(sdwand::vocab::name::PeerName::parse(&name).is_ok(), "{name:?} refused");
        }
    }

    #[test]
    fn every_name_fits_an_interface() {
        let l = Layout::new("abcdef").unwrap();
        for name in [
            l.wg_if(200),
            l.underlay_if(200),
            l.hub_port(200),
            l.bridge(),
            l.registry_if(),
            l.registry_hub_port(),
            l.replica_if(MAX_REGISTRY_REPLICAS),
            l.replica_hub_port(MAX_REGISTRY_REPLICAS),
            l.etcd_if(ETCD_MEMBERS),
            l.etcd_hub_port(ETCD_MEMBERS),
        ] {
            assert!(name.len() <= 15, "{name} too long");
        }
    }

    #[test]
    fn ownership_is_by_exact_prefix() {
        let l = Layout::new("ab").unwrap();
        assert!(l.owns_netns("ab-hub"));
        assert!(l.owns_netns("ab-p12"));
        assert!(l.owns_netns("ab-reg"));
        assert!(!l.owns_netns("ab1-reg"));
        assert!(
            l.owns_netns("ab-reg2") && l.owns_netns("ab-e3"),
            "a replica, an etcd member"
        );
        assert!(!l.owns_netns("ab-reg6") && !l.owns_netns("ab-e4") && !l.owns_netns("ab1-e1"));
        assert!(!l.owns_netns("ab1-p1"));
        assert!(!l.owns_netns("ab-p"));
        assert!(!l.owns_netns("ab-p01"));
        assert!(!l.owns_netns("ab-px"));
        assert!(l.owns_netns("ab-p2q13"), "a pod");
        assert!(!l.owns_netns("ab-p2q") && !l.owns_netns("ab-p2q0") && !l.owns_netns("ab1-p2q1"));
        assert!(l.owns_netns(&l.site_netns(3)), "a site");
        assert!(!l.owns_netns("ab-ps") && !l.owns_netns("ab1-p3s") && !l.owns_netns("ab-p3ss"));
        assert_eq!(l.peer_index_of("ab-p7"), Some(7));
    }

    #[test]
    fn addresses() {
        assert_eq!(Layout::underlay_addr(1).to_string(), "192.0.2.11");
        assert_eq!(Layout::underlay_addr(200).to_string(), "192.0.2.210");
        assert_eq!(Layout::overlay_addr(10).to_string(), "fd00:5d::a");
        assert_eq!(VIP_ADDR.to_string(), "fd00:5d:f::1");
        // Registry replicas and etcd members sit between the registry's .2 and the first peer's .11.
        let mut service: Vec<Ipv4Addr> = (1..=MAX_REGISTRY_REPLICAS).map(Layout::replica_addr).collect();
        service.extend((1..=ETCD_MEMBERS).map(Layout::etcd_addr));
        let count = service.len();
        service.sort();
        service.dedup();
        assert_eq!(service.len(), count, "no address twice: {service:?}");
        assert!(service.iter().all(|a| *a < Layout::underlay_addr(1)), "{service:?}");
        let overlay_64 = &Layout::overlay_addr(1).segments()[..4];
        assert_ne!(
            &VIP_ADDR.segments()[..4],
            overlay_64,
            "the VIP must be outside the overlay /64"
        );
    }

    #[test]
    fn control_sockets_fit_sun_path() {
        let l = Layout::new("abcdef").unwrap();
        assert!(l.control_socket(200).as_os_str().len() < 108);
    }
}
