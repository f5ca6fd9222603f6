//! Prometheus metrics and the HTTP endpoint that serves them.
//!
//! Metric names are part of the user-facing surface: keep them stable.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::PeerMetrics;
use crate::http_serve::{self, ConnectionStats, Limits};
use crate::mesh::{ActualDevice, Desired};
use crate::wg;

mod endpoint;
mod peers;
mod process;
mod vip;
pub use endpoint::Endpoint;
pub use peers::{PeerLive, PeerSeries, MIN_READ_INTERVAL, READ_TIMEOUT};
pub use vip::{VipGauges, VipMetrics};

/// Every metric sdwand exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    peers_configured: IntGauge,
    /// `sdwand_node_info`: one series, this node's identity.
    node_info: IntGaugeVec,
    /// The labels `node_info` is published under.
    node_labels: Arc<std::sync::Mutex<Option<[String; 5]>>>,
    /// The per-peer series.
    peers: PeerSeries,
    /// `process_*`.
    process: process::ProcessSeries,
    /// Duration of reconcile passes, by scope (`device` or `net`).
    pub reconcile_duration: HistogramVec,
    /// Failed reconcile passes, by kind (`wireguard`, `netlink`, `backend`).
    pub reconcile_errors: IntCounterVec,
    /// Changes applied (peers added, updated, removed; addresses and routes added or removed), by kind.
    pub changes_applied: IntCounterVec,
    backend: IntGaugeVec,
    /// Restarts of the userspace implementation after it died.
    pub userspace_restarts: IntCounter,
    /// Configuration reloads, by result (`ok`, `rejected`).
    pub config_reloads: IntCounterVec,
    /// VIP failover metrics.
    pub vip: VipMetrics,
}

impl Metrics {
    /// The Prometheus registry the endpoint serves (for metrics owned by other modules, e.g. the registry
    /// client's).
    pub fn prometheus_registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("sdwand_build_info", "Build information; the value is always 1."),
            &["version"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Metrics {
            peers_configured: IntGauge::new(
                "sdwand_peers_configured",
                "Peers in the desired state of the interface.",
            )
            .expect("valid metric"),
            node_info: IntGaugeVec::new(
                Opts::new(
                    "sdwand_node_info",
                    "This node's identity; the value is always 1 (absent until the identity is known).",
                ),
                &NODE_LABELS,
            )
            .expect("valid metric"),
            node_labels: Default::default(),
            peers: PeerSeries::register(&registry),
            process: process::ProcessSeries::register(&registry),
            reconcile_duration: HistogramVec::new(
                HistogramOpts::new("sdwand_reconcile_duration_seconds", "Duration of a reconcile pass.").buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["scope"],
            )
            .expect("valid metric"),
            reconcile_errors: IntCounterVec::new(
                Opts::new("sdwand_reconcile_errors_total", "Failed reconcile passes, by kind."),
                &["kind"],
            )
            .expect("valid metric"),
            changes_applied: IntCounterVec::new(
                Opts::new(
                    "sdwand_changes_applied_total",
                    "Changes applied to the data plane, by kind.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            backend: IntGaugeVec::new(
                Opts::new("sdwand_backend", "WireGuard backend in use (1) and not in use (0)."),
                &["backend"],
            )
            .expect("valid metric"),
            userspace_restarts: IntCounter::new(
                "sdwand_userspace_restarts_total",
                "Restarts of the userspace WireGuard implementation after it died.",
            )
            .expect("valid metric"),
            config_reloads: IntCounterVec::new(
                Opts::new("sdwand_config_reloads_total", "Configuration reloads, by result."),
                &["result"],
            )
            .expect("valid metric"),
            vip: VipMetrics::register(&registry),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info),
            Box::new(m.peers_configured.clone()),
            Box::new(m.node_info.clone()),
            Box::new(m.reconcile_duration.clone()),
            Box::new(m.reconcile_errors.clone()),
            Box::new(m.changes_applied.clone()),
            Box::new(m.backend.clone()),
            Box::new(m.userspace_restarts.clone()),
            Box::new(m.config_reloads.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        for kind in ["wireguard", "netlink", "backend"] {
            m.reconcile_errors.with_label_values(&[kind]);
        }
        for result in ["ok", "rejected"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m
    }

    /// Marks `label` as the backend in use.
    pub fn set_backend(&self, label: &str) {
        for b in ["kernel", "userspace"] {
            self.backend.with_label_values(&[b]).set(i64::from(b == label));
        }
    }

    /// Times a reconcile pass of `scope`.
    pub fn reconcile_timer(&self, scope: &str) -> prometheus::HistogramTimer {
        self.reconcile_duration.with_label_values(&[scope]).start_timer()
    }

    /// Sets `sdwand_peers_configured` and the per-peer labels from a new desired state (at once, not at
    /// the next scrape).
    pub fn observe_desired(&self, desired: &Desired) {
        self.peers_configured.set(desired.peers.len() as i64);
        self.peers.observe_desired(desired);
    }

    /// Sets the WireGuard device the per-peer series are read from when Prometheus scrapes.
    pub fn set_device(&self, device: wg::Device) {
        self.peers.set_device(device);
    }

    /// Applies `daemon.peer_metrics` (at start and on every reload).
    pub fn set_peer_metrics(&self, mode: PeerMetrics) {
        self.peers.set_mode(mode);
    }

    /// Publishes `sdwand_node_info` for `node` (replacing the previous identity: one series at most).
    /// Label values that are not plain identifiers are published as `invalid`, so a registry answer can
    /// neither break the exposition nor grow the series without bound.
    pub fn set_node(&self, node: &NodeInfo<'_>) {
        let labels = [
            bounded_label(node.name),
            node.address.map(|a| a.to_string()).unwrap_or_default(),
            bounded_label(node.interface),
            bounded_label(node.network),
            bounded_label(node.public_key),
        ];
        let mut current = self
            .node_labels
            .lock()
            .expect("metrics lock is never poisoned by a panic while held");
        if current.as_ref() == Some(&labels) {
            return;
        }
        if let Some(old) = current.take() {
            let _ = self.node_info.remove_label_values(&old.each_ref().map(String::as_str));
        }
        self.node_info
            .with_label_values(&labels.each_ref().map(String::as_str))
            .set(1);
        *current = Some(labels);
    }

    /// The Prometheus text exposition of every metric, with handshake ages computed now.
    pub fn render(&self) -> String {
        self.peers.publish(SystemTime::now());
        self.process.update();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }

    /// What a scrape answers: reads the device first when the last read is old enough (see
    /// [`PeerSeries::refresh`]: rate-limited, bounded by [`READ_TIMEOUT`]), then renders.
    pub async fn scrape(&self) -> String {
        self.peers.refresh(true).await;
        self.render()
    }

    /// Reads the device for `sdwanctl status` (rate-limited and bounded like a scrape's read, also with
    /// `daemon.peer_metrics = "none"`), then returns the peers as the last good read showed them, by
    /// base64 public key, with when that read was taken.
    pub async fn peers_live(&self) -> (Option<std::time::Instant>, std::collections::BTreeMap<String, PeerLive>) {
        self.peers.refresh(false).await;
        self.peers.live()
    }

    /// Notes which peers sent something since the last look, from a device read the daemon made itself
    /// (the resync's), for the `RECEIVED` column of `sdwanctl status`.
    pub fn observe_received(&self, device: &ActualDevice) {
        self.peers.observe_received(device, SystemTime::now());
    }

    /// Serves `GET /metrics` ([`Endpoint`]) on `listener` until the task is dropped, within
    /// [`Limits::METRICS`] (a local user cannot hold the daemon's file descriptors through it).
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let stats = Arc::new(ConnectionStats::default());
        http_serve::serve(
            listener,
            Endpoint::new(self),
            Limits::METRICS,
            stats,
            std::future::pending(),
        )
        .await;
        Ok(())
    }
}

/// The label names of `sdwand_node_info`.
const NODE_LABELS: [&str; 5] = ["name", "address", "interface", "network", "public_key"];

/// Longest label value `sdwand_node_info` publishes as given.
const MAX_LABEL: usize = 64;

/// This node's identity, for `sdwand_node_info`. Empty strings (and no address) while unknown: a static
/// configuration has no network, a node enrolling has no address yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeInfo<'a> {
    /// The member name (the registry's peer name, or the static member carrying this node's key).
    pub name: &'a str,
    /// The overlay /128.
    pub address: Option<Ipv6Addr>,
    /// The WireGuard interface.
    pub interface: &'a str,
    /// The registry network id; empty without `[registry]`.
    pub network: &'a str,
    /// This node's base64 public key (the `public_key` label of other nodes' `wireguard_*` series).
    pub public_key: &'a str,
}

/// `value` if it is at most [`MAX_LABEL`] characters of `[A-Za-z0-9._:/+=-]`, else `invalid`.
fn bounded_label(value: &str) -> String {
    let plain = value.len() <= MAX_LABEL
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '+' | '=' | '-'));
    if plain {
        value.to_owned()
    } else {
        "invalid".to_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds the metrics listener, with a message that names `setting` (the one that gave `addr`) when it
/// fails.
pub async fn bind(addr: SocketAddr, setting: &str) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics endpoint {addr}: {e} (change {setting})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a scrape does with a device read: the desired state's peers, the read, the render.
    fn observe_device(m: &Metrics, desired: &Desired, device: &ActualDevice) {
        m.observe_desired(desired);
        m.peers.observe_read(device, std::time::Instant::now());
    }

    fn scene(rx: u64) -> (Desired, ActualDevice) {
        let (desired, device, _) = peers::one_peer(Some(SystemTime::UNIX_EPOCH), rx, 0);
        (desired, device)
    }

    #[test]
    fn byte_counters_stay_monotonic_across_a_device_restart() {
        let m = Metrics::new();
        let (desired, mut device) = scene(1000);
        observe_device(&m, &desired, &device);
        device.peers.values_mut().next().unwrap().rx_bytes = 1500;
        observe_device(&m, &desired, &device);
        // The implementation restarted: its counter starts again from zero.
        device.peers.values_mut().next().unwrap().rx_bytes = 200;
        observe_device(&m, &desired, &device);
        let text = m.render();
        assert!(
            text.contains("sdwand_peer_receive_bytes_total{peer=\"b\"} 1700"),
            "{text}"
        );
        assert!(text.contains("sdwand_peers_configured 1"), "{text}");
        assert!(
            text.contains("sdwand_peer_last_handshake_age_seconds{peer=\"b\"}"),
            "{text}"
        );
        assert!(text.contains("sdwand_build_info{version="), "{text}");
    }

    #[test]
    fn series_of_removed_peers_disappear() {
        let m = Metrics::new();
        let (mut desired, device) = scene(10);
        observe_device(&m, &desired, &device);
        desired.peers.clear();
        observe_device(&m, &desired, &device);
        let text = m.render();
        assert!(!text.contains("peer=\"b\""), "{text}");
        assert!(text.contains("sdwand_peers_configured 0"), "{text}");
    }

    #[test]
    fn node_info_names_this_node_and_follows_changes() {
        let m = Metrics::new();
        assert!(!m.render().contains("sdwand_node_info{"));
        let mut node = NodeInfo {
            name: "node-1",
            address: Some("fd00::1".parse().unwrap()),
            interface: "wg0",
            network: "b8ae40cf-0000-4000-8000-000000000001",
            public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        };
        m.set_node(&node);
        let text = m.render();
        assert!(
            text.contains(
                "sdwand_node_info{address=\"fd00::1\",interface=\"wg0\",name=\"node-1\",\
                 network=\"b8ae40cf-0000-4000-8000-000000000001\",\
                 public_key=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"} 1"
            ),
            "{text}"
        );
        // A new identity replaces the old series; a label value that is not a plain identifier is
        // published as `invalid`.
        node.name = "node-2";
        node.network = "a\"b\nc";
        m.set_node(&node);
        let text = m.render();
        assert_eq!(text.matches("sdwand_node_info{").count(), 1, "{text}");
        assert!(text.contains("name=\"node-2\""), "{text}");
        assert!(text.contains("network=\"invalid\""), "{text}");
        let long = "x".repeat(MAX_LABEL + 1);
        node.name = &long;
        m.set_node(&node);
        assert!(m.render().contains("name=\"invalid\""));
    }
}
