//! The running daemon: [`Daemon`] holds what the loop needs between events, waits for the next event
//! ([`Daemon::next_event`]) and hands it to one `on_*` method.
//!
//! It owns the loop's timers and flags (resync, report, watchdog, netlink debounce, restart, failover
//! socket retry, stop deadline). It must not install signal handlers (stop and reload requests arrive as
//! [`Trigger`]s) and does not build itself ([`super::start`] does).

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant, Interval};

use crate::client::{Link, LinkEvent};
use crate::control::EndpointView;
use crate::control::Incoming;
use crate::metrics::Metrics;
use crate::vip::runtime::{Input, VipRuntime};
use crate::wg::userspace::{RestartBackoff, Supervisor};
use crate::wg::BackendInUse;

use super::backend::{exited, teardown};
use super::netwatch::NetWatch;
use super::plane::Plane;
use super::{
    apply, bind_vip, control, effective, endpoint, notify, raise_floors, reload, Loaded, Trigger, NET_DEBOUNCE, RETRY,
};

/// The daemon between events.
pub(super) struct Daemon {
    /// The configuration file, read again on reload.
    pub(super) config_path: PathBuf,
    /// The configuration in force with its key.
    pub(super) loaded: Loaded,
    /// The registry link, with `[registry]`.
    pub(super) link: Option<Link>,
    pub(super) metrics: Metrics,
    /// What the metrics endpoint is doing, for `sdwanctl status`.
    pub(super) metrics_endpoint: watch::Receiver<EndpointView>,
    /// The second endpoint on the overlay address (`daemon.metrics_overlay_port`), once started: when the
    /// daemon is first ready, so the address is on the interface.
    pub(super) overlay_endpoint: Option<watch::Receiver<EndpointView>>,
    /// Stop and reload requests from outside.
    pub(super) triggers: mpsc::Receiver<Trigger>,
    /// False once the sender of `triggers` is gone (which asked for a stop).
    pub(super) triggers_open: bool,
    /// `sdwanctl` requests, from `control_task`.
    pub(super) control_rx: mpsc::Receiver<Incoming>,
    pub(super) control_task: JoinHandle<()>,
    pub(super) netwatch: NetWatch,
    pub(super) backend: BackendInUse,
    /// The userspace implementation, while one runs.
    pub(super) supervisor: Option<Supervisor>,
    pub(super) plane: Plane,
    pub(super) vip: VipRuntime,
    pub(super) resync: Interval,
    /// The systemd watchdog period, when systemd asks for one.
    pub(super) watchdog: Option<Duration>,
    pub(super) watchdog_tick: Interval,
    pub(super) report_tick: Interval,
    /// Set once the data plane was reconciled and systemd was told.
    pub(super) ready: bool,
    /// When the debounced netlink events are due for a kernel pass.
    pub(super) net_due: Option<Instant>,
    /// When the exited userspace implementation is due for a restart.
    pub(super) restart_due: Option<Instant>,
    pub(super) restart_backoff: RestartBackoff,
    /// When the userspace implementation last (re)started.
    pub(super) running_since: Instant,
    /// While the failover socket should be bound and is not: when to try again.
    pub(super) bind_due: Option<Instant>,
    /// Set once a stop was requested: the VIPs are being handed over; exit when done or at this deadline.
    pub(super) stop_by: Option<Instant>,
}

/// One thing the loop waits for.
enum Event {
    /// A stop or reload request; `None` once the sender is gone.
    Trigger(Option<Trigger>),
    /// The VIP handover did not finish by `stop_by`.
    StopDeadline,
    Link(LinkEvent),
    Report,
    Vip(Input),
    Control(Incoming),
    Resync,
    NetChanged,
    NetDue,
    BindDue,
    WgExit(Option<ExitStatus>),
    RestartDue,
    Watchdog,
}

/// A new interval of `period` that delays missed ticks.
pub(super) fn delaying_interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

impl Daemon {
    /// Runs the loop until a stop completes, then tears down per `daemon.teardown_on_exit`.
    pub(super) async fn run(mut self) {
        loop {
            if self.stop_by.is_some() && self.vip.all_stopped() {
                break;
            }
            if !self.vip.needs_bind() {
                self.bind_due = None;
            } else if self.bind_due.is_none() {
                self.bind_due = Some(Instant::now() + RETRY);
            }
            self.netwatch.set_ifindex(self.plane.ifindex);
            let event = self.next_event().await;
            if self.dispatch(event).await.is_break() {
                break;
            }
        }
        self.finish().await;
    }

    /// Waits for the next event.
    async fn next_event(&mut self) -> Event {
        let stopping = self.stop_by.is_some();
        tokio::select! {
            trigger = self.triggers.recv(), if self.triggers_open => Event::Trigger(trigger),
            _ = sleep_until(self.stop_by.unwrap_or_else(Instant::now)), if stopping => Event::StopDeadline,
            event = next_link_event(self.link.as_mut()) => Event::Link(event),
            _ = self.report_tick.tick(), if self.link.is_some() => Event::Report,
            input = self.vip.next_input() => Event::Vip(input),
            Some(incoming) = self.control_rx.recv() => Event::Control(incoming),
            _ = self.resync.tick() => Event::Resync,
            () = self.netwatch.changed(), if self.net_due.is_none() => Event::NetChanged,
            _ = sleep_until(self.net_due.unwrap_or_else(Instant::now)), if self.net_due.is_some() => Event::NetDue,
            _ = sleep_until(self.bind_due.unwrap_or_else(Instant::now)), if self.bind_due.is_some() => Event::BindDue,
            status = exited(&mut self.supervisor) => Event::WgExit(status),
            _ = sleep_until(self.restart_due.unwrap_or_else(Instant::now)), if self.restart_due.is_some() => Event::RestartDue,
            _ = self.watchdog_tick.tick(), if self.watchdog.is_some() => Event::Watchdog,
        }
    }

    /// Hands `event` to its handler; `Break` ends the loop.
    async fn dispatch(&mut self, event: Event) -> ControlFlow<()> {
        match event {
            Event::Trigger(Some(Trigger::Stop(cause))) => return self.on_stop(cause).await,
            Event::Trigger(Some(Trigger::Reload)) => self.on_reload().await,
            Event::Trigger(None) => {
                self.triggers_open = false;
                return self.on_stop("shutdown request").await;
            }
            Event::StopDeadline => {
                tracing::warn!("VIP handover did not finish in time; exiting anyway");
                return ControlFlow::Break(());
            }
            Event::Link(event) => self.on_link_event(event).await,
            Event::Report => self.on_report(),
            Event::Vip(input) => self.on_vip_input(input).await,
            Event::Control(incoming) => self.on_control(incoming).await,
            Event::Resync => self.on_resync().await,
            Event::NetChanged => self.net_due = Some(Instant::now() + NET_DEBOUNCE),
            Event::NetDue => self.on_net_due().await,
            Event::BindDue => {
                self.bind_due = None;
                bind_vip(&mut self.vip, &mut self.plane).await;
            }
            Event::WgExit(status) => self.on_wg_exit(status).await,
            Event::RestartDue => self.on_restart_due().await,
            Event::Watchdog => notify(&[NotifyState::Watchdog]),
        }
        ControlFlow::Continue(())
    }

    /// A stop request (`cause` names it for the log): the first starts the VIP handover, a second one (or
    /// nothing to hand over) ends the loop.
    pub(super) async fn on_stop(&mut self, cause: &str) -> ControlFlow<()> {
        if self.stop_by.is_some() {
            tracing::warn!("{cause} received again; exiting without waiting for the VIP handover");
            return ControlFlow::Break(());
        }
        tracing::info!("{cause} received; stopping");
        notify(&[NotifyState::Stopping]);
        self.vip.shutdown(std::time::Instant::now());
        let timers = self.loaded.config.failover.timers();
        self.stop_by = Some(Instant::now() + timers.handover_timeout() + timers.drain_timeout());
        if self.vip.all_stopped() {
            return ControlFlow::Break(());
        }
        self.vip.flush(&mut self.plane).await;
        ControlFlow::Continue(())
    }

    /// A reload request: reads the configuration file again and applies it, or keeps the one in force.
    pub(super) async fn on_reload(&mut self) {
        if self.stop_by.is_some() {
            tracing::warn!("SIGHUP ignored: sdwand is stopping (handing its VIPs over)");
            self.metrics.config_reloads.with_label_values(&["rejected"]).inc();
            return;
        }
        let new = match reload(&self.config_path, &self.loaded, self.link.as_ref()) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("configuration reload refused, the previous configuration stays in force: {e}");
                self.metrics.config_reloads.with_label_values(&["rejected"]).inc();
                return;
            }
        };
        tracing::info!(
            members = new.config.members.len(),
            vips = new.config.vips.len(),
            "configuration reloaded"
        );
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        if new.config.daemon.resync_interval != self.loaded.config.daemon.resync_interval {
            self.resync = delaying_interval(new.config.daemon.resync_interval);
        }
        if let (Some(link), Some(reg)) = (self.link.as_mut(), &new.file.registry) {
            link.set_k3s(new.file.k3s.as_ref());
            if Some(reg.report_interval) != self.loaded.file.registry.as_ref().map(|r| r.report_interval) {
                self.report_tick = delaying_interval(reg.report_interval);
            }
        }
        self.loaded = new;
        apply(&self.loaded, self.link.as_ref(), &mut self.plane, &mut self.vip).await;
        self.write_k3s_files();
    }

    /// Writes the k3s drop-in and the CNI configuration for the configuration in force and the interface's
    /// MTU (only what changed; see [`Link::write_k3s_files`]).
    pub(super) fn write_k3s_files(&mut self) {
        if let Some(link) = self.link.as_mut() {
            link.write_k3s_files(&self.loaded.config, self.plane.desired.mtu);
        }
    }

    /// An event of the registry link: a new view, term floors, or the k3s handshake.
    async fn on_link_event(&mut self, event: LinkEvent) {
        let Some(link) = self.link.as_mut() else { return };
        match event {
            LinkEvent::View if self.stop_by.is_some() => {
                tracing::info!("registry view not applied: sdwand is stopping");
            }
            LinkEvent::View => match effective(&self.loaded, Some(link)) {
                Ok(cfg) => {
                    self.loaded.config = cfg;
                    let (members, vips) = (self.loaded.config.members.len(), self.loaded.config.vips.len());
                    tracing::info!(members, vips, "registry view applied");
                    apply(&self.loaded, Some(link), &mut self.plane, &mut self.vip).await;
                    raise_floors(&mut self.vip, link);
                    manual_moves(link, &mut self.vip, &mut self.plane).await;
                    self.write_k3s_files();
                }
                Err(e) => tracing::error!("registry view refused, the previous one stays in force: {e}"),
            },
            LinkEvent::Floors(floors) => {
                for f in &floors {
                    self.vip.raise_term(f.address, f.epoch.term);
                }
                link.record_floors(&floors);
            }
            LinkEvent::Joined(resp) => {
                tracing::debug!(cluster = %resp.cluster_id, "k3s handshake done");
                self.write_k3s_files();
            }
        }
    }

    /// Reports the VIPs' states to the registry.
    fn on_report(&mut self) {
        if let Some(link) = &self.link {
            let vip = &self.vip;
            link.report(&vip.statuses(std::time::Instant::now()), |a| vip.name_of(a));
        }
    }

    /// A datagram or timer for the VIP machines.
    async fn on_vip_input(&mut self, input: Input) {
        self.vip.handle(input, std::time::Instant::now());
        self.vip.flush(&mut self.plane).await;
    }

    /// An `sdwanctl` request.
    async fn on_control(&mut self, (request, reply): Incoming) {
        let is_move = matches!(request, crate::control::Request::VipMove { .. });
        let facts = control::Facts {
            backend: self.backend.as_str(),
            ready: self.ready,
            config: &self.loaded.config,
            metrics: self.metrics_endpoint.borrow().clone(),
            metrics_overlay: self.overlay_endpoint.as_ref().map(|e| e.borrow().clone()),
            registry: self
                .link
                .as_ref()
                .zip(self.loaded.file.registry.as_ref())
                .map(|(link, reg)| link.registry_view(&reg.urls_shown())),
            k3s: self.link.as_ref().and_then(|link| link.k3s_view()),
        };
        let mut response = control::answer(request, &mut self.vip, &self.plane, &facts);
        if is_move {
            self.vip.flush(&mut self.plane).await;
        }
        if matches!(response, crate::control::Response::Status(_)) {
            // The peers' liveness from a fresh device read, off the loop (the read may take a while).
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                control::complete_peers(&metrics, &mut response).await;
                let _ = reply.send(response);
            });
            return;
        }
        let _ = reply.send(response);
    }

    /// The periodic full pass over device and kernel; the first one that reaches the interface makes the
    /// daemon ready.
    async fn on_resync(&mut self) {
        let device_ok = self.plane.pass_device(true);
        let net = self.plane.pass_net().await;
        self.plane.pass_workload(true).await;
        bind_vip(&mut self.vip, &mut self.plane).await;
        self.write_k3s_files();
        // Ready once the device is configured and a kernel pass reached the interface, even if
        // some of its items failed (they are reported): a conflicting route must not keep the
        // rest of the data plane unmanaged under a restart loop.
        if device_ok && net.is_some() && !self.ready {
            self.ready = true;
            let peers = self.plane.desired.peers.len();
            tracing::info!(peers, backend = self.backend.as_str(), "data plane reconciled; ready");
            let status = format!("reconciled {peers} peers on {}", self.plane.desired.ifname);
            notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            if let Some(port) = self.loaded.file.daemon.metrics_overlay_port {
                tracing::info!(
                    port,
                    "serving metrics on the overlay address too (daemon.metrics_overlay_port)"
                );
                let listen = SocketAddr::new(self.loaded.config.interface.address.into(), port);
                let metrics = self.metrics.clone();
                self.overlay_endpoint =
                    Some(endpoint::spawn(metrics, listen, endpoint::METRICS_OVERLAY_PORT, RETRY).await);
            }
        }
        if let Some(snapshot) = self.plane.device.snapshot() {
            self.metrics.observe_received(snapshot);
        }
    }

    /// The debounced netlink events: a kernel pass.
    async fn on_net_due(&mut self) {
        self.net_due = None;
        self.plane.pass_net().await;
        bind_vip(&mut self.vip, &mut self.plane).await;
    }

    /// The userspace implementation exited: schedule its restart and tell the VIP machines they are deaf.
    async fn on_wg_exit(&mut self, status: Option<ExitStatus>) {
        let delay = self.restart_backoff.delay(self.running_since.elapsed());
        tracing::warn!(status = ?status, restart_in = ?delay, "userspace WireGuard exited; restarting it and pushing the full configuration");
        self.supervisor = None;
        self.plane.ifindex = None;
        self.plane.device.invalidate();
        self.restart_due = Some(Instant::now() + delay);
        // Its interface, and with it every datagram to the failover socket, is gone until the restart.
        let why = "the userspace WireGuard implementation exited".to_owned();
        self.vip.unbind(std::time::Instant::now(), why);
        self.vip.flush(&mut self.plane).await;
    }

    /// Restarts the userspace implementation and pushes the full configuration, or retries later.
    async fn on_restart_due(&mut self) {
        let path = &self.loaded.config.backend.userspace_path;
        match Supervisor::adopt_or_start(&self.plane.desired.ifname, path).await {
            Ok(s) => {
                self.metrics.userspace_restarts.inc();
                tracing::info!(pid = s.pid(), "userspace WireGuard running again");
                self.supervisor = Some(s);
                self.restart_due = None;
                self.running_since = Instant::now();
                self.plane.pass_device(true);
                self.plane.pass_net().await;
                bind_vip(&mut self.vip, &mut self.plane).await;
            }
            Err(e) => {
                self.metrics.reconcile_errors.with_label_values(&["backend"]).inc();
                let delay = self.restart_backoff.delay(Duration::ZERO);
                tracing::error!(error = %e, retry_in = ?delay, "restarting userspace WireGuard failed; retrying");
                self.restart_due = Some(Instant::now() + delay);
            }
        }
    }

    /// After the loop: stops serving `sdwanctl` and removes the interface or leaves it up.
    async fn finish(mut self) {
        self.control_task.abort();
        if self.loaded.config.daemon.teardown_on_exit {
            self.plane.remove_firewall().await;
            self.plane.remove_gateways().await;
            teardown(
                &self.plane.netlink,
                &self.plane.desired.ifname,
                self.backend,
                self.supervisor,
            )
            .await;
        } else {
            tracing::info!(iface = %self.plane.desired.ifname, "exiting; the data plane stays up (daemon.teardown_on_exit = false)");
        }
    }
}

/// The next event of the registry link; never, without one.
async fn next_link_event(link: Option<&mut Link>) -> LinkEvent {
    match link {
        Some(link) => link.next_event().await,
        None => std::future::pending().await,
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
