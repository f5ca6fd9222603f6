//! The registry's Prometheus metrics, served at `GET /metrics`.
//!
//! Request metrics are counted as requests finish, labelled by the matched route template (never the raw
//! path, whose ids would make a series per object); requests that match no route are `unmatched`. The
//! gauges of peers and clusters come from one store read ([`Census`]), taken at most once per
//! [`CENSUS_MAX_AGE`] however often the endpoint is scraped ([`CensusCache`]): a scrape flood costs no
//! more than one census every few seconds.
//!
//! **What a scrape reveals.** Without `metrics_token_file` the endpoint is public. It then shows only
//! registry-wide figures: the registry's version, request counts and latencies by route template,
//! connections, waiting watches, and the totals of peers by class and state and of clusters by state summed over every account. No
//! series carries an account, network, peer or cluster name or id, so a scrape tells nothing about any one
//! tenant beyond the sum of all. A registry whose operators count even that total as confidential (the
//! size of a shared registry) sets `metrics_token_file`: then every scrape must present that token, and
//! the endpoint also shows per-object gauges ([`Detail`]): each VIP's and floating prefix's holder and epoch
//! term, and each peer's last-seen time, labelled by network id, VIP address or prefix, and peer name; at most
//! [`MAX_DETAIL_SERIES`] of them (the rest are counted in `sdwan_registry_detail_series_dropped`).
//!
//! Metric names are part of the user-facing surface: keep them stable.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use sdwand::http_serve::ConnectionStats;
use sdwand::vocab::{ClusterState, Lifecycle};

/// How long a census serves scrapes before the next one reads the store again.
pub const CENSUS_MAX_AGE: Duration = Duration::from_secs(5);

/// The last census and when it was taken; one census at a time (concurrent scrapes wait for it).
#[derive(Debug, Default)]
pub struct CensusCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Census>)>>,
}

impl CensusCache {
    /// The last census if it is younger than [`CENSUS_MAX_AGE`] at `now`, else a new one from `take`.
    pub async fn get<E, F, Fut>(&self, now: Instant, take: F) -> Result<Arc<Census>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Census, E>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, census)) = last.as_ref() {
            if now.saturating_duration_since(*at) < CENSUS_MAX_AGE {
                return Ok(census.clone());
            }
        }
        let census = Arc::new(take().await?);
        *last = Some((now, census.clone()));
        Ok(census)
    }
}

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Peers and clusters counted in one read, for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// (class, stale, count): every class and state, zeros included.
    pub peers: Vec<(Lifecycle, bool, u64)>,
    /// (state, count): every state, zeros included.
    pub clusters: Vec<(ClusterState, u64)>,
    /// Per-object figures: `Some` only when the endpoint requires a token.
    pub detail: Option<Detail>,
}

/// The most per-object series (VIPs and peers together) a scrape shows.
pub const MAX_DETAIL_SERIES: usize = 10_000;

/// Per-object figures, only with `metrics_token_file` (they name networks, VIPs and peers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// (network id, VIP address, holder's peer name or `""` for none, epoch term or `None`).
    pub vips: Vec<(String, String, String, Option<u64>)>,
    /// (network id, floating prefix, holder's peer name or `""` for none, epoch term or `None`).
    pub floating: Vec<(String, String, String, Option<u64>)>,
    /// (network id, peer name, last seen, Unix ms).
    pub peers: Vec<(String, String, u64)>,
    /// Objects left out beyond [`MAX_DETAIL_SERIES`].
    pub dropped: u64,
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
    connections_open: IntGauge,
    connections_refused: IntCounter,
    build_info: IntGaugeVec,
    vip_holder: IntGaugeVec,
    vip_epoch_term: IntGaugeVec,
    floating_holder: IntGaugeVec,
    floating_epoch_term: IntGaugeVec,
    peer_last_seen: prometheus::GaugeVec,
    detail_dropped: IntGauge,
    leader: IntGauge,
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
            connections_open: IntGauge::new("sdwan_registry_connections_open", "Client connections open.")
                .expect("valid metric"),
            connections_refused: IntCounter::new(
                "sdwan_registry_connections_refused_total",
                "Connections closed at accept because max_connections were open.",
            )
            .expect("valid metric"),
            build_info: IntGaugeVec::new(
                Opts::new("sdwan_registry_build_info", "Always 1: the registry's version."),
                &["version"],
            )
            .expect("valid metric"),
            vip_holder: IntGaugeVec::new(
                Opts::new(
                    "sdwan_registry_vip_holder",
                    "Always 1: the peer the registry last heard holding the VIP (holder=\"\": none). Only with \
                     metrics_token_file.",
                ),
                &["network", "vip", "holder"],
            )
            .expect("valid metric"),
            vip_epoch_term: IntGaugeVec::new(
                Opts::new(
                    "sdwan_registry_vip_epoch_term",
                    "The term of the highest epoch reported for the VIP (absent before the first). Only with \
                     metrics_token_file.",
                ),
                &["network", "vip"],
            )
            .expect("valid metric"),
            floating_holder: IntGaugeVec::new(
                Opts::new(
                    "sdwan_registry_floating_holder",
                    "Always 1: the peer the registry last heard holding the floating prefix (holder=\"\": none). \
                     Only with metrics_token_file.",
                ),
                &["network", "prefix", "holder"],
            )
            .expect("valid metric"),
            floating_epoch_term: IntGaugeVec::new(
                Opts::new(
                    "sdwan_registry_floating_epoch_term",
                    "The term of the highest epoch reported for the floating prefix (absent before the first). \
                     Only with metrics_token_file.",
                ),
                &["network", "prefix"],
            )
            .expect("valid metric"),
            peer_last_seen: prometheus::GaugeVec::new(
                Opts::new(
                    "sdwan_registry_peer_last_seen_timestamp_seconds",
                    "Unix time the registry last heard from the peer. Only with metrics_token_file.",
                ),
                &["network", "peer"],
            )
            .expect("valid metric"),
            detail_dropped: IntGauge::new(
                "sdwan_registry_detail_series_dropped",
                "VIPs and peers left out of the per-object gauges beyond their bound (only with \
                 metrics_token_file).",
            )
            .expect("valid metric"),
            leader: IntGauge::new(
                "sdwan_registry_leader",
                "1 while this replica runs the background work (the reaper): always on SQLite, on exactly one \
                 replica on etcd.",
            )
            .expect("valid metric"),
            registry,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.duration.clone()),
            Box::new(m.peers.clone()),
            Box::new(m.clusters.clone()),
            Box::new(m.watch_clients.clone()),
            Box::new(m.connections_open.clone()),
            Box::new(m.connections_refused.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.vip_holder.clone()),
            Box::new(m.vip_epoch_term.clone()),
            Box::new(m.floating_holder.clone()),
            Box::new(m.floating_epoch_term.clone()),
            Box::new(m.peer_last_seen.clone()),
            Box::new(m.detail_dropped.clone()),
            Box::new(m.leader.clone()),
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

    /// Sets `sdwan_registry_leader`: whether this replica runs the background work now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets the gauges from `census`, `watch_clients` and `connections`, and renders every metric in the
    /// text format.
    pub fn render(
        &self,
        census: &Census,
        watch_clients: usize,
        connections: &ConnectionStats,
    ) -> Result<String, prometheus::Error> {
        for (class, stale, n) in &census.peers {
            let state = if *stale { "stale" } else { "live" };
            self.peers.with_label_values(&[class.as_str(), state]).set(gauge(*n));
        }
        for (state, n) in &census.clusters {
            self.clusters.with_label_values(&[state.as_str()]).set(gauge(*n));
        }
        // Objects gone since the last scrape leave no series behind.
        self.vip_holder.reset();
        self.vip_epoch_term.reset();
        self.floating_holder.reset();
        self.floating_epoch_term.reset();
        self.peer_last_seen.reset();
        if let Some(detail) = &census.detail {
            for (network, vip, holder, term) in &detail.vips {
                self.vip_holder.with_label_values(&[network, vip, holder]).set(1);
                if let Some(term) = term {
                    self.vip_epoch_term.with_label_values(&[network, vip]).set(gauge(*term));
                }
            }
            for (network, prefix, holder, term) in &detail.floating {
                self.floating_holder
                    .with_label_values(&[network, prefix, holder])
                    .set(1);
                if let Some(term) = term {
                    self.floating_epoch_term
                        .with_label_values(&[network, prefix])
                        .set(gauge(*term));
                }
            }
            for (network, peer, seen_ms) in &detail.peers {
                self.peer_last_seen
                    .with_label_values(&[network, peer])
                    .set(*seen_ms as f64 / 1000.0);
            }
            self.detail_dropped.set(gauge(detail.dropped));
        }
        self.watch_clients.set(gauge(watch_clients as u64));
        self.connections_open.set(gauge(connections.open() as u64));
        let refused = connections.refused();
        self.connections_refused
            .inc_by(refused.saturating_sub(self.connections_refused.get()));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_census_serves_scrapes_until_it_is_too_old() {
        let cache = CensusCache::default();
        let t0 = Instant::now();
        let taken = std::sync::atomic::AtomicUsize::new(0);
        let take = || async {
            taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, ()>(Census::default())
        };
        for at in [
            t0,
            t0 + Duration::from_secs(1),
            t0 + CENSUS_MAX_AGE - Duration::from_millis(1),
        ] {
            cache.get(at, take).await.expect("census");
        }
        assert_eq!(
            taken.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "one census for three scrapes"
        );
        cache.get(t0 + CENSUS_MAX_AGE, take).await.expect("census");
        assert_eq!(
            taken.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "a new one once it is too old"
        );
        assert!(cache.get(t0 + 2 * CENSUS_MAX_AGE, || async { Err(()) }).await.is_err());
        cache
            .get(t0 + 2 * CENSUS_MAX_AGE, take)
            .await
            .expect("a failed census is not kept");
        assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
