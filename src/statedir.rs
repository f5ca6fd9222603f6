//! The state directory's one writer: creating the directory (mode 0700, [`create_dir`]) and durable,
//! atomic writes of the small private files in it and beside it (client state files, the key, the
//! incarnation, the k3s drop-in): after a crash a file holds its old or its new contents, never a mix,
//! never an empty file, and nothing planted beside it (a symlink, a leftover temporary file with a wider
//! mode) is followed or reused.
//!
//! It decides no file's contents, and names only the paths more than one module must find: the registry
//! client's directory and its identity file (the key file refuses to make a new key once a node has
//! enrolled). Every other file is named by its owner. It must not grow readers or formats; it stays the
//! mechanism.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The registry client's directory inside the state directory `state_dir`.
pub fn registry_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("registry")
}

/// The registry identity of a node whose state directory is `state_dir`: its existence means the node
/// has enrolled.
pub fn identity_file(state_dir: &Path) -> PathBuf {
    registry_dir(state_dir).join(IDENTITY_FILE)
}

/// The identity file's name in [`registry_dir`].
pub const IDENTITY_FILE: &str = "identity.json";

/// Creates `dir` and its missing parents with mode 0700 (an existing directory is left as it is).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `bytes` to `path` atomically with mode 0600: a new temporary file in the same directory (a
/// random name, created exclusively and without following symlinks, so nothing planted or left over is
/// reused), fchmod 0600, write, fsync, rename over `path`, fsync of the directory. The temporary file is
/// removed when a step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    place(path, bytes, Place::Replace)
}

/// Like [`write_atomic`], but only creates: the temporary file is hard-linked to `path`, which fails with
/// `AlreadyExists` when `path` exists, so a file created meanwhile by someone else is never overwritten.
/// The temporary file is always removed.
pub fn create_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    place(path, bytes, Place::CreateNew)
}

/// How the written temporary file takes `path`'s place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Rename over whatever is at `path`.
    Replace,
    /// Hard-link to `path`, which must not exist.
    CreateNew,
}

fn place(path: &Path, bytes: &[u8], how: Place) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = create_temp(dir, &name)?;
    let placed = (|| {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        match how {
            Place::Replace => fs::rename(&tmp, path),
            Place::CreateNew => fs::hard_link(&tmp, path),
        }
    })();
    // A rename took the temporary name away; a link, or a failure, left it behind.
    if how == Place::CreateNew || placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir/.<name>.<random>.tmp` with `O_EXCL | O_NOFOLLOW`, mode 0600; retries a few names if one
/// exists.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let mut last = None;
    for _ in 0..8 {
        let suffix = getrandom::u64().map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
        let tmp = dir.join(format!(".{name}.{suffix:016x}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}
