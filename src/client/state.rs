//! What the daemon keeps of the registry in `daemon.state_dir/registry/`: `identity.json`, `network.json`
//! (the last accepted network view) and `pins.json` (address -> public key of every member ever accepted).
//! Files are 0600 and written atomically (temp file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv6Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ipnet::Ipv6Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::registry::wire::MembersResponse;

/// This node's identity in the registry, from its enrollment. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Peer id.
    pub peer_id: String,
    /// The peer name it enrolled with.
    pub name: String,
    /// Its network.
    pub network_id: String,
    /// Its /128.
    pub address: Ipv6Addr,
    /// The network's overlay prefix.
    pub overlay_prefix: Ipv6Net,
    /// The peer token (secret: never logged).
    pub peer_token: String,
    /// The registry that issued it.
    pub registry_url: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .field("name", &self.name)
            .field("network_id", &self.network_id)
            .field("address", &self.address)
            .field("overlay_prefix", &self.overlay_prefix)
            .field("peer_token", &"<redacted>")
            .field("registry_url", &self.registry_url)
            .finish()
    }
}

/// Address -> base64 public key of every member ever accepted.
pub type Pins = BTreeMap<Ipv6Addr, String>;

/// A state file that cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason} (fix: {hint})", path = .path.display())]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
    /// How to fix it.
    pub hint: String,
}

/// The registry state directory, `daemon.state_dir/registry`.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The registry state of a daemon whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> StateDir {
        StateDir {
            dir: state_dir.join("registry"),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `identity.json`, `None` when absent (the node has not enrolled).
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        read_json(&self.file("identity.json"))
    }

    /// Writes `identity.json`.
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        self.write_json("identity.json", identity)
    }

    /// `network.json`, `None` when absent.
    pub fn network(&self) -> Result<Option<MembersResponse>, StateError> {
        read_json(&self.file("network.json"))
    }

    /// `pins.json` (empty when absent).
    pub fn pins(&self) -> Result<Pins, StateError> {
        Ok(read_json(&self.file("pins.json"))?.unwrap_or_default())
    }

    /// Writes `pins.json` then `network.json` (a view is never on disk without the pins it relies on).
    pub fn save_view(&self, view: &MembersResponse, pins: &Pins) -> Result<(), StateError> {
        self.write_json("pins.json", pins)?;
        self.write_json("network.json", view)
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.file(name);
        let fail = |what: &str, e: &dyn std::fmt::Display| StateError {
            path: path.clone(),
            reason: format!("{what}: {e}"),
            hint: format!("make {} writable by sdwand (daemon.state_dir)", self.dir.display()),
        };
        fs::create_dir_all(&self.dir).map_err(|e| fail("creating the directory", &e))?;
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| fail("encoding", &e))?;
        write_atomic(&path, &bytes).map_err(|e| fail("writing", &e))
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StateError {
            path: path.to_owned(),
            reason: format!("is not valid: {e}"),
            hint: "restore it from a backup, or remove the registry state directory to enroll again".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError {
            path: path.to_owned(),
            reason: format!("cannot be read: {e}"),
            hint: "make it readable by sdwand".into(),
        }),
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}
