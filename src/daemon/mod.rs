//! The daemon's event loop: load the configuration, pick the backend, reconcile, and keep reconciling on
//! timers, netlink events, implementation restarts and SIGHUP; drive VIP failover; on SIGTERM hand held
//! VIPs over, then exit.
//!
//! Nothing outside the daemon's control stops it or blinds it silently: a metrics port that is taken is
//! retried ([`endpoint`]), a failover socket that cannot bind is retried every [`RETRY`] while the VIP
//! machines are told they cannot hear anyone, a kernel pass applies what it can, a crashing userspace
//! implementation is restarted with a growing delay, and once stopping no reload starts new machines.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::{IpNet, Ipv6Net};
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};
use wireguard_control::Key;

use crate::client::{ClientMetrics, Link, LinkEvent};
use crate::config::host_net;
use crate::config::{self, BackendKind, Config, ConfigErrors};
use crate::keyfile::{self, KeyFileError};
use crate::mesh::Desired;
use crate::metrics::Metrics;
use crate::net::{self, NetError, Netlink};
use crate::reconcile::DeviceReconciler;
use crate::vip::runtime::{Incarnations, VipRuntime};
use crate::vip::Adopt;
use crate::wg::userspace::{Origin, RestartBackoff, Supervisor};
use crate::wg::{self, BackendInUse, WgError};

mod control;
mod endpoint;
mod netwatch;
mod plane;
use netwatch::NetWatch;
use plane::Plane;

/// Netlink events are coalesced over this window before the kernel state is reconciled.
const NET_DEBOUNCE: Duration = Duration::from_millis(20);
/// Delay before retrying a failed reconcile or a failover socket that is not bound.
const RETRY: Duration = Duration::from_secs(1);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The private key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A WireGuard operation failed at start.
    #[error(transparent)]
    Wg(#[from] WgError),
    /// A netlink operation failed at start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The interface exists but sdwand does not own it.
    #[error("interface {ifname} exists and is not sdwand's to manage: {why} (fix: pick another interface.name, or remove that interface)")]
    NotOwned {
        /// Interface.
        ifname: String,
        /// What was found.
        why: String,
    },
    /// The kernel backend was requested but the kernel has no WireGuard.
    #[error("backend.kind = \"kernel\" but this kernel has no WireGuard ({0}); set backend.kind = \"auto\" or \"userspace\"")]
    NoKernelWireGuard(NetError),
    /// A reload changed settings that take effect only on restart.
    #[error("{path} changed {changed}; these settings take effect only on restart (systemctl restart sdwand)", path = .path.display())]
    RestartRequired {
        /// The configuration file.
        path: PathBuf,
        /// The changed settings with old and new values.
        changed: String,
    },
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The registry link could not start.
    #[error(transparent)]
    Registry(#[from] crate::client::StartError),
    /// Other I/O at start (signals).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A configuration with its key, checked together.
struct Loaded {
    /// The file as read.
    file: Config,
    /// What the daemon runs on: the file, or with `[registry]` the file plus the registry's view.
    config: Config,
    key: Key,
}

fn load(path: &Path, create_key: bool) -> Result<Loaded, DaemonError> {
    let file = config::load(path)?;
    let key = keyfile::load_node_key(&file, create_key)?;
    file.check_identity(&key.get_public())?;
    Ok(Loaded {
        config: file.clone(),
        file,
        key,
    })
}

/// The effective configuration of `loaded`'s file with the registry view of `link` (if any), checked
/// against the key.
fn effective(loaded: &Loaded, link: Option<&Link>) -> Result<Config, DaemonError> {
    let Some(link) = link else {
        return Ok(loaded.file.clone());
    };
    let cfg = link.effective(&loaded.file)?;
    cfg.check_identity(&loaded.key.get_public())?;
    Ok(cfg)
}

/// Applies `loaded.config` the way a reload does: desired state, VIP machines, one device and one
/// kernel pass.
async fn apply(loaded: &Loaded, plane: &mut Plane, vip: &mut VipRuntime) {
    let (desired, membership) = Desired::from_config(&loaded.config, &loaded.key);
    plane.set_desired(desired, membership);
    vip.reload(&loaded.config, plane, std::time::Instant::now()).await;
    plane.pass_device(false);
    plane.pass_net().await;
    bind_vip(vip, plane).await;
}

/// Validates the configuration at `path` and its key file without changing anything. A missing key file
/// is not an error (the daemon creates it). Returns a one-line summary.
pub fn check_config(path: &Path) -> Result<String, DaemonError> {
    let config = config::load(path)?;
    let key_note = match keyfile::load_node_key(&config, false) {
        Ok(key) => {
            config.check_identity(&key.get_public())?;
            format!("public key {}", key.get_public().to_base64())
        }
        Err(KeyFileError::Missing { path }) => format!("key file {} will be created at start", path.display()),
        Err(e) => return Err(e.into()),
    };
    let identity = match &config.registry {
        Some(r) => format!("address and members from the registry {}", r.url),
        None => format!(
            "address {}, {} member(s)",
            config.interface.address,
            config.members.len()
        ),
    };
    Ok(format!(
        "{}: ok: interface {} {identity}, {key_note}",
        path.display(),
        config.interface.name,
    ))
}

/// Runs the daemon with the configuration at `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf) -> Result<(), DaemonError> {
    let mut loaded = load(&config_path, true)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let metrics = Metrics::new();
    // The metrics endpoint comes first: an enrollment that waits for the registry shows sdwand_registry_up.
    // Fail-soft: a taken port is logged, shown in `sdwanctl status` and retried; it never stops sdwand.
    let metrics_endpoint = endpoint::spawn(metrics.clone(), loaded.file.daemon.metrics_listen, endpoint::RETRY).await;
    let mut link = match &loaded.file.registry {
        Some(reg) => {
            let client_metrics = ClientMetrics::new();
            if let Err(e) = client_metrics.register(metrics.prometheus_registry()) {
                tracing::error!(error = %e, "registering the registry metrics failed");
            }
            tracing::info!(url = %reg.url, "starting the registry link");
            tokio::select! {
                link = Link::start(&loaded.file, &loaded.key, client_metrics) => Some(link?),
                _ = sigterm.recv() => { tracing::info!("SIGTERM received before the registry link started; exiting"); return Ok(()) }
                _ = sigint.recv() => { tracing::info!("SIGINT received before the registry link started; exiting"); return Ok(()) }
            }
        }
        None => None,
    };
    loaded.config = effective(&loaded, link.as_ref())?;
    let cfg = &loaded.config;
    tracing::info!(config = %config_path.display(), iface = %cfg.interface.name, address = %cfg.interface.address, members = cfg.members.len(), vips = cfg.vips.len(), "starting");

    let control_listener = crate::control::bind(&cfg.daemon.control_socket).await?;
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel(16);
    let control_task = tokio::spawn(crate::control::serve(control_listener, control_tx));
    tracing::info!(socket = %cfg.daemon.control_socket.display(), "sdwanctl socket ready");

    let netlink = Netlink::connect()?;
    let netwatch = NetWatch::spawn(net::subscribe()?);
    let (backend, mut supervisor) = select_backend(cfg, &netlink).await?;
    metrics.set_backend(backend.as_str());
    let device = wg::Device::new(&cfg.interface.name, backend)?;

    // Adopt what a previous run left for each VIP before the first pass, so that pass does not undo it.
    let adopted = adopt(cfg, &device, &netlink).await;
    let mut vip = VipRuntime::new(
        cfg,
        Incarnations::load(&cfg.daemon.state_dir),
        |v| adopted.get(&v).copied().unwrap_or(Adopt::Nothing),
        metrics.vip.clone(),
    );
    if let Some(link) = &link {
        raise_floors(&mut vip, link);
    }
    let held = adopted
        .iter()
        .filter(|(_, a)| **a == Adopt::HeldHere)
        .map(|(v, _)| host_net(*v))
        .collect();
    let mut plane = Plane::new(
        netlink,
        DeviceReconciler::new(device),
        metrics.clone(),
        Desired::from_config(cfg, &loaded.key),
        vip.routes(),
        held,
    );

    let mut resync = tokio::time::interval(cfg.daemon.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    let mut report_tick = tokio::time::interval(
        loaded
            .file
            .registry
            .as_ref()
            .map_or(Duration::from_secs(3600), |r| r.report_interval),
    );
    report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready = false;
    let mut net_due: Option<Instant> = None;
    let mut restart_due: Option<Instant> = None;
    let mut restart_backoff = RestartBackoff::new();
    let mut running_since = Instant::now();
    // While the failover socket should be bound and is not: when to try again.
    let mut bind_due: Option<Instant> = None;
    // Set once SIGTERM arrived: the VIPs are being handed over; exit when done or at this deadline.
    let mut stop_by: Option<Instant> = None;

    loop {
        if stop_by.is_some() && vip.all_stopped() {
            break;
        }
        if !vip.needs_bind() {
            bind_due = None;
        } else if bind_due.is_none() {
            bind_due = Some(Instant::now() + RETRY);
        }
        netwatch.set_ifindex(plane.ifindex);
        tokio::select! {
            _ = sigterm.recv() => {
                if begin_stop(&mut stop_by, &mut vip, &loaded.config, "SIGTERM") { break }
                vip.flush(&mut plane).await;
            }
            _ = sigint.recv() => {
                if begin_stop(&mut stop_by, &mut vip, &loaded.config, "SIGINT") { break }
                vip.flush(&mut plane).await;
            }
            _ = sleep_until(stop_by.unwrap_or_else(Instant::now)), if stop_by.is_some() => {
                tracing::warn!("VIP handover did not finish in time; exiting anyway");
                break;
            }
            _ = sighup.recv() => {
                if stop_by.is_some() {
                    tracing::warn!("SIGHUP ignored: sdwand is stopping (handing its VIPs over)");
                    metrics.config_reloads.with_label_values(&["rejected"]).inc();
                    continue;
                }
                match reload(&config_path, &loaded, link.as_ref()) {
                    Ok(new) => {
                        tracing::info!(members = new.config.members.len(), vips = new.config.vips.len(), "configuration reloaded");
                        metrics.config_reloads.with_label_values(&["ok"]).inc();
                        if new.config.daemon.resync_interval != loaded.config.daemon.resync_interval {
                            resync = tokio::time::interval(new.config.daemon.resync_interval);
                            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                        if let (Some(link), Some(reg)) = (link.as_mut(), &new.file.registry) {
                            link.set_k3s(new.file.k3s.as_ref());
                            if Some(reg.report_interval) != loaded.file.registry.as_ref().map(|r| r.report_interval) {
                                report_tick = tokio::time::interval(reg.report_interval);
                                report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            }
                        }
                        loaded = new;
                        apply(&loaded, &mut plane, &mut vip).await;
                    }
                    Err(e) => {
                        tracing::error!("configuration reload refused, the previous configuration stays in force: {e}");
                        metrics.config_reloads.with_label_values(&["rejected"]).inc();
                    }
                }
            }
            event = next_link_event(link.as_mut()) => {
                let Some(link) = link.as_mut() else { continue };
                match event {
                    LinkEvent::View if stop_by.is_some() => {
                        tracing::info!("registry view not applied: sdwand is stopping");
                    }
                    LinkEvent::View => match effective(&loaded, Some(link)) {
                        Ok(cfg) => {
                            loaded.config = cfg;
                            tracing::info!(members = loaded.config.members.len(), vips = loaded.config.vips.len(), "registry view applied");
                            apply(&loaded, &mut plane, &mut vip).await;
                            raise_floors(&mut vip, link);
                            manual_moves(link, &mut vip, &mut plane).await;
                        }
                        Err(e) => tracing::error!("registry view refused, the previous one stays in force: {e}"),
                    },
                    LinkEvent::Floors(floors) => {
                        for f in &floors {
                            vip.raise_term(f.address, f.epoch.term);
                        }
                        link.record_floors(&floors);
                    }
                    LinkEvent::Joined(resp) => {
                        tracing::debug!(cluster = %resp.cluster_id, "k3s handshake done");
                    }
                }
            }
            _ = report_tick.tick(), if link.is_some() => {
                if let Some(link) = &link {
                    link.report(&vip.statuses(std::time::Instant::now()), |a| vip.name_of(a));
                }
            }
            input = vip.next_input() => {
                vip.handle(input, std::time::Instant::now());
                vip.flush(&mut plane).await;
            }
            Some((request, reply)) = control_rx.recv() => {
                let is_move = matches!(request, crate::control::Request::VipMove { .. });
                let facts = control::Facts {
                    backend: backend.as_str(),
                    ready,
                    config: &loaded.config,
                    metrics: metrics_endpoint.borrow().clone(),
                };
                let response = control::answer(request, &mut vip, &plane, &facts);
                if is_move {
                    vip.flush(&mut plane).await;
                }
                let _ = reply.send(response);
            }
            _ = resync.tick() => {
                let device_ok = plane.pass_device(true);
                let net = plane.pass_net().await;
                bind_vip(&mut vip, &mut plane).await;
                // Ready once the device is configured and a kernel pass reached the interface, even if
                // some of its items failed (they are reported): a conflicting route must not keep the
                // rest of the data plane unmanaged under a restart loop.
                if device_ok && net.is_some() && !ready {
                    ready = true;
                    let peers = plane.desired.peers.len();
                    tracing::info!(peers, backend = backend.as_str(), "data plane reconciled; ready");
                    let status = format!("reconciled {peers} peers on {}", plane.desired.ifname);
                    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                }
                if let Some(snapshot) = plane.device.snapshot() {
                    metrics.observe_device(&plane.desired, snapshot, SystemTime::now());
                }
            }
            () = netwatch.changed(), if net_due.is_none() => {
                net_due = Some(Instant::now() + NET_DEBOUNCE);
            }
            _ = sleep_until(net_due.unwrap_or_else(Instant::now)), if net_due.is_some() => {
                net_due = None;
                plane.pass_net().await;
                bind_vip(&mut vip, &mut plane).await;
            }
            _ = sleep_until(bind_due.unwrap_or_else(Instant::now)), if bind_due.is_some() => {
                bind_due = None;
                bind_vip(&mut vip, &mut plane).await;
            }
            status = exited(&mut supervisor) => {
                let delay = restart_backoff.delay(running_since.elapsed());
                tracing::warn!(status = ?status, restart_in = ?delay, "userspace WireGuard exited; restarting it and pushing the full configuration");
                supervisor = None;
                plane.ifindex = None;
                plane.device.invalidate();
                restart_due = Some(Instant::now() + delay);
                // Its interface, and with it every datagram to the failover socket, is gone until the restart.
                vip.unbind(std::time::Instant::now(), "the userspace WireGuard implementation exited".to_owned());
                vip.flush(&mut plane).await;
            }
            _ = sleep_until(restart_due.unwrap_or_else(Instant::now)), if restart_due.is_some() => {
                match Supervisor::adopt_or_start(&plane.desired.ifname, &loaded.config.backend.userspace_path).await {
                    Ok(s) => {
                        metrics.userspace_restarts.inc();
                        tracing::info!(pid = s.pid(), "userspace WireGuard running again");
                        supervisor = Some(s);
                        restart_due = None;
                        running_since = Instant::now();
                        plane.pass_device(true);
                        plane.pass_net().await;
                        bind_vip(&mut vip, &mut plane).await;
                    }
                    Err(e) => {
                        metrics.reconcile_errors.with_label_values(&["backend"]).inc();
                        let delay = restart_backoff.delay(Duration::ZERO);
                        tracing::error!(error = %e, retry_in = ?delay, "restarting userspace WireGuard failed; retrying");
                        restart_due = Some(Instant::now() + delay);
                    }
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }

    control_task.abort();
    if loaded.config.daemon.teardown_on_exit {
        teardown(&plane.netlink, &plane.desired.ifname, backend, supervisor).await;
    } else {
        tracing::info!(iface = %plane.desired.ifname, "exiting; the data plane stays up (daemon.teardown_on_exit = false)");
    }
    Ok(())
}

/// Starts the stop sequence on the first signal: VIPs held here are handed over before the daemon exits.
/// Returns true when the daemon should exit at once (a second signal, or nothing to hand over).
fn begin_stop(stop_by: &mut Option<Instant>, vip: &mut VipRuntime, config: &Config, signal: &str) -> bool {
    if stop_by.is_some() {
        tracing::warn!("{signal} received again; exiting without waiting for the VIP handover");
        return true;
    }
    tracing::info!("{signal} received; stopping");
    notify(&[NotifyState::Stopping]);
    vip.shutdown(std::time::Instant::now());
    let timers = config.failover.timers();
    *stop_by = Some(Instant::now() + timers.handover_timeout() + timers.drain_timeout());
    vip.all_stopped()
}

/// Binds the failover socket to the interface of the last kernel pass, if it reached one, and executes
/// what the machines do about the change (the runtime logs a failure; the loop retries).
async fn bind_vip(vip: &mut VipRuntime, plane: &mut Plane) {
    if let Some(index) = plane.ifindex {
        vip.ensure_bound(index, std::time::Instant::now());
        vip.flush(plane).await;
    }
}

/// What the data plane shows for each VIP at start: its address on this node's interface, or a peer the
/// device routes it to.
async fn adopt(cfg: &Config, device: &wg::Device, netlink: &Netlink) -> BTreeMap<Ipv6Addr, Adopt> {
    let mut found = BTreeMap::new();
    if cfg.vips.is_empty() {
        return found;
    }
    let local: Vec<Ipv6Net> = match netlink.link_by_name(&cfg.interface.name).await {
        Ok(Some(link)) => netlink.ipv6_addresses(link.index).await.unwrap_or_default(),
        _ => Vec::new(),
    };
    let actual = tokio::task::block_in_place(|| device.read()).ok();
    for v in &cfg.vips {
        let net = host_net(v.address);
        let adopt = if local.contains(&net) {
            Adopt::HeldHere
        } else {
            let via = actual.as_ref().and_then(|d| {
                d.peers
                    .iter()
                    .find(|(_, p)| p.allowed_ips.contains(&IpNet::V6(net)))
                    .and_then(|(key, _)| cfg.members.iter().find(|m| m.public_key.0 == *key))
                    .map(|m| m.address)
            });
            via.map_or(Adopt::Nothing, Adopt::RoutedTo)
        };
        if adopt != Adopt::Nothing {
            tracing::info!(vip = %v.address, adopted = ?adopt, "adopted the VIP state left by the previous run");
        }
        found.insert(v.address, adopt);
    }
    found
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Loads the new configuration for a reload; refuses it when a restart-only setting changed.
fn reload(path: &Path, current: &Loaded, link: Option<&Link>) -> Result<Loaded, DaemonError> {
    let mut new = load(path, false)?;
    let changed: Vec<String> = current
        .file
        .restart_only_settings()
        .into_iter()
        .zip(new.file.restart_only_settings())
        .filter(|(old, new)| old.1 != new.1)
        .map(|((key, old), (_, new))| format!("{key} ({old} -> {new})"))
        .collect();
    if !changed.is_empty() {
        return Err(DaemonError::RestartRequired {
            path: path.to_owned(),
            changed: changed.join(", "),
        });
    }
    new.config = effective(&new, link)?;
    Ok(new)
}

/// The next event of the registry link; never, without one.
async fn next_link_event(link: Option<&mut Link>) -> LinkEvent {
    match link {
        Some(link) => link.next_event().await,
        None => std::future::pending().await,
    }
}

/// Raises each VIP's term floor to the highest epoch of the link's view (stored or fresh; the stored one
/// carries the floors of the last report answer), so a claim never reuses a term the registry knew, even
/// before the first report answers.
fn raise_floors(vip: &mut VipRuntime, link: &Link) {
    for v in &link.view.vips {
        if let Some(e) = v.epoch {
            vip.raise_term(v.address, e.term);
        }
    }
}

/// Performs the operators' new manual moves of VIPs this node holds.
async fn manual_moves(link: &mut Link, vip: &mut VipRuntime, plane: &mut Plane) {
    let now = std::time::Instant::now();
    let holding: Vec<Ipv6Addr> = vip
        .statuses(now)
        .into_iter()
        .filter(|s| s.role == crate::vip::PeerState::Holding)
        .map(|s| s.vip)
        .collect();
    let mut moved = false;
    for (address, to) in link.moves(&holding) {
        let Some(target) = vip.member_by_name(&to) else {
            tracing::warn!(vip = %address, to = %to, "manual move requested to a peer this node does not know; ignored");
            continue;
        };
        match vip.request_move(address, Some(target), now) {
            Some(Ok(successor)) => {
                moved = true;
                tracing::info!(vip = %address, to = %to, successor = %successor, "manual move requested through the registry; handing the VIP over");
            }
            Some(Err(e)) => {
                tracing::warn!(vip = %address, to = %to, "manual move requested through the registry refused: {e}")
            }
            None => {}
        }
    }
    if moved {
        vip.flush(plane).await;
    }
}

async fn exited(supervisor: &mut Option<Supervisor>) -> Option<std::process::ExitStatus> {
    match supervisor {
        Some(s) => s.exited().await,
        None => std::future::pending().await,
    }
}

/// Picks the backend per `[backend] kind` and makes sure the interface exists, adopting an existing one.
async fn select_backend(cfg: &Config, netlink: &Netlink) -> Result<(BackendInUse, Option<Supervisor>), DaemonError> {
    let ifname = &cfg.interface.name;
    let existing = netlink.link_by_name(ifname).await?;
    let not_owned = |why: String| DaemonError::NotOwned {
        ifname: ifname.clone(),
        why,
    };
    let use_kernel = match (&existing, cfg.backend.kind) {
        (Some(link), want) => {
            let served = wg::uapi::server_pid(ifname).ok().flatten().is_some();
            match (link.kind.as_deref(), want) {
                (Some("wireguard"), BackendKind::Kernel | BackendKind::Auto) => true,
                (Some("tun"), BackendKind::Userspace | BackendKind::Auto) if served => false,
                (Some("tun"), _) if !served => {
                    return Err(not_owned(
                        "it is a TUN device that no WireGuard implementation serves".into(),
                    ))
                }
                (kind, want) => {
                    return Err(not_owned(format!(
                        "it is of kind {}, which backend.kind = {want:?} does not manage",
                        kind.unwrap_or("unknown")
                    )))
                }
            }
        }
        (None, BackendKind::Userspace) => false,
        (None, want) => match netlink.add_wireguard_link(ifname).await {
            Ok(_) => true,
            Err(e @ NetError::NotSupported { .. }) if want == BackendKind::Kernel => {
                return Err(DaemonError::NoKernelWireGuard(e))
            }
            Err(NetError::NotSupported { .. }) => {
                tracing::info!(iface = %ifname, "kernel WireGuard is not available; falling back to userspace");
                false
            }
            Err(e) => return Err(e.into()),
        },
    };
    if use_kernel {
        tracing::info!(iface = %ifname, adopted = existing.is_some(), "using kernel WireGuard");
        return Ok((BackendInUse::Kernel, None));
    }
    let s = Supervisor::adopt_or_start(ifname, &cfg.backend.userspace_path).await?;
    match s.origin() {
        Origin::Adopted => {
            tracing::info!(iface = %ifname, pid = s.pid(), "using userspace WireGuard: adopted the running implementation")
        }
        Origin::Spawned => {
            tracing::info!(iface = %ifname, pid = s.pid(), path = %cfg.backend.userspace_path.display(), "using userspace WireGuard: started it")
        }
    }
    Ok((BackendInUse::Userspace, Some(s)))
}

/// Removes the interface (and with it its addresses, routes and peers).
async fn teardown(netlink: &Netlink, ifname: &str, backend: BackendInUse, supervisor: Option<Supervisor>) {
    match (backend, supervisor) {
        (BackendInUse::Userspace, Some(s)) => s.stop().await,
        _ => match netlink.link_by_name(ifname).await {
            Ok(Some(link)) => {
                if let Err(e) = netlink.delete_link(link.index).await {
                    tracing::error!(error = %e, "teardown: removing the interface failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "teardown: looking up the interface failed"),
        },
    }
    tracing::info!(iface = %ifname, "exiting; the data plane was torn down (daemon.teardown_on_exit = true)");
}
