//! Start-up: from the configuration file to a [`Daemon`] ready to run its loop.
//!
//! It owns the start order: the metrics endpoint and the control socket first (an enrollment that waits
//! for the registry, or that the registry refuses, shows in `sdwand_registry_*` and in `sdwanctl status`,
//! which is answered from the link's state until the loop runs), then the registry link, the backend, the
//! adoption of what a previous run left (straight into the desired state), and the VIP runtime and plane
//! built on it. It must not run the loop.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::{ClientMetrics, Link};
use crate::config::Config;
use crate::control::{self, DaemonStatus, Incoming, Request, Response};
use crate::mesh::{tunnel_mtu, Desired};
use crate::metrics::Metrics;
use crate::net::{self, Netlink};
use crate::reconcile::DeviceReconciler;
use crate::vip::runtime::{Incarnations, VipRuntime};
use crate::vip::Adopt;
use crate::wg::userspace::{RestartBackoff, Supervisor};
use crate::wg::{self, BackendInUse};

use super::backend::select_backend;
use super::event_loop::{delaying_interval, Daemon};
use super::netwatch::NetWatch;
use super::plane::{adopt, Plane};
use super::{effective, endpoint, load, publish_node, raise_floors, DaemonError, Loaded, Trigger};

/// What [`start`] learned from the triggers while the registry link started.
enum Early {
    /// Nothing, or a reload to do once running.
    Run { reload: bool },
    /// A stop was requested: exit without starting.
    Stop,
}

/// Builds the daemon for `config_path`. `Ok(None)`: a stop was requested before the registry link
/// started. A reload requested meanwhile is done before this returns.
pub(super) async fn start(
    config_path: PathBuf,
    mut triggers: mpsc::Receiver<Trigger>,
) -> Result<Option<Daemon>, DaemonError> {
    let mut loaded = load(&config_path, true)?;
    let metrics = Metrics::new();
    // Fail-soft: a taken port is logged, shown in `sdwanctl status` and retried; it never stops sdwand.
    let metrics_endpoint = endpoint::spawn(
        metrics.clone(),
        loaded.file.daemon.metrics_listen,
        endpoint::METRICS_LISTEN,
        endpoint::RETRY,
    )
    .await;
    // The registry's view never changes `[daemon]`: the file's socket is the one the loop serves.
    let socket = &loaded.file.daemon.control_socket;
    let control_listener = control::bind(socket).await?;
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel(16);
    let control_task = tokio::spawn(control::serve(control_listener, control_tx));
    tracing::info!(socket = %socket.display(), "sdwanctl socket ready");
    let starting = Starting {
        loaded: &loaded,
        metrics: &metrics,
        endpoint: &metrics_endpoint,
    };
    let (link, early) = match start_link(starting, &mut triggers, &mut control_rx).await {
        Ok((_, Early::Stop)) => {
            control_task.abort();
            return Ok(None);
        }
        Ok((link, Early::Run { reload })) => (link, reload),
        Err(e) => {
            control_task.abort();
            return Err(e);
        }
    };
    loaded.config = effective(&loaded, link.as_ref())?;
    let cfg = &loaded.config;
    tracing::info!(config = %config_path.display(), iface = %cfg.interface.name, address = %cfg.interface.address, members = cfg.members.len(), vips = cfg.vips.len(), "starting");

    let parts = data_plane(&loaded, link.as_ref(), &metrics).await?;
    let watchdog = sd_notify::watchdog_enabled();
    let report_interval = loaded
        .file
        .registry
        .as_ref()
        .map_or(Duration::from_secs(3600), |r| r.report_interval);
    let mut daemon = Daemon {
        resync: delaying_interval(loaded.config.daemon.resync_interval),
        watchdog,
        watchdog_tick: tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2)),
        report_tick: delaying_interval(report_interval),
        config_path,
        loaded,
        link,
        metrics,
        metrics_endpoint,
        overlay_endpoint: None,
        triggers,
        triggers_open: true,
        control_rx,
        control_task,
        netwatch: parts.netwatch,
        backend: parts.backend,
        supervisor: parts.supervisor,
        plane: parts.plane,
        vip: parts.vip,
        ready: false,
        net_due: None,
        restart_due: None,
        restart_backoff: RestartBackoff::new(),
        running_since: Instant::now(),
        bind_due: None,
        stop_by: None,
    };
    daemon.write_k3s_files();
    if early {
        daemon.on_reload().await;
    }
    Ok(Some(daemon))
}

/// What answers `sdwanctl` while the registry link starts.
#[derive(Clone, Copy)]
struct Starting<'a> {
    loaded: &'a Loaded,
    metrics: &'a Metrics,
    endpoint: &'a tokio::sync::watch::Receiver<control::EndpointView>,
}

/// Starts the registry link with `[registry]`, unless a stop is requested first; answers `sdwanctl`
/// meanwhile ([`answer_starting`]).
async fn start_link(
    starting: Starting<'_>,
    triggers: &mut mpsc::Receiver<Trigger>,
    control_rx: &mut mpsc::Receiver<Incoming>,
) -> Result<(Option<Link>, Early), DaemonError> {
    let loaded = starting.loaded;
    let Some(reg) = &loaded.file.registry else {
        return Ok((None, Early::Run { reload: false }));
    };
    let client_metrics = ClientMetrics::new();
    if let Err(e) = client_metrics.register(starting.metrics.prometheus_registry()) {
        tracing::error!(error = %e, "registering the registry metrics failed");
    }
    tracing::info!(urls = %reg.urls_shown(), "starting the registry link");
    let mut link_start = pin!(Link::start(&loaded.file, &loaded.key, client_metrics.clone()));
    let mut reload = false;
    let mut tell_systemd = tokio::time::interval_at(Instant::now() + STARTING_NOTICE, STARTING_NOTICE);
    loop {
        tokio::select! {
            link = &mut link_start => return Ok((Some(link?), Early::Run { reload })),
            _ = tell_systemd.tick() => tell_systemd_starting(&client_metrics.view(&reg.urls_shown())),
            Some((request, reply)) = control_rx.recv() => {
                let _ = reply.send(answer_starting(request, starting, &client_metrics.view(&reg.urls_shown())));
            }
            trigger = triggers.recv() => match trigger {
                Some(Trigger::Reload) => reload = true,
                Some(Trigger::Stop(cause)) => {
                    tracing::info!("{cause} received before the registry link started; exiting");
                    return Ok((None, Early::Stop));
                }
                None => {
                    tracing::info!("shutdown requested before the registry link started; exiting");
                    return Ok((None, Early::Stop));
                }
            },
        }
    }
}

/// How often systemd hears, while the registry link starts, that sdwand is still starting and why.
const STARTING_NOTICE: Duration = Duration::from_secs(10);

/// Tells systemd (under `Type=notify`) what the registry link is waiting for (`systemctl status` shows it)
/// and extends the start timeout past the next notice: an enrollment waiting for the registry, or for an
/// operator to fix a refused token, keeps the unit in `activating` instead of failing it every
/// `TimeoutStartSec` (a restart would change nothing an operator has not changed).
fn tell_systemd_starting(registry: &control::RegistryView) {
    let status = match &registry.problem {
        Some(problem) => format!("enrolling with {}: {problem}", registry.url),
        None => format!("enrolling with {}", registry.url),
    };
    let extend = u32::try_from((STARTING_NOTICE * 3).as_micros()).unwrap_or(u32::MAX);
    super::notify(&[NotifyState::Status(&status), NotifyState::ExtendTimeoutUsec(extend)]);
}

/// The answer to `request` while the registry link starts: the status says so (no peers or VIPs yet, the
/// registry's state and problem); the VIP requests are refused as [`control::code::STARTING`].
fn answer_starting(request: Request, starting: Starting<'_>, registry: &control::RegistryView) -> Response {
    let file = &starting.loaded.file;
    match request {
        Request::Status => Response::Status(Box::new(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            interface: file.interface.name.clone(),
            address: file.interface.address,
            backend: "not started yet".to_owned(),
            ready: false,
            failover_socket: None,
            metrics: Some(starting.endpoint.borrow().clone()),
            metrics_overlay: None,
            registry: Some(registry.clone()),
            workload: None,
            // The k3s handshake starts once enrolled.
            k3s: None,
            peers: Vec::new(),
            vips: Vec::new(),
        })),
        Request::VipList | Request::VipMove { .. } => Response::error(
            control::code::STARTING,
            format!(
                "sdwand is still enrolling with its registry ({}); it has no VIPs yet (see sdwanctl status)",
                registry.url
            ),
        ),
    }
}

/// The data plane as the loop starts it.
struct Parts {
    netwatch: NetWatch,
    backend: BackendInUse,
    supervisor: Option<Supervisor>,
    plane: Plane,
    vip: VipRuntime,
}

/// Connects to netlink, picks the backend, adopts what a previous run left for each VIP and builds the
/// VIP runtime and the plane on it.
async fn data_plane(loaded: &Loaded, link: Option<&Link>, metrics: &Metrics) -> Result<Parts, DaemonError> {
    let cfg = &loaded.config;
    let netlink = Netlink::connect()?;
    let netwatch = NetWatch::spawn(net::subscribe()?);
    let (backend, supervisor) = select_backend(cfg, &netlink).await?;
    metrics.set_backend(backend.as_str());
    let device = wg::Device::new(&cfg.interface.name, backend)?;
    metrics.set_device(device.clone());
    publish_node(loaded, link, metrics);

    // Adopt what a previous run left for each VIP before the first pass, so that pass does not undo it: the
    // desired state takes it directly, the machines are told.
    let mut desired = Desired::from_config(cfg, &loaded.key);
    let adopted = adopt(cfg, &device, &netlink, &mut desired).await;
    let mut vip = VipRuntime::new(
        cfg,
        Incarnations::load(&cfg.daemon.state_dir),
        |v| adopted.get(&v).copied().unwrap_or(Adopt::Nothing),
        metrics.vip.clone(),
    );
    if let Some(link) = link {
        raise_floors(&mut vip, link);
    }
    let derived_mtu = derive_mtu(cfg, &netlink).await;
    let plane = Plane::new(
        netlink,
        DeviceReconciler::new(device),
        metrics.clone(),
        desired,
        derived_mtu,
    );
    Ok(Parts {
        netwatch,
        backend,
        supervisor,
        plane,
        vip,
    })
}

/// The interface MTU when the file sets none: the smallest of `underlay MTU - overhead` over the paths
/// toward every member's endpoint and the registry (the main table's route toward each, its MTU metric
/// or its link's MTU; the overhead is WireGuard's over IPv6, 80 bytes, or over IPv4, 60), at least 1280
/// (IPv6's minimum). `None` when the file sets `interface.mtu`, or no path is known yet (then the
/// configured default, 1420, stays). Logged either way.
async fn derive_mtu(cfg: &Config, netlink: &Netlink) -> Option<u32> {
    if cfg.interface.mtu_from_file {
        tracing::info!(mtu = cfg.interface.mtu, "interface MTU as configured (interface.mtu)");
        return None;
    }
    let registry = cfg
        .registry
        .as_ref()
        .map(|r| crate::client::registry_addresses(&r.urls))
        .unwrap_or_default();
    let targets: BTreeSet<IpAddr> = cfg
        .members
        .iter()
        .filter(|m| m.address != cfg.interface.address)
        .filter_map(|m| m.endpoint.map(|e| e.ip()))
        .chain(registry)
        .collect();
    let mut best: Option<(u32, IpAddr, u32)> = None;
    for target in targets {
        match netlink.path_mtu_toward(target).await {
            Ok(Some((_, underlay))) => {
                let mtu = tunnel_mtu(underlay, target.is_ipv6());
                if best.is_none_or(|(m, _, _)| mtu < m) {
                    best = Some((mtu, target, underlay));
                }
            }
            Ok(None) => tracing::debug!(%target, "no route toward this underlay address for the MTU"),
            Err(e) => {
                tracing::warn!(%target, error = %e, "cannot read the route toward this underlay address for the MTU")
            }
        }
    }
    match best {
        Some((mtu, toward, underlay)) => {
            tracing::info!(mtu, %toward, underlay_mtu = underlay, "interface MTU derived from the underlay (set interface.mtu to choose it)");
            Some(mtu)
        }
        None => {
            tracing::info!(mtu = cfg.interface.mtu, "no route toward a peer's endpoint or the registry yet: interface MTU is the default (set interface.mtu to choose it)");
            None
        }
    }
}
