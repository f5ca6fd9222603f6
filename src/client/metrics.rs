//! The registry link's metrics: whether the registry answers, whether this node is enrolled, the last
//! error, the revision in force, which replica the link calls, and what the screening of views refused or
//! dropped. Also the link's state as `sdwanctl status` shows it ([`RegistryView`]): the same facts, with
//! the one-line problem and its fix; the k3s handshake's progress ([`K3sProgress`]) travels with them.
//! Owns only the series, that state and the reachability transition log; the link decides when to record,
//! and the client ([`super::http::RegistryClient`]) which replica is current (read at each scrape).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::http::{ClientError, ReplicaCursor};
use super::k3s::K3sProgress;
use crate::control::RegistryView;

/// The registry metrics.
#[derive(Clone)]
pub struct ClientMetrics {
    /// `sdwand_registry_up`: 1 when the last call reached the registry and was not refused as
    /// unauthenticated or forbidden (401, 403: this node cannot use the registry until someone acts).
    pub up: IntGauge,
    /// `sdwand_registry_enrolled`: 1 once this node has a registry identity (enrolled now or before).
    pub enrolled: IntGauge,
    /// `sdwand_registry_last_error{code}`: 1 for the kind of the last failed call while calls keep
    /// failing (`code`: the HTTP status of a refusal, or `unreachable`, `bad_answer`, `setup`); no series
    /// after a success. One series at most, whatever the registry sends.
    pub last_error: IntGaugeVec,
    /// `sdwand_registry_revision`: the revision of the last accepted view.
    pub revision: IntGauge,
    /// `sdwand_registry_refused_rekeys_total`: members refused because their address is pinned to another key.
    pub refused_rekeys: IntCounter,
    /// `sdwand_registry_views_refused_total{reason}`: whole views refused (the last good one stays).
    pub views_refused: IntCounterVec,
    /// `sdwand_registry_view_entries_dropped_total{reason}`: members, VIPs and workload prefixes dropped from accepted views
    /// (and floors removed, `reason="term_floor"`).
    pub entries_dropped: IntCounterVec,
    /// `sdwand_registry_floors_refused_total`: epoch floors of report answers above the highest term.
    pub floors_refused: IntCounter,
    /// Where the k3s handshake and its drop-in stand, for `sdwanctl status` (the handshake task records).
    pub k3s: K3sProgress,
    /// `sdwand_registry_replica_info{url}`: 1 on the replica the link calls now (see [`ClientMetrics::follow`]).
    replica: ReplicaInfo,
    reachable: Arc<AtomicBool>,
    /// The problem `sdwanctl status` shows: what failed and how to fix it; `None` after a success.
    problem: Arc<Mutex<Option<String>>>,
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
            enrolled: IntGauge::new(
                "sdwand_registry_enrolled",
                "1 once this node has a registry identity (enrolled), else 0 (still enrolling).",
            )
            .expect("valid metric"),
            last_error: IntGaugeVec::new(
                Opts::new(
                    "sdwand_registry_last_error",
                    "1 for the kind of the last failed registry call (code: HTTP status of a refusal, or \
                     unreachable, bad_answer, setup) while calls keep failing; absent after a success.",
                ),
                &["code"],
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
                    "Members, VIPs and workload prefixes dropped from registry views by the rule named in reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            floors_refused: IntCounter::new(
                "sdwand_registry_floors_refused_total",
                "Epoch floors from the registry refused because they are above the highest term.",
            )
            .expect("valid metric"),
            k3s: K3sProgress::default(),
            replica: ReplicaInfo {
                gauge: IntGaugeVec::new(
                    Opts::new(
                        "sdwand_registry_replica_info",
                        "1 on the registry replica (url, as configured) this node's calls go to now; one series.",
                    ),
                    &["url"],
                )
                .expect("valid metric"),
                cursor: Arc::new(Mutex::new(None)),
            },
            reachable: Arc::new(AtomicBool::new(true)),
            problem: Arc::new(Mutex::new(None)),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.up.clone()))?;
        registry.register(Box::new(self.enrolled.clone()))?;
        registry.register(Box::new(self.last_error.clone()))?;
        registry.register(Box::new(self.revision.clone()))?;
        registry.register(Box::new(self.refused_rekeys.clone()))?;
        registry.register(Box::new(self.views_refused.clone()))?;
        registry.register(Box::new(self.entries_dropped.clone()))?;
        registry.register(Box::new(self.floors_refused.clone()))?;
        registry.register(Box::new(self.replica.clone()))
    }

    /// Shows the replica `cursor` points at in `sdwand_registry_replica_info` from now on (no series before).
    pub fn follow(&self, cursor: ReplicaCursor) {
        *self.replica.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some(cursor);
    }

    /// Records the outcome of a call; logs only the transitions (unreachable, reachable again). A success
    /// clears the last error and the problem.
    pub(super) fn outcome(&self, result: Result<(), &ClientError>) {
        let ok = match result {
            Ok(()) => true,
            Err(ClientError::Refused { status, .. }) => !matches!(status, 401 | 403),
            Err(_) => false,
        };
        self.up.set(i64::from(ok));
        self.last_error.reset();
        match result {
            Ok(()) => self.set_problem(None),
            Err(e) => self.last_error.with_label_values(&[&error_code(e)]).set(1),
        }
        let was = self.reachable.swap(ok, Ordering::Relaxed);
        // A refusal is logged by its caller, with what to do.
        match (was, result) {
            (true, Err(e)) if !ok && !matches!(e, ClientError::Refused { .. }) => {
                tracing::warn!("registry unreachable, retrying with backoff: {e}")
            }
            (false, _) if ok => tracing::info!("registry reachable again"),
            _ => {}
        }
    }

    /// Sets the problem `sdwanctl status` shows (`None`: none).
    pub(super) fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// The link's state for `sdwanctl status`, with the registry at `url`.
    pub fn view(&self, url: &str) -> RegistryView {
        RegistryView {
            url: url.to_owned(),
            enrolled: self.enrolled.get() == 1,
            up: self.up.get() == 1,
            problem: self.problem.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// `sdwand_registry_replica_info`, rendered at each scrape from the client's cursor: the client owns which
/// replica is current, the gauge only carries it into the exposition.
#[derive(Clone)]
struct ReplicaInfo {
    gauge: IntGaugeVec,
    /// The followed client's cursor; held locked while the gauge is rewritten and collected, so concurrent
    /// scrapes each see one series.
    cursor: Arc<Mutex<Option<ReplicaCursor>>>,
}

impl Collector for ReplicaInfo {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        self.gauge.reset();
        if let Some(c) = cursor.as_ref() {
            self.gauge.with_label_values(&[c.current()]).set(1);
        }
        self.gauge.collect()
    }
}

/// The `code` label of `sdwand_registry_last_error` for `e`: bounded whatever the registry sends.
fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Refused { status, .. } => status.to_string(),
        ClientError::Unreachable { .. } => "unreachable".to_owned(),
        ClientError::Decode { .. } | ClientError::TooLarge { .. } => "bad_answer".to_owned(),
        ClientError::Setup(_) => "setup".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16) -> ClientError {
        ClientError::Refused {
            url: "https://r/v1/peers/enroll".into(),
            status,
            code: "x".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn an_auth_refusal_is_down_and_a_success_clears_the_last_error() {
        let m = ClientMetrics::new();
        m.outcome(Err(&refused(401)));
        assert_eq!(m.up.get(), 0);
        assert_eq!(m.last_error.with_label_values(&["401"]).get(), 1);
        m.outcome(Err(&refused(409)));
        assert_eq!(
            m.up.get(),
            1,
            "a 409 answer means the registry is reachable and accepts the token"
        );
        assert_eq!(m.last_error.with_label_values(&["409"]).get(), 1);
        assert_eq!(m.last_error.with_label_values(&["401"]).get(), 0, "one series at most");
        m.set_problem(Some("p".into()));
        m.outcome(Ok(()));
        assert_eq!(m.up.get(), 1);
        assert_eq!(m.view("u").problem, None);
    }

    /// The exposition of `m`'s registered series.
    fn render(m: &ClientMetrics) -> String {
        let registry = prometheus::Registry::new();
        m.register(&registry).expect("register");
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode")
    }

    #[test]
    fn the_replica_info_names_the_followed_clients_current_replica_only() {
        let m = ClientMetrics::new();
        assert!(
            !render(&m).contains("sdwand_registry_replica_info{"),
            "no series before a client"
        );
        let urls = ["http://192.0.2.2:7443".to_owned(), "http://192.0.2.6:7443/".to_owned()];
        let client =
            super::super::http::RegistryClient::connect(&urls, None, "registry.ca_file", "test").expect("client");
        m.follow(client.cursor());
        let text = render(&m);
        assert!(
            text.contains("sdwand_registry_replica_info{url=\"http://192.0.2.2:7443\"} 1"),
            "{text}"
        );
        assert_eq!(text.matches("sdwand_registry_replica_info{").count(), 1, "{text}");
    }
}
