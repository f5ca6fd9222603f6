//! The etcd cluster of a lab whose registry stores in etcd (`--registry-backend etcd`): three members
//! `e1`..`e3` of Debian's `etcd` (package etcd-server), each in a namespace of its own, `NAME-eM`, wired into
//! the hub bridge like a peer (`NAME-ueM` 192.0.2.(2+M)/24; client API on port 2379, raft on 2380, plain
//! HTTP). Data in `/run/sdwan-lab/NAME/etcd/eM/`, log in `etcd/eM.log`; both go with the state directory.
//! The registry replicas reach every member's client URL (`[store] endpoints`).
//!
//! A test kills and restarts members ([`Lab::kill_etcd_member`], [`Lab::start_etcd_member`]) and finds the
//! leader from the members' own status (`POST /v3/maintenance/status` on etcd's JSON gateway:
//! the member whose `member_id` is the `leader` it reports; [`Lab::etcd_leader`]).

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cmd::{self, in_netns};
use crate::doc::EtcdDoc;
use crate::error::{LabError, Result};
use crate::lab::{describe_status, Lab};
use crate::layout::{self, Layout};
use crate::metrics::http_request_in_netns;
use crate::process::ProcId;
use crate::state::RegistryState;

/// How long a member (or the whole cluster, at `up`) may take to answer healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one request to a member may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `/v3/maintenance/status`'s answer, the part the lab reads (etcd's gateway writes 64-bit ids as strings).
#[derive(Debug, Deserialize)]
struct Status {
    header: StatusHeader,
    leader: String,
}

#[derive(Debug, Deserialize)]
struct StatusHeader {
    member_id: String,
}

impl Lab {
    /// The etcd members' namespaces and links, then all three started at once (a new cluster needs a
    /// quorum to elect its first leader), then waits until each answers healthy.
    pub(crate) fn build_etcd(&mut self) -> Result<()> {
        let l = self.layout.clone();
        let dir = l.etcd_dir();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
        for m in 1..=layout::ETCD_MEMBERS {
            self.check_cancel()?;
            self.add_service_netns(
                &l.etcd_netns(m),
                &l.etcd_if(m),
                &l.etcd_hub_port(m),
                Layout::etcd_addr(m),
            )?;
        }
        for m in 1..=layout::ETCD_MEMBERS {
            self.spawn_etcd_member(m)?;
        }
        for m in 1..=layout::ETCD_MEMBERS {
            self.wait_etcd_healthy(m, START_TIMEOUT)?;
        }
        Ok(())
    }

    /// The lab's etcd members, or an error saying its registry stores in SQLite.
    fn etcd_members(&self) -> Result<&[Option<ProcId>]> {
        let reg = self.registry()?;
        if reg.etcd.is_empty() {
            return Err(LabError::InvalidOption(format!(
                "lab {:?} has no etcd: its registry stores in SQLite (build it with --registry-backend etcd)",
                self.name()
            )));
        }
        Ok(&reg.etcd)
    }

    /// An error unless `m` names one of the lab's etcd members.
    fn check_member(&self, m: usize) -> Result<()> {
        let count = self.etcd_members()?.len();
        if (1..=count).contains(&m) {
            Ok(())
        } else {
            Err(LabError::InvalidOption(format!(
                "the lab's etcd members are e1..e{count}, not e{m}"
            )))
        }
    }

    /// etcd member `m`'s log file.
    pub fn etcd_log(&self, m: usize) -> PathBuf {
        self.layout.etcd_dir().join(format!("{}.log", Layout::etcd_name(m)))
    }

    /// The last `lines` lines of etcd member `m`'s log, under a header.
    pub fn etcd_log_tail(&self, m: usize, lines: usize) -> String {
        let path = self.etcd_log(m);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| format!("(cannot read: {e})"));
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- etcd {}: {} (last {lines} lines) ---\n{tail}",
            Layout::etcd_name(m),
            path.display()
        )
    }

    /// Starts etcd member `m` in its namespace (a session of its own, log appended) and records it. The
    /// flags name the whole initial cluster; a member whose data directory exists ignores them and rejoins.
    fn spawn_etcd_member(&mut self, m: usize) -> Result<ProcId> {
        let bin = self
            .registry()?
            .etcd_bin
            .clone()
            .ok_or_else(|| LabError::Process("the lab state has no etcd binary".into()))?;
        let name = Layout::etcd_name(m);
        let cluster: Vec<String> = (1..=layout::ETCD_MEMBERS)
            .map(|k| format!("{}={}", Layout::etcd_name(k), Layout::etcd_peer_url(k)))
            .collect();
        let data = self.layout.etcd_dir().join(&name);
        let (client, peer) = (Layout::etcd_client_url(m), Layout::etcd_peer_url(m));
        let bin = bin.display().to_string();
        let data = data.display().to_string();
        let token = format!("sdwan-lab-{}", self.name());
        let cluster = cluster.join(",");
        let argv = [
            bin.as_str(),
            "--name",
            &name,
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &token,
        ];
        let mut command = in_netns(&self.layout.etcd_netns(m), &argv);
        cmd::log_to(&mut command, &self.etcd_log(m))?;
        let child = cmd::spawn_detached(&mut command)?;
        let id = ProcId::of(child.id()).ok_or_else(|| LabError::Process(format!("etcd {name} vanished at once")))?;
        if let Some(reg) = self.state.registry.as_mut() {
            reg.etcd[m - 1] = Some(id);
        }
        if let Some(mut old) = self.etcd_children.insert(m, child) {
            let _ = old.wait();
        }
        self.save()?;
        Ok(id)
    }

    /// Starts etcd member `m` again (after [`Lab::kill_etcd_member`]) and waits, at most `timeout`, until
    /// it answers healthy: it rejoins the cluster from its data directory. Fails if it already runs.
    pub fn start_etcd_member(&mut self, m: usize, timeout: Duration) -> Result<ProcId> {
        self.check_member(m)?;
        if let Some(id) = self.etcd_members()?[m - 1].filter(ProcId::is_alive) {
            return Err(LabError::Process(format!("etcd e{m} already runs (pid {})", id.pid)));
        }
        let id = self.spawn_etcd_member(m)?;
        self.wait_etcd_healthy(m, timeout)?;
        Ok(id)
    }

    /// SIGKILLs etcd member `m` (by its recorded PID and start time) and waits until it is gone.
    pub fn kill_etcd_member(&mut self, m: usize) -> Result<()> {
        self.check_member(m)?;
        let Some(id) = self.etcd_members()?[m - 1].filter(ProcId::is_alive) else {
            return Err(LabError::Process(format!("etcd e{m} is not running")));
        };
        id.signal(libc::SIGKILL)
            .map_err(|e| LabError::io(format!("cannot signal etcd e{m} (pid {})", id.pid), e))?;
        if !id.wait_gone(Duration::from_secs(5)) {
            return Err(LabError::Process(format!(
                "etcd e{m} (pid {}) survived SIGKILL",
                id.pid
            )));
        }
        if let Some(mut child) = self.etcd_children.remove(&m) {
            let _ = child.wait();
        }
        Ok(())
    }

    /// PID of etcd member `m`; `None` when it does not run.
    pub fn etcd_pid(&self, m: usize) -> Result<Option<u32>> {
        self.check_member(m)?;
        Ok(self.etcd_members()?[m - 1].filter(ProcId::is_alive).map(|p| p.pid))
    }

    /// One request to etcd member `m`'s client API from inside its namespace.
    fn etcd_call(&self, m: usize, method: &str, path: &str, body: Option<&str>) -> Result<crate::metrics::HttpAnswer> {
        let addr = SocketAddr::from((Layout::etcd_addr(m), layout::ETCD_CLIENT_PORT));
        http_request_in_netns(
            &self.layout.etcd_netns(m),
            addr,
            method,
            path,
            None,
            body,
            REQUEST_TIMEOUT,
        )
    }

    /// Whether member `m` answers `GET /health` healthy (it has a leader and serves).
    pub fn etcd_healthy(&self, m: usize) -> bool {
        self.etcd_call(m, "GET", "/health", None)
            .is_ok_and(|a| a.status == 200 && a.body.contains("\"health\":\"true\""))
    }

    /// Waits, at most `timeout`, until member `m` answers healthy; fails at once if it exits.
    pub fn wait_etcd_healthy(&mut self, m: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_cancel()?;
            if let Some(id) = self.etcd_members()?[m - 1].filter(|id| !id.is_alive()) {
                let status = self.etcd_children.get_mut(&m).and_then(|c| c.try_wait().ok().flatten());
                return Err(LabError::ProcessDied {
                    what: format!("etcd e{m} (pid {}, {})", id.pid, describe_status(status)),
                    log_tail: Some(self.etcd_log_tail(m, 30)),
                });
            }
            if self.etcd_healthy(m) {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("etcd e{m} of lab {:?} to answer healthy", self.name()),
                    waited: start.elapsed(),
                    details: self.etcd_log_tail(m, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The current etcd leader, as the running members report it: the member whose own id is the leader
    /// id it reports. `None` when no running member answers that it is the leader (an election is on).
    pub fn etcd_leader(&self) -> Result<Option<usize>> {
        for m in 1..=self.etcd_members()?.len() {
            if self.etcd_pid(m)?.is_none() {
                continue;
            }
            let Ok(answer) = self.etcd_call(m, "POST", "/v3/maintenance/status", Some("{}")) else {
                continue;
            };
            if answer.status != 200 {
                continue;
            }
            let status: Status = serde_json::from_str(&answer.body).map_err(|e| LabError::Format {
                context: format!("etcd e{m}: POST /v3/maintenance/status: unexpected answer"),
                message: format!("{e}: {}", answer.body.trim()),
            })?;
            if status.header.member_id == status.leader {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Waits, at most `timeout`, until a member reports itself leader; returns it.
    pub fn wait_etcd_leader(&self, timeout: Duration) -> Result<usize> {
        let mut leader = None;
        crate::wait::wait_until(timeout, Duration::from_millis(50), || {
            leader = self.etcd_leader().ok().flatten();
            leader.is_some() || self.check_cancel().is_err()
        })
        .map_err(|t| LabError::Timeout {
            what: format!("an etcd leader in lab {:?}", self.name()),
            waited: t.waited,
            details: (1..=layout::ETCD_MEMBERS)
                .map(|m| self.etcd_log_tail(m, 10))
                .collect::<Vec<_>>()
                .join("\n"),
        })?;
        self.check_cancel()?;
        leader.ok_or(LabError::Cancelled)
    }

    /// Finds the etcd leader (waiting at most `timeout` for one) and SIGKILLs it; returns which member it was.
    pub fn kill_etcd_leader(&mut self, timeout: Duration) -> Result<usize> {
        let leader = self.wait_etcd_leader(timeout)?;
        self.kill_etcd_member(leader)?;
        Ok(leader)
    }

    /// The etcd members of `reg` for the lab's document (empty with SQLite).
    pub(crate) fn etcd_docs(&self, reg: &RegistryState) -> Vec<EtcdDoc> {
        reg.etcd
            .iter()
            .enumerate()
            .map(|(k, id)| EtcdDoc {
                name: Layout::etcd_name(k + 1),
                pid: id.filter(ProcId::is_alive).map(|p| p.pid),
                client_url: Layout::etcd_client_url(k + 1),
            })
            .collect()
    }
}
