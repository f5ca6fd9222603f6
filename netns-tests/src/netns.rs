//! Running code inside a peer's network namespace from this process: a dedicated thread joins the namespace
//! with `setns(CLONE_NEWNET)` (which moves only the calling thread) and does the work there. Used for the
//! metrics scrape, the probe client and crafted datagrams, so none of them needs a subprocess.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::{self, JoinHandle};

use crate::error::{LabError, Result};
use crate::lab::Lab;

/// Starts `f` on a new thread inside network namespace `netns` (by name, `/run/netns/NAME`). The namespace
/// is opened before the thread starts, so a missing one is an error here.
pub fn spawn_in<T, F>(netns: &str, f: F) -> Result<JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = Path::new("/run/netns").join(netns);
    let ns = File::open(&path).map_err(|e| LabError::io(format!("cannot open {}", path.display()), e))?;
    thread::Builder::new()
        .name(format!("netns {netns}"))
        .spawn(move || {
            // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this thread, which ends with `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            drop(ns);
            f()
        })
        .map_err(|e| LabError::io(format!("cannot start a thread for {netns}"), e))
}

/// Runs `f` inside `netns` and waits for it; `what` names the work in errors.
pub fn run_in<T, F>(netns: &str, what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    spawn_in(netns, f)?
        .join()
        .map_err(|_| LabError::Process(format!("{what} in {netns}: the thread panicked")))?
        .map_err(|e| LabError::io(format!("{what} in {netns}"), e))
}

impl Lab {
    /// Sends each of `payloads` as one UDP datagram from peer `i`'s namespace to `to`, from a socket bound
    /// to `from` (port 0: any). For crafted or malformed datagrams; nothing is read back.
    pub fn send_udp(&self, i: usize, from: SocketAddr, to: SocketAddr, payloads: &[Vec<u8>]) -> Result<()> {
        let ns = self.netns(i)?;
        let payloads = payloads.to_vec();
        run_in(&ns, &format!("UDP from {from} to {to}"), move || {
            let socket = UdpSocket::bind(from)?;
            for p in &payloads {
                socket.send_to(p, to)?;
            }
            Ok(())
        })
    }
}
