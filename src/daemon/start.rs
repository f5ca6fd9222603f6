//! Start-up: from the configuration file to a [`Daemon`] ready to run its loop.
//!
//! It owns the start order: the metrics endpoint first (an enrollment that waits for the registry shows
//! `sdwand_registry_up`), then the registry link, the control socket, the backend, the adoption of what a
//! previous run left (straight into the desired state), and the VIP runtime and plane built on it. It
//! must not run the loop.

use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::{ClientMetrics, Link};
use crate::mesh::Desired;
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
use super::{effective, endpoint, load, raise_floors, DaemonError, Loaded, Trigger};

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
    let metrics_endpoint = endpoint::spawn(metrics.clone(), loaded.file.daemon.metrics_listen, endpoint::RETRY).await;
    let (link, early) = match start_link(&loaded, &metrics, &mut triggers).await? {
        (_, Early::Stop) => return Ok(None),
        (link, Early::Run { reload }) => (link, reload),
    };
    loaded.config = effective(&loaded, link.as_ref())?;
    let cfg = &loaded.config;
    tracing::info!(config = %config_path.display(), iface = %cfg.interface.name, address = %cfg.interface.address, members = cfg.members.len(), vips = cfg.vips.len(), "starting");

    let control_listener = crate::control::bind(&cfg.daemon.control_socket).await?;
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(16);
    let control_task = tokio::spawn(crate::control::serve(control_listener, control_tx));
    tracing::info!(socket = %cfg.daemon.control_socket.display(), "sdwanctl socket ready");

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
    if early {
        daemon.on_reload().await;
    }
    Ok(Some(daemon))
}

/// Starts the registry link with `[registry]`, unless a stop is requested first.
async fn start_link(
    loaded: &Loaded,
    metrics: &Metrics,
    triggers: &mut mpsc::Receiver<Trigger>,
) -> Result<(Option<Link>, Early), DaemonError> {
    let Some(reg) = &loaded.file.registry else {
        return Ok((None, Early::Run { reload: false }));
    };
    let client_metrics = ClientMetrics::new();
    if let Err(e) = client_metrics.register(metrics.prometheus_registry()) {
        tracing::error!(error = %e, "registering the registry metrics failed");
    }
    tracing::info!(url = %reg.url, "starting the registry link");
    let mut starting = pin!(Link::start(&loaded.file, &loaded.key, client_metrics));
    let mut reload = false;
    loop {
        tokio::select! {
            link = &mut starting => return Ok((Some(link?), Early::Run { reload })),
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
    let plane = Plane::new(netlink, DeviceReconciler::new(device), metrics.clone(), desired);
    Ok(Parts {
        netwatch,
        backend,
        supervisor,
        plane,
        vip,
    })
}
