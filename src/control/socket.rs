//! The control socket's I/O: bind it (root-only, never over another daemon's), serve one request per
//! connection, and the client side `sdwanctl` uses. No decisions: requests go to the daemon loop.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, timeout_at, Instant};

use super::{code, Request, Response};

/// Longest request line the daemon reads, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long the daemon waits for a client's request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon loop has to take and answer a request before the client is told it is busy.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`call`] waits for the whole exchange; longer than [`ANSWER_TIMEOUT`], so a busy daemon is
/// reported as such rather than as a timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest response [`call`] reads (a status of ten thousand peers is a few MiB).
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;
/// How long [`bind`] waits for an existing socket to accept a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The time limits of one connection ([`READ_TIMEOUT`], [`ANSWER_TIMEOUT`]; shorter in tests).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// For the request line to arrive, and again for the answer to be written.
    pub(super) read: Duration,
    /// For the daemon loop to take and answer the request.
    pub(super) answer: Duration,
}

const LIMITS: Limits = Limits {
    read: READ_TIMEOUT,
    answer: ANSWER_TIMEOUT,
};

/// A parsed request with the channel its answer goes back on, as [`serve`] hands it to the daemon loop.
pub type Incoming = (Request, oneshot::Sender<Response>);

/// Why the control socket could not be bound or called.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing exists at the socket path.
    #[error("is sdwand running? (socket {path} not found; see daemon.control_socket, or pass --socket)", path = .path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// A socket file exists but nothing listens on it.
    #[error("is sdwand running? (nothing listens on {path}; the socket was left by an earlier run)", path = .path.display())]
    Stale {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket (or its directory) is root's.
    #[error("permission denied on {path}: run as root", path = .path.display())]
    PermissionDenied {
        /// The path that refused access.
        path: PathBuf,
    },
    /// Another daemon answers on the socket path.
    #[error("another sdwand is already listening on {path}; stop it first, or give this one another daemon.control_socket", path = .path.display())]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the socket path.
    #[error("{path} exists and is not a socket; refusing to replace it (remove it, or set daemon.control_socket to another path)", path = .path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon did not answer in time.
    #[error("no answer from sdwand on {path} within {}s (see `journalctl -u sdwand`)", CALL_TIMEOUT.as_secs(), path = .path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon's answer could not be read.
    #[error("unreadable answer from sdwand on {path}: {detail} (are sdwanctl and sdwand the same version?)", path = .path.display())]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// Any other I/O failure.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done, e.g. "cannot bind".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl ControlError {
    /// `source` from doing `op` to `path`; a refused permission becomes [`ControlError::PermissionDenied`].
    fn io(op: &'static str, path: &Path, source: io::Error) -> ControlError {
        let path = path.to_owned();
        match source.kind() {
            io::ErrorKind::PermissionDenied => ControlError::PermissionDenied { path },
            _ => ControlError::Io { op, path, source },
        }
    }
}

/// Binds the control socket at `path`, readable and writable by its owner only (mode 0600).
///
/// The parent directory is created (mode 0755) when missing. A socket already at `path` is probed first:
/// if a daemon answers, binding fails with [`ControlError::AlreadyRunning`]; otherwise the stale socket is
/// replaced. Anything other than a socket at `path` is left alone and refused. The socket is bound under a
/// temporary name in the same directory, restricted to 0600, then renamed into place, so no client can
/// connect while it is more open. Meant for start-up: the few file system calls block.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| ControlError::io("cannot create directory", dir, e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ControlError::NotASocket { path: path.to_owned() });
        }
        Ok(_) => match timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
            Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => {}
            Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => {
                return Err(ControlError::io("cannot probe existing socket", path, e));
            }
            // Connected, or a backlog so full that the probe could not be queued: someone listens.
            _ => return Err(ControlError::AlreadyRunning { path: path.to_owned() }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ControlError::io("cannot inspect", path, e)),
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // A leftover of an earlier process with this pid that died between bind and rename.
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(&tmp).map_err(|e| ControlError::io("cannot remove", &tmp, e))?;
    }
    let listener = UnixListener::bind(&tmp).map_err(|e| ControlError::io("cannot bind", &tmp, e))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ControlError::io("cannot restrict", &tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| ControlError::io("cannot move socket to", path, e)));
    if let Err(e) = placed {
        // Best effort: the error that matters is the one returned.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Accepts connections on `listener` forever, one task each: reads one request line, hands it to the
/// daemon loop through `requests`, and writes the answer back. Lines that are not requests are answered
/// [`code::BAD_REQUEST`] here; a closed channel or a dropped reply is answered [`code::SHUTTING_DOWN`], a
/// daemon loop that does not take or answer the request within [`ANSWER_TIMEOUT`] [`code::DAEMON_BUSY`].
/// A connection closed before sending anything (a liveness probe) gets no answer. Drop or abort the task
/// to stop serving.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Incoming>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, requests.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// One connection: request in, response out.
async fn connection(stream: UnixStream, requests: mpsc::Sender<Incoming>) {
    let (read, mut write) = stream.into_split();
    let Some(response) = answer(read, &requests, LIMITS).await else {
        return;
    };
    let line = encode(&response);
    let sent = timeout(LIMITS.read, async {
        write.write_all(&line).await?;
        write.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "control socket: client left before the answer"),
        Err(_) => tracing::debug!("control socket: client did not read the answer in time"),
    }
}

/// The answer to the request read from `read`; `None` when there is nobody to answer.
pub(super) async fn answer(
    read: impl AsyncRead + Unpin,
    requests: &mpsc::Sender<Incoming>,
    limits: Limits,
) -> Option<Response> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    match timeout(limits.read, reader.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Some(Response::error(
                code::BAD_REQUEST,
                format!("no request line within {:?}", limits.read),
            ));
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "control socket: reading the request failed");
            return None;
        }
        Ok(Ok(0)) => return None,
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST {
        return Some(Response::error(
            code::BAD_REQUEST,
            format!("request line longer than {MAX_REQUEST} bytes"),
        ));
    }
    let request = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => request,
        Err(e) => return Some(Response::error(code::BAD_REQUEST, format!("not a request: {e}"))),
    };
    tracing::debug!(?request, "control socket: request");
    let deadline = Instant::now() + limits.answer;
    let busy = || {
        Response::error(
            code::DAEMON_BUSY,
            format!("the daemon did not answer within {:?}; try again", limits.answer),
        )
    };
    let stopping = || Response::error(code::SHUTTING_DOWN, "sdwand is shutting down");
    let (reply, answer) = oneshot::channel();
    match timeout_at(deadline, requests.send((request, reply))).await {
        Err(_) => return Some(busy()),
        Ok(Err(_)) => return Some(stopping()),
        Ok(Ok(())) => {}
    }
    Some(match timeout_at(deadline, answer).await {
        Err(_) => busy(),
        Ok(Err(_)) => stopping(),
        Ok(Ok(response)) => response,
    })
}

/// `value` as one JSON line.
fn encode(value: &impl serde::Serialize) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(value).expect("control messages serialize: no maps with non-string keys, no custom impls");
    line.push(b'\n');
    line
}

/// Sends `request` to the daemon listening on `path` and returns its answer, within [`CALL_TIMEOUT`].
pub async fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    timeout(CALL_TIMEOUT, exchange(path, request))
        .await
        .unwrap_or_else(|_| Err(ControlError::Timeout { path: path.to_owned() }))
}

/// [`call`] without the time limit.
async fn exchange(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let stream = UnixStream::connect(path).await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ControlError::NotRunning { path: path.to_owned() },
        io::ErrorKind::ConnectionRefused => ControlError::Stale { path: path.to_owned() },
        _ => ControlError::io("cannot connect to", path, e),
    })?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(&encode(request))
        .await
        .map_err(|e| ControlError::io("cannot send the request to", path, e))?;
    let mut line = Vec::new();
    BufReader::new(read.take(MAX_RESPONSE))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| ControlError::io("cannot read the answer from", path, e))?;
    let protocol = |detail: String| ControlError::Protocol {
        path: path.to_owned(),
        detail,
    };
    if line.is_empty() {
        return Err(protocol("the connection closed without an answer".to_owned()));
    }
    if line.len() as u64 == MAX_RESPONSE && !line.ends_with(b"\n") {
        return Err(protocol(format!("longer than {MAX_RESPONSE} bytes")));
    }
    serde_json::from_slice(&line).map_err(|e| protocol(e.to_string()))
}
