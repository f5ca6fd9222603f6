//! Room in the host's ARP table for a large lab.
//!
//! Linux keeps one IPv4 neighbour table for all network namespaces, and its limits
//! (`net.ipv4.neigh.default.gc_thresh2` / `gc_thresh3`, 512 / 1024 by default) exist only in the initial
//! namespace and count the entries of every namespace together. A lab of N peers on one bridge needs
//! N × (N − 1) entries once every pair has talked: 2450 for 50 peers. Past `gc_thresh3` the kernel refuses
//! new entries, `sendmsg` fails with `ENOBUFS` (`UdpSndbufErrors` in the peers' namespaces) and those pairs
//! never complete a WireGuard handshake, so `Lab::up` times out (seen here: 500 of 2450 pairs still missing
//! after 180 s). The lab library does not handle this; [`NeighLimits`] raises both limits for the run and
//! puts the old values back when dropped (also on error and Ctrl-C).

use std::fs;

use crate::error::{BenchError, Result};

/// The soft limit (above it, entries older than 5 s are collected).
const THRESH2: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh2";
/// The hard limit.
const THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";

/// Entries left for everything else on the machine (other labs, the host itself).
const HEADROOM: u64 = 512;

/// The limits this guard raised, and the values to put back.
#[derive(Debug)]
pub struct NeighLimits {
    /// `(path, old value, value set)` of each limit raised.
    raised: Vec<(&'static str, u64, u64)>,
}

impl NeighLimits {
    /// Makes sure a lab of `peers` peers fits under `gc_thresh3` next to [`HEADROOM`] other entries; if it
    /// does not, raises `gc_thresh3` and `gc_thresh2` to the next power of two above that (never lowers
    /// them). Says on stderr what it changed.
    pub fn ensure(peers: usize) -> Result<Self> {
        let n = peers as u64;
        let need = n * n.saturating_sub(1) + HEADROOM;
        let mut guard = NeighLimits { raised: Vec::new() };
        if read(THRESH3)? >= need {
            return Ok(guard);
        }
        let want = need.next_power_of_two();
        for path in [THRESH3, THRESH2] {
            let old = read(path)?;
            if old < want {
                write(path, want)?;
                eprintln!(
                    "raised {} from {old} to {want} for a {peers}-peer lab (restored at the end)",
                    name(path)
                );
                guard.raised.push((path, old, want));
            }
        }
        Ok(guard)
    }
}

impl Drop for NeighLimits {
    fn drop(&mut self) {
        // gc_thresh2 first, so it never exceeds gc_thresh3 on the way down.
        for (path, old, set) in self.raised.drain(..).rev() {
            match read(path) {
                // Someone else changed it meanwhile: theirs stays.
                Ok(now) if now != set => {
                    eprintln!("{} is {now}, not the {set} the bench set: left as it is", name(path))
                }
                _ => {
                    if let Err(e) = write(path, old) {
                        eprintln!("sdwand-bench: restoring {}: {e}", name(path));
                    }
                }
            }
        }
    }
}

fn name(path: &str) -> String {
    path.trim_start_matches("/proc/sys/").replace('/', ".")
}

fn read(path: &'static str) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(|e| BenchError::io(format!("reading {path}"), e))?;
    text.trim()
        .parse()
        .map_err(|_| BenchError::Usage(format!("{path} holds {text:?}, not a number")))
}

fn write(path: &'static str, value: u64) -> Result<()> {
    fs::write(path, format!("{value}\n")).map_err(|e| BenchError::io(format!("writing {value} to {path}"), e))
}
