//! The registry's Prometheus metrics, served at `GET /metrics`.
//!
//! Request metrics are counted as requests finish, labelled by the matched route template (never the raw
//! path, whose ids would make a series per object); requests that match no route are `unmatched`. The
//! gauges of peers and clusters are computed at scrape time from one store read ([`Census`]).
//! Metric names are part of the user-facing surface: keep them stable.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::registry::model::{ClusterState, Lifecycle};

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Peers and clusters counted in one read, for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// (class, stale, count): every class and state, zeros included.
    pub peers: Vec<(Lifecycle, bool, u64)>,
    /// (state, count): every state, zeros included.
    pub clusters: Vec<(ClusterState, u64)>,
}

/// Every metric of the registry, in its own Prometheus registry.
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    peers: IntGaugeVec,
    clusters: IntGaugeVec,
    watch_clients: IntGauge,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryMetrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = RegistryMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "sdwan_registry_requests_total",
                    "HTTP requests answered, by route template and status code.",
                ),
                &["route", "code"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "sdwan_registry_request_duration_seconds",
                    "Time from request to answer, by route template (watches include their wait).",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0,
                ]),
                &["route"],
            )
            .expect("valid metric"),
            peers: IntGaugeVec::new(
                Opts::new(
                    "sdwan_registry_peers",
                    "Enrolled peers, by lifecycle class and state (stale: silent past the class's TTL).",
                ),
                &["class", "state"],
            )
            .expect("valid metric"),
            clusters: IntGaugeVec::new(
                Opts::new("sdwan_registry_clusters", "k3s clusters, by state."),
                &["state"],
            )
            .expect("valid metric"),
            watch_clients: IntGauge::new("sdwan_registry_watch_clients", "Clients waiting in a watch long poll.")
                .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.duration.clone()),
            Box::new(m.peers.clone()),
            Box::new(m.clusters.clone()),
            Box::new(m.watch_clients.clone()),
        ] {
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, code: u16, elapsed: Duration) {
        self.requests.with_label_values(&[route, &code.to_string()]).inc();
        self.duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }

    /// Sets the gauges from `census` and `watch_clients` and renders every metric in the text format.
    pub fn render(&self, census: &Census, watch_clients: usize) -> Result<String, prometheus::Error> {
        for (class, stale, n) in &census.peers {
            let state = if *stale { "stale" } else { "live" };
            self.peers.with_label_values(&[class.as_str(), state]).set(gauge(*n));
        }
        for (state, n) in &census.clusters {
            self.clusters.with_label_values(&[state.as_str()]).set(gauge(*n));
        }
        self.watch_clients.set(gauge(watch_clients as u64));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
