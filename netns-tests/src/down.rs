//! Removing a lab by name: [`Lab::down`] and [`Lab::teardown`]. Works on a partial lab and on none at all, and
//! never signals a process it cannot identify as the lab's own.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::layout::Layout;
use crate::process::{self, ProcId};
use crate::state::LabState;

/// What `down` removed, and what it found but left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// Processes stopped, as `(what, pid)`.
    pub stopped: Vec<(String, u32)>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Stale UAPI sockets removed.
    pub sockets: Vec<PathBuf>,
    /// Whether the state directory was removed.
    pub state_dir_removed: bool,
    /// Things `down` saw but would not or could not remove (e.g. a process it did not start).
    pub warnings: Vec<String>,
}

impl DownReport {
    /// Whether there was nothing to remove.
    pub fn removed_nothing(&self) -> bool {
        self.stopped.is_empty() && self.namespaces.is_empty() && self.sockets.is_empty() && !self.state_dir_removed
    }
}

impl Lab {
    /// Removes this lab (see [`Lab::down`]) and reaps the daemons this value started.
    pub fn teardown(mut self) -> Result<DownReport> {
        let report = Lab::down(self.name());
        for (_, mut child) in self.children.drain().chain(self.responders.drain()) {
            // Stopped by `down` (or earlier); a child that somehow survived is killed rather than leaked.
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        for (_, mut child) in self.registry_children.drain().chain(self.etcd_children.drain()) {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        report
    }

    /// Removes everything a lab called `name` created, even a partial one, and succeeds when there is
    /// nothing: its daemons and the `wireguard-go`s serving its interfaces (only processes it recorded, or
    /// that serve this lab's own UAPI sockets and are called `wireguard-go`; each identified by PID and start
    /// time before it is signalled), its namespaces (which takes the links with them), stale UAPI sockets,
    /// and its state directory.
    pub fn down(name: &str) -> Result<DownReport> {
        let layout = Layout::new(name)?;
        if !cmd::is_root() {
            return Err(LabError::NotRoot);
        }
        let mut report = DownReport::default();
        let state = match LabState::read(&layout.state_file()) {
            Ok(s) => Some(s),
            Err(_) if !layout.state_file().exists() => None,
            Err(e) => {
                report
                    .warnings
                    .push(format!("{e}; stopping only what can be found by name"));
                None
            }
        };
        if let Some(state) = &state {
            // While the peers' namespaces still hold the bridge and the host ends of the veths.
            crate::pods::del_all(&layout, &state.pods, &mut report.warnings);
            stop_recorded(state, &mut report);
        }
        stop_serving_wireguard_go(&layout, &mut report);
        for ns in cmd::netns_list()?.into_iter().filter(|ns| layout.owns_netns(ns)) {
            match cmd::netns_pids(&ns) {
                Ok(pids) if !pids.is_empty() => report.warnings.push(format!(
                    "processes the lab did not start still run in {ns} (pids {pids:?}); it disappears when they exit"
                )),
                _ => {}
            }
            cmd::ip(&["netns", "del", &ns])?;
            report.namespaces.push(ns);
        }
        remove_stale_sockets(&layout, &mut report);
        let dir = layout.state_dir();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| LabError::io(format!("cannot remove {}", dir.display()), e))?;
            report.state_dir_removed = true;
        }
        Ok(report)
    }
}

/// The UAPI sockets of this lab's interfaces (`/var/run/wireguard/NAME-pI.sock`).
pub(crate) fn lab_sockets(layout: &Layout) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(sdwand::wg::uapi::SOCKET_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_suffix(".sock")
                .is_some_and(|iface| layout.peer_index_of(iface).is_some())
        })
        .map(|e| e.path())
        .collect()
}

/// Stops the daemons and background processes recorded in the state file: SIGTERM to every daemon at once
/// (then SIGCONT, so a daemon frozen by a test handles it), up to 5 s for them to exit (they tear down their
/// data plane), then SIGKILL. Then the responders, background processes, the registry replicas, the etcd
/// members and `wireguard-go`s. (etcd's data directories go with the state directory.)
fn stop_recorded(state: &LabState, report: &mut DownReport) {
    let daemons: Vec<(String, ProcId)> = state
        .peers
        .iter()
        .filter_map(|p| p.sdwand.map(|id| (format!("sdwand of p{}", p.index), id)))
        .filter(|(_, id)| id.is_alive())
        .collect();
    for (_, id) in &daemons {
        let _ = id.signal(libc::SIGTERM);
        let _ = id.signal(libc::SIGCONT);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (what, id) in &daemons {
        let gone = id.wait_gone(deadline.saturating_duration_since(Instant::now()))
            || id.stop(libc::SIGKILL, Duration::ZERO).unwrap_or(false);
        if !gone {
            report.warnings.push(format!("{what} (pid {}) did not exit", id.pid));
        }
        report.stopped.push((what.clone(), id.pid));
    }
    let responders = state
        .peers
        .iter()
        .filter_map(|p| p.responder.map(|id| (format!("responder of p{}", p.index), id)));
    // The registry replicas before the etcd members they store in.
    let registry = state.registry.iter().flat_map(|r| {
        let replicas = (1..=r.replica_count()).filter_map(|i| {
            let what = match i {
                1 => "the registry".to_owned(),
                _ => format!("registry replica {i}"),
            };
            r.replica_process(i).map(|id| (what, id))
        });
        let etcd = r
            .etcd
            .iter()
            .enumerate()
            .filter_map(|(m, id)| id.map(|id| (format!("etcd member e{}", m + 1), id)));
        replicas.chain(etcd).collect::<Vec<_>>()
    });
    let others = state
        .background
        .iter()
        .map(|id| ("background process".to_owned(), *id))
        .chain(responders)
        .chain(registry);
    let wgs = state.peers.iter().flat_map(|p| {
        p.wireguard_go
            .iter()
            .map(move |id| (format!("wireguard-go of p{}", p.index), *id))
    });
    for (what, id) in others.chain(wgs).filter(|(_, id)| id.is_alive()) {
        stop_one(&what, id, report);
    }
}

/// Stops the `wireguard-go` still serving any of this lab's interfaces (the socket name is the lab's own).
fn stop_serving_wireguard_go(layout: &Layout, report: &mut DownReport) {
    for sock in lab_sockets(layout) {
        let iface = sock
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(Some(pid)) = sdwand::wg::uapi::server_pid(&iface) else {
            continue;
        };
        let Some(id) = ProcId::of(pid) else { continue };
        match process::comm(pid).as_deref() {
            Some("wireguard-go") => stop_one(&format!("wireguard-go of {iface}"), id, report),
            other => report.warnings.push(format!(
                "{} is served by pid {pid} ({other:?}), not wireguard-go: left alone",
                sock.display()
            )),
        }
    }
}

fn stop_one(what: &str, id: ProcId, report: &mut DownReport) {
    match id.stop(libc::SIGTERM, Duration::from_secs(2)) {
        Ok(true) => report.stopped.push((what.to_owned(), id.pid)),
        Ok(false) => report.warnings.push(format!("{what} (pid {}) did not exit", id.pid)),
        Err(e) => report
            .warnings
            .push(format!("cannot signal {what} (pid {}): {e}", id.pid)),
    }
}

/// Removes this lab's UAPI sockets that nothing serves any more (left by a killed `wireguard-go`).
fn remove_stale_sockets(layout: &Layout, report: &mut DownReport) {
    for sock in lab_sockets(layout) {
        let iface = sock
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match sdwand::wg::uapi::server_pid(&iface) {
            Ok(None) | Err(_) => {
                if fs::remove_file(&sock).is_ok() {
                    report.sockets.push(sock);
                }
            }
            Ok(Some(pid)) => report
                .warnings
                .push(format!("{} is still served by pid {pid}", sock.display())),
        }
    }
}
