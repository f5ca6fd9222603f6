//! The registry link's metrics: whether the registry answers, the revision in force, and what the
//! screening of views refused or dropped. Owns only the series and the reachability transition log; the
//! link decides when to record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::http::ClientError;

/// The registry metrics.
#[derive(Clone)]
pub struct ClientMetrics {
    /// `sdwand_registry_up`: 1 when the last call reached the registry.
    pub up: IntGauge,
    /// `sdwand_registry_revision`: the revision of the last accepted view.
    pub revision: IntGauge,
    /// `sdwand_registry_refused_rekeys_total`: members refused because their address is pinned to another key.
    pub refused_rekeys: IntCounter,
    /// `sdwand_registry_views_refused_total{reason}`: whole views refused (the last good one stays).
    pub views_refused: IntCounterVec,
    /// `sdwand_registry_view_entries_dropped_total{reason}`: members and VIPs dropped from accepted views
    /// (and floors removed, `reason="term_floor"`).
    pub entries_dropped: IntCounterVec,
    /// `sdwand_registry_floors_refused_total`: epoch floors of report answers above the highest term.
    pub floors_refused: IntCounter,
    reachable: Arc<AtomicBool>,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics::new()
    }
}

impl ClientMetrics {
    /// Unregistered metrics (see [`ClientMetrics::register`]).
    pub fn new() -> ClientMetrics {
        ClientMetrics {
            up: IntGauge::new(
                "sdwand_registry_up",
                "1 when the registry answered the last call, else 0.",
            )
            .expect("valid metric"),
            revision: IntGauge::new(
                "sdwand_registry_revision",
                "Revision of the last network view accepted from the registry.",
            )
            .expect("valid metric"),
            refused_rekeys: IntCounter::new(
                "sdwand_registry_refused_rekeys_total",
                "Members refused because the registry gave a pinned address another public key.",
            )
            .expect("valid metric"),
            views_refused: IntCounterVec::new(
                Opts::new(
                    "sdwand_registry_views_refused_total",
                    "Registry views refused as a whole by the rule named in reason; the last good view stays.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            entries_dropped: IntCounterVec::new(
                Opts::new(
                    "sdwand_registry_view_entries_dropped_total",
                    "Members and VIPs dropped from registry views by the rule named in reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            floors_refused: IntCounter::new(
                "sdwand_registry_floors_refused_total",
                "Epoch floors from the registry refused because they are above the highest term.",
            )
            .expect("valid metric"),
            reachable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.up.clone()))?;
        registry.register(Box::new(self.revision.clone()))?;
        registry.register(Box::new(self.refused_rekeys.clone()))?;
        registry.register(Box::new(self.views_refused.clone()))?;
        registry.register(Box::new(self.entries_dropped.clone()))?;
        registry.register(Box::new(self.floors_refused.clone()))
    }

    /// Records the outcome of a call; logs only the transitions (unreachable, reachable again).
    pub(super) fn outcome(&self, result: Result<(), &ClientError>) {
        let ok = match result {
            Ok(()) | Err(ClientError::Refused { .. }) => true,
            Err(_) => false,
        };
        self.up.set(i64::from(ok));
        let was = self.reachable.swap(ok, Ordering::Relaxed);
        match (was, result) {
            (true, Err(e)) if !ok => tracing::warn!("registry unreachable, retrying with backoff: {e}"),
            (false, _) if ok => tracing::info!("registry reachable again"),
            _ => {}
        }
    }
}
