//! The lab's state file, `/run/sdwan-lab/NAME/lab.json`: what a lab is made of and which processes it started,
//! so that another `sdwan-lab` process can drive it (`status`, `down`) and cleanup never kills a stranger.
//!
//! It is written before anything is created and after every process start, so a lab that failed half-way (or
//! whose creator was killed) can still be taken down by name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::nodecfg::{NodeConfig, VipSection};
use crate::process::ProcId;

/// The contents of `lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Lab name (validated).
    pub name: String,
    /// The `sdwand` binary the lab starts, kept so restarts from another process use the same one.
    pub sdwand_bin: PathBuf,
    /// The `sdwan-lab` binary that runs the echo responders (`None` in labs without them).
    #[serde(default)]
    pub lab_bin: Option<PathBuf>,
    /// One entry per peer, index `i` at position `i - 1`.
    pub peers: Vec<PeerState>,
    /// Background processes started with `spawn_in` (killed by `down` if still running).
    #[serde(default)]
    pub background: Vec<ProcId>,
    /// The lab's registry (`None` in a static lab).
    #[serde(default)]
    pub registry: Option<RegistryState>,
    /// The VIPs of a registry lab, as the bootstrap and join flow makes them (a static lab's are in every
    /// peer's `[[vip]]`).
    #[serde(default)]
    pub vips: Vec<VipSection>,
    /// The pods (`--pods`), each recorded before its namespace is created.
    #[serde(default)]
    pub pods: Vec<crate::pods::PodState>,
}

/// The lab's `sdwan-registry` in `lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// The `sdwan-registry` binary, kept so restarts from another process use the same one.
    pub bin: PathBuf,
    /// The running registry, if any.
    pub process: Option<ProcId>,
    /// The API's URL over the underlay.
    pub url: String,
    /// The lab account's id.
    pub account_id: String,
    /// The lab account's admin token (a lab: kept in clear).
    pub admin_token: String,
    /// The lab network's id.
    pub network_id: String,
    /// The file holding the network's enrollment token (what every peer's config points at).
    pub enrollment_token_file: PathBuf,
    /// Registry replicas 2..R (replica `r` at position `r - 2`; replica 1 is `process`), each running or
    /// not. Empty: one replica.
    #[serde(default)]
    pub more_replicas: Vec<Option<ProcId>>,
    /// The etcd members the replicas store in (member `m` at position `m - 1`), each running or not.
    /// Empty: the registry stores in SQLite.
    #[serde(default)]
    pub etcd: Vec<Option<ProcId>>,
    /// The `etcd` binary (with an etcd store), kept so restarts from another process use the same one.
    #[serde(default)]
    pub etcd_bin: Option<PathBuf>,
}

impl RegistryState {
    /// How many replicas the registry has.
    pub fn replica_count(&self) -> usize {
        1 + self.more_replicas.len()
    }

    /// Replica `r`'s process (`None`: not running, or no such replica).
    pub fn replica_process(&self, r: usize) -> Option<ProcId> {
        match r {
            1 => self.process,
            _ => self.more_replicas.get(r.wrapping_sub(2)).copied().flatten(),
        }
    }

    /// Records replica `r`'s process (which must exist).
    pub(crate) fn set_replica_process(&mut self, r: usize, id: Option<ProcId>) {
        match r {
            1 => self.process = id,
            _ => self.more_replicas[r - 2] = id,
        }
    }
}

/// One peer in `lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    /// 1-based index.
    pub index: usize,
    /// Public key, base64 (the private key is only in the key file).
    pub public_key: String,
    /// The configuration last written with [`crate::Lab::rewrite_config`] (or at creation).
    pub config: NodeConfig,
    /// The running `sdwand`, if the lab started one.
    #[serde(default)]
    pub sdwand: Option<ProcId>,
    /// Every `wireguard-go` seen serving this peer's interface (its daemon starts them; `down` stops any
    /// that survive).
    #[serde(default)]
    pub wireguard_go: Vec<ProcId>,
    /// The running echo responder (VIP candidates only), if the lab started one.
    #[serde(default)]
    pub responder: Option<ProcId>,
}

impl LabState {
    /// Reads a state file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| LabError::Format {
            context: format!("cannot parse {}", path.display()),
            message: e.to_string(),
        })
    }

    /// Writes the state file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::Format {
            context: "cannot serialize the lab state".into(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let ctx = |what: &str| format!("cannot {what} {}", tmp.display());
        let mut f = fs::File::create(&tmp).map_err(|e| LabError::io(ctx("create"), e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| LabError::io(ctx("write"), e))?;
        f.sync_all().map_err(|e| LabError::io(ctx("sync"), e))?;
        fs::rename(&tmp, path).map_err(|e| LabError::io(format!("cannot replace {}", path.display()), e))
    }

    /// Records a `wireguard-go` seen serving peer `i` (no duplicates).
    pub fn note_wireguard_go(&mut self, i: usize, id: ProcId) -> bool {
        let seen = &mut self.peers[i - 1].wireguard_go;
        if seen.contains(&id) {
            return false;
        }
        seen.push(id);
        true
    }
}
