//! The registry's HTTP API: routes, extractors and the JSON error envelope.
//!
//! Handlers parse (token, path, body), read the clock once and run one [`crate::service`] function
//! in one store transaction. Every error answers `{"error": {"code": "...", "message": "..."}}` with the
//! status of its [`ErrorKind`]: malformed bodies 400, bodies over [`MAX_BODY`] 413, unknown routes 404,
//! wrong methods 405.
//!
//! | route | token | does |
//! | --- | --- | --- |
//! | `POST /v1/networks` | admin | create a network of the account |
//! | `GET /v1/networks` | admin | every network of the account, oldest first |
//! | `POST /v1/networks/{id}/enrollment-tokens` | admin | issue an enrollment token for it |
//! | `GET /v1/networks/{id}/members` | peer of the network, or admin | members, VIPs, floating prefixes and the revision |
//! | `GET /v1/networks/{id}/watch?since=R&wait_ms=W` | peer of the network, or admin | long poll: the network once its revision is not R (at once if it is not: above, or below after a restore from backup), or 204 after W ms (default 25 s, at most 60 s) |
//! | `POST /v1/peers/enroll` | enrollment | enroll a peer: /128 (and /32 and pod shares, if the network has them), peer token, member list |
//! | `POST /v1/peers/self/report` | peer | liveness and VIP view; keeps each VIP's and floating prefix's highest epoch and holder (a floating prefix is reported under its key; no revision bump) |
//! | `POST /v1/runtime/handshake` | peer | k3s `bootstrap` / `join_request` |
//! | `POST /v1/clusters/{id}/report` | peer (server member) | k3s ready / failed |
//! | `GET /v1/peers` | admin | every peer of the account: cluster membership, last seen, `stale` |
//! | `DELETE /v1/peers/{id}` | admin | remove a peer with its cascade (tokens, membership, candidacy and witness role in VIPs and floating prefixes; its prefixes held down); 204 |
//! | `GET /v1/clusters` | admin | every cluster of the account, newest first, with VIP and members |
//! | `GET /v1/vips` | admin | every VIP of the account: candidates, holder, epoch, pending move |
//! | `GET /metrics` | none, or the metrics token | Prometheus text: requests by route and code, latency, connections, watch clients, peer and cluster totals |
//! | `POST /v1/vips/{id}/move` | admin | ask the holder to hand the VIP to candidate `to` (bumps the revision) |
//! | `GET /v1/enrollment-tokens` | admin | every enrollment token of the account: id, network, limits, uses, revocation (never the secret) |
//! | `DELETE /v1/enrollment-tokens/{id}` | admin | revoke an enrollment token: it answers 401 `token_revoked` from then on |
//! | `POST /v1/clusters/{id}/state` | admin | set a cluster `active` (out of `error`: joins work again) or `error` |
//! | `PUT /v1/vips/{id}/quorum` | admin | quorum mode of a VIP (`{"enabled": true, "witnesses": [names or ids]}`; bumps the revision); answers the VIP |
//! | `POST /v1/networks/{id}/floating` | admin | create a floating prefix (`{"prefix", "gateway"?, "candidates": [names or ids], "quorum"?, "witnesses"?}`, overlapping nothing the network routes; bumps the revision); 201 with the prefix |
//! | `GET /v1/floating` | admin | every floating prefix of the account: candidates, holder, epoch, pending move, quorum |
//! | `PUT /v1/floating/{id}` | admin | change a floating prefix's `candidates`, `quorum` or `witnesses` (left out: kept; bumps the revision) |
//! | `DELETE /v1/floating/{id}` | admin | delete a floating prefix (bumps the revision); 204 |
//! | `POST /v1/floating/{id}/move` | admin | ask the holder to hand the prefix to candidate `to` (bumps the revision) |
//! | `PUT /v1/peers/{id}/site-prefixes` | admin | replace a peer's site prefixes (`{"prefixes": [...]}`, in the network's site ranges, overlapping no other peer's; bumps the revision); answers the peer |
//!
//! **Limits** ([`Limits`]): every request but the watch is answered within `request_timeout` (503
//! `request_timeout`); one token holds at most `watches_per_token` waiting watches (429
//! `too_many_watches`); a peer token's report is written at most once per `report_min_interval` (429
//! `rate_limited` sooner, with `Retry-After`: the liveness it would record was recorded less than that ago).
//! Reports are authenticated with a read before they reach the single writer, so a flood of bogus tokens
//! costs reads, not writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{BoxError, Json, Router};
use serde_json::json;
use tower::ServiceBuilder;

use super::error::{code, ApiError, ErrorKind};
use super::metrics::{CensusCache, RegistryMetrics, UNMATCHED};
use super::service::Ttls;
use super::store::{Store, WriteTx};
use sdwand::http_serve::ConnectionStats;

mod extract;
mod limits;
mod routes;
mod watch;

pub use extract::{Bearer, JsonBody, PathId, QueryArgs};
pub use limits::{Limits, MetricsToken, ReportGate};
pub use watch::{Recording, Watchers};

/// The long-poll route, the one route without a request timeout.
const WATCH_ROUTE: &str = "/v1/networks/{id}/watch";

/// The largest request body accepted (every valid request is far smaller).
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store every request runs against.
    pub store: Arc<dyn Store>,
    /// The watched networks.
    pub watchers: Arc<Watchers>,
    /// When silent peers are stale (listings) and reaped.
    pub ttls: Ttls,
    /// Request counts and latencies, and the gauges of `GET /metrics`.
    pub metrics: Arc<RegistryMetrics>,
    /// The per-token limits and the request timeout.
    pub limits: Limits,
    /// When each peer token's report was last let through to the writer.
    pub reports: Arc<ReportGate>,
    /// The peer and cluster totals of `GET /metrics`, taken at most every few seconds.
    pub census: Arc<CensusCache>,
    /// The bearer token `GET /metrics` requires, if any.
    pub metrics_token: Option<Arc<MetricsToken>>,
    /// The server's connection counters (zero when served in process).
    pub connections: Arc<ConnectionStats>,
    /// Writes that failed in the store (not refusals): the reaper holds off after them.
    store_failures: Arc<AtomicU64>,
}

impl AppState {
    /// A state over `store` with nobody watching, and no per-token limits ([`Limits::IN_PROCESS`]); the
    /// server sets its configured ones with [`AppState::with_limits`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppState {
            store,
            watchers: Arc::new(Watchers::default()),
            ttls: Ttls::default(),
            metrics: Arc::new(RegistryMetrics::new()),
            limits: Limits::IN_PROCESS,
            reports: Arc::new(ReportGate::default()),
            census: Arc::new(CensusCache::default()),
            metrics_token: None,
            connections: Arc::new(ConnectionStats::default()),
            store_failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same state with `ttls`.
    pub fn with_ttls(self, ttls: Ttls) -> Self {
        AppState { ttls, ..self }
    }

    /// The same state with `limits`.
    pub fn with_limits(self, limits: Limits) -> Self {
        AppState { limits, ..self }
    }

    /// The same state requiring `token` on `GET /metrics`.
    pub fn with_metrics_token(self, token: MetricsToken) -> Self {
        AppState {
            metrics_token: Some(Arc::new(token)),
            ..self
        }
    }

    /// The same state reporting `connections` in its metrics.
    pub fn with_connections(self, connections: Arc<ConnectionStats>) -> Self {
        AppState { connections, ..self }
    }

    /// Writes that failed in the store since the start (full disk, I/O error, writer gone), as opposed to
    /// requests refused by the service.
    pub fn store_failures(&self) -> u64 {
        self.store_failures.load(Ordering::Relaxed)
    }

    /// Runs `f` in a write transaction ([`Store::write`]); once its writes are durable, announces every
    /// network revision it stored to the network's watchers, then answers `f`'s result.
    pub async fn write<T, F>(&self, mut f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn WriteTx) -> Result<T, ApiError> + Send + 'static,
    {
        let (answer, revisions) = self
            .store
            .write(move |tx| {
                let mut recording = Recording::new(tx);
                let answer = f(&mut recording)?;
                Ok::<_, ApiError>((answer, recording.revisions))
            })
            .await
            .inspect_err(|e| {
                if matches!(e.kind, ErrorKind::Internal | ErrorKind::Unavailable) {
                    self.store_failures.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        for (network_id, revision) in revisions {
            self.watchers.announce(&network_id, revision);
        }
        Ok(answer)
    }
}

/// The registry's routes over `store`.
pub fn router(store: Arc<dyn Store>) -> Router {
    router_with(AppState::new(store))
}

/// The registry's routes over `state` (shared with the reaper, whose removals wake watchers too).
pub fn router_with(state: AppState) -> Router {
    let routes: [(&'static str, MethodRouter<AppState>); 23] = [
        ("/v1/networks", post(routes::create_network).get(routes::list_networks)),
        (
            "/v1/networks/{id}/enrollment-tokens",
            post(routes::create_enrollment_token),
        ),
        ("/v1/networks/{id}/members", get(routes::members)),
        ("/v1/networks/{id}/watch", get(routes::watch)),
        ("/v1/peers", get(routes::list_peers)),
        ("/v1/peers/enroll", post(routes::enroll)),
        ("/v1/peers/{id}", delete(routes::delete_peer)),
        ("/v1/peers/self/report", post(routes::peer_report)),
        ("/v1/runtime/handshake", post(routes::handshake)),
        ("/v1/clusters", get(routes::list_clusters)),
        ("/v1/clusters/{id}/report", post(routes::report)),
        ("/v1/vips", get(routes::list_vips)),
        ("/v1/vips/{id}/move", post(routes::move_vip)),
        ("/metrics", get(routes::metrics)),
        ("/v1/enrollment-tokens", get(routes::list_enrollment_tokens)),
        ("/v1/enrollment-tokens/{id}", delete(routes::revoke_enrollment_token)),
        ("/v1/clusters/{id}/state", post(routes::set_cluster_state)),
        ("/v1/peers/{id}/site-prefixes", put(routes::set_site_prefixes)),
        ("/v1/vips/{id}/quorum", put(routes::set_vip_quorum)),
        ("/v1/networks/{id}/floating", post(routes::create_floating)),
        ("/v1/floating", get(routes::list_floating)),
        (
            "/v1/floating/{id}",
            put(routes::set_floating).delete(routes::delete_floating),
        ),
        ("/v1/floating/{id}/move", post(routes::move_floating)),
    ];
    let request_timeout = state.limits.request_timeout;
    routes
        .into_iter()
        .fold(Router::new(), |router, (path, method)| {
            let method = if path == WATCH_ROUTE {
                method
            } else {
                method.layer(
                    ServiceBuilder::new()
                        .layer(HandleErrorLayer::new(timed_out))
                        .timeout(request_timeout),
                )
            };
            router.route(path, tagged(path, method))
        })
        .fallback(|| async { ApiError::not_found(code::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                code::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), observe))
        .with_state(state)
}

/// The answer to a request that ran past the request timeout (the only error the timeout layer makes).
async fn timed_out(e: BoxError) -> ApiError {
    tracing::debug!(error = %e, "request timed out");
    ApiError::new(
        ErrorKind::Unavailable,
        code::REQUEST_TIMEOUT,
        "the request was not answered in time; retry later",
    )
}

/// The route template a request matched, passed from the route's layer to [`observe`] (which also sees
/// requests that match no route).
#[derive(Debug, Clone, Copy)]
struct RouteLabel(&'static str);

/// `method` answering with its route template attached, for the request metrics.
fn tagged(route: &'static str, method: MethodRouter<AppState>) -> MethodRouter<AppState> {
    method.route_layer(middleware::map_response(move |mut response: Response| async move {
        response.extensions_mut().insert(RouteLabel(route));
        response
    }))
}

async fn observe(State(metrics): State<Arc<RegistryMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(req).await;
    let route = response.extensions().get::<RouteLabel>().map_or(UNMATCHED, |r| r.0);
    metrics.observe(route, response.status().as_u16(), started.elapsed());
    response
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.kind.status(), body).into_response();
        if self.kind == ErrorKind::TooManyRequests {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
