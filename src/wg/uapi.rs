//! The userspace implementation's UAPI socket: where it lives and who serves it.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Directory of the UAPI sockets. It is one path for every network namespace on the machine, so two
/// interfaces of the same name in two namespaces would share a socket: give each a unique name.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Path of the UAPI socket of interface `iface`.
pub fn socket_path(iface: &str) -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("{iface}.sock"))
}

/// PID of the process serving `iface`'s UAPI socket, read with `SO_PEERCRED`.
///
/// `Ok(None)` when no socket file exists or nothing listens on it (a stale socket).
pub fn server_pid(iface: &str) -> io::Result<Option<u32>> {
    let stream = match UnixStream::connect(socket_path(iface)) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and sized for SO_PEERCRED's `struct ucred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(cred.pid).ok().filter(|pid| *pid > 0))
}
