//! The `sdwand` configuration file of one lab peer, as a typed value the tests can edit
//! ([`crate::Lab::rewrite_config`]) and render to TOML in the daemon's format (`config/sdwand.example.toml`).

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

pub mod build;

/// One `sdwand.toml`. Field names and sections are the daemon's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// `[interface]`.
    pub interface: InterfaceSection,
    /// `[backend]`.
    pub backend: BackendSection,
    /// `[daemon]`.
    pub daemon: DaemonSection,
    /// `[failover]`: heartbeat timers of VIP failover (absent in labs without VIPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverSection>,
    /// `[[vip]]`: the virtual IPs; every node carries the same list, candidates and followers alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip: Vec<VipSection>,
    /// `[[floating]]`: the floating prefixes; every node carries the same list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floating: Vec<FloatingSection>,
    /// `[registry]`: where the daemon enrolls and watches the membership (absent in a static lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySection>,
    /// `[k3s]`: the k3s role the daemon performs the registry handshake for (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sSection>,
    /// `[[members]]`: every peer of the lab, this one included (the daemon skips itself by public key). Empty
    /// with a registry: the members come from it.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// `[interface]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSection {
    /// WireGuard interface name, unique on the machine.
    pub name: String,
    /// The peer's private key file (mode 0600).
    pub private_key_file: PathBuf,
    /// UDP port on the underlay.
    pub listen_port: u16,
    /// MTU of the WireGuard interface.
    pub mtu: u32,
    /// This node's /128 (absent with a registry: enrollment assigns it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv6Addr>,
    /// The overlay prefix, routed to the interface (absent with a registry: enrollment tells it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_prefix: Option<String>,
    /// Keepalive to every member, seconds; it also makes the first handshakes happen without traffic.
    pub persistent_keepalive: u16,
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSection {
    /// `userspace` in the lab: these machines have no kernel WireGuard.
    pub kind: String,
    /// Path of `wireguard-go`.
    pub userspace_path: PathBuf,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSection {
    /// The daemon's state directory, inside the peer's lab directory.
    pub state_dir: PathBuf,
    /// Metrics endpoint; the same in every peer because each peer has its own namespace.
    pub metrics_listen: SocketAddr,
    /// Full resync period, humantime (`2s`).
    pub resync_interval: String,
    /// Whether SIGTERM removes the data plane.
    pub teardown_on_exit: bool,
    /// The unix socket `sdwanctl` talks to; every lab peer has its own, in its state directory.
    pub control_socket: PathBuf,
}

/// `[failover]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverSection {
    /// UDP port of the failover endpoint on the node's overlay /128.
    pub port: u16,
    /// Heartbeat interval, humantime (`50ms`).
    pub interval: String,
    /// A candidate is dead after this many intervals without a heartbeat.
    pub dead_after: u32,
    /// Whether a returning higher-ranked candidate takes the VIP back.
    pub preempt: bool,
    /// How long it must be live and healthy first, humantime.
    pub preempt_delay: String,
}

/// `[[vip]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSection {
    /// The virtual /128.
    pub address: Ipv6Addr,
    /// Member names, in promotion order.
    pub candidates: Vec<String>,
}

/// `[[floating]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingSection {
    /// The prefix.
    pub prefix: String,
    /// The address the holder puts on `interface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The LAN interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Member names, in promotion order.
    pub candidates: Vec<String>,
    /// `[floating.health]`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSection>,
    /// Quorum mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quorum: bool,
    /// Members that vote without being candidates (quorum mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<String>,
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySection {
    /// The registry's URL over the underlay (`http://192.0.2.2:7443`), with one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Every replica's URL, with several (the daemon refuses `url` and `urls` together).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Plain HTTP (the lab's registry serves no TLS).
    pub insecure: bool,
    /// The network's enrollment token, read for the first enrollment only.
    pub enrollment_token_file: PathBuf,
    /// The peer's name in the registry (`p1`).
    pub name: String,
    /// The underlay endpoint the other peers reach it at.
    pub endpoint: SocketAddr,
    /// `persistent`, `ephemeral` or `spot`.
    pub lifecycle: String,
    /// Liveness and VIP-state report period, humantime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval: Option<String>,
}

/// `[k3s]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K3sSection {
    /// `server` or `agent`.
    pub role: String,
    /// Server only: create the cluster instead of joining one (written only when true: the daemon refuses
    /// the key on an agent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootstrap: bool,
    /// The cluster to join; empty: the account's most recent active cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_cluster_id: String,
    /// The cluster's name (bootstrap only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    /// Where the daemon writes the k3s config drop-in (inside the peer's lab directory).
    pub config_path: PathBuf,
    /// `pod_network` (absent: the daemon's default, flannel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_network: Option<String>,
    /// `cni_conf_dir` (with `pod_network = "sdwan"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_conf_dir: Option<PathBuf>,
    /// `cni_ipam_data_dir` (with `pod_network = "sdwan"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_ipam_data_dir: Option<PathBuf>,
    /// `[k3s.health]`: the health check of the cluster's VIP on this node (absent: always healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSection>,
}

/// `[k3s.health]` (or `[vip.health]`): a TCP connect check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSection {
    /// `tcp`.
    pub kind: String,
    /// What to connect to.
    pub target: SocketAddr,
    /// Check period, humantime (`1s`).
    pub interval: String,
    /// Passes in a row to become healthy.
    pub rise: u32,
    /// Failures in a row to become unhealthy.
    pub fall: u32,
}

impl HealthSection {
    /// A TCP connect check of `target` every `interval`.
    pub fn tcp(target: SocketAddr, interval: &str, rise: u32, fall: u32) -> Self {
        HealthSection {
            kind: "tcp".to_owned(),
            target,
            interval: interval.to_owned(),
            rise,
            fall,
        }
    }
}

impl K3sSection {
    /// A bootstrap server (creates the cluster `cluster_name`), writing its drop-in to `config_path`.
    pub fn bootstrap(cluster_name: &str, config_path: PathBuf) -> Self {
        K3sSection {
            role: "server".to_owned(),
            bootstrap: true,
            target_cluster_id: String::new(),
            cluster_name: cluster_name.to_owned(),
            config_path,
            pod_network: None,
            cni_conf_dir: None,
            cni_ipam_data_dir: None,
            health: None,
        }
    }

    /// A joining server (`role = "server"`) or an agent (`"agent"`), joining `target` (empty: the most
    /// recent active cluster).
    pub fn join(role: &str, target: &str, config_path: PathBuf) -> Self {
        K3sSection {
            role: role.to_owned(),
            bootstrap: false,
            target_cluster_id: target.to_owned(),
            cluster_name: String::new(),
            config_path,
            pod_network: None,
            cni_conf_dir: None,
            cni_ipam_data_dir: None,
            health: None,
        }
    }

    /// This section with `pod_network = "sdwan"` and peer `i`'s CNI directories in lab `l` (see
    /// [`crate::pods`]).
    pub fn with_pods(mut self, l: &crate::layout::Layout, i: usize) -> Self {
        self.pod_network = Some("sdwan".to_owned());
        self.cni_conf_dir = Some(crate::pods::cni_conf_dir(l, i));
        self.cni_ipam_data_dir = Some(crate::pods::cni_ipam_dir(l, i));
        self
    }
}

/// `[[members]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Member name (`p1`).
    pub name: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    /// Underlay endpoint `192.0.2.(10+i):51820`.
    pub endpoint: SocketAddr,
    /// The member's /128.
    pub address: Ipv6Addr,
    /// Extra prefixes routed to the member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed_prefixes: Vec<String>,
}

impl NodeConfig {
    /// The TOML text of this configuration.
    pub fn render(&self) -> Result<String> {
        let body = toml::to_string(self).map_err(|e| LabError::Format {
            context: "cannot render a peer config".into(),
            message: e.to_string(),
        })?;
        Ok(format!(
            "# Written by sdwan-lab; edit with Lab::rewrite_config.\n\n{body}"
        ))
    }

    /// Parses a configuration written by [`NodeConfig::render`].
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| LabError::Format {
            context: "cannot parse a peer config".into(),
            message: e.to_string(),
        })
    }

    /// The member called `name`, if listed.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// The 1-based line of the first line of `text` that contains `needle`: to point at a line in a rendered
/// config (e.g. the one a test broke on purpose).
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeConfig {
        NodeConfig {
            interface: InterfaceSection {
                name: "t-p1".into(),
                private_key_file: "/run/sdwan-lab/t/p1/private.key".into(),
                listen_port: 51820,
                mtu: 1420,
                address: Some("fd00:5d::1".parse().unwrap()),
                overlay_prefix: Some("fd00:5d::/64".into()),
                persistent_keepalive: 25,
            },
            backend: BackendSection {
                kind: "userspace".into(),
                userspace_path: "/usr/bin/wireguard-go".into(),
            },
            daemon: DaemonSection {
                state_dir: "/run/sdwan-lab/t/p1/state".into(),
                metrics_listen: "127.0.0.1:9581".parse().unwrap(),
                resync_interval: "2s".into(),
                teardown_on_exit: true,
                control_socket: "/run/sdwan-lab/t/p1/state/sdwand.sock".into(),
            },
            failover: None,
            vip: Vec::new(),
            floating: Vec::new(),
            registry: None,
            k3s: None,
            members: vec![Member {
                name: "p2".into(),
                public_key: "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=".into(),
                endpoint: "192.0.2.12:51820".parse().unwrap(),
                address: "fd00:5d::2".parse().unwrap(),
                routed_prefixes: vec![],
            }],
        }
    }

    #[test]
    fn renders_the_daemon_format_and_back() {
        let cfg = sample();
        let text = cfg.render().unwrap();
        assert!(text.contains("[interface]"), "{text}");
        assert!(text.contains("[[members]]"), "{text}");
        assert!(text.contains("address = \"fd00:5d::1\""), "{text}");
        assert!(text.contains("resync_interval = \"2s\""), "{text}");
        assert!(!text.contains("routed_prefixes"), "{text}");
        assert_eq!(NodeConfig::parse(&text).unwrap(), cfg);
        assert!(!text.contains("failover"), "{text}");
        assert_eq!(
            line_of(&text, "adPRqhum"),
            text.lines().position(|l| l.contains("public_key")).map(|i| i + 1)
        );
    }

    #[test]
    fn renders_failover_and_vips() {
        let mut cfg = sample();
        cfg.failover = Some(FailoverSection {
            port: 51821,
            interval: "50ms".into(),
            dead_after: 4,
            preempt: false,
            preempt_delay: "5s".into(),
        });
        cfg.vip = vec![VipSection {
            address: "fd00:5d:f::1".parse().unwrap(),
            candidates: vec!["p1".into(), "p2".into()],
        }];
        let text = cfg.render().unwrap();
        for needle in [
            "control_socket = \"/run/sdwan-lab/t/p1/state/sdwand.sock\"",
            "[failover]",
            "interval = \"50ms\"",
            "dead_after = 4",
            "preempt_delay = \"5s\"",
            "[[vip]]",
            "address = \"fd00:5d:f::1\"",
            "candidates = [\"p1\", \"p2\"]",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        assert_eq!(NodeConfig::parse(&text).unwrap(), cfg);
        // A state file written before VIPs existed still loads.
        let old = sample().render().unwrap();
        assert_eq!(NodeConfig::parse(&old).unwrap(), sample());
    }

    #[test]
    fn renders_registry_and_k3s() {
        let mut cfg = sample();
        cfg.interface.address = None;
        cfg.interface.overlay_prefix = None;
        cfg.members.clear();
        cfg.registry = Some(RegistrySection {
            url: Some("http://192.0.2.2:7443".into()),
            urls: Vec::new(),
            insecure: true,
            enrollment_token_file: "/run/sdwan-lab/t/registry/enrollment-token".into(),
            name: "p1".into(),
            endpoint: "192.0.2.11:51820".parse().unwrap(),
            lifecycle: "persistent".into(),
            report_interval: None,
        });
        cfg.k3s = Some(K3sSection::join("agent", "", "/run/sdwan-lab/t/p1/k3s.yaml".into()));
        let text = cfg.render().unwrap();
        for needle in [
            "[registry]",
            "url = \"http://192.0.2.2:7443\"",
            "insecure = true",
            "endpoint = \"192.0.2.11:51820\"",
            "[k3s]",
            "role = \"agent\"",
            "config_path = \"/run/sdwan-lab/t/p1/k3s.yaml\"",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        for absent in [
            "address = ",
            "bootstrap",
            "overlay_prefix",
            "target_cluster_id",
            "cluster_name",
            "[[members]]",
        ] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        assert_eq!(NodeConfig::parse(&text).unwrap(), cfg);
    }
}
