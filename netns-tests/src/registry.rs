//! The lab's registry: `sdwan-registry` in its own namespace `NAME-reg`, wired into the hub bridge like a peer
//! (`NAME-ureg` 192.0.2.2/24, API on port 7443, plain HTTP), with one account, one network (overlay
//! `fd00:5d::/32`, VIP pool `fd00:5d:f::/64`) and one enrollment token that every peer's `[registry]` points at.
//!
//! Files, in `/run/sdwan-lab/NAME/registry/`: `registry.toml`, `registry.log`, `state/` (the store),
//! `enrollment-token`, and `admin-token` once `sdwanctl registry` has been run ([`crate::sites`]). The account's admin token and the ids are in `lab.json` (a lab keeps them in clear).
//!
//! Requests to the API go from a thread inside the registry's namespace ([`Lab::registry_call`]); what each
//! daemon made of its enrollment is in `pI/state/registry/identity.json` ([`Lab::identity`]).
//!
//! With [`RegistryBackend::Etcd`] the store is the lab's etcd cluster ([`crate::etcd`]) under the key prefix
//! `/sdwan-lab/NAME/`, and the registry may have further replicas ([`crate::replicas`]) that share the one
//! `registry.toml`; this module starts and stops any replica by index, replica 1 being the one above.

use std::fs;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sdwand::vocab::wire::{AccountCreated, ClustersResponse, EnrollmentTokenView, MembersResponse, NetworkView};
use sdwand::vocab::ClusterState;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use wireguard_control::Key;

use crate::cmd::{self, in_netns};
use crate::error::{LabError, Result};
use crate::lab::{describe_status, write_new, Lab};
use crate::layout::{self, Layout};
use crate::metrics::{http_request_in_netns, HttpAnswer};
use crate::nodecfg::{build, K3sSection};
use crate::process::ProcId;
use crate::state::{PeerState, RegistryState};

/// The lab registry's `ephemeral_ttl` by default: short, so that a test sees a silent ephemeral peer reaped.
pub const DEFAULT_EPHEMERAL_TTL: Duration = Duration::from_secs(6);

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `up` waits for the registry to answer after its start, and for one peer's enrollment.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The name of the lab's account in its registry.
const ACCOUNT: &str = "lab";

/// Where the lab's registry stores (`--registry-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistryBackend {
    /// SQLite in the registry's state directory (one replica).
    #[default]
    Sqlite,
    /// The lab's 3-member etcd cluster (one or several replicas).
    Etcd,
}

impl std::str::FromStr for RegistryBackend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sqlite" => Ok(RegistryBackend::Sqlite),
            "etcd" => Ok(RegistryBackend::Etcd),
            _ => Err(format!("{s:?} is not one of sqlite, etcd")),
        }
    }
}

/// What a daemon keeps of its enrollment (`state/registry/identity.json`; other fields are ignored here).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Identity {
    /// The peer's id in the registry.
    pub peer_id: String,
    /// The network it enrolled into.
    pub network_id: String,
    /// The /128 the registry allocated.
    pub address: Ipv6Addr,
    /// The peer's bearer token (the lab keeps secrets in clear).
    pub peer_token: String,
}

/// A k3s config drop-in as the daemon writes it (`key: "value"` lines and the `tls-san` list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K3sDropIn {
    /// `cluster-init: true` (the bootstrap server).
    pub cluster_init: bool,
    /// `server:` (joining servers and agents): the API endpoint on the cluster VIP.
    pub server: Option<String>,
    /// `token:`: the cluster's server token on servers, its agent token on agents.
    pub token: Option<String>,
    /// `agent-token:` (servers): the cluster's agent token.
    pub agent_token: Option<String>,
    /// `tls-san:` entries (servers).
    pub tls_san: Vec<String>,
}

impl K3sDropIn {
    /// Parses the daemon's drop-in (the subset of YAML it writes; comments and unknown keys are skipped).
    pub fn parse(text: &str) -> K3sDropIn {
        let unquote = |v: &str| v.trim().trim_matches('"').to_owned();
        let mut d = K3sDropIn::default();
        let mut in_san = false;
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some(item) = line.trim_start().strip_prefix("- ").filter(|_| in_san) {
                d.tls_san.push(unquote(item));
                continue;
            }
            in_san = false;
            match line.split_once(':').map(|(k, v)| (k.trim(), v)) {
                Some(("cluster-init", v)) => d.cluster_init = v.trim() == "true",
                Some(("server", v)) => d.server = Some(unquote(v)),
                Some(("token", v)) => d.token = Some(unquote(v)),
                Some(("agent-token", v)) => d.agent_token = Some(unquote(v)),
                Some(("tls-san", _)) => in_san = true,
                _ => {}
            }
        }
        d
    }
}

/// The name of the cluster p1 bootstraps (kept at this path; it lives in [`crate::layout`]).
pub use crate::layout::CLUSTER_NAME;

/// The URL of the lab registry's API over the underlay (kept at this path; see [`layout::registry_url`]).
pub fn url() -> String {
    layout::registry_url()
}

impl Lab {
    /// The lab's registry, or an error saying the lab has none (built with `--no-registry`).
    pub fn registry(&self) -> Result<&RegistryState> {
        self.state.registry.as_ref().ok_or_else(|| {
            LabError::InvalidOption(format!("lab {:?} has no registry (it was built static)", self.name()))
        })
    }

    /// The lab network's id in the registry.
    pub fn network_id(&self) -> Result<String> {
        Ok(self.registry()?.network_id.clone())
    }

    /// The network's enrollment token (what the peers' `enrollment_token_file` holds).
    pub fn enrollment_token(&self) -> Result<String> {
        let path = &self.registry()?.enrollment_token_file;
        let text = fs::read_to_string(path).map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))?;
        Ok(text.trim().to_owned())
    }

    /// The account's admin token.
    pub fn admin_token(&self) -> Result<String> {
        Ok(self.registry()?.admin_token.clone())
    }

    /// The registry's log file.
    pub fn registry_log(&self) -> PathBuf {
        self.layout.replica_log(1)
    }

    /// The last `lines` lines of the registry's log, under a header.
    pub fn registry_log_tail(&self, lines: usize) -> String {
        self.replica_log_tail(1, lines)
    }

    /// The last `lines` lines of registry replica `r`'s log, under a header.
    pub fn replica_log_tail(&self, r: usize, lines: usize) -> String {
        let path = self.layout.replica_log(r);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| format!("(cannot read: {e})"));
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "--- registry replica {r}: {} (last {lines} lines) ---\n{tail}",
            path.display()
        )
    }

    /// PID of the running registry; `None` when it does not run.
    pub fn registry_pid(&self) -> Result<Option<u32>> {
        Ok(self.registry()?.process.filter(ProcId::is_alive).map(|p| p.pid))
    }

    /// The registry's namespace, its veth into the hub bridge and its configuration; then `init-account`,
    /// the start, the network (with `pod_pools`, `site_ranges` and, with `overlay_v4`, an IPv4 overlay
    /// prefix) and the enrollment token.
    pub(crate) fn build_registry(
        &mut self,
        bin: PathBuf,
        opts: &crate::lab::UpOptions,
        pod_pools: Vec<serde_json::Value>,
        overlay_v4: bool,
    ) -> Result<()> {
        let l = self.layout.clone();
        let dir = l.registry_dir();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
        let ephemeral_ttl = opts.ephemeral_ttl;
        let mut config = format!(
            "# Written by sdwan-lab.\nlisten = \"0.0.0.0:{port}\"\nstate_dir = \"{state}\"\ninsecure = true\n\
             ephemeral_ttl = \"{ttl}\"\nspot_ttl = \"{spot}\"\n",
            port = layout::REGISTRY_PORT,
            state = dir.join("state").display(),
            ttl = build::humantime(ephemeral_ttl),
            // The registry wants spot peers reaped first.
            spot = build::humantime((ephemeral_ttl / 2).max(Duration::from_secs(1))),
        );
        if let Some(hold) = opts.prefix_hold_down {
            config.push_str(&format!("prefix_hold_down = \"{}\"\n", build::humantime(hold)));
        }
        if opts.registry_backend == RegistryBackend::Etcd {
            let endpoints: Vec<String> = (1..=layout::ETCD_MEMBERS).map(Layout::etcd_client_url).collect();
            config.push_str(&format!(
                "\n[store]\nbackend = \"etcd\"\nendpoints = {endpoints:?}\nkey_prefix = \"{}\"\n",
                l.etcd_key_prefix()
            ));
        }
        write_new(&dir.join("registry.toml"), config.as_bytes(), 0o600)?;
        self.add_service_netns(
            &l.registry_netns(),
            &l.registry_if(),
            &l.registry_hub_port(),
            layout::REGISTRY_ADDR,
        )?;
        let etcd = opts.registry_backend == RegistryBackend::Etcd;
        // Recorded before any process starts, so that a failure from here on stops them.
        self.state.registry = Some(RegistryState {
            bin: bin.clone(),
            process: None,
            url: url(),
            account_id: String::new(),
            admin_token: String::new(),
            network_id: String::new(),
            enrollment_token_file: dir.join("enrollment-token"),
            more_replicas: vec![None; opts.registry_replicas.saturating_sub(1)],
            etcd: if etcd {
                vec![None; layout::ETCD_MEMBERS]
            } else {
                Vec::new()
            },
            etcd_bin: if etcd { Some(cmd::etcd_bin()?) } else { None },
        });
        self.save()?;
        if etcd {
            self.build_etcd()?;
        }
        let account = init_account(&bin, &l.registry_netns(), &dir.join("registry.toml"), ACCOUNT)?;
        if let Some(r) = self.state.registry.as_mut() {
            r.account_id = account.account_id;
            r.admin_token = account.admin_token;
        }
        self.save()?;
        self.start_registry()?;
        for r in 2..=opts.registry_replicas {
            self.check_cancel()?;
            self.build_replica(r)?;
        }
        let mut create = serde_json::json!({
            "name": self.name(),
            "overlay_prefix": layout::REGISTRY_OVERLAY_PREFIX,
            "vip_pool": layout::REGISTRY_VIP_POOL,
            "pod_pools": pod_pools,
            "site_ranges": opts.site_ranges,
        });
        if overlay_v4 {
            let v4 = if opts.floating_candidates > 0 {
                crate::floating::OVERLAY_PREFIX_V4
            } else {
                layout::REGISTRY_OVERLAY_PREFIX_V4
            };
            create["overlay_prefix_v4"] = serde_json::json!(v4);
        }
        let network: NetworkView = self.registry_admin("POST", "/v1/networks", Some(&create))?;
        let token: EnrollmentTokenView =
            self.registry_admin("POST", &format!("/v1/networks/{}/enrollment-tokens", network.id), None)?;
        write_new(
            &dir.join("enrollment-token"),
            format!("{}\n", token.token).as_bytes(),
            0o600,
        )?;
        if let Some(r) = self.state.registry.as_mut() {
            r.network_id = network.id;
        }
        self.save()
    }

    /// Creates another account in the lab's registry (`sdwan-registry init-account`, next to the running
    /// server: the store is shared safely between processes) and returns it with its admin token.
    pub fn registry_init_account(&self, name: &str) -> Result<AccountCreated> {
        let bin = self.registry()?.bin.clone();
        init_account(
            &bin,
            &self.layout.registry_netns(),
            &self.layout.registry_dir().join("registry.toml"),
            name,
        )
    }

    /// Starts the registry (in its namespace, in a session of its own, log appended) and waits until it
    /// answers HTTP. Fails if it already runs.
    pub fn start_registry(&mut self) -> Result<ProcId> {
        self.start_replica(1)
    }

    /// Starts registry replica `r` (1 is the registry of [`Lab::start_registry`]) in its namespace, in a
    /// session of its own, log appended, and waits until it answers HTTP. Fails if it already runs.
    pub fn start_replica(&mut self, r: usize) -> Result<ProcId> {
        let reg = self.registry()?.clone();
        self.check_replica(r)?;
        if let Some(id) = reg.replica_process(r).filter(ProcId::is_alive) {
            return Err(LabError::Process(format!(
                "registry replica {r} already runs (pid {})",
                id.pid
            )));
        }
        let log_path = self.layout.replica_log(r);
        let bin = reg.bin.display().to_string();
        let config = self.layout.registry_dir().join("registry.toml").display().to_string();
        let mut command = in_netns(
            &self.layout.replica_netns(r),
            &[bin.as_str(), "--config", &config, "run"],
        );
        cmd::log_to(&mut command, &log_path)?;
        let child = cmd::spawn_detached(&mut command)?;
        let id = ProcId::of(child.id())
            .ok_or_else(|| LabError::Process(format!("registry replica {r} vanished at once")))?;
        if let Some(reg) = self.state.registry.as_mut() {
            reg.set_replica_process(r, Some(id));
        }
        if let Some(mut old) = self.registry_children.insert(r, child) {
            let _ = old.wait();
        }
        self.save()?;
        self.wait_replica_answers(r, id)?;
        Ok(id)
    }

    /// An error unless the registry has a replica `r`.
    fn check_replica(&self, r: usize) -> Result<()> {
        let count = self.registry()?.replica_count();
        if (1..=count).contains(&r) {
            Ok(())
        } else {
            Err(LabError::InvalidOption(format!(
                "lab {:?} has registry replicas 1..={count}, not {r}",
                self.name()
            )))
        }
    }

    /// Waits until replica `r` answers any HTTP request; fails at once if it exits.
    fn wait_replica_answers(&mut self, r: usize, id: ProcId) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_cancel()?;
            if !id.is_alive() {
                let status = self
                    .registry_children
                    .get_mut(&r)
                    .and_then(|c| c.try_wait().ok().flatten());
                return Err(LabError::ProcessDied {
                    what: format!("registry replica {r} (pid {}, {})", id.pid, describe_status(status)),
                    log_tail: Some(self.replica_log_tail(r, 30)),
                });
            }
            if self
                .replica_call(r, "GET", "/v1/networks/-/members", None, None)
                .is_ok()
            {
                return Ok(());
            }
            if start.elapsed() >= START_TIMEOUT {
                return Err(LabError::Timeout {
                    what: format!(
                        "registry replica {r} of lab {:?} to answer on {}",
                        self.name(),
                        Layout::replica_url(r)
                    ),
                    waited: start.elapsed(),
                    details: self.replica_log_tail(r, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the registry (by its recorded PID and start time) and waits until it is gone.
    pub fn kill_registry(&mut self) -> Result<()> {
        self.kill_replica(1)
    }

    /// SIGKILLs registry replica `r` (by its recorded PID and start time) and waits until it is gone.
    pub fn kill_replica(&mut self, r: usize) -> Result<()> {
        self.check_replica(r)?;
        let Some(id) = self.registry()?.replica_process(r).filter(ProcId::is_alive) else {
            return Err(LabError::Process(format!("registry replica {r} is not running")));
        };
        id.signal(libc::SIGKILL)
            .map_err(|e| LabError::io(format!("cannot signal registry replica {r} (pid {})", id.pid), e))?;
        if !id.wait_gone(Duration::from_secs(5)) {
            return Err(LabError::Process(format!(
                "registry replica {r} (pid {}) survived SIGKILL",
                id.pid
            )));
        }
        if let Some(mut child) = self.registry_children.remove(&r) {
            let _ = child.wait();
        }
        Ok(())
    }

    /// SIGSTOP to the registry: it keeps its sockets (connections are accepted by the kernel, and a watch
    /// already waiting stays open) but answers nothing, as a registry whose host stalled would. Undo with
    /// [`Lab::thaw_registry`] (`down` kills it either way).
    pub fn freeze_registry(&self) -> Result<()> {
        self.signal_registry(libc::SIGSTOP)
    }

    /// SIGCONT to the registry.
    pub fn thaw_registry(&self) -> Result<()> {
        self.signal_registry(libc::SIGCONT)
    }

    /// Whether the registry process is stopped by a signal (state `T` in `/proc/PID/stat`).
    pub fn registry_frozen(&self) -> Result<bool> {
        let Some(pid) = self.registry_pid()? else {
            return Ok(false);
        };
        let path = format!("/proc/{pid}/stat");
        let stat = fs::read_to_string(&path).map_err(|e| LabError::io(format!("cannot read {path}"), e))?;
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        Ok(state == Some("T"))
    }

    fn signal_registry(&self, signal: libc::c_int) -> Result<()> {
        let Some(id) = self.registry()?.process.filter(ProcId::is_alive) else {
            return Err(LabError::Process("the registry is not running".into()));
        };
        match id.signal(signal) {
            Ok(true) => Ok(()),
            Ok(false) => Err(LabError::Process(format!("the registry (pid {}) is gone", id.pid))),
            Err(e) => Err(LabError::io(format!("cannot signal the registry (pid {})", id.pid), e)),
        }
    }

    /// One request to the registry's API from inside its namespace: `method path`, with `token` as bearer
    /// and `body` as JSON. Any status is an answer.
    pub fn registry_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpAnswer> {
        self.replica_call(1, method, path, token, body)
    }

    /// [`Lab::registry_call`] to registry replica `r`, from inside its namespace.
    pub fn replica_call(
        &self,
        r: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpAnswer> {
        let addr = SocketAddr::from((Layout::replica_addr(r), layout::REGISTRY_PORT));
        let body = body.map(serde_json::Value::to_string);
        http_request_in_netns(
            &self.layout.replica_netns(r),
            addr,
            method,
            path,
            token,
            body.as_deref(),
            REQUEST_TIMEOUT,
        )
    }

    /// A request with the admin token that must succeed (2xx); its JSON answer.
    pub fn registry_admin<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let token = self.admin_token()?;
        let answer = self.registry_call(method, path, Some(&token), body)?;
        if !(200..300).contains(&answer.status) {
            return Err(LabError::Process(format!(
                "registry: {method} {path} answered {}: {}",
                answer.status,
                answer.body.trim()
            )));
        }
        parse_json(&format!("registry: {method} {path}"), &answer.body)
    }

    /// The network's members and VIPs as the registry has them (admin token).
    pub fn registry_members(&self) -> Result<MembersResponse> {
        let path = format!("/v1/networks/{}/members", self.network_id()?);
        self.registry_admin("GET", &path, None)
    }

    /// The account's clusters (admin token).
    pub fn registry_clusters(&self) -> Result<ClustersResponse> {
        self.registry_admin("GET", "/v1/clusters", None)
    }

    /// Removes peer `i` from the registry by hand (`DELETE /v1/peers/{id}`, admin token): the registry's
    /// cascade takes it out of every other peer's mesh.
    pub fn registry_remove_peer(&self, i: usize) -> Result<()> {
        let id = self.identity(i)?.peer_id;
        let token = self.admin_token()?;
        let answer = self.registry_call("DELETE", &format!("/v1/peers/{id}"), Some(&token), None)?;
        if answer.status != 204 {
            return Err(LabError::Process(format!(
                "registry: DELETE /v1/peers/{id} (p{i}) answered {}: {}",
                answer.status,
                answer.body.trim()
            )));
        }
        Ok(())
    }

    /// What peer `i`'s daemon keeps of its enrollment (`state/registry/identity.json`).
    pub fn identity(&self, i: usize) -> Result<Identity> {
        let path = self.identity_path(i)?;
        let text = fs::read_to_string(&path).map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))?;
        parse_json(&path.display().to_string(), &text)
    }

    /// Peer `i`'s `identity.json`.
    pub fn identity_path(&self, i: usize) -> Result<PathBuf> {
        Ok(self
            .peer(i)?
            .config
            .daemon
            .state_dir
            .join("registry")
            .join("identity.json"))
    }

    /// Waits, at most `timeout`, until peer `i`'s daemon has enrolled (its `identity.json` parses); fails at
    /// once if the daemon died.
    pub fn wait_enrolled(&mut self, i: usize, timeout: Duration) -> Result<Identity> {
        let start = Instant::now();
        loop {
            self.check_cancel()?;
            self.running_sdwand(i)?;
            if let Ok(id) = self.identity(i) {
                return Ok(id);
            }
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("p{i} to enroll ({} to appear)", self.identity_path(i)?.display()),
                    waited: start.elapsed(),
                    details: format!("{}\n{}", self.log_tail(i, 30), self.registry_log_tail(20)),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits, at most `timeout`, until the registry lists `count` candidates for the lab's VIP and its
    /// cluster is active (its bootstrap server reported k3s ready), so that the next server can join it.
    pub(crate) fn wait_candidates(&self, count: usize, timeout: Duration) -> Result<()> {
        let reached = || -> Result<bool> {
            let clusters = self.registry_clusters()?;
            Ok(clusters.clusters.iter().any(|c| {
                c.vip.address == layout::VIP_ADDR && c.state == ClusterState::Active && c.vip.candidates.len() >= count
            }))
        };
        let mut last = None;
        crate::wait::wait_until(timeout, Duration::from_millis(20), || {
            if self.check_cancel().is_err() {
                return true;
            }
            match reached() {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e.to_string());
                    false
                }
            }
        })
        .map_err(|t| LabError::Timeout {
            what: format!(
                "an active cluster with {count} candidate(s) for {} in the registry",
                layout::VIP_ADDR
            ),
            waited: t.waited,
            details: format!(
                "{}\nclusters: {}\n{}\n{}",
                last.unwrap_or_default(),
                self.registry_clusters()
                    .map(|c| format!("{:?}", c.clusters))
                    .unwrap_or_else(|e| e.to_string()),
                self.log_tail(count, 20),
                self.registry_log_tail(20)
            ),
        })?;
        self.check_cancel()
    }

    /// Adds a peer to a running registry lab and waits until it has enrolled: its namespace and underlay
    /// link, key and configuration (p1's, with this peer's names, `lifecycle` and `k3s`), its `sdwand`.
    /// Returns its index. It is not waited for in the mesh: the caller decides what to wait for.
    pub fn add_peer(&mut self, lifecycle: &str, k3s: Option<K3sSection>) -> Result<usize> {
        self.registry()?;
        let i = self.peer_count() + 1;
        layout::validate_peer_count(i)?;
        let l = self.layout.clone();
        cmd::ip(&["netns", "add", &l.peer_netns(i)])?;
        cmd::ip_in(
            &l.hub_netns(),
            &[
                "link",
                "add",
                &l.hub_port(i),
                "type",
                "veth",
                "peer",
                "name",
                &l.underlay_if(i),
                "netns",
                &l.peer_netns(i),
            ],
        )?;
        cmd::ip_in(
            &l.hub_netns(),
            &["link", "set", &l.hub_port(i), "master", &l.bridge(), "up"],
        )?;
        let addr = format!("{}/{}", Layout::underlay_addr(i), layout::UNDERLAY_PREFIX_LEN);
        cmd::ip_in(&l.peer_netns(i), &["link", "set", "lo", "up"])?;
        cmd::ip_in(&l.peer_netns(i), &["addr", "add", &addr, "dev", &l.underlay_if(i)])?;
        cmd::ip_in(&l.peer_netns(i), &["link", "set", &l.underlay_if(i), "up"])?;
        let mut config = self.peer(1)?.config.clone();
        let dir = l.peer_dir(i);
        config.interface.name = l.wg_if(i);
        config.interface.private_key_file = dir.join("private.key");
        config.daemon.state_dir = dir.join("state");
        config.daemon.control_socket = l.control_socket(i);
        let replicas = self.registry()?.replica_count();
        config.registry = Some(build::registry_section(&l, i, lifecycle, replicas));
        config.k3s = k3s;
        let key = Key::generate_private();
        self.state.peers.push(PeerState {
            index: i,
            public_key: key.get_public().to_base64(),
            config,
            sdwand: None,
            wireguard_go: Vec::new(),
            responder: None,
        });
        self.save()?;
        self.write_peer_files(i, &key)?;
        self.start_sdwand(i)?;
        self.wait_enrolled(i, START_TIMEOUT)?;
        Ok(i)
    }

    /// Peer `i`'s k3s config drop-in, parsed (an error until its daemon has written it).
    pub fn k3s_dropin(&self, i: usize) -> Result<K3sDropIn> {
        let k3s = self
            .peer(i)?
            .config
            .k3s
            .as_ref()
            .ok_or_else(|| LabError::InvalidOption(format!("p{i} has no [k3s] section, so no drop-in")))?;
        let path = &k3s.config_path;
        let text = fs::read_to_string(path).map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))?;
        Ok(K3sDropIn::parse(&text))
    }

    /// The candidates of the lab's VIP as the registry lists them (peer names, in rank order).
    pub fn registry_candidates(&self) -> Result<Vec<String>> {
        let members = self.registry_members()?;
        Ok(members
            .vips
            .iter()
            .find(|v| v.address == layout::VIP_ADDR)
            .map(|v| v.candidates.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default())
    }
}

/// `sdwan-registry --config CONFIG init-account --name NAME --json`, in `netns` (where an etcd store is
/// reachable).
fn init_account(bin: &std::path::Path, netns: &str, config: &std::path::Path, name: &str) -> Result<AccountCreated> {
    let mut command = in_netns(netns, &[bin.as_os_str(), "--config".as_ref(), config.as_os_str()]);
    command.args(["init-account", "--name", name, "--json"]);
    let out = cmd::run(&mut command)?;
    parse_json("sdwan-registry init-account --json", &out)
}

/// Parses a JSON answer, naming its source on failure.
fn parse_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| LabError::Format {
        context: format!("{what}: unexpected answer"),
        message: format!("{e}: {}", text.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_daemons_drop_ins() {
        let boot = "# Written by sdwand\ncluster-init: true\ntoken: \"abc\"\nagent-token: \"def\"\ntls-san:\n  - \"fd00:5d:f::1\"\n";
        assert_eq!(
            K3sDropIn::parse(boot),
            K3sDropIn {
                cluster_init: true,
                server: None,
                token: Some("abc".into()),
                agent_token: Some("def".into()),
                tls_san: vec!["fd00:5d:f::1".into()],
            }
        );
        let agent = "server: \"https://[fd00:5d:f::1]:6443\"\ntoken: \"abc\"\n";
        let d = K3sDropIn::parse(agent);
        assert!(!d.cluster_init);
        assert_eq!(d.server.as_deref(), Some("https://[fd00:5d:f::1]:6443"));
        assert!(d.tls_san.is_empty());
    }
}
