//! The [`Lab`]: building one (`up`), finding one (`load`), describing one (`status`). Removing one is in
//! [`crate::down`]. Operations on a running lab (exec, ping, daemon restarts, …) are in [`crate::ops`].
//!
//! Layout of a lab named NAME with N peers (K of them VIP candidates):
//!
//! ```text
//!   NAME-hub:  bridge NAME-br ── NAME-b1 … NAME-bN, NAME-breg   (hub ends of the veths)
//!   NAME-reg:  NAME-ureg 192.0.2.2/24, sdwan-registry on port 7443 (see crate::registry; not in a
//!              static lab); replica R >= 2 of an etcd-backed registry: NAME-regR, NAME-uregR
//!              192.0.2.(4+R)/24 (see crate::replicas)
//!   NAME-eM:   etcd member eM (M = 1..3, --registry-backend etcd): NAME-ueM 192.0.2.(2+M)/24, client
//!              port 2379, peer port 2380 (see crate::etcd)
//!   NAME-pI:   NAME-uI 192.0.2.(10+I)/24  (underlay, veth into the hub bridge)
//!              NAME-pI fd00:5d::I/128     (WireGuard, made by sdwand + wireguard-go, port 51820;
//!                                          failover UDP 51821; the VIP fd00:5d:f::1/128 on its holder)
//!              I <= K: echo responder on [fd00:5d:f::1]:9099
//!   NAME-pIqJ: pod J of peer I (see crate::pods)   NAME-pIs: a host on a LAN behind peer I (crate::sites)
//!   /run/sdwan-lab/NAME/lab.json, pI/{sdwand.toml, private.key, sdwand.log, responder.log,
//!                                     state/sdwand.sock, k3s/50-sdwand.yaml}, registry/,
//!                                     etcd/{eM/ (data), eM.log}
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wireguard_control::{Backend, Device, Key};

use crate::cmd;
use crate::doc::{LabDoc, PeerDoc, RegistryDoc};
use crate::down::lab_sockets;
use crate::error::{humanize, LabError, Result};
use crate::layout::{self, Layout};
use crate::nodecfg::build::{self, PeerParams, VipParams};
use crate::nodecfg::Member;
use crate::process::ProcId;
use crate::state::{LabState, PeerState};

/// Environment variable: when set, a failed `up` and a [`crate::LabGuard`] leave the lab in place for
/// debugging (remove it later with `sdwan-lab down --name NAME`).
pub const KEEP_ENV: &str = "SDWAN_LAB_KEEP";

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Lab name: 1-6 characters of `[a-z0-9]`.
    pub name: String,
    /// Number of peers, 1..=200.
    pub peers: usize,
    /// How long `up` waits for every pair of peers to complete a handshake.
    pub handshake_timeout: Duration,
    /// The daemons' `resync_interval` (humantime). Tests of event-driven repair set it long so that a
    /// periodic resync cannot pass for the event path.
    pub resync_interval: String,
    /// The daemons' `teardown_on_exit`.
    pub teardown_on_exit: bool,
    /// The members' `persistent_keepalive` (seconds). Non-zero also starts the handshakes at once.
    pub persistent_keepalive: u16,
    /// Set to `true` (e.g. from a Ctrl-C handler) to abort `up` and the lab's bounded waits.
    pub cancel: Option<Arc<AtomicBool>>,
    /// VIP candidates: the first K peers, in order, are the candidates of the one VIP
    /// [`layout::VIP_ADDR`]. 0 = no VIP (and no `[failover]` section).
    pub vip_candidates: usize,
    /// The failover heartbeat interval (`failover.interval`, 10 ms at least).
    pub vip_interval: Duration,
    /// `failover.dead_after`: intervals without a heartbeat before a candidate is dead.
    pub vip_dead_after: u32,
    /// Quorum mode for the lab's VIP and floating prefix (registry labs only; see "Quorum mode" in
    /// `docs/protocol.md`): `up` turns it on for the VIP through the registry once the candidates have
    /// joined, and writes it into every peer's `[[floating]]`; each has the last peer as a witness when its
    /// candidates are even (and it is not one of them).
    pub quorum: bool,
    /// Whether `up` starts the echo responder (see [`crate::responder`]) in every candidate's namespace.
    pub responders: bool,
    /// Whether the lab runs a registry (see [`crate::registry`]) that the peers enroll with, and whose k3s
    /// bootstrap and join flow makes the VIP's candidates; `false`: static `[[members]]` and `[[vip]]`.
    pub registry: bool,
    /// The registry's `ephemeral_ttl`: how long an ephemeral peer may be silent before it is reaped.
    pub ephemeral_ttl: Duration,
    /// Where the registry stores: SQLite in its state directory, or a 3-member etcd cluster the lab starts
    /// (see [`crate::etcd`]).
    pub registry_backend: crate::registry::RegistryBackend,
    /// Registry replicas, 1..=[`layout::MAX_REGISTRY_REPLICAS`]; more than one needs the etcd backend. Every
    /// daemon gets every replica's URL (see [`crate::replicas`]).
    pub registry_replicas: usize,
    /// The pod pools of the registry's network (each peer gets a share of each at enrollment); empty: none.
    pub pod_pools: Vec<sdwand::vocab::PodPool>,
    /// Pods per peer (see [`crate::pods`]; registry labs only, at most [`crate::pods::MAX_PODS`]): the
    /// network gets pod pools of `pod_family` and every peer `[k3s] pod_network = "sdwan"`. 0: none.
    pub pods: usize,
    /// The families of the network's pod pools.
    pub pod_family: crate::pods::PodFamily,
    /// The network's site ranges (registry labs only): where operators may assign site prefixes to peers
    /// (`sdwanctl registry site-prefixes`; see [`crate::sites`]). With pods, an IPv4 range must lie in
    /// [`layout::SITE_RANGE_V4`] (the IPv4 overlay holds the rest of 203.0.113.0/24). Empty: none.
    pub site_ranges: Vec<ipnet::IpNet>,
    /// The registry's `prefix_hold_down` (how long a removed peer's prefixes stay unallocated); `None`:
    /// the registry's default.
    pub prefix_hold_down: Option<Duration>,
    /// Floating-prefix candidates: a site LAN bridged to the first K peers, with the floating prefixes of
    /// `floating_family` whose candidates they are (see [`crate::floating`]). 0: none.
    pub floating_candidates: usize,
    /// The families of the floating site: [`crate::floating::PREFIX`] (IPv4, the default),
    /// [`crate::floating::PREFIX_V6`], or both.
    pub floating_family: crate::floating::FloatingFamily,
    /// With a floating site: every candidate checks its health ([`crate::floating::HEALTH_TARGET`], its
    /// own daemon's metrics port) so a test can fail one candidate's check.
    pub floating_health: bool,
}

impl UpOptions {
    /// The defaults: 30 s for handshakes, 2 s resync, teardown on exit, 25 s keepalive, no VIP, a registry
    /// with a 6 s ephemeral TTL.
    pub fn new(name: &str, peers: usize) -> Self {
        UpOptions {
            name: name.to_owned(),
            peers,
            handshake_timeout: Duration::from_secs(30),
            resync_interval: "2s".to_owned(),
            teardown_on_exit: true,
            persistent_keepalive: 25,
            cancel: None,
            vip_candidates: 0,
            vip_interval: Duration::from_millis(50),
            vip_dead_after: 4,
            quorum: false,
            responders: true,
            registry: true,
            ephemeral_ttl: crate::registry::DEFAULT_EPHEMERAL_TTL,
            registry_backend: crate::registry::RegistryBackend::Sqlite,
            registry_replicas: 1,
            pod_pools: Vec::new(),
            pods: 0,
            pod_family: crate::pods::PodFamily::Dual,
            site_ranges: Vec::new(),
            prefix_hold_down: None,
            floating_candidates: 0,
            floating_family: crate::floating::FloatingFamily::Ipv4,
            floating_health: false,
        }
    }

    /// What every peer's `sdwand.toml` takes from these options.
    pub(crate) fn peer_params(&self) -> PeerParams {
        PeerParams {
            persistent_keepalive: self.persistent_keepalive,
            resync_interval: self.resync_interval.clone(),
            teardown_on_exit: self.teardown_on_exit,
            registry: self.registry,
            registry_replicas: self.registry_replicas,
            pods: self.pods > 0,
            vip: self.vip_params(),
            floating: self.floating_candidates,
            floating_family: self.floating_family,
            floating_health: self.floating_health,
            floating_quorum: self.quorum.then(|| {
                crate::floating::quorum_witness(self)
                    .map(Layout::peer_name)
                    .into_iter()
                    .collect()
            }),
        }
    }

    /// The lab's VIP as these options describe it.
    pub(crate) fn vip_params(&self) -> VipParams {
        VipParams {
            candidates: self.vip_candidates,
            interval: self.vip_interval,
            dead_after: self.vip_dead_after,
        }
    }
}

/// A running lab: namespaces, links, one `sdwand` per peer.
///
/// Dropping a `Lab` leaves it running (the CLI relies on that); wrap it in a [`crate::LabGuard`] to have it
/// removed on drop.
#[derive(Debug)]
pub struct Lab {
    /// Names and addresses.
    pub(crate) layout: Layout,
    /// Mirror of `lab.json`; every change is written through with [`Lab::save`].
    pub(crate) state: LabState,
    /// The `sdwand` processes this value started, kept to reap them and read their exit status.
    pub(crate) children: HashMap<usize, Child>,
    /// Cancels bounded waits (Ctrl-C).
    pub(crate) cancel: Option<Arc<AtomicBool>>,
    /// The `NOTIFY_SOCKET` of each daemon this value started (systemd readiness protocol).
    pub(crate) notify: HashMap<usize, crate::ops::Notify>,
    /// The echo responders this value started, kept to reap them.
    pub(crate) responders: HashMap<usize, Child>,
    /// The registry replicas this value started, by replica index, kept to reap them.
    pub(crate) registry_children: HashMap<usize, Child>,
    /// The etcd members this value started, by member index, kept to reap them.
    pub(crate) etcd_children: HashMap<usize, Child>,
}

impl Lab {
    /// Builds a lab and waits until every peer has a handshake with every other. On failure, removes what it
    /// created (unless `SDWAN_LAB_KEEP` is set) and says which pairs never handshook, with the logs' tails.
    pub fn up(opts: UpOptions) -> Result<Lab> {
        let layout = Layout::new(&opts.name)?;
        layout::validate_peer_count(opts.peers)?;
        crate::vip::validate(&opts)?;
        crate::pods::validate(&opts)?;
        crate::sites::validate(&opts)?;
        crate::floating::validate(&opts)?;
        crate::replicas::validate(&opts)?;
        if !cmd::is_root() {
            return Err(LabError::NotRoot);
        }
        let sdwand_bin = cmd::sdwand_bin()?;
        let wireguard_go = cmd::wireguard_go()?;
        let lab_bin = if opts.vip_candidates > 0 && opts.responders {
            Some(cmd::lab_bin()?)
        } else {
            None
        };
        let registry_bin = if opts.registry {
            Some(cmd::registry_bin()?)
        } else {
            None
        };
        if opts.registry_backend == crate::registry::RegistryBackend::Etcd {
            cmd::etcd_bin()?;
        }
        check_absent(&layout)?;
        create_state_dir(&layout)?;
        // From here on the state directory is ours: any failure removes everything of this name.
        let keys: Vec<Key> = (0..opts.peers).map(|_| Key::generate_private()).collect();
        let members: Vec<Member> = keys
            .iter()
            .enumerate()
            .map(|(k, key)| Member {
                name: Layout::peer_name(k + 1),
                public_key: key.get_public().to_base64(),
                endpoint: (Layout::underlay_addr(k + 1), layout::LISTEN_PORT).into(),
                address: Layout::overlay_addr(k + 1),
                routed_prefixes: Vec::new(),
            })
            .collect();
        let params = opts.peer_params();
        let peers = (1..=opts.peers)
            .map(|i| PeerState {
                index: i,
                public_key: members[i - 1].public_key.clone(),
                config: build::peer_config(&layout, i, &params, &wireguard_go, members.clone()),
                sdwand: None,
                wireguard_go: Vec::new(),
                responder: None,
            })
            .collect();
        let mut lab = Lab {
            state: LabState {
                name: opts.name.clone(),
                sdwand_bin,
                lab_bin,
                peers,
                background: Vec::new(),
                registry: None,
                vips: if opts.registry {
                    build::failover_sections(&params.vip).1
                } else {
                    Vec::new()
                },
                pods: Vec::new(),
            },
            layout,
            children: HashMap::new(),
            cancel: opts.cancel.clone(),
            notify: HashMap::new(),
            responders: HashMap::new(),
            registry_children: HashMap::new(),
            etcd_children: HashMap::new(),
        };
        match lab.build(&keys, &opts, registry_bin) {
            Ok(()) => Ok(lab),
            Err(e) => {
                if std::env::var_os(KEEP_ENV).is_some() {
                    eprintln!("sdwan-lab: {KEEP_ENV} is set: leaving lab {:?} in place", lab.name());
                } else if let Err(down) = lab.teardown() {
                    eprintln!("sdwan-lab: cleanup after the failed up also failed: {down}");
                }
                Err(e)
            }
        }
    }

    /// Everything after the state directory: network, registry, files, responders, daemons; then waits for
    /// the mesh, readiness, and (with a VIP) for one holder that every peer agrees on.
    fn build(&mut self, keys: &[Key], opts: &UpOptions, registry_bin: Option<PathBuf>) -> Result<()> {
        let handshake_timeout = opts.handshake_timeout;
        self.save()?;
        self.build_network()?;
        if opts.floating_candidates > 0 {
            self.build_floating_site(opts.floating_candidates, opts.floating_family)?;
        }
        if let Some(bin) = registry_bin {
            let (pools, overlay_v4) = if opts.pods > 0 {
                // Pods: each peer also gets a /32, its IPv4 node-ip.
                (opts.pod_family.pools(), true)
            } else {
                // An IPv4 floating site: the /32s are the sources the site host answers through the tunnel.
                let pools = opts.pod_pools.iter().map(|p| serde_json::json!(p)).collect();
                (pools, opts.floating_candidates > 0 && opts.floating_family.has_ipv4())
            };
            self.build_registry(bin, opts, pools, overlay_v4)?;
        }
        for i in 1..=self.peer_count() {
            self.write_peer_files(i, &keys[i - 1])?;
        }
        // Responders bind the VIP before it exists (IPV6_FREEBIND), so they can start first.
        if self.state.lab_bin.is_some() {
            for i in self.vip_candidates() {
                self.check_cancel()?;
                self.start_responder(i)?;
            }
        }
        let start = Instant::now();
        for i in 1..=self.peer_count() {
            self.check_cancel()?;
            self.start_sdwand(i)?;
            if self.state.registry.is_some() {
                // Addresses are allocated in enrollment order, candidates appended in join order.
                self.wait_enrolled(i, crate::registry::START_TIMEOUT)?;
                if i <= opts.vip_candidates {
                    self.wait_candidates(i, crate::registry::START_TIMEOUT)?;
                }
            }
        }
        if self.state.registry.is_some() {
            self.check_registry_layout()?;
        }
        if opts.quorum && opts.vip_candidates > 0 {
            self.turn_quorum_on(opts)?;
        }
        self.wait_mesh(handshake_timeout)?;
        let left = || handshake_timeout.saturating_sub(start.elapsed());
        for i in 1..=self.peer_count() {
            self.wait_ready(i, left().max(Duration::from_secs(1)))?;
            self.wg_pid(i)?;
        }
        if !self.vips().is_empty() {
            self.wait_vip_settled(left().max(Duration::from_secs(10)))?;
        }
        if opts.floating_candidates > 0 {
            self.wait_floating_settled(left().max(Duration::from_secs(10)))?;
        }
        if opts.pods > 0 {
            self.build_pods(opts.pods)?;
        }
        Ok(())
    }

    /// Peer `i`'s directories, key file and configuration file.
    pub(crate) fn write_peer_files(&self, i: usize, key: &Key) -> Result<()> {
        let dir = self.layout.peer_dir(i);
        for d in [dir.clone(), dir.join("state")] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&d)
                .map_err(|e| LabError::io(format!("cannot create {}", d.display()), e))?;
        }
        write_new(&self.key_path(i), format!("{}\n", key.to_base64()).as_bytes(), 0o600)?;
        let config = &self.state.peers[i - 1].config;
        if let Some(parent) = config.k3s.as_ref().and_then(|k| k.config_path.parent()) {
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(parent)
                .map_err(|e| LabError::io(format!("cannot create {}", parent.display()), e))?;
        }
        let text = config.render()?;
        write_new(&self.config_path(i), text.as_bytes(), 0o644)
    }

    /// Checks that the registry made the lab's layout: peer `i` got `fd00:5d::i`, and the VIP's candidates
    /// are the ones the lab expects, in order.
    fn check_registry_layout(&self) -> Result<()> {
        for i in 1..=self.peer_count() {
            let got = self.identity(i)?.address;
            if got != Layout::overlay_addr(i) {
                return Err(LabError::Process(format!(
                    "p{i} enrolled as {got}, not {}: peers must enroll in order into a fresh network",
                    Layout::overlay_addr(i)
                )));
            }
        }
        let expected: Vec<String> = self
            .vips()
            .iter()
            .find(|v| v.address == layout::VIP_ADDR)
            .map(|v| v.candidates.clone())
            .unwrap_or_default();
        let got = self.registry_candidates()?;
        if got != expected {
            return Err(LabError::Process(format!(
                "the registry's candidates of {} are {got:?}, not {expected:?}",
                layout::VIP_ADDR
            )));
        }
        Ok(())
    }

    /// Namespaces, the hub bridge, and one veth per peer with its underlay address, in `N + 2` `ip` calls.
    fn build_network(&mut self) -> Result<()> {
        let l = &self.layout;
        let n = self.peer_count();
        let mut netns = format!("netns add {}\n", l.hub_netns());
        for i in 1..=n {
            netns.push_str(&format!("netns add {}\n", l.peer_netns(i)));
        }
        ip_batch(None, &netns)?;
        self.check_cancel()?;
        let mut hub = format!(
            "link set lo up\nlink add {br} type bridge\nlink set {br} up\n",
            br = l.bridge()
        );
        for i in 1..=n {
            hub.push_str(&format!(
                "link add {hp} type veth peer name {ul} netns {ns}\nlink set {hp} master {br} up\n",
                hp = l.hub_port(i),
                ul = l.underlay_if(i),
                ns = l.peer_netns(i),
                br = l.bridge()
            ));
        }
        ip_batch(Some(&l.hub_netns()), &hub)?;
        for i in 1..=n {
            self.check_cancel()?;
            let peer = format!(
                "link set lo up\naddr add {addr}/{len} dev {ul}\nlink set {ul} up\n",
                addr = Layout::underlay_addr(i),
                len = layout::UNDERLAY_PREFIX_LEN,
                ul = l.underlay_if(i)
            );
            ip_batch(Some(&l.peer_netns(i)), &peer)?;
        }
        Ok(())
    }

    /// A namespace for a lab service (a registry replica, an etcd member): `netns` with the veth `ifname`
    /// into the hub bridge (hub end `hub_port`) holding `addr` on the underlay subnet.
    pub(crate) fn add_service_netns(
        &self,
        netns: &str,
        ifname: &str,
        hub_port: &str,
        addr: std::net::Ipv4Addr,
    ) -> Result<()> {
        let l = &self.layout;
        cmd::ip(&["netns", "add", netns])?;
        ip_batch(
            Some(&l.hub_netns()),
            &format!(
                "link add {hub_port} type veth peer name {ifname} netns {netns}\nlink set {hub_port} master {br} up\n",
                br = l.bridge()
            ),
        )?;
        ip_batch(
            Some(netns),
            &format!(
                "link set lo up\naddr add {addr}/{len} dev {ifname}\nlink set {ifname} up\n",
                len = layout::UNDERLAY_PREFIX_LEN
            ),
        )
    }

    /// The lab called `name`, from its state file. Processes keep running; this value did not start them,
    /// so it cannot read their exit status.
    pub fn load(name: &str) -> Result<Lab> {
        let layout = Layout::new(name)?;
        let path = layout.state_file();
        if !path.exists() {
            return Err(LabError::NotFound {
                name: name.to_owned(),
                path,
            });
        }
        let state = LabState::read(&path)?;
        Ok(Lab {
            layout,
            state,
            children: HashMap::new(),
            cancel: None,
            notify: HashMap::new(),
            responders: HashMap::new(),
            registry_children: HashMap::new(),
            etcd_children: HashMap::new(),
        })
    }

    /// Names of the labs on this machine (from state directories and `NAME-hub` namespaces).
    pub fn list() -> Result<Vec<String>> {
        let mut names: Vec<String> = cmd::netns_list()?
            .iter()
            .filter_map(|ns| ns.strip_suffix("-hub"))
            .filter(|n| layout::validate_name(n).is_ok())
            .map(str::to_owned)
            .collect();
        if let Ok(dir) = fs::read_dir(layout::STATE_ROOT) {
            names.extend(
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| layout::validate_name(n).is_ok()),
            );
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The lab's document with PIDs re-read: a dead `sdwand` or an unserved interface is `null`. VIP holders
    /// are read from the peers' interfaces (see [`Lab::holders`]).
    pub fn status(&mut self) -> Result<LabDoc> {
        let mut peers = Vec::new();
        for i in 1..=self.peer_count() {
            let sdwand_pid = self.state.peers[i - 1].sdwand.filter(ProcId::is_alive).map(|p| p.pid);
            let wg_pid = self.wg_pid(i).unwrap_or(None);
            peers.push(PeerDoc {
                name: Layout::peer_name(i),
                netns: self.layout.peer_netns(i),
                underlay_if: self.layout.underlay_if(i),
                underlay_addr: Layout::underlay_addr(i).to_string(),
                overlay_addr: Layout::overlay_addr(i).to_string(),
                wg_if: self.layout.wg_if(i),
                sdwand_pid,
                wg_pid,
                config: self.config_path(i).display().to_string(),
                log: self.log_path(i).display().to_string(),
                prefixes: self.pod_prefixes(i),
            });
        }
        Ok(LabDoc {
            name: self.name().to_owned(),
            hub_netns: self.layout.hub_netns(),
            peers,
            vips: self.vip_docs(),
            floating: self.floating_docs(),
            pods: self.state.pods.clone(),
            state_dir: self.layout.state_dir().display().to_string(),
            registry: self.state.registry.as_ref().map(|r| RegistryDoc {
                netns: self.layout.registry_netns(),
                url: r.url.clone(),
                pid: r.process.filter(ProcId::is_alive).map(|p| p.pid),
                admin_token: r.admin_token.clone(),
                account_id: r.account_id.clone(),
                network_id: r.network_id.clone(),
                log: self.registry_log().display().to_string(),
                replicas: self.replica_docs(r),
                etcd: self.etcd_docs(r),
            }),
        })
    }

    /// Waits, at most `timeout`, until every peer has a handshake with every other peer. On timeout, says
    /// which pairs are missing and shows the tail of every log. Fails at once if a daemon died.
    pub fn wait_mesh(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.check_cancel()?;
            for i in 1..=self.peer_count() {
                if let Some(id) = self.state.peers[i - 1].sdwand {
                    if !id.is_alive() {
                        let status = self.children.get_mut(&i).and_then(|c| c.try_wait().ok().flatten());
                        return Err(LabError::ProcessDied {
                            what: format!("sdwand of p{i} (pid {}, {})", id.pid, describe_status(status)),
                            log_tail: Some(self.log_tail(i, 30)),
                        });
                    }
                }
            }
            let missing = self.missing_handshakes();
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                let tails: Vec<String> = (1..=self.peer_count()).map(|i| self.log_tail(i, 20)).collect();
                return Err(LabError::Timeout {
                    what: format!(
                        "lab {:?}: handshakes between all peers (missing: {})",
                        self.name(),
                        missing.join("; ")
                    ),
                    waited: start.elapsed(),
                    details: tails.join(
                        "
",
                    ),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every `pI -> pJ` for which peer I's interface has no handshake with peer J (or cannot be read).
    pub fn missing_handshakes(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for i in 1..=self.peer_count() {
            let dev = match self.device(i) {
                Ok(dev) => dev,
                Err(e) => {
                    missing.push(format!("p{i}: {e}"));
                    continue;
                }
            };
            for j in (1..=self.peer_count()).filter(|j| *j != i) {
                let key = &self.state.peers[j - 1].public_key;
                match dev.peers.iter().find(|p| &p.config.public_key.to_base64() == key) {
                    None => missing.push(format!("p{i} -> p{j} (no peer entry)")),
                    Some(p) if p.stats.last_handshake_time.is_none() => missing.push(format!("p{i} -> p{j}")),
                    Some(_) => {}
                }
            }
        }
        missing
    }

    /// Peer `i`'s WireGuard device, read over its UAPI socket (works from any namespace).
    pub fn device(&self, i: usize) -> Result<Device> {
        let iface = self.wg_if(i)?;
        let name = iface
            .parse()
            .map_err(|e| LabError::Process(format!("bad interface name {iface}: {e:?}")))?;
        Device::get(&name, Backend::Userspace)
            .map_err(|e| LabError::io(format!("cannot read WireGuard device {iface}"), e))
    }

    /// Writes the state file.
    pub(crate) fn save(&self) -> Result<()> {
        self.state.write(&self.layout.state_file())
    }

    /// Fails with [`LabError::Cancelled`] once the cancel flag is set.
    pub(crate) fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::SeqCst) => Err(LabError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Sets (or clears) the flag that cancels this lab's bounded waits.
    pub fn set_cancel(&mut self, cancel: Option<Arc<AtomicBool>>) {
        self.cancel = cancel;
    }

    /// Lab name.
    pub fn name(&self) -> &str {
        self.layout.name()
    }

    /// Naming and addressing plan.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The overlay prefix routed to every peer's interface: the registry network's (`fd00:5d::/32`) or, in a
    /// static lab, `fd00:5d::/64`.
    pub fn overlay_prefix(&self) -> &'static str {
        if self.state.registry.is_some() {
            layout::REGISTRY_OVERLAY_PREFIX
        } else {
            layout::OVERLAY_PREFIX
        }
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.state.peers.len()
    }

    /// Peer `i`'s recorded state, or an error naming the valid range.
    pub fn peer(&self, i: usize) -> Result<&PeerState> {
        self.state
            .peers
            .get(i.wrapping_sub(1))
            .ok_or_else(|| LabError::NoSuchPeer {
                lab: self.name().to_owned(),
                index: i,
                count: self.peer_count(),
            })
    }

    /// Peer `i`'s WireGuard interface name.
    pub fn wg_if(&self, i: usize) -> Result<String> {
        self.peer(i)?;
        Ok(self.layout.wg_if(i))
    }

    /// Peer `i`'s namespace.
    pub fn netns(&self, i: usize) -> Result<String> {
        self.peer(i)?;
        Ok(self.layout.peer_netns(i))
    }

    /// Peer `i`'s `sdwand.toml`.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.layout.peer_dir(i).join("sdwand.toml")
    }

    /// Peer `i`'s private key file.
    pub fn key_path(&self, i: usize) -> PathBuf {
        self.layout.peer_dir(i).join("private.key")
    }

    /// Peer `i`'s `sdwand` log (stdout and stderr, appended across restarts).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.layout.peer_dir(i).join("sdwand.log")
    }

    /// The last `lines` lines of peer `i`'s log, under a header naming it.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = self.log_path(i);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| format!("(cannot read: {e})"));
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- p{i}: {} (last {lines} lines) ---\n{tail}", path.display())
    }
}

/// The `NodeConfig` of peer `i`: static (`[[members]]`, `[[vip]]`, its address) or, with a registry,
/// `[registry]` and `[k3s]` instead (address, members and VIPs come from the registry).
/// Refuses to build over anything of the same name.
fn check_absent(layout: &Layout) -> Result<()> {
    let exists = |what: String| {
        Err(LabError::Exists {
            name: layout.name().to_owned(),
            what,
        })
    };
    if layout.state_dir().exists() {
        return exists(format!("state directory {}", layout.state_dir().display()));
    }
    if let Some(ns) = cmd::netns_list()?.into_iter().find(|ns| layout.owns_netns(ns)) {
        return exists(format!("namespace {ns}"));
    }
    if let Some(sock) = lab_sockets(layout).into_iter().next() {
        return exists(format!("UAPI socket {}", sock.display()));
    }
    Ok(())
}

/// Creates `/run/sdwan-lab/NAME` (0700); an existing one means another lab got there first.
fn create_state_dir(layout: &Layout) -> Result<()> {
    let root = Path::new(layout::STATE_ROOT);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(|e| LabError::io(format!("cannot create {}", root.display()), e))?;
    let dir = layout.state_dir();
    fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            LabError::Exists {
                name: layout.name().to_owned(),
                what: format!("state directory {}", dir.display()),
            }
        } else {
            LabError::io(format!("cannot create {}", dir.display()), e)
        }
    })
}

/// Creates a new file with `mode` and writes `data` to it.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| LabError::io(ctx(), e))?;
    f.write_all(data).map_err(|e| LabError::io(ctx(), e))
}

/// `ip [-n NETNS] -batch -` with `script` on stdin.
pub(crate) fn ip_batch(netns: Option<&str>, script: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    cmd::run_stdin(&mut cmd, script).map(drop)
}

/// `exit status 0`, `signal 9`, or `status unknown`.
pub(crate) fn describe_status(status: Option<std::process::ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "exit status unknown".to_owned(),
    }
}

/// How long ago `t` was, for tables: `1.2s ago`, or `never`.
pub fn ago(t: Option<std::time::SystemTime>) -> String {
    match t.map(|t| t.elapsed()) {
        Some(Ok(d)) => format!("{} ago", humanize(d)),
        Some(Err(_)) => "just now".to_owned(),
        None => "never".to_owned(),
    }
}
