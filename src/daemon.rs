//! The daemon's event loop: load the configuration, pick the backend, reconcile, and keep reconciling on
//! timers, netlink events, implementation restarts and SIGHUP, until SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};
use wireguard_control::Key;

use crate::config::{self, BackendKind, Config, ConfigErrors};
use crate::keyfile::{self, KeyFileError};
use crate::mesh::{AllowedIps, Desired, Owner};
use crate::metrics::{self, Metrics};
use crate::net::{self, NetError, NetEvent, Netlink};
use crate::reconcile::{reconcile_net, DeviceReconciler};
use crate::wg::userspace::{Origin, Supervisor};
use crate::wg::{self, BackendInUse, WgError};

/// Netlink events are coalesced over this window before the kernel state is reconciled.
const NET_DEBOUNCE: Duration = Duration::from_millis(20);
/// Delay before retrying a failed reconcile or implementation restart.
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
    /// Other I/O at start (signals, metrics listener).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A configuration with its key, checked together.
struct Loaded {
    config: Config,
    key: Key,
}

fn load(path: &Path, create_key: bool) -> Result<Loaded, DaemonError> {
    let config = config::load(path)?;
    let key = keyfile::load(&config.interface.private_key_file, create_key)?;
    config.check_identity(&key.get_public())?;
    Ok(Loaded { config, key })
}

/// Validates the configuration at `path` and its key file without changing anything. A missing key file
/// is not an error (the daemon creates it). Returns a one-line summary.
pub fn check_config(path: &Path) -> Result<String, DaemonError> {
    let config = config::load(path)?;
    let key_note = match keyfile::load(&config.interface.private_key_file, false) {
        Ok(key) => {
            config.check_identity(&key.get_public())?;
            format!("public key {}", key.get_public().to_base64())
        }
        Err(KeyFileError::Missing { path }) => format!("key file {} will be created at start", path.display()),
        Err(e) => return Err(e.into()),
    };
    Ok(format!(
        "{}: ok: interface {} address {}, {} member(s), {key_note}",
        path.display(),
        config.interface.name,
        config.interface.address,
        config.members.len()
    ))
}

/// The desired state of `loaded`, with every owner's allowed-IP claims composed.
fn desired_of(loaded: &Loaded, allowed: &mut AllowedIps) -> Desired {
    let (mut desired, membership) = Desired::from_config(&loaded.config, &loaded.key);
    allowed.set_owner(Owner::Membership, membership);
    desired.compose(allowed);
    desired
}

/// Runs the daemon with the configuration at `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf) -> Result<(), DaemonError> {
    let mut loaded = load(&config_path, true)?;
    let cfg = &loaded.config;
    tracing::info!(config = %config_path.display(), iface = %cfg.interface.name, address = %cfg.interface.address, members = cfg.members.len(), "starting");

    let metrics = Metrics::new();
    let listener = metrics::bind(cfg.daemon.metrics_listen).await?;
    tracing::info!(listen = %cfg.daemon.metrics_listen, "metrics endpoint at /metrics");
    tokio::spawn({
        let m = metrics.clone();
        async move {
            if let Err(e) = m.serve(listener).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        }
    });

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let netlink = Netlink::connect()?;
    let mut events = net::subscribe()?;
    let (backend, mut supervisor) = select_backend(cfg, &netlink).await?;
    metrics.set_backend(backend.as_str());
    let mut allowed = AllowedIps::default();
    let mut desired = desired_of(&loaded, &mut allowed);
    let mut device = DeviceReconciler::new(wg::Device::new(&cfg.interface.name, backend)?);

    let mut resync = tokio::time::interval(cfg.daemon.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    let mut ready = false;
    let mut net_due: Option<Instant> = None;
    let mut restart_due: Option<Instant> = None;
    let mut ifindex: Option<u32> = None;

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM received"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT received"); break; }
            _ = sighup.recv() => {
                match reload(&config_path, &loaded) {
                    Ok(new) => {
                        tracing::info!(members = new.config.members.len(), "configuration reloaded");
                        metrics.config_reloads.with_label_values(&["ok"]).inc();
                        if new.config.daemon.resync_interval != loaded.config.daemon.resync_interval {
                            resync = tokio::time::interval(new.config.daemon.resync_interval);
                            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                        loaded = new;
                        desired = desired_of(&loaded, &mut allowed);
                        pass_device(&mut device, &desired, &metrics, false);
                        ifindex = pass_net(&netlink, &desired, &metrics).await.or(ifindex);
                    }
                    Err(e) => {
                        tracing::error!("configuration reload refused, the previous configuration stays in force: {e}");
                        metrics.config_reloads.with_label_values(&["rejected"]).inc();
                    }
                }
            }
            _ = resync.tick() => {
                let device_ok = pass_device(&mut device, &desired, &metrics, true);
                let net = pass_net(&netlink, &desired, &metrics).await;
                ifindex = net.or(ifindex);
                if device_ok && net.is_some() && !ready {
                    ready = true;
                    tracing::info!(peers = desired.peers.len(), backend = backend.as_str(), "data plane reconciled; ready");
                    let status = format!("reconciled {} peers on {}", desired.peers.len(), desired.ifname);
                    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                }
                if let Some(snapshot) = device.snapshot() {
                    metrics.observe_device(&desired, snapshot, SystemTime::now());
                }
            }
            Some(event) = events.next() => {
                if relevant(&event, ifindex) && net_due.is_none() {
                    net_due = Some(Instant::now() + NET_DEBOUNCE);
                }
            }
            _ = sleep_until(net_due.unwrap_or_else(Instant::now)), if net_due.is_some() => {
                net_due = None;
                ifindex = pass_net(&netlink, &desired, &metrics).await.or(ifindex);
            }
            status = exited(&mut supervisor) => {
                tracing::warn!(status = ?status, "userspace WireGuard exited; restarting it and pushing the full configuration");
                supervisor = None;
                ifindex = None;
                device.invalidate();
                restart_due = Some(Instant::now());
            }
            _ = sleep_until(restart_due.unwrap_or_else(Instant::now)), if restart_due.is_some() => {
                match Supervisor::adopt_or_start(&desired.ifname, &loaded.config.backend.userspace_path).await {
                    Ok(s) => {
                        metrics.userspace_restarts.inc();
                        tracing::info!(pid = s.pid(), "userspace WireGuard running again");
                        supervisor = Some(s);
                        restart_due = None;
                        pass_device(&mut device, &desired, &metrics, true);
                        ifindex = pass_net(&netlink, &desired, &metrics).await.or(ifindex);
                    }
                    Err(e) => {
                        metrics.reconcile_errors.with_label_values(&["backend"]).inc();
                        tracing::error!(error = %e, "restarting userspace WireGuard failed; retrying");
                        restart_due = Some(Instant::now() + RETRY);
                    }
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }

    notify(&[NotifyState::Stopping]);
    if loaded.config.daemon.teardown_on_exit {
        teardown(&netlink, &desired.ifname, backend, supervisor).await;
    } else {
        tracing::info!(iface = %desired.ifname, "exiting; the data plane stays up (daemon.teardown_on_exit = false)");
    }
    Ok(())
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Loads the new configuration for a reload; refuses it when a restart-only setting changed.
fn reload(path: &Path, current: &Loaded) -> Result<Loaded, DaemonError> {
    let new = load(path, false)?;
    let changed: Vec<String> = current
        .config
        .restart_only_settings()
        .into_iter()
        .zip(new.config.restart_only_settings())
        .filter(|(old, new)| old.1 != new.1)
        .map(|((key, old), (_, new))| format!("{key} ({old} -> {new})"))
        .collect();
    if !changed.is_empty() {
        return Err(DaemonError::RestartRequired {
            path: path.to_owned(),
            changed: changed.join(", "),
        });
    }
    Ok(new)
}

/// Whether a netlink event may concern the interface (index `ours`, if known).
fn relevant(event: &NetEvent, ours: Option<u32>) -> bool {
    match (event.ifindex, ours) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => true,
    }
}

async fn exited(supervisor: &mut Option<Supervisor>) -> Option<std::process::ExitStatus> {
    match supervisor {
        Some(s) => s.exited().await,
        None => std::future::pending().await,
    }
}

/// One device pass (blocking I/O, run in place on this worker). Returns whether it succeeded.
fn pass_device(device: &mut DeviceReconciler, desired: &Desired, metrics: &Metrics, full: bool) -> bool {
    let timer = metrics.reconcile_timer("device");
    let now = SystemTime::now();
    let result = tokio::task::block_in_place(|| {
        if full {
            device.resync(desired, now)
        } else {
            device.update(desired, now)
        }
    });
    timer.observe_duration();
    match result {
        Ok(outcome) => {
            if outcome.changed() {
                for (kind, n) in [
                    ("peer_added", outcome.added),
                    ("peer_updated", outcome.updated),
                    ("peer_removed", outcome.removed),
                ] {
                    metrics.changes_applied.with_label_values(&[kind]).inc_by(n as u64);
                }
                tracing::info!(
                    added = outcome.added,
                    updated = outcome.updated,
                    removed = outcome.removed,
                    interface_set = outcome.interface_set,
                    "WireGuard device changed"
                );
            }
            true
        }
        Err(e) => {
            device.invalidate();
            metrics.reconcile_errors.with_label_values(&["wireguard"]).inc();
            tracing::error!(error = %e, "WireGuard reconcile failed; will retry");
            false
        }
    }
}

/// One kernel pass. Returns the interface index when it succeeded.
async fn pass_net(netlink: &Netlink, desired: &Desired, metrics: &Metrics) -> Option<u32> {
    let timer = metrics.reconcile_timer("net");
    let result = reconcile_net(netlink, desired).await;
    timer.observe_duration();
    match result {
        Ok((index, plan)) => {
            if !plan.is_empty() {
                let counts = [
                    ("address_added", plan.add_addresses.len()),
                    ("address_removed", plan.del_addresses.len()),
                    ("route_added", plan.add_routes.len()),
                    ("route_removed", plan.del_routes.len()),
                ];
                for (kind, n) in counts {
                    metrics.changes_applied.with_label_values(&[kind]).inc_by(n as u64);
                }
                tracing::info!(
                    set_up = plan.set_up, mtu = ?plan.mtu,
                    add_addresses = ?plan.add_addresses, del_addresses = ?plan.del_addresses,
                    add_routes = ?plan.add_routes, del_routes = ?plan.del_routes,
                    "interface state changed"
                );
            }
            Some(index)
        }
        Err(e) => {
            metrics.reconcile_errors.with_label_values(&["netlink"]).inc();
            tracing::error!(error = %e, "netlink reconcile failed; will retry");
            None
        }
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
