//! The validated configuration: the types callers read ([`Config`] and its sections) and the queries the
//! daemon asks of them (`check_identity`, `restart_only_settings`, `member_address`).
//!
//! Plain data with defaults already filled in. Nothing here parses text or reads a file: values are built
//! only by the validator (`validate`), from the serde input in `raw`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use wireguard_control::Key;

use super::{ConfigError, ConfigErrors};
use crate::vip::Timers;
use crate::vocab::name::PeerName;
use crate::vocab::{Lifecycle, PodPool, Role, RoutedPrefix};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    /// The WireGuard interface and this node's overlay identity.
    pub interface: InterfaceConfig,
    /// Which WireGuard implementation drives the interface.
    pub backend: BackendConfig,
    /// Daemon housekeeping: state, metrics, timers.
    pub daemon: DaemonConfig,
    /// Static member list, in file order (the registry replaces it later).
    pub members: Vec<Member>,
    /// VIP failover settings shared by every VIP.
    pub failover: FailoverConfig,
    /// The VIPs, in file order.
    pub vips: Vec<VipConfig>,
    /// The floating prefixes (`[[floating]]`, then with `[registry]` the registry's), in that order.
    pub floating: Vec<FloatingConfig>,
    /// `[registry]`: identity, members and VIPs come from the registry (then `members` is empty in the
    /// file, and the daemon runs on the effective configuration built by `crate::client`).
    pub registry: Option<RegistryConfig>,
    /// `[k3s]`: the handshake and the drop-in.
    pub k3s: Option<K3sConfig>,
    /// The network's workload ranges (IPv4 overlay prefix, pod pools, site ranges): from the registry's
    /// view, empty in a static configuration.
    pub prefixes: NetworkPrefixes,
}

/// A network's workload ranges, as the registry's view gives them (see [`crate::vocab::wire::MembersResponse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPrefixes {
    /// The IPv4 overlay prefix members' /32s are in; routed through the interface.
    pub overlay_prefix_v4: Option<Ipv4Net>,
    /// The pod pools (k3s's cluster CIDRs): traffic between them is never masqueraded.
    pub pod_pools: Vec<PodPool>,
    /// The ranges site prefixes are assigned from.
    pub site_ranges: Vec<IpNet>,
}

/// `[interface]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceConfig {
    /// Interface name (1–15 characters).
    pub name: String,
    /// File holding the base64 private key.
    pub private_key_file: PathBuf,
    /// WireGuard UDP listen port.
    pub listen_port: u16,
    /// Interface MTU (1420 when the file does not set it; then the daemon derives it from the underlay).
    pub mtu: u32,
    /// Whether the file sets `interface.mtu`: if not, the daemon derives the MTU from the underlay.
    pub mtu_from_file: bool,
    /// This node's /128 overlay address. With `[registry]` it comes from the enrollment: in the file's
    /// configuration it is then the unspecified address (`::`) when the file does not give it.
    pub address: Ipv6Addr,
    /// The overlay network, routed through the interface. With `[registry]` it comes from the registry:
    /// in the file's configuration it is then `::/128` when the file does not give it.
    pub overlay_prefix: Ipv6Net,
    /// Persistent keepalive for every member, seconds; `None` = off.
    pub persistent_keepalive: Option<u16>,
}

/// `[backend] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Kernel WireGuard when available, else userspace.
    Auto,
    /// Kernel WireGuard only.
    Kernel,
    /// The userspace implementation only.
    Userspace,
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Requested backend.
    pub kind: BackendKind,
    /// Path of the userspace implementation (`wireguard-go`).
    pub userspace_path: PathBuf,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// State directory.
    pub state_dir: PathBuf,
    /// Address of the Prometheus endpoint. Fail-soft: if it cannot be bound (a port taken by another
    /// process), the daemon runs on, says so in the log and `sdwanctl status`, and retries.
    pub metrics_listen: SocketAddr,
    /// Period of the full resync.
    pub resync_interval: Duration,
    /// Remove the data plane on SIGTERM instead of leaving it up.
    pub teardown_on_exit: bool,
    /// Unix socket `sdwanctl` talks to.
    pub control_socket: PathBuf,
    /// Which per-peer series the metrics endpoint exports (a reload may change it).
    pub peer_metrics: PeerMetrics,
    /// When set, the metrics endpoint is also served on `[this node's overlay address]:port`, once the
    /// address is on the interface, for a Prometheus inside the overlay. Restart only.
    pub metrics_overlay_port: Option<u16>,
}

/// `daemon.peer_metrics`: whether the metrics endpoint exports per-peer series (7 per peer). A network of
/// thousands of peers turns them off to bound each node's scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerMetrics {
    /// `"all"` (the default): every configured peer's series.
    #[default]
    All,
    /// `"none"`: no per-peer series; node-wide series only.
    None,
}

impl PeerMetrics {
    /// Parses the setting's value.
    pub fn parse(s: &str) -> Option<PeerMetrics> {
        match s {
            "all" => Some(PeerMetrics::All),
            "none" => Some(PeerMetrics::None),
            _ => None,
        }
    }
}

/// One `[[members]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Human name, unique in the list (used in logs and metric labels).
    pub name: String,
    /// WireGuard public key, unique in the list.
    pub public_key: Key,
    /// Underlay endpoint; `None` waits for the member to reach us.
    pub endpoint: Option<SocketAddr>,
    /// The member's /128 overlay address.
    pub address: Ipv6Addr,
    /// Extra prefixes routed to the member (`routed_prefixes` in the file).
    pub routed_prefixes: Vec<Ipv6Net>,
    /// The member's /32 in the network's IPv4 overlay prefix (from the registry; never in a file).
    pub address_v4: Option<Ipv4Addr>,
    /// The member's workload prefixes, IPv4 and IPv6, pod shares and site prefixes (from the registry;
    /// never in a file).
    pub workload: Vec<RoutedPrefix>,
    /// Line of the entry in the file, for messages raised after parsing.
    pub line: usize,
}

impl Member {
    /// Every prefix this member is reached at: its /128 first, then its routed prefixes.
    pub fn prefixes(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        std::iter::once(host_net(self.address)).chain(self.routed_prefixes.iter().copied())
    }
}

/// `addr/128`.
pub fn host_net(addr: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new(addr, 128).expect("128 is a valid IPv6 prefix length")
}

impl Config {
    /// Checks the parts that need this node's public key: the member carrying it must have this node's
    /// address, and no other member may use that address.
    pub fn check_identity(&self, own_public: &Key) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let is_self = m.public_key == *own_public;
            let (message, hint) = if is_self && m.address != self.interface.address {
                (
                    format!(
                        "carries this node's public key but address {} instead of interface.address {}",
                        m.address, self.interface.address
                    ),
                    "make the two addresses equal, or fix the key",
                )
            } else if !is_self && m.address == self.interface.address {
                (
                    format!("uses this node's address {} with another public key", m.address),
                    "give the member its own address, or fix the key",
                )
            } else {
                continue;
            };
            errors.push(ConfigError {
                path: self.source.clone(),
                line: m.line,
                key: format!("members[{i}]"),
                message,
                hint: hint.into(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The settings that a reload (SIGHUP) cannot change, each with its current value as written in the
    /// file (`not set` when absent), for a refusal that names them (`registry.name (a -> b)`). The list
    /// is the same for every configuration, so two can be compared pairwise. `interface.address` and
    /// `interface.overlay_prefix` are not in it with `[registry]`: a reload checks them against the
    /// identity instead, which says what value fits.
    pub fn restart_only_settings(&self) -> Vec<(&'static str, String)> {
        fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
            value.map_or_else(|| "not set".to_owned(), |v| v.to_string())
        }
        let reg = self.registry.as_ref();
        let k3s = self.k3s.as_ref();
        let backend = match self.backend.kind {
            BackendKind::Auto => "auto",
            BackendKind::Kernel => "kernel",
            BackendKind::Userspace => "userspace",
        };
        vec![
            ("interface.name", shown(Some(&self.interface.name))),
            (
                "interface.private_key_file",
                shown(Some(self.interface.private_key_file.display())),
            ),
            ("backend.kind", shown(Some(backend))),
            (
                "backend.userspace_path",
                shown(Some(self.backend.userspace_path.display())),
            ),
            ("daemon.state_dir", shown(Some(self.daemon.state_dir.display()))),
            ("daemon.metrics_listen", shown(Some(self.daemon.metrics_listen))),
            ("daemon.metrics_overlay_port", shown(self.daemon.metrics_overlay_port)),
            (
                "daemon.control_socket",
                shown(Some(self.daemon.control_socket.display())),
            ),
            ("failover.port", shown(Some(self.failover.port))),
            ("[registry]", shown(reg.map(|_| "set"))),
            ("registry.url", shown(reg.map(|r| r.urls_shown()))),
            ("registry.insecure", shown(reg.map(|r| r.insecure))),
            (
                "registry.enrollment_token_file",
                shown(reg.and_then(|r| r.enrollment_token_file.as_ref()).map(|p| p.display())),
            ),
            ("registry.name", shown(reg.and_then(|r| r.name.as_ref()))),
            ("registry.endpoint", shown(reg.and_then(|r| r.endpoint))),
            ("registry.lifecycle", shown(reg.map(|r| r.lifecycle))),
            (
                "registry.ca_file",
                shown(reg.and_then(|r| r.ca_file.as_ref()).map(|p| p.display())),
            ),
            ("k3s.role", shown(k3s.map(|k| k.role))),
            ("k3s.bootstrap", shown(k3s.map(|k| k.bootstrap))),
        ]
    }

    /// The overlay address of the member called `name` (VIP candidates are member names).
    pub fn member_address(&self, name: &str) -> Option<Ipv6Addr> {
        self.members.iter().find(|m| m.name == name).map(|m| m.address)
    }
}

// `[failover]` and `[[vip]]`.

/// The default `failover.port`. Privileged (below 1024), so no unprivileged process on a member can
/// hold it before sdwand starts, nor send from it: a datagram from this port is sdwand's (the runtime
/// drops any other source port). 851 is unassigned by IANA and absent from common `/etc/services`.
pub const DEFAULT_FAILOVER_PORT: u16 = 851;
const _: () = assert!(
    DEFAULT_FAILOVER_PORT < 1024,
    "the default failover port must be privileged"
);

/// `[failover]`: how the nodes talk about VIPs. The same for every VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// UDP port for heartbeats and claims, bound on this node's overlay address; never the WireGuard port.
    pub port: u16,
    /// Heartbeat interval (10ms..=10s).
    pub interval: Duration,
    /// Intervals of silence after which a candidate counts as dead (2..=100).
    pub dead_after: u32,
    /// Hand the VIP back to a returning higher-ranked candidate.
    pub preempt: bool,
    /// How long that candidate must have been live and healthy first (0s..=1h); unused without `preempt`.
    pub preempt_delay: Duration,
}

impl FailoverConfig {
    /// The protocol timers these settings stand for.
    pub fn timers(&self) -> Timers {
        Timers {
            interval: self.interval,
            dead_after: self.dead_after,
            preempt: self.preempt.then_some(self.preempt_delay),
        }
    }
}

/// One `[[vip]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    /// The virtual /128; unique among VIPs and outside every member's address and routed prefixes.
    pub address: Ipv6Addr,
    /// Names of `[[members]]` entries in promotion order (rank = index); 1..=32 of them, each once.
    pub candidates: Vec<String>,
    /// The local service check; `None` counts this node as always healthy.
    pub health: Option<HealthConfig>,
    /// `quorum = true`: `Some(witnesses)`, the names of `[[members]]` entries that vote without being
    /// candidates (none of them a candidate, each once); `None`: quorum mode off.
    pub quorum: Option<Vec<String>>,
    /// Line of the entry in the file, for messages raised after parsing.
    pub line: usize,
}

/// One `[[floating]]` entry: a prefix (a site LAN, an egress range) behind several candidate gateways,
/// moved between them by the VIP failover protocol under the key [`crate::vocab::floating_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingConfig {
    /// The prefix, IPv4 or IPv6, canonical (host bits zero).
    pub prefix: IpNet,
    /// An address in the prefix the holder puts on `interface` (the site's hosts route through it).
    pub gateway: Option<IpAddr>,
    /// The LAN interface `gateway` goes on; set exactly when `gateway` is (in a file: from the registry
    /// a gateway without the file's `interface` is not put anywhere).
    pub interface: Option<String>,
    /// Member names in promotion order (rank = index); 1..=32 of them, each once.
    pub candidates: Vec<String>,
    /// Whether this node may serve the prefix (e.g. reach the site's router); `None` counts it as always
    /// healthy.
    pub health: Option<HealthConfig>,
    /// `quorum = true`: `Some(witnesses)`, as for [`VipConfig::quorum`]; `None`: quorum mode off.
    pub quorum: Option<Vec<String>>,
    /// Line of the entry in the file (0 for one from the registry), for messages raised after parsing.
    pub line: usize,
}

impl FloatingConfig {
    /// The prefix's key in the failover protocol (the machine's and the metrics' VIP).
    pub fn key(&self) -> Ipv6Addr {
        crate::vocab::floating_key(self.prefix)
    }

    /// The gateway address with the prefix's length, as it goes on `interface`, when both are set.
    pub fn gateway_net(&self) -> Option<(IpNet, &str)> {
        let net = IpNet::new(self.gateway?, self.prefix.prefix_len()).ok()?;
        Some((net, self.interface.as_deref()?))
    }
}

/// `[vip.health]`: when this node is fit to hold the VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// What is checked.
    pub check: HealthCheck,
    /// Period of the check (100ms..=1h).
    pub interval: Duration,
    /// How long one check may take; always shorter than `interval`, so checks never overlap (default:
    /// 500ms or half the interval, whichever is shorter).
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy node healthy (1..=10).
    pub rise: u32,
    /// Consecutive failures that make a healthy node unhealthy (1..=10).
    pub fall: u32,
}

/// The kind of health check and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Healthy when a TCP connection to `target` succeeds.
    Tcp {
        /// Address and port to connect to.
        target: SocketAddr,
    },
    /// Healthy when `GET url` answers 2xx.
    Http {
        /// An `http://` URL.
        url: String,
    },
    /// Healthy when `GET url` answers 2xx over TLS.
    Https {
        /// An `https://` URL.
        url: String,
        /// PEM CA certificate(s) to trust instead of the system roots.
        ca_file: Option<PathBuf>,
        /// PEM client certificate; set exactly when `client_key` is.
        client_cert: Option<PathBuf>,
        /// PEM private key of `client_cert`.
        client_key: Option<PathBuf>,
    },
}

impl HealthCheck {
    /// What is checked, for logs: the address or the URL.
    pub fn target(&self) -> String {
        match self {
            HealthCheck::Tcp { target } => target.to_string(),
            HealthCheck::Http { url } | HealthCheck::Https { url, .. } => url.clone(),
        }
    }
}

// `[registry]` and `[k3s]`.

/// Where the k3s drop-in goes when `[k3s] config_path` is not set.
pub const DEFAULT_K3S_CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml";

/// `[registry]`: this node's identity, members and VIPs come from an `sdwan-registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Base URLs of the registry's replicas (`https://`, or `http://` with `insecure`), without a trailing
    /// slash; never empty, each once (`registry.url` gives one, `registry.urls` several). A request goes to
    /// the replica that answered last and moves to the next one when it does not answer.
    pub urls: Vec<String>,
    /// Plain HTTP is accepted (labs only).
    pub insecure: bool,
    /// The enrollment token's file; read at the first enrollment only.
    pub enrollment_token_file: Option<PathBuf>,
    /// Peer name to enroll with; `None` = the host name.
    pub name: Option<PeerName>,
    /// Advertised underlay endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Lifecycle class to enroll with.
    pub lifecycle: Lifecycle,
    /// PEM CA certificate(s) trusted for the registry instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Period of the liveness and VIP-state report (1s..=1h).
    pub report_interval: Duration,
    /// `interface.address` when the file gives one: it must equal the address the registry assigned.
    pub file_address: Option<Ipv6Addr>,
    /// `interface.overlay_prefix` when the file gives one: it must equal the registry's.
    pub file_overlay_prefix: Option<Ipv6Net>,
    /// Line of the `[registry]` table, for messages raised after parsing.
    pub line: usize,
    /// Lines of the keys that messages raised after parsing name (`registry.url`, `registry.name`,
    /// `registry.enrollment_token_file`, `registry.ca_file`, `interface.address`,
    /// `interface.overlay_prefix`), for those the file sets; see [`RegistryConfig::line_of`].
    pub key_lines: Vec<(&'static str, usize)>,
}

impl RegistryConfig {
    /// The first replica's URL: what messages name when they need one.
    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The URLs, comma-separated, for logs and status lines.
    pub fn urls_shown(&self) -> String {
        self.urls.join(", ")
    }

    /// The line of `key` (a dotted key such as `interface.address`) in the file, or the `[registry]`
    /// table's line when the file does not set it: what a message about that key points at.
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(self.line, |(_, line)| *line)
    }
}

/// `[k3s]`: the k3s handshake this node performs and the drop-in it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sConfig {
    /// The k3s role (also enrolled as the peer's role).
    pub role: Role,
    /// Server only: create the cluster instead of joining one.
    pub bootstrap: bool,
    /// Join target; `None` = the most recent active cluster. Reloadable.
    pub target_cluster_id: Option<String>,
    /// Bootstrap only: the new cluster's name.
    pub cluster_name: Option<String>,
    /// Where the k3s configuration drop-in is written.
    pub config_path: PathBuf,
    /// Health check applied to the VIP of this node's cluster.
    pub health: Option<HealthConfig>,
    /// What carries the pods' traffic between nodes.
    pub pod_network: PodNetworkKind,
    /// Where the CNI configuration is written with `pod_network = "sdwan"`.
    pub cni_conf_dir: PathBuf,
    /// Where `host-local` keeps its address leases; `None`: the plugin's default (`/var/lib/cni/networks`).
    pub cni_ipam_data_dir: Option<PathBuf>,
    /// k3s's `service-cidr` (servers, `pod_network = "sdwan"`), IPv4 first; empty: k3s's default (IPv4).
    pub service_cidrs: Vec<IpNet>,
}

impl K3sConfig {
    /// Whether `other` asks for the same handshake (role, bootstrap, target, name): a change to anything
    /// else (the drop-in's path, the pod network) rewrites files but does not join again.
    pub fn same_handshake(&self, other: &K3sConfig) -> bool {
        (self.role, self.bootstrap, &self.target_cluster_id, &self.cluster_name)
            == (
                other.role,
                other.bootstrap,
                &other.target_cluster_id,
                &other.cluster_name,
            )
    }
}

/// Where the CNI configuration goes when `[k3s] cni_conf_dir` is not set: the directory k3s's containerd
/// reads.
pub const DEFAULT_CNI_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";

/// `[k3s] pod_network`: what carries the pods' traffic between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetworkKind {
    /// k3s's own flannel (the default): sdwand writes no CNI configuration and leaves the pod network to k3s.
    #[default]
    Flannel,
    /// The SD-WAN: sdwand writes the CNI configuration for this node's pod prefixes, routes every node's,
    /// and the drop-in turns flannel off.
    Sdwan,
}

impl PodNetworkKind {
    /// The name in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            PodNetworkKind::Flannel => "flannel",
            PodNetworkKind::Sdwan => "sdwan",
        }
    }
}
