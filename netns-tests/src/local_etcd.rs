//! A local etcd cluster for the registry's tests and benchmarks: N members of Debian's `etcd` (the
//! `etcd-server` package) on free ports of 127.0.0.1, each with its data in a directory of its own under
//! one temporary directory. It owns the member processes: it finds the leader (each member's
//! `etcd_server_is_leader` metric), SIGKILLs a member by PID, and on drop (also when a test panics) kills
//! the members it started, by PID, and removes the directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// How long a cluster may take until every member is healthy and one leads.
const START_WITHIN: Duration = Duration::from_secs(30);

/// How long one HTTP probe of a member (health, metrics) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One member.
pub struct EtcdMember {
    /// Its name in the cluster (`m0`, `m1`, …).
    pub name: String,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub client_url: String,
    client_port: u16,
    /// `None` once killed.
    child: Option<Child>,
}

impl EtcdMember {
    /// Its PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and not killed (it may have died on its own).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// GET `path` on its client port; the whole answer (status line, headers, body), `None` on any failure.
    fn get(&self, path: &str) -> Option<String> {
        let mut tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], self.client_port).into(), PROBE_TIMEOUT).ok()?;
        tcp.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        tcp.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.client_port);
        tcp.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// Whether it answers `/health` with `"health":"true"` (it is a member of a cluster with a leader).
    pub fn healthy(&self) -> bool {
        self.running()
            && self
                .get("/health")
                .is_some_and(|answer| answer.contains("\"health\":\"true\""))
    }

    /// Its Prometheus page (`/metrics`), `None` when it does not answer.
    pub fn metrics(&self) -> Option<String> {
        self.get("/metrics").filter(|_| self.running())
    }

    /// Whether its metrics say it leads (`etcd_server_is_leader 1`); `false` when it does not answer.
    pub fn leads(&self) -> bool {
        self.metrics()
            .is_some_and(|page| page.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
    }
}

/// A running cluster; dropping it kills its members and removes their data.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LabError::io("finding a free port on 127.0.0.1 for etcd", e))
}

impl EtcdCluster {
    /// Starts `size` members (1 to 7) with their data under the system's temporary directory, and waits
    /// until each is healthy and one leads.
    pub fn start(size: usize) -> Result<Self> {
        Self::start_in(size, &std::env::temp_dir())
    }

    /// Like [`EtcdCluster::start`], with the data under `parent` (benchmarks put it on a disk: on tmpfs
    /// etcd's fsync costs nothing).
    pub fn start_in(size: usize, parent: &Path) -> Result<Self> {
        if !(1..=7).contains(&size) {
            return Err(LabError::InvalidOption(format!(
                "an etcd cluster of {size} members: use 1 to 7"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("sdwan-etcd-")
            .tempdir_in(parent)
            .map_err(|e| LabError::io(format!("creating an etcd directory in {}", parent.display()), e))?;
        let mut ports = Vec::with_capacity(size);
        for _ in 0..size {
            ports.push((free_port()?, free_port()?));
        }
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per cluster, so that members of two clusters never take each other's messages.
        let token = dir
            .path()
            .file_name()
            .map_or_else(|| "sdwan-etcd".to_owned(), |n| n.to_string_lossy().into_owned());
        let mut cluster = EtcdCluster {
            members: Vec::with_capacity(size),
            dir,
        };
        for (i, (client, peer)) in ports.into_iter().enumerate() {
            let name = format!("m{i}");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log_path = cluster.dir.path().join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| LabError::io(format!("creating {}", log_path.display()), e))?;
            let stderr = log
                .try_clone()
                .map_err(|e| LabError::io(format!("opening {}", log_path.display()), e))?;
            let child = Command::new("etcd")
                .args(["--name", &name, "--data-dir"])
                .arg(cluster.dir.path().join(&name))
                .args([
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr)
                .spawn()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => LabError::MissingProgram(
                        "etcd is not installed: install Debian's etcd-server (scripts/install-deps does)".into(),
                    ),
                    _ => LabError::Spawn {
                        cmd: format!("etcd --name {name}"),
                        source: e,
                    },
                })?;
            cluster.members.push(EtcdMember {
                name,
                client_url,
                client_port: client,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Some(died) = cluster.died() {
                return Err(LabError::ProcessDied {
                    what: format!("etcd member {died}"),
                    log_tail: Some(cluster.log_tail(&died)),
                });
            }
            if cluster.members.iter().all(EtcdMember::healthy) && cluster.leader().is_some() {
                return Ok(cluster);
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("an etcd cluster of {size} with a leader"),
                    waited: START_WITHIN,
                    details: cluster.log_tail(&cluster.members[0].name),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The name of a member that exited on its own, if one did.
    fn died(&mut self) -> Option<String> {
        self.members.iter_mut().find_map(|m| {
            let exited = m.child.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
            exited.then(|| m.name.clone())
        })
    }

    /// The last lines of member `name`'s log.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The members, in start order.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Every member's client URL, killed ones too (what a client is configured with).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The index of the running member that says it leads, if exactly one does now.
    pub fn leader(&self) -> Option<usize> {
        let leading: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].leads()).collect();
        match leading[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Polls (every 50 ms, at most `within`) until one running member leads; its index.
    pub fn wait_leader(&self, within: Duration) -> Result<usize> {
        crate::wait::wait_for(within, Duration::from_millis(50), || self.leader())
            .map(|(leader, _)| leader)
            .map_err(|_| LabError::Timeout {
                what: "an etcd leader".into(),
                waited: within,
                details: String::new(),
            })
    }

    /// SIGKILLs member `index` by its PID and reaps it; its data stays (until the cluster drops).
    pub fn kill(&mut self, index: usize) -> Result<()> {
        let member = self
            .members
            .get_mut(index)
            .ok_or_else(|| LabError::InvalidOption(format!("no etcd member {index}")))?;
        let mut child = member
            .child
            .take()
            .ok_or_else(|| LabError::Process(format!("etcd member {} is not running", member.name)))?;
        child
            .kill()
            .map_err(|e| LabError::io(format!("killing etcd member {}", member.name), e))?;
        child
            .wait()
            .map_err(|e| LabError::io(format!("reaping etcd member {}", member.name), e))?;
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // Our own children, by PID; the directory goes with the TempDir.
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
