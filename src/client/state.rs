//! What the daemon keeps of the registry in `daemon.state_dir/registry/`: `identity.json`, `network.json`
//! (the last accepted network view, a cache) and `pins.json` (address -> public key of every member
//! accepted, expired [`PIN_TTL_SECS`] after the member left). Files are 0600 and written atomically (a
//! fresh temp file, fsync, rename, fsync of the directory). `identity.json` cannot be rebuilt, so a bad
//! one stops the start; a bad `network.json` or `pins.json` is moved aside and rebuilt.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv6Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::statedir::{self, create_dir, write_atomic};
use crate::vocab::wire::MembersResponse;

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

/// How long a pin outlives its member's absence from the view: a spot peer's address is never reused, so
/// without expiry `pins.json` grows with every peer ever seen (a bound in wall-clock seconds).
pub const PIN_TTL_SECS: u64 = 30 * 24 * 3600;

/// One pinned (address, public key) and since when the address has been absent from the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PinRepr")]
pub struct Pin {
    /// The base64 public key first accepted for the address.
    pub key: String,
    /// Unix seconds since which the address has been missing from every accepted view; `None` while
    /// present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absent_since: Option<u64>,
}

/// A pin as stored: the full record, or the bare key of files written before pins expired.
#[derive(Deserialize)]
#[serde(untagged)]
enum PinRepr {
    Key(String),
    Full {
        key: String,
        #[serde(default)]
        absent_since: Option<u64>,
    },
}

impl From<PinRepr> for Pin {
    fn from(r: PinRepr) -> Pin {
        match r {
            PinRepr::Key(key) => Pin {
                key,
                absent_since: None,
            },
            PinRepr::Full { key, absent_since } => Pin { key, absent_since },
        }
    }
}

/// Address -> pinned public key of every member accepted and not absent for longer than [`PIN_TTL_SECS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pins(BTreeMap<Ipv6Addr, Pin>);

impl Pins {
    /// No pins.
    pub fn new() -> Pins {
        Pins::default()
    }

    /// The key pinned for `address`.
    pub fn key(&self, address: &Ipv6Addr) -> Option<&str> {
        self.0.get(address).map(|p| p.key.as_str())
    }

    /// Pins `key` for `address` (present now) unless the address is pinned already; returns whether it
    /// was new.
    pub fn pin(&mut self, address: Ipv6Addr, key: &str) -> bool {
        if self.0.contains_key(&address) {
            return false;
        }
        self.0.insert(
            address,
            Pin {
                key: key.to_owned(),
                absent_since: None,
            },
        );
        true
    }

    /// How many addresses are pinned.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every pin.
    pub fn iter(&self) -> impl Iterator<Item = (&Ipv6Addr, &Pin)> {
        self.0.iter()
    }

    /// Brings the pins up to date with an accepted `view` at wall-clock `now` (unix seconds): pins its new
    /// members, clears the absence of those present, starts the absence of those missing and forgets the
    /// ones absent for longer than `ttl` seconds. `contested` are the addresses the registry still lists
    /// with another key (refused by [`super::view::refuse_rekeys`]): they count as present, so insisting on
    /// a re-key never outlasts the pin. Returns whether anything changed (so an unchanged file is not
    /// rewritten).
    pub fn refresh(&mut self, view: &MembersResponse, contested: &[Ipv6Addr], now: u64, ttl: u64) -> bool {
        let present: std::collections::HashMap<Ipv6Addr, &str> = view
            .members
            .iter()
            .map(|m| (m.address, m.public_key.as_str()))
            .collect();
        let mut changed = false;
        self.0.retain(|address, pin| {
            if present.contains_key(address) || contested.contains(address) {
                changed |= pin.absent_since.take().is_some();
                return true;
            }
            match pin.absent_since {
                None => {
                    pin.absent_since = Some(now);
                    changed = true;
                    true
                }
                Some(since) if now.saturating_sub(since) > ttl => {
                    changed = true;
                    false
                }
                Some(_) => true,
            }
        });
        for (address, key) in present {
            changed |= self.pin(address, key);
        }
        changed
    }
}

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
            dir: statedir::registry_dir(state_dir),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `identity.json`'s path (its existence means this node has enrolled).
    pub fn identity_path(&self) -> PathBuf {
        self.file(statedir::IDENTITY_FILE)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `identity.json`, `None` when absent (the node has not enrolled). An unreadable or invalid file is
    /// an error whose hint is the recovery: the identity (its peer token) cannot be rebuilt locally.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        read_json(&self.identity_path()).map_err(|mut e| {
            e.hint = format!(
                "restore identity.json from a backup; otherwise this node's registry identity is lost: remove \
                 the peer in the registry, delete {}, and restart sdwand to enroll again (needs \
                 registry.enrollment_token_file)",
                self.dir.display()
            );
            e
        })
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

    /// `network.json` at start. It is a cache of the registry: when it cannot be read or parsed it is
    /// moved aside (`network.json.corrupt-<unix seconds>`) with an error logged, and `None` is returned
    /// (the watch then asks the registry for everything).
    pub fn network_or_set_aside(&self, now: u64) -> Option<MembersResponse> {
        self.network().unwrap_or_else(|e| {
            self.set_aside(
                "network.json",
                now,
                &e,
                "the registry view is fetched again from revision 0",
            );
            None
        })
    }

    /// `pins.json` at start. When it cannot be read or parsed it is moved aside
    /// (`pins.json.corrupt-<unix seconds>`) with an error logged, and the pins are rebuilt from `view`'s
    /// members (all of which were pinned when the view was accepted); pins of members absent from it are
    /// lost, so those addresses are trusted on first use again.
    pub fn pins_or_rebuild(&self, view: &MembersResponse, now: u64) -> Pins {
        self.pins().unwrap_or_else(|e| {
            self.set_aside(
                "pins.json",
                now,
                &e,
                "pins are rebuilt from the stored view; members absent from it are trusted on first use again",
            );
            let mut pins = Pins::new();
            pins.refresh(view, &[], now, PIN_TTL_SECS);
            pins
        })
    }

    fn set_aside(&self, name: &str, now: u64, error: &StateError, consequence: &str) {
        let from = self.file(name);
        let to = self.file(&format!("{name}.corrupt-{now}"));
        let what = format!("{} {}", error.path.display(), error.reason);
        match fs::rename(&from, &to) {
            Ok(()) => tracing::error!(
                moved_to = %to.display(),
                "{what}; moved it aside and starting without it: {consequence}"
            ),
            Err(rename) => tracing::error!(
                "{what}; moving it aside to {} failed too ({rename}); starting without it: {consequence}",
                to.display()
            ),
        }
    }

    /// Writes `pins.json` (before the view that relies on them: a view is never on disk without its pins).
    pub fn save_pins(&self, pins: &Pins) -> Result<(), StateError> {
        self.write_json("pins.json", pins)
    }

    /// Writes `network.json`.
    pub fn save_network(&self, view: &MembersResponse) -> Result<(), StateError> {
        self.write_json("network.json", view)
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.file(name);
        let fail = |what: &str, e: &dyn std::fmt::Display| StateError {
            path: path.clone(),
            reason: format!("{what}: {e}"),
            hint: format!(
                "make {} writable by sdwand, with free space (daemon.state_dir)",
                self.dir.display()
            ),
        };
        create_dir(&self.dir).map_err(|e| fail("creating the directory", &e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::wire::MemberView;
    use crate::vocab::Lifecycle;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const K1: &str = "i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=";
    const K2: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";

    fn view(members: &[(&str, &str)]) -> MembersResponse {
        MembersResponse {
            network_id: "n1".into(),
            revision: 3,
            overlay_prefix: Some("fd00:5d::/48".parse().unwrap()),
            vip_pool: None,
            overlay_prefix_v4: None,
            pod_pools: Vec::new(),
            site_ranges: Vec::new(),
            members: members
                .iter()
                .map(|(addr, key)| MemberView {
                    peer_id: format!("id-{addr}"),
                    name: format!("m-{}", addr.replace(':', "")),
                    public_key: (*key).into(),
                    endpoint: None,
                    address: addr.parse().unwrap(),
                    routed_prefixes: vec![],
                    address_v4: None,
                    prefixes: Vec::new(),
                    lifecycle: Lifecycle::Spot,
                    roles: vec![],
                    last_seen_ms: 0,
                })
                .collect(),
            vips: vec![],
            floating: Vec::new(),
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_corrupt_network_json_is_moved_aside() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path());
        assert_eq!(state.network_or_set_aside(1), None, "absent: nothing to move");
        state.save_network(&view(&[("fd00:5d::1", K1)])).unwrap();
        let path = state.path().join("network.json");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(state.network_or_set_aside(1234), None);
        assert_eq!(files(state.path()), ["network.json.corrupt-1234"]);
        assert_eq!(
            fs::read(state.path().join("network.json.corrupt-1234")).unwrap(),
            &bytes[..10],
            "kept for inspection"
        );
    }

    #[test]
    fn corrupt_pins_are_rebuilt_from_the_view_and_a_corrupt_identity_names_the_recovery() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path());
        fs::create_dir_all(state.path()).unwrap();
        fs::write(state.path().join("pins.json"), "{\"fd00:5d::1\": 7").unwrap();
        let pins = state.pins_or_rebuild(&view(&[("fd00:5d::1", K1)]), 99);
        assert_eq!(pins.key(&"fd00:5d::1".parse().unwrap()), Some(K1));
        assert_eq!(pins.len(), 1);
        assert_eq!(files(state.path()), ["pins.json.corrupt-99"]);

        fs::write(state.path().join("identity.json"), "{\"peer_id\": \"p\"}").unwrap();
        let e = state.identity().unwrap_err().to_string();
        assert!(e.contains("identity.json") && e.contains("is not valid"), "{e}");
        assert!(
            e.contains("remove the peer in the registry") && e.contains("enroll again"),
            "{e}"
        );
    }

    #[test]
    fn pins_of_the_old_format_still_load() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path());
        fs::create_dir_all(state.path()).unwrap();
        fs::write(
            state.path().join("pins.json"),
            format!("{{\"fd00:5d::1\": \"{K1}\", \"fd00:5d::2\": {{\"key\": \"{K2}\", \"absent_since\": 5}}}}"),
        )
        .unwrap();
        let pins = state.pins().unwrap();
        assert_eq!(pins.key(&"fd00:5d::1".parse().unwrap()), Some(K1));
        let p2 = pins.iter().nth(1).unwrap().1;
        assert_eq!((p2.key.as_str(), p2.absent_since), (K2, Some(5)));
    }

    #[test]
    fn pins_of_absent_members_expire_and_nothing_changes_without_a_change() {
        let mut pins = Pins::new();
        let both = view(&[("fd00:5d::1", K1), ("fd00:5d::2", K2)]);
        let one = view(&[("fd00:5d::1", K1)]);
        assert!(pins.refresh(&both, &[], 1000, 100));
        assert!(!pins.refresh(&both, &[], 1001, 100), "same view: nothing to write");
        assert!(pins.refresh(&one, &[], 1010, 100), "::2 starts being absent");
        assert!(!pins.refresh(&one, &[], 1050, 100));
        assert!(pins.refresh(&both, &[], 1060, 100), "back: absence cleared");
        assert!(pins.refresh(&one, &[], 1070, 100));
        assert!(!pins.refresh(&one, &[], 1170, 100), "absent exactly the TTL: kept");
        assert_eq!(pins.len(), 2);
        let two: Ipv6Addr = "fd00:5d::2".parse().unwrap();
        let mut contested = pins.clone();
        assert!(pins.refresh(&one, &[], 1171, 100), "absent longer: forgotten");
        assert_eq!(pins.len(), 1);
        assert_eq!(pins.key(&two), None);
        // Listed all along with another key (refused): the pin never expires.
        assert!(contested.refresh(&one, &[two], 1171, 100), "absence cleared");
        assert!(!contested.refresh(&one, &[two], 100_000, 100));
        assert_eq!(contested.key(&two), Some(K2));
    }

    #[test]
    fn write_atomic_never_follows_or_reuses_a_planted_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        // The old predictable temp names, planted as a symlink and as a world-readable file.
        std::os::unix::fs::symlink(&victim, dir.path().join(".network.json.tmp")).unwrap();
        fs::write(dir.path().join(".network.json.0.tmp"), "old").unwrap();
        fs::set_permissions(
            dir.path().join(".network.json.0.tmp"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write_atomic(&path, b"{}").unwrap();
        write_atomic(&path, b"{\"a\":1}").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            files(dir.path()),
            [".network.json.0.tmp", ".network.json.tmp", "network.json", "victim"],
            "no temp file of ours is left behind"
        );
        // A target that is a symlink is replaced by the rename, its target untouched.
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a directory fails after the temp file was written.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), "").unwrap();
        assert!(write_atomic(&path, b"{}").is_err());
        assert_eq!(files(dir.path()), ["taken"]);
    }
}
