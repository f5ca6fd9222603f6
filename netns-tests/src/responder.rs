//! The echo responder: a tiny UDP service in every VIP candidate's namespace that stands for "the thing
//! behind the VIP" (the k3s API in production). It is bound to `[VIP]:9099` with `IPV6_FREEBIND`, so it can
//! bind before the address exists and answers only while the address is on its node; every answer carries
//! the node's name, so a client sees *who* served each request.
//!
//! It runs as the hidden `sdwan-lab responder` subcommand, started with `ip netns exec` in a session of its
//! own (it outlives the `sdwan-lab up` that started it), recorded by PID and start time in the state file
//! and stopped by `down` like the daemons. Its loop ends on its own once the lab's state directory is gone.
//!
//! Protocol: a request is `LPRB` + sequence number (u64, big-endian); the answer is the request followed by
//! the node name (UTF-8).

use std::fs;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::cmd::{self, in_netns};
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::layout::{self, Layout};
use crate::process::ProcId;

/// First four bytes of every request and answer.
pub const MAGIC: [u8; 4] = *b"LPRB";
/// Length of a request.
pub const REQUEST_LEN: usize = 12;
/// What the responder writes to its log once it is bound (the lab waits for it).
const READY_LINE: &str = "listening on";

/// A request for sequence number `seq`.
pub fn encode_request(seq: u64) -> [u8; REQUEST_LEN] {
    let mut out = [0; REQUEST_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// The sequence number of a well-formed request.
pub fn decode_request(buf: &[u8]) -> Option<u64> {
    if buf.len() != REQUEST_LEN || buf[..4] != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(buf[4..].try_into().ok()?))
}

/// The answer to request `seq` from node `node`.
pub fn encode_reply(seq: u64, node: &str) -> Vec<u8> {
    let mut out = encode_request(seq).to_vec();
    out.extend_from_slice(node.as_bytes());
    out
}

/// `(seq, node)` of a well-formed answer.
pub fn decode_reply(buf: &[u8]) -> Option<(u64, String)> {
    let seq = decode_request(buf.get(..REQUEST_LEN)?)?;
    let node = std::str::from_utf8(&buf[REQUEST_LEN..]).ok()?;
    (!node.is_empty()).then(|| (seq, node.to_owned()))
}

/// Serves requests on `bind` (in the current namespace) as `node` until `lab_dir` disappears (checked every
/// second). Binds with `IP(V6)_FREEBIND`, so the address need not exist yet.
pub fn serve(bind: SocketAddr, node: &str, lab_dir: &Path) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.bind(&bind.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    eprintln!("sdwan-lab responder: {node} {READY_LINE} {bind}");
    let mut buf = [0u8; 512];
    while lab_dir.exists() {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(seq) = decode_request(&buf[..n]) {
                    // The address may vanish between receive and send (a move): a lost answer, not an error.
                    let _ = socket.send_to(&encode_reply(seq, node), from);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    eprintln!("sdwan-lab responder: {} is gone; exiting", lab_dir.display());
    Ok(())
}

impl Lab {
    /// Starts the echo responder in peer `i`'s namespace, bound to `[VIP]:9099`, and waits (at most 5 s)
    /// until it is bound. Fails if one already runs.
    pub fn start_responder(&mut self, i: usize) -> Result<ProcId> {
        let ns = self.netns(i)?;
        if let Some(id) = self.state.peers[i - 1].responder.filter(ProcId::is_alive) {
            return Err(LabError::Process(format!(
                "the responder of p{i} already runs (pid {})",
                id.pid
            )));
        }
        let bin = match &self.state.lab_bin {
            Some(bin) => bin.clone(),
            None => cmd::lab_bin()?,
        };
        let log_path = self.layout.responder_log(i);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LabError::io(format!("cannot open {}", log_path.display()), e))?;
        let offset = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let log_err = log
            .try_clone()
            .map_err(|e| LabError::io("cannot duplicate the log file", e))?;
        let bind = SocketAddr::from((layout::VIP_ADDR, layout::RESPONDER_PORT)).to_string();
        let dir = self.layout.state_dir().display().to_string();
        let name = Layout::peer_name(i);
        let bin_s = bin.display().to_string();
        let argv = [
            bin_s.as_str(),
            "responder",
            "--bind",
            &bind,
            "--node",
            &name,
            "--lab-dir",
            &dir,
        ];
        let mut command = in_netns(&ns, &argv);
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let mut child = cmd::spawn_detached(&mut command)?;
        let id = ProcId::of(child.id())
            .ok_or_else(|| LabError::Process(format!("the responder of p{i} vanished at once")))?;
        self.state.peers[i - 1].responder = Some(id);
        self.save()?;
        let read_log = || fs::read_to_string(&log_path).unwrap_or_default();
        let ready = crate::wait::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            read_log().get(offset..).is_some_and(|t| t.contains(READY_LINE)) || !id.is_alive()
        });
        let tail = || read_log().get(offset..).unwrap_or_default().to_owned();
        if !id.is_alive() {
            let status = child.wait().ok();
            self.state.peers[i - 1].responder = None;
            self.save()?;
            return Err(LabError::ProcessDied {
                what: format!(
                    "responder of p{i} (pid {}, {})",
                    id.pid,
                    crate::lab::describe_status(status)
                ),
                log_tail: Some(tail()),
            });
        }
        self.responders.insert(i, child);
        if let Err(t) = ready {
            return Err(LabError::Timeout {
                what: format!("responder of p{i} (pid {}) to bind {bind}", id.pid),
                waited: t.waited,
                details: tail(),
            });
        }
        Ok(id)
    }

    /// Stops peer `i`'s echo responder (SIGTERM, then SIGKILL after 2 s) if one runs.
    pub fn stop_responder(&mut self, i: usize) -> Result<()> {
        self.peer(i)?;
        if let Some(id) = self.state.peers[i - 1].responder.take() {
            id.stop(libc::SIGTERM, Duration::from_secs(2))
                .map_err(|e| LabError::io(format!("cannot stop the responder of p{i} (pid {})", id.pid), e))?;
        }
        if let Some(mut child) = self.responders.remove(&i) {
            let _ = child.wait();
        }
        self.save()
    }

    /// PID of peer `i`'s running echo responder.
    pub fn responder_pid(&self, i: usize) -> Result<Option<u32>> {
        Ok(self.peer(i)?.responder.filter(ProcId::is_alive).map(|id| id.pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        assert_eq!(decode_request(&encode_request(7)), Some(7));
        assert_eq!(
            decode_reply(&encode_reply(u64::MAX, "p2")),
            Some((u64::MAX, "p2".to_owned()))
        );
        assert_eq!(decode_request(b"LPRB"), None);
        assert_eq!(decode_request(&encode_reply(1, "p1")), None, "a reply is not a request");
        assert_eq!(decode_reply(&encode_request(1)), None, "a request names no node");
        let mut bad = encode_reply(1, "p1");
        bad[0] = b'X';
        assert_eq!(decode_reply(&bad), None);
    }

    #[test]
    fn serves_on_loopback_and_stops_with_the_lab_dir() {
        let dir = std::env::temp_dir().join(format!("sdwan-lab-responder-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Find a free port, then hand it to the responder.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bind: SocketAddr = ([127, 0, 0, 1], port).into();
        let d = dir.clone();
        let server = std::thread::spawn(move || serve(bind, "p9", &d));
        probe.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 64];
        let answer = crate::wait::wait_for(Duration::from_secs(5), Duration::from_millis(1), || {
            probe.send_to(&encode_request(3), bind).ok()?;
            let (n, _) = probe.recv_from(&mut buf).ok()?;
            decode_reply(&buf[..n])
        })
        .unwrap()
        .0;
        assert_eq!(answer, (3, "p9".to_owned()));
        fs::remove_dir(&dir).unwrap();
        server.join().unwrap().unwrap();
    }
}
