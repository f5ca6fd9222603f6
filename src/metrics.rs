//! Prometheus metrics and the HTTP endpoint that serves them.
//!
//! Metric names are part of the user-facing surface: keep them stable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::http_serve::{self, ConnectionStats, Limits};
use crate::mesh::{ActualDevice, Desired};

mod endpoint;
mod vip;
pub use endpoint::Endpoint;
pub use vip::{VipGauges, VipMetrics};

/// Every metric sdwand exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    peers_configured: IntGauge,
    handshake_age: prometheus::GaugeVec,
    rx_bytes: IntCounterVec,
    tx_bytes: IntCounterVec,
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
    /// Last byte counters seen per peer label, to turn device counters (which restart from zero with the
    /// device) into monotonic Prometheus counters.
    last_bytes: std::sync::Arc<std::sync::Mutex<HashMap<String, (u64, u64)>>>,
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
            handshake_age: prometheus::GaugeVec::new(
                Opts::new(
                    "sdwand_peer_last_handshake_age_seconds",
                    "Seconds since the peer's last completed handshake (absent before the first).",
                ),
                &["peer"],
            )
            .expect("valid metric"),
            rx_bytes: IntCounterVec::new(
                Opts::new("sdwand_peer_receive_bytes_total", "Bytes received from the peer."),
                &["peer"],
            )
            .expect("valid metric"),
            tx_bytes: IntCounterVec::new(
                Opts::new("sdwand_peer_transmit_bytes_total", "Bytes sent to the peer."),
                &["peer"],
            )
            .expect("valid metric"),
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
            last_bytes: Default::default(),
            vip: VipMetrics::register(&registry),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info),
            Box::new(m.peers_configured.clone()),
            Box::new(m.handshake_age.clone()),
            Box::new(m.rx_bytes.clone()),
            Box::new(m.tx_bytes.clone()),
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

    /// Sets `sdwand_peers_configured` from a new desired state (at once, not at the next resync).
    pub fn observe_desired(&self, desired: &Desired) {
        self.peers_configured.set(desired.peers.len() as i64);
    }

    /// Refreshes the per-peer series from a device snapshot; peers are labelled by their member name.
    pub fn observe_device(&self, desired: &Desired, device: &ActualDevice, now: SystemTime) {
        self.observe_desired(desired);
        let mut last = self
            .last_bytes
            .lock()
            .expect("metrics lock is never poisoned by a panic while held");
        // This pass's counters, by label; what is left in `last` afterwards belongs to peers that are gone.
        let mut current = HashMap::with_capacity(desired.peers.len());
        for (key, spec) in &desired.peers {
            let Some(peer) = device.peers.get(key) else { continue };
            let label = spec.name.as_str();
            match peer.last_handshake.and_then(|t| now.duration_since(t).ok()) {
                Some(age) => self.handshake_age.with_label_values(&[label]).set(age.as_secs_f64()),
                None => {
                    let _ = self.handshake_age.remove_label_values(&[label]);
                }
            }
            let (prev_rx, prev_tx) = last.remove(label).unwrap_or((0, 0));
            // A device counter below the last one means the device restarted: count from its new zero.
            self.rx_bytes
                .with_label_values(&[label])
                .inc_by(peer.rx_bytes.checked_sub(prev_rx).unwrap_or(peer.rx_bytes));
            self.tx_bytes
                .with_label_values(&[label])
                .inc_by(peer.tx_bytes.checked_sub(prev_tx).unwrap_or(peer.tx_bytes));
            current.insert(label.to_owned(), (peer.rx_bytes, peer.tx_bytes));
        }
        for label in std::mem::replace(&mut *last, current).into_keys() {
            let _ = self.handshake_age.remove_label_values(&[&label]);
            let _ = self.rx_bytes.remove_label_values(&[&label]);
            let _ = self.tx_bytes.remove_label_values(&[&label]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds the metrics listener, with a message that says which setting to change when it fails.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics endpoint {addr}: {e} (change daemon.metrics_listen)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use wireguard_control::Key;

    use super::*;
    use crate::mesh::{ActualPeer, PeerSpec};

    fn scene(rx: u64) -> (Desired, ActualDevice) {
        let key = Key::generate_private();
        let spec = PeerSpec {
            name: "b".into(),
            public_key: key.clone(),
            address: "fd00::2".parse().unwrap(),
            endpoint: None,
            allowed_ips: BTreeSet::new(),
            keepalive: None,
        };
        let mut desired = Desired::new("wg0", &Key::generate_private(), 1, 1420, "fd00::/64".parse().unwrap());
        desired.set_peers(vec![(spec, BTreeSet::new())]);
        let peer = ActualPeer {
            public_key: key.clone(),
            endpoint: None,
            allowed_ips: BTreeSet::new(),
            keepalive: None,
            last_handshake: Some(SystemTime::UNIX_EPOCH),
            rx_bytes: rx,
            tx_bytes: 0,
        };
        let device = ActualDevice {
            private_key: None,
            listen_port: None,
            peers: BTreeMap::from([(key.0, peer)]),
        };
        (desired, device)
    }

    #[test]
    fn byte_counters_stay_monotonic_across_a_device_restart() {
        let m = Metrics::new();
        let (desired, mut device) = scene(1000);
        m.observe_device(&desired, &device, SystemTime::now());
        device.peers.values_mut().next().unwrap().rx_bytes = 1500;
        m.observe_device(&desired, &device, SystemTime::now());
        // The implementation restarted: its counter starts again from zero.
        device.peers.values_mut().next().unwrap().rx_bytes = 200;
        m.observe_device(&desired, &device, SystemTime::now());
        assert_eq!(m.rx_bytes.with_label_values(&["b"]).get(), 1700);
        let text = m.render();
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
        m.observe_device(&desired, &device, SystemTime::now());
        desired.peers.clear();
        m.observe_device(&desired, &device, SystemTime::now());
        let text = m.render();
        assert!(!text.contains("peer=\"b\""), "{text}");
        assert!(text.contains("sdwand_peers_configured 0"), "{text}");
    }
}
