//! The node's private key file: read it, or create it (mode 0600) when it is missing. Creation is crash
//! safe (a temp file, fsync, an exclusive link into place, fsync of the directory), so a crash never
//! leaves an empty key file. A node enrolled in a registry never gets a new key: its identity is bound to
//! the old one.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wireguard_control::Key;

use crate::config::Config;
use crate::statedir;

/// Why the private key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file is readable by group or other.
    #[error("private key file {path} has mode {mode:04o}, readable by group or others; refusing to use it (fix: chmod 600 {path}, and consider the key leaked if others could read it)", path = .path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("private key file {path} does not hold a base64 WireGuard key (fix: write one with `wg genkey > {path}`, or delete the file to let sdwand create one)", path = .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The node enrolled in a registry with a key, and the key file is missing, empty or malformed.
    #[error("private key file {path} is missing, empty or not a WireGuard key, but this node enrolled in its registry with the key it held ({identity} exists): the node's identity is lost (fix: restore the key file from a backup; otherwise remove this peer in the registry, delete {state}, and restart sdwand to enroll again with a new key)", path = .path.display(), identity = .identity.display(), state = .identity.parent().unwrap_or(Path::new(".")).display())]
    IdentityLost {
        /// The key file.
        path: PathBuf,
        /// The identity file that proves the enrollment.
        identity: PathBuf,
    },
    /// The file is missing and may not be created (check-config).
    #[error("private key file {path} does not exist (sdwand creates it, mode 0600, when it starts)", path = .path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Reading or creating failed.
    #[error("private key file {path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The key of the node `config` describes: as [`load`], except that on a node enrolled in a registry
/// (its `identity.json` exists) a missing, empty or malformed key file is [`KeyFileError::IdentityLost`]
/// and no new key is created.
pub fn load_node_key(config: &Config, create: bool) -> Result<Key, KeyFileError> {
    let path = &config.interface.private_key_file;
    let identity = config
        .registry
        .as_ref()
        .map(|_| statedir::identity_file(&config.daemon.state_dir))
        .filter(|p| p.exists());
    match (load(path, create && identity.is_none()), identity) {
        (Err(KeyFileError::Malformed { .. } | KeyFileError::Missing { .. }), Some(identity)) => {
            Err(KeyFileError::IdentityLost {
                path: path.clone(),
                identity,
            })
        }
        (result, _) => result,
    }
}

/// Reads the key at `path`. When the file is missing and `create` is set, a new key is generated and
/// written with mode 0600 (parent directories are created with mode 0700) through a temp file that is
/// fsynced and then linked into place exclusively, so a concurrent creator never gets its key overwritten
/// and a crash leaves either no key file or a complete one.
pub fn load(path: &Path, create: bool) -> Result<Key, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
            let text = fs::read_to_string(path).map_err(io_err)?;
            Key::from_base64(text.trim()).map_err(|_| KeyFileError::Malformed { path: path.to_owned() })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            if let Some(dir) = path.parent() {
                statedir::create_dir(dir).map_err(io_err)?;
            }
            let key = Key::generate_private();
            match install(path, &key) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "created a new private key");
                    Ok(key)
                }
                // Someone else created it meanwhile: theirs is the key.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load(path, false),
                Err(e) => Err(io_err(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeyFileError::Missing { path: path.to_owned() }),
        Err(e) => Err(io_err(e)),
    }
}

/// Creates the key file durably with mode 0600 ([`crate::statedir::create_atomic`]): fails with
/// `AlreadyExists` if `path` exists, so a concurrent creator's key is never overwritten.
fn install(path: &Path, key: &Key) -> io::Result<()> {
    statedir::create_atomic(path, format!("{}\n", key.to_base64()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_then_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/private.key");
        assert!(matches!(load(&path, false), Err(KeyFileError::Missing { .. })));
        let created = load(&path, true).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load(&path, false).unwrap(), created);
    }

    #[test]
    fn refuses_group_readable_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, format!("{}\n", Key::generate_private().to_base64())).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&path, true).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen { mode: 0o640, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not a key").unwrap();
        assert!(matches!(load(&path, true), Err(KeyFileError::Malformed { .. })));
    }

    fn node(dir: &Path) -> Config {
        let d = dir.display();
        let text = format!(
            "[interface]\nname = \"sdw0\"\nprivate_key_file = \"{d}/key/private.key\"\n\
             [daemon]\nstate_dir = \"{d}/state\"\n[registry]\nurl = \"https://reg\"\n"
        );
        crate::config::parse(Path::new("/etc/sdwand/sdwand.toml"), &text).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn creation_goes_through_a_temp_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        let first = load(&path, true).unwrap();
        assert_eq!(names(dir.path()), ["private.key"], "no temp file left");
        let err = install(&path, &Key::generate_private()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(load(&path, true).unwrap(), first, "the existing key is kept");
        assert_eq!(names(dir.path()), ["private.key"], "the losing temp file is removed");
    }

    #[test]
    fn an_enrolled_node_never_gets_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = node(dir.path());
        let key = load_node_key(&cfg, true).unwrap();
        assert_eq!(load_node_key(&cfg, true).unwrap(), key);
        let identity = statedir::identity_file(&cfg.daemon.state_dir);
        fs::create_dir_all(identity.parent().unwrap()).unwrap();
        fs::write(&identity, "{}").unwrap();
        // A crash of an older sdwand left an empty key file.
        fs::write(&cfg.interface.private_key_file, "").unwrap();
        let err = load_node_key(&cfg, true).unwrap_err();
        assert!(matches!(err, KeyFileError::IdentityLost { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("identity is lost") && text.contains("enroll again"),
            "{text}"
        );
        assert!(!text.contains("delete the file"), "{text}");
        // Missing: not recreated.
        fs::remove_file(&cfg.interface.private_key_file).unwrap();
        assert!(matches!(
            load_node_key(&cfg, true),
            Err(KeyFileError::IdentityLost { .. })
        ));
        assert!(!cfg.interface.private_key_file.exists());
    }
}
