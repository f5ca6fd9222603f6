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
    /// The lab's state directory (configs, keys, logs).
    pub state_dir: String,
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
