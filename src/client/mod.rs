//! sdwand's client of `sdwan-registry`: enrollment, the persisted identity and network view, pinning of
//! member keys, the watch, the liveness and VIP-state report, the k3s handshake and its drop-in.
//!
//! # Layout
//!
//! - [`view`] (pure): pinning, the validation of a view, the effective configuration, manual moves.
//! - [`k3s`]: the handshake request, the drop-in and the pod network's files (rendering pure; [`k3s::Files`]
//!   writes them).
//! - [`cni`] (pure): the CNI configuration for this node's pod prefixes.
//! - [`backoff`] (pure): capped backoff with jitter.
//! - [`repeats`] (pure): rate limiting of repeated failure logs.
//! - [`state`]: `identity.json`, `network.json`, `pins.json` (atomic, 0600).
//! - [`http`]: the registry's API as async calls (timeouts, size caps, bearer token never logged); the
//!   one registry client, also under [`admin`] (`sdwanctl registry`).
//! - `enroll`: the peer name and the enrollment, retried until the registry accepts.
//! - `tasks`: the watch and report tasks.
//! - `metrics`: [`ClientMetrics`], the link's series.
//! - `screen`: the screening of a view (pins, validation) before it is kept.
//!
//! [`Link`] ties them together for the daemon's event loop: two background tasks (the watch and the
//! report) talk to the loop over channels, so the loop never waits for the registry; the loop owns the
//! pins and the view and applies every accepted view the way a SIGHUP reload applies a file.
//!
//! Everything the registry sends is checked before it is kept: a view is filtered by the pins and
//! validated ([`view::validate`]) before it is persisted or handed to the loop, so a refused view is never
//! the one loaded at the next start; epoch floors above [`MAX_TERM`] are dropped. The registry is trusted
//! for membership (who is in the network, which VIPs exist), not to re-route established members'
//! addresses, the underlay, or to freeze failover. A view whose revision is lower than the last one (a
//! registry restored from a backup) is accepted with a warning: the pins still refuse re-keys.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wireguard_control::Key;

pub mod admin;
pub mod backoff;
pub mod cni;
mod enroll;
pub mod http;
pub mod k3s;
mod metrics;
pub mod repeats;
mod screen;
pub mod state;
mod tasks;
pub mod view;

use crate::config::{Config, ConfigError, ConfigErrors, K3sConfig, RegistryConfig};
use crate::vip::{VipStatus, MAX_TERM};
use crate::vocab::wire::{
    EnrollRequest, EpochView, HandshakeResponse, K3sStatus, MembersResponse, PeerReportRequest, VipEpochView, VipReport,
};
use crate::vocab::Role;
use backoff::Backoff;
use http::{ClientError, RegistryClient};
pub use metrics::ClientMetrics;
use repeats::{Log, Repeats, SUMMARY_INTERVAL};
use screen::{screen, ScreenLogs};
use state::{Identity, Pins, StateDir, StateError, PIN_TTL_SECS};

/// How long one watch request waits for a change.
pub const WATCH_WAIT: Duration = Duration::from_secs(25);
/// Retry delays of the enrollment and the watch.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// A watch answer that brought no newer revision than the daemon already had (a repeat, or an older one)
/// holds the next request back this long from the start of the last: a registry answering instantly with
/// repeated or alternating revisions cannot drive a tight loop.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest gap between two watch requests: changes that follow each other (a peer enrolls, then joins
/// as a VIP candidate) still reach the daemon well within a new candidate's listening period.
pub const WATCH_GAP: Duration = Duration::from_millis(100);

/// Why the registry link could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration does not fit (token file, name, identity mismatch).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A state file is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Something the registry link hands the event loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// A new network view, already validated, pinned and persisted: recompute the effective configuration.
    View,
    /// The registry's highest epoch per VIP (none above [`MAX_TERM`]): never claim a term at or below it.
    Floors(Vec<VipEpochView>),
    /// The k3s handshake was accepted (and the drop-in written, unless it waits for this node's pod share).
    Joined(HandshakeResponse),
}

/// One report for the report task.
struct ReportJob {
    report: PeerReportRequest,
    cluster_ready: Option<String>,
}

/// The daemon's link to its registry.
///
/// `view` changes only through [`Link::next_event`] (a screened view replaces it) and
/// [`Link::record_floors`] (epochs only rise); every accepted view is persisted before it is kept, so
/// the stored view is never older than the one in force except when a write failed (logged).
pub struct Link {
    /// This node's identity: enrolled once, loaded from the state directory afterwards; never changes
    /// while the link runs (a configuration whose address or name contradicts it is refused).
    pub identity: Identity,
    /// The last accepted view (pinned and validated): the stored one at start (screened like a fresh one;
    /// an empty one when absent or refused), then each view `next_event` accepts. Its VIP epochs are
    /// raised in place by `record_floors`, never lowered.
    pub view: MembersResponse,
    /// The state directory: identity, view and pins are written there (best effort after start).
    state: StateDir,
    /// The members' keys pinned by address: refreshed with every accepted view, and a view that re-keys
    /// a pinned member is screened against them before it is validated.
    pins: Pins,
    /// This node's public key (base64): no member but this node may carry it or its address.
    own_key: String,
    /// The registry's address when its URL names one (see [`view::Trust::registry`]).
    registry_addr: Vec<IpAddr>,
    /// Repeated re-keys and view refusals are logged once, then summarised.
    refusal_logs: ScreenLogs,
    /// Repeated absurd floors likewise.
    floor_logs: Repeats,
    /// The registry client, authenticated with the identity's peer token (shared with the tasks and the
    /// handshake).
    client: RegistryClient,
    /// The registry link's metrics (revision in force, refusals, dropped entries).
    metrics: ClientMetrics,
    /// The highest move-request `seq` acted on or skipped, by VIP: a move is returned by [`Link::moves`]
    /// once, when its `seq` is above the one here. Starts with every move of the stored view (the
    /// previous run saw those), and only grows.
    moves_seen: HashMap<Ipv6Addr, u64>,
    /// Views from the watch task, not screened yet.
    views: mpsc::Receiver<MembersResponse>,
    /// Epoch floors from the report task's answers, not checked yet.
    floors: mpsc::Receiver<Vec<VipEpochView>>,
    /// Report jobs for the report task (capacity one: a report that finds it busy is dropped).
    reports: mpsc::Sender<ReportJob>,
    /// Given to each handshake task: its configuration and the registry's answer.
    joined_tx: mpsc::Sender<(K3sConfig, HandshakeResponse)>,
    /// Handshake answers; one whose configuration is not `handshake`'s (replaced since) is dropped.
    joined_rx: mpsc::Receiver<(K3sConfig, HandshakeResponse)>,
    /// The k3s configuration the running (or finished) handshake was started with, and its task; `None`
    /// without `[k3s]`. `set_k3s` replaces it (aborting the old task) only when the configuration changes.
    handshake: Option<(K3sConfig, JoinHandle<()>)>,
    /// The answer to the current handshake, once it came: `Some` only with the same configuration as
    /// `handshake` (cleared when `set_k3s` replaces it). Reports carry its cluster readiness.
    joined: Option<(K3sConfig, HandshakeResponse)>,
    /// The watch and report tasks; aborted, with the handshake, when the link is dropped.
    tasks: Vec<JoinHandle<()>>,
    /// The drop-in and the CNI configuration.
    k3s_files: k3s::Files,
    /// What the k3s files were last written from: the configuration in force and the interface MTU (the
    /// file's configuration until the daemon first calls [`Link::write_k3s_files`]). A handshake answer is
    /// written with them as soon as it arrives.
    k3s_inputs: (Config, u32),
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((_, t)) = &self.handshake {
            t.abort();
        }
    }
}

impl Link {
    /// Starts the link for the configuration `file` (which has `[registry]`) and this node's key: loads the
    /// identity and the last view, or enrolls (retrying until the registry accepts; cancel the future to
    /// give up), then starts the watch and the report tasks and, with `[k3s]`, the handshake.
    pub async fn start(file: &Config, key: &Key, metrics: ClientMetrics) -> Result<Link, StartError> {
        let reg = file.registry.as_ref().ok_or_else(|| {
            ConfigErrors(vec![ConfigError {
                path: file.source.clone(),
                line: 0,
                key: "registry".into(),
                message: "is missing".into(),
                hint: "add a [registry] table".into(),
            }])
        })?;
        let base = RegistryClient::new(reg)?;
        metrics.follow(base.cursor());
        let state = StateDir::new(&file.daemon.state_dir);
        let now = unix_now();
        let (identity, loaded, stored) = match state.identity()? {
            Some(identity) => {
                view::check_identity(file, &identity)?;
                metrics.enrolled.set(1);
                let stored = state.network_or_set_aside(now);
                (identity, stored, true)
            }
            None => {
                let (identity, view) = enroll::enroll(&base, file, reg, key, &metrics).await?;
                state.save_identity(&identity)?;
                (identity, Some(view), false)
            }
        };
        let client = base.with_token(&identity.peer_token);
        let mut pins = state.pins_or_rebuild(loaded.as_ref().unwrap_or(&empty_view(&identity)), now);
        let own_key = key.get_public().to_base64();
        let registry_addr = registry_addresses(&reg.urls);
        let mut refusal_logs = ScreenLogs::new();
        // The stored view is checked like a fresh one (an older sdwand persisted views unchecked); when it
        // is refused, or absent, the first watch asks for everything.
        let local = local_addresses();
        let trust = view::Trust {
            identity: &identity,
            own_key: &own_key,
            pins: &pins,
            registry: &registry_addr,
            local: &local,
        };
        let (view, contested, write) = match loaded {
            Some(v) => {
                // Unchanged stored content is not rewritten.
                let before = stored.then(|| v.clone());
                match screen(v, &trust, &metrics, &mut refusal_logs) {
                    Some((v, contested)) => {
                        let write = before.as_ref() != Some(&v);
                        (v, contested, write)
                    }
                    None => (empty_view(&identity), Vec::new(), false),
                }
            }
            None => (empty_view(&identity), Vec::new(), false),
        };
        let since = view.revision;
        if stored {
            tracing::info!(
                peer = %identity.name, address = %identity.address, network = %identity.network_id,
                revision = view.revision, members = view.members.len(), vips = view.vips.len(),
                "registry identity loaded; starting from the stored network view"
            );
        }
        let pins_changed = pins.refresh(&view, &contested, now, PIN_TTL_SECS);
        // Best-effort like every later write: a full or read-only state directory must not stop a start.
        persist(&state, &view, pins_changed.then_some(&pins), write);
        metrics.revision.set(i64::try_from(view.revision).unwrap_or(i64::MAX));
        let (views_tx, views) = mpsc::channel(4);
        let (floors_tx, floors) = mpsc::channel(4);
        let (reports, reports_rx) = mpsc::channel(1);
        let (joined_tx, joined_rx) = mpsc::channel(1);
        let removed = tasks::Removed {
            state: state.path().to_owned(),
            name: identity.name.clone(),
        };
        let tasks = vec![
            tokio::spawn(tasks::watch(
                client.clone(),
                identity.network_id.clone(),
                since,
                views_tx,
                metrics.clone(),
                removed.clone(),
            )),
            tokio::spawn(tasks::report(
                client.clone(),
                reports_rx,
                floors_tx,
                metrics.clone(),
                removed,
            )),
        ];
        let k3s_files = k3s::Files::new(metrics.k3s.clone());
        let mut link = Link {
            moves_seen: view::seen_moves(&view),
            identity,
            view,
            state,
            pins,
            own_key,
            registry_addr,
            refusal_logs,
            floor_logs: Repeats::new(SUMMARY_INTERVAL),
            client,
            metrics,
            views,
            floors,
            reports,
            joined_tx,
            joined_rx,
            handshake: None,
            joined: None,
            tasks,
            k3s_files,
            k3s_inputs: (file.clone(), file.interface.mtu),
        };
        link.set_k3s(file.k3s.as_ref());
        Ok(link)
    }

    /// The link's state for `sdwanctl status`, with the registry at `url`.
    pub fn registry_view(&self, url: &str) -> crate::control::RegistryView {
        self.metrics.view(url)
    }

    /// The configuration to run on: `file` plus the identity and the current view (notes are logged).
    pub fn effective(&self, file: &Config) -> Result<Config, ConfigErrors> {
        view::check_identity(file, &self.identity)?;
        let (cfg, notes) = view::effective_config(file, &self.identity, &self.view);
        for note in notes {
            tracing::warn!("registry view: {note}");
        }
        Ok(cfg)
    }

    /// (Re)starts the k3s handshake when `k3s` asks for another one than the one last started (a SIGHUP
    /// changing `target_cluster_id` re-runs the join, one changing only the files' settings does not);
    /// stops it when `[k3s]` is gone.
    pub fn set_k3s(&mut self, k3s: Option<&K3sConfig>) {
        if let (Some((old, _)), Some(new)) = (self.handshake.as_mut(), k3s) {
            if old.same_handshake(new) {
                *old = new.clone();
                if let Some((cfg, _)) = self.joined.as_mut() {
                    *cfg = new.clone();
                }
                return;
            }
        }
        if self.handshake.is_none() && k3s.is_none() {
            return;
        }
        if let Some((_, task)) = self.handshake.take() {
            task.abort();
        }
        self.joined = None;
        let Some(k3s) = k3s.cloned() else { return };
        let client = self.client.clone();
        let tx = self.joined_tx.clone();
        let cfg = k3s.clone();
        let progress = self.metrics.k3s.clone();
        let task = tokio::spawn(async move {
            let resp = k3s::handshake(&client, &cfg, &progress).await;
            let _ = tx.send((cfg, resp)).await;
        });
        self.handshake = Some((k3s, task));
    }

    /// Writes the k3s files for `cfg` (the effective configuration in force) on an interface of MTU `mtu`:
    /// the drop-in once the handshake was accepted and, with `pod_network = "sdwan"`, the CNI configuration
    /// for this node's pod prefixes (see [`k3s::Files`]). Cheap when nothing changed.
    pub fn write_k3s_files(&mut self, cfg: &Config, mtu: u32) {
        if self.k3s_inputs.0 != *cfg || self.k3s_inputs.1 != mtu {
            self.k3s_inputs = (cfg.clone(), mtu);
        }
        let joined = self.joined.as_ref().map(|(_, resp)| resp);
        self.k3s_files.write(cfg, joined, mtu);
    }

    /// Waits for the next event. Cancel-safe. A new view is validated, pinned and persisted before it is
    /// returned; a refused view is not returned at all (the last good one stays). Floors above
    /// [`MAX_TERM`] are dropped.
    pub async fn next_event(&mut self) -> LinkEvent {
        loop {
            tokio::select! {
                Some(view) = self.views.recv() => {
                    if self.accept(view) {
                        return LinkEvent::View;
                    }
                }
                Some(floors) = self.floors.recv() => return LinkEvent::Floors(self.plausible_floors(floors)),
                Some((cfg, resp)) = self.joined_rx.recv() => {
                    // An answer to a handshake replaced since (SIGHUP) is stale.
                    if self.handshake.as_ref().is_some_and(|(k3s, _)| k3s.same_handshake(&cfg)) {
                        self.k3s_files.write(&self.k3s_inputs.0, Some(&resp), self.k3s_inputs.1);
                        self.joined = Some((cfg, resp.clone()));
                        return LinkEvent::Joined(resp);
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// `floors` without those above [`MAX_TERM`] (a rogue candidate or registry would freeze failover
    /// with them: every later claim would be refused); each refusal is counted, repeats logged sparingly.
    fn plausible_floors(&mut self, floors: Vec<VipEpochView>) -> Vec<VipEpochView> {
        let (kept, absurd): (Vec<_>, Vec<_>) = floors.into_iter().partition(|f| f.epoch.term <= MAX_TERM);
        if absurd.is_empty() {
            return kept;
        }
        self.metrics.floors_refused.inc_by(absurd.len() as u64);
        let list = absurd
            .iter()
            .map(|f| format!("{} term {}", f.address, f.epoch.term))
            .collect::<Vec<_>>()
            .join(", ");
        match self.floor_logs.failure(&list, Instant::now()) {
            Log::First => tracing::warn!(
                max = MAX_TERM,
                "the registry's epoch floors are above the highest term; ignored (a candidate or the registry \
                 is misbehaving): {list}"
            ),
            Log::Summary(n) => tracing::warn!(
                repeats = n,
                "the registry keeps sending epoch floors above the highest term; ignored: {list}"
            ),
            Log::Quiet => {}
        }
        kept
    }

    /// Keeps the registry's epoch floors in the stored view (persisted when one rose), so a start while the
    /// registry is down still claims above every term the registry knew. Floors above [`MAX_TERM`] are
    /// never kept.
    pub fn record_floors(&mut self, floors: &[VipEpochView]) {
        let mut raised = false;
        for f in floors.iter().filter(|f| f.epoch.term <= MAX_TERM) {
            for v in self.view.vips.iter_mut().filter(|v| v.address == f.address) {
                if v.epoch.is_none_or(|e| e.term < f.epoch.term) {
                    v.epoch = Some(f.epoch);
                    raised = true;
                }
            }
        }
        if raised {
            if let Err(e) = self.state.save_network(&self.view) {
                tracing::error!("cannot persist the registry's epoch floors: {e}");
            }
        }
    }

    /// Screens `view` (pins, then [`view::validate`]); when it passes, brings the pins up to date,
    /// persists both and keeps it. Returns whether it was accepted.
    fn accept(&mut self, view: MembersResponse) -> bool {
        let local = local_addresses();
        let trust = view::Trust {
            identity: &self.identity,
            own_key: &self.own_key,
            pins: &self.pins,
            registry: &self.registry_addr,
            local: &local,
        };
        let Some((view, contested)) = screen(view, &trust, &self.metrics, &mut self.refusal_logs) else {
            return false;
        };
        let pins_changed = self.pins.refresh(&view, &contested, unix_now(), PIN_TTL_SECS);
        persist(&self.state, &view, pins_changed.then_some(&self.pins), true);
        tracing::info!(
            revision = view.revision,
            members = view.members.len(),
            vips = view.vips.len(),
            "registry view accepted"
        );
        self.metrics
            .revision
            .set(i64::try_from(view.revision).unwrap_or(i64::MAX));
        self.view = view;
        true
    }

    /// The manual moves of the current view for VIPs in `holding` not acted on yet: (VIP, target peer name).
    pub fn moves(&mut self, holding: &[Ipv6Addr]) -> Vec<(Ipv6Addr, String)> {
        view::new_moves(&self.view, &mut self.moves_seen, holding)
    }

    /// Queues a report of `statuses` (`name_of` names holders); skipped while the previous one is still
    /// in flight. A k3s server whose handshake was accepted also reports k3s ready once its cluster VIP is
    /// healthy (at once without `[k3s.health]`).
    pub fn report(&self, statuses: &[VipStatus], name_of: impl Fn(Ipv6Addr) -> Option<String>) {
        let vips = statuses
            .iter()
            .map(|s| VipReport {
                address: s.vip,
                role: s.role.as_str().to_owned(),
                holder: s.claim.and_then(|c| name_of(c.holder)),
                epoch: s.claim.map(|c| EpochView {
                    term: c.epoch.term,
                    rank: c.epoch.rank,
                }),
                confirmed_peers: s.confirmed.map(|(n, _)| u32::try_from(n).unwrap_or(u32::MAX)),
            })
            .collect();
        let cluster_ready = self.joined.as_ref().and_then(|(k3s, resp)| {
            let healthy = k3s.health.is_none() || statuses.iter().any(|s| s.vip == resp.vip && s.healthy);
            (k3s.role == Role::Server && healthy).then(|| resp.cluster_id.clone())
        });
        let job = ReportJob {
            report: PeerReportRequest { vips },
            cluster_ready,
        };
        if self.reports.try_send(job).is_err() {
            tracing::debug!("previous registry report still in flight; skipping this one");
        }
    }
}

/// What the start of the link with `file` (which has `[registry]`) would refuse, checked without calling
/// the registry or writing anything (`sdwand check-config`): the CA file loads; with a stored identity,
/// the file's `interface.address`, `interface.overlay_prefix` and `registry.url` fit it; without one, the
/// enrollment token file is set, readable and not empty. Ok: notes for the summary (warnings the start
/// logs, and what the start will do).
pub fn check_start(file: &Config) -> Result<Vec<String>, ConfigErrors> {
    let Some(reg) = &file.registry else {
        return Ok(Vec::new());
    };
    let problem = |key: &str, message: String, hint: &str| ConfigError {
        path: file.source.clone(),
        line: reg.line_of(key),
        key: key.into(),
        message,
        hint: hint.into(),
    };
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    if let Err(e) = RegistryClient::new(reg) {
        errors.push(problem(
            "registry.ca_file",
            e.to_string(),
            "point it at a readable PEM file",
        ));
    }
    let state = StateDir::new(&file.daemon.state_dir);
    match state.identity() {
        Ok(Some(identity)) => {
            if let Err(e) = view::check_identity(file, &identity) {
                errors.extend(e.0);
            }
            notes.push(format!(
                "enrolled as {} ({}, {})",
                identity.name,
                identity.address,
                state.identity_path().display()
            ));
            // The stored view tells the network's pod pools: a k3s server on them needs service ranges of
            // the same families.
            let sdwan = file
                .k3s
                .as_ref()
                .filter(|k| k.pod_network == crate::config::PodNetworkKind::Sdwan);
            if let (Some(k3s), Ok(Some(view))) = (sdwan, state.network()) {
                let plan = k3s::PodPlan {
                    cluster_cidrs: view.pod_pools.iter().map(|p| p.prefix).collect(),
                    service_cidrs: k3s.service_cidrs.clone(),
                    node_ips: Vec::new(),
                };
                notes.extend(k3s::service_cidr_problem(k3s, &plan).map(|p| format!("warning: {p}")));
            }
        }
        Ok(None) => match enroll::first_token(file, reg) {
            Ok((path, _)) => {
                notes.extend(enroll::shared_token_warning(path));
                notes.push(format!(
                    "not enrolled yet: enrolls with the token in {}",
                    path.display()
                ));
            }
            Err(e) => errors.extend(e.0),
        },
        Err(e) => errors.push(problem(
            "daemon.state_dir",
            e.to_string(),
            "see the message; the registry identity cannot be rebuilt locally",
        )),
    }
    if errors.is_empty() {
        Ok(notes)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn empty_view(identity: &Identity) -> MembersResponse {
    MembersResponse {
        network_id: identity.network_id.clone(),
        revision: 0,
        overlay_prefix: Some(identity.overlay_prefix),
        vip_pool: None,
        overlay_prefix_v4: None,
        pod_pools: Vec::new(),
        site_ranges: Vec::new(),
        members: Vec::new(),
        vips: Vec::new(),
        floating: Vec::new(),
    }
}

/// Writes `pins` (when given) then, when `network`, the view: best-effort (logged, never fatal), and never
/// the view without the pins it relies on.
fn persist(state: &StateDir, view: &MembersResponse, pins: Option<&Pins>, network: bool) {
    let written =
        pins.map_or(Ok(()), |p| state.save_pins(p))
            .and_then(|()| if network { state.save_network(view) } else { Ok(()) });
    if let Err(e) = written {
        tracing::error!("cannot persist the registry view (applying it anyway; the next start begins from the last stored one): {e}");
    }
}

/// The registry replicas' addresses, for those of `urls` that name one literally (IPv6 in brackets, or IPv4).
pub fn registry_addresses(urls: &[String]) -> Vec<IpAddr> {
    let address = |url: &String| -> Option<IpAddr> {
        let url = reqwest::Url::parse(url).ok()?;
        let host = url.host_str()?;
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        literal.parse().ok()
    };
    urls.iter().filter_map(address).collect()
}

/// This host's addresses, for the view's checks; none (and a warning) when they cannot be read.
fn local_addresses() -> Vec<IpAddr> {
    crate::net::local_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list this host's addresses; the view's prefixes are not checked against them");
        Vec::new()
    })
}

/// Wall-clock unix seconds (pins' absence timestamps, names of set-aside files).
fn unix_now() -> u64 {
    crate::now_ms() / 1000
}
