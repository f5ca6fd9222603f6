//! The JSON document `sdwan-lab up` and `sdwan-lab status` print. Its field names are a contract with scripts
//! and the quick start: add fields, never rename or remove one.

use serde::{Deserialize, Serialize};

/// A lab, as printed by `sdwan-lab up` / `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabDoc {
    /// Lab name.
    pub name: String,
    /// Namespace of the hub (the bridge that joins the underlay links).
    pub hub_netns: String,
    /// The peers, in index order.
    pub peers: Vec<PeerDoc>,
    /// Virtual IPs (empty in a lab built without `--vip-candidates`).
    pub vips: Vec<VipDoc>,
    /// Floating prefixes (empty in a lab built without `--floating-candidates`).
    #[serde(default)]
    pub floating: Vec<crate::floating::FloatingDoc>,
    /// The pods (`--pods`): name, peer, namespace, addresses (`null` for a family not in use).
    pub pods: Vec<crate::pods::PodState>,
    /// The lab's state directory (configs, keys, logs).
    pub state_dir: String,
    /// The lab's registry; `null` in a static lab (`--no-registry`).
    #[serde(default)]
    pub registry: Option<RegistryDoc>,
}

/// The registry of a [`LabDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryDoc {
    /// Its namespace (`NAME-reg`).
    pub netns: String,
    /// Its API's URL over the underlay (reachable from every peer namespace).
    pub url: String,
    /// PID of the running registry; `null` when it does not run.
    pub pid: Option<u32>,
    /// The lab account's admin token (a lab: shown in clear).
    pub admin_token: String,
    /// The lab account's id.
    pub account_id: String,
    /// The lab network's id.
    pub network_id: String,
    /// Its log file.
    pub log: String,
    /// Every replica, the first (the one above) included, in order.
    #[serde(default)]
    pub replicas: Vec<ReplicaDoc>,
    /// The etcd cluster's members the replicas store in; empty with SQLite (`--registry-backend sqlite`).
    #[serde(default)]
    pub etcd: Vec<EtcdDoc>,
}

/// One registry replica of a [`RegistryDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDoc {
    /// Its namespace (`NAME-reg`, `NAME-reg2`, …).
    pub netns: String,
    /// Its API's URL over the underlay.
    pub url: String,
    /// PID of the running replica; `null` when it does not run.
    pub pid: Option<u32>,
}

/// One etcd member of a [`RegistryDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdDoc {
    /// Its member name (`e1`); its namespace is `NAME-e1`.
    pub name: String,
    /// PID of the running member; `null` when it does not run.
    pub pid: Option<u32>,
    /// Its client URL over the underlay.
    pub client_url: String,
}

/// One peer of a [`LabDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDoc {
    /// Peer name (`p1`), as in the member lists.
    pub name: String,
    /// Its namespace (`NAME-p1`).
    pub netns: String,
    /// Its underlay interface (a veth into the hub bridge).
    pub underlay_if: String,
    /// Its underlay IPv4 address (without prefix length; the subnet is /24).
    pub underlay_addr: String,
    /// Its overlay /128 (without prefix length).
    pub overlay_addr: String,
    /// Its WireGuard interface.
    pub wg_if: String,
    /// PID of its running `sdwand`; `null` when none runs.
    pub sdwand_pid: Option<u32>,
    /// PID of the `wireguard-go` serving `wg_if`; `null` when none does.
    pub wg_pid: Option<u32>,
    /// Its `sdwand` configuration file.
    pub config: String,
    /// Its `sdwand` log file.
    pub log: String,
    /// Its pod prefixes (`--pods`), as its daemon's CNI configuration has them; empty without pods.
    pub prefixes: Vec<String>,
}

/// A virtual IP of a [`LabDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipDoc {
    /// The VIP /128.
    pub address: String,
    /// Candidate peer names, in rank order.
    pub candidates: Vec<String>,
    /// The holder: the one peer whose interface has the address; `null` when none has it, or when several
    /// have (then `holders` says which).
    pub holder: Option<String>,
    /// Every peer whose interface has the address, in index order. More than one only in a transition
    /// (a draining holder still serves while its successor's claim is confirmed) or a fault (split brain,
    /// or a killed daemon that left its address behind).
    #[serde(default)]
    pub holders: Vec<String>,
}
