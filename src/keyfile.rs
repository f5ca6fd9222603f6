//! The node's private key file: read it, or create it (mode 0600) when it is missing.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wireguard_control::Key;

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

/// Reads the key at `path`. When the file is missing and `create` is set, a new key is generated and
/// written with mode 0600 (parent directories are created with mode 0700); the write is exclusive, so a
/// concurrent creator never gets its key overwritten.
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
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err)?;
            }
            let key = Key::generate_private();
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
            file.write_all(format!("{}\n", key.to_base64()).as_bytes())
                .map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            tracing::info!(path = %path.display(), "created a new private key");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeyFileError::Missing { path: path.to_owned() }),
        Err(e) => Err(io_err(e)),
    }
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
}
