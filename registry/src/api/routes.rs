//! The handlers: extract, run one service function in one transaction, answer.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::{timeout_at, Instant};

use super::{AppState, Bearer, JsonBody, PathId, QueryArgs};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::HeaderMap;
use sdwand::now_ms;

use crate::error::{code, ApiError, ErrorKind};
use crate::model::TokenKind;
use crate::service;
use crate::token::Presented;
use axum::body::HttpBody;
use axum::extract::{FromRequest, Request};
use sdwand::vocab::wire::{
    ClusterStateRequest, CreateEnrollmentTokenRequest, CreateFloatingRequest, EnrollmentTokenInfo,
    EnrollmentTokensResponse, FloatingResponse, FloatingView, SetFloatingRequest, SetQuorumRequest,
};
use sdwand::vocab::wire::{
    ClusterStateView, ClustersResponse, CreateNetworkRequest, EnrollRequest, EnrollResponse, EnrollmentTokenView,
    HandshakeRequest, HandshakeResponse, MembersResponse, NetworkView, NetworksResponse, PeerReportRequest,
    PeerReportResponse, PeerView, PeersResponse, ReportRequest, SetSitePrefixesRequest, VipMoveRequest, VipView,
    VipsResponse, WatchQuery, WATCH_DEFAULT_WAIT_MS, WATCH_MAX_WAIT_MS,
};

type Answer<T> = Result<Json<T>, ApiError>;
type Created<T> = Result<(StatusCode, Json<T>), ApiError>;

pub(super) async fn create_network(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<CreateNetworkRequest>,
) -> Created<NetworkView> {
    let now = now_ms();
    let view = s
        .write(move |tx| service::create_network(tx, &token, &req, now))
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn list_networks(State(s): State<AppState>, Bearer(token): Bearer) -> Answer<NetworksResponse> {
    Ok(Json(s.store.read(move |tx| service::list_networks(tx, &token)).await?))
}

pub(super) async fn create_enrollment_token(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(network_id): PathId,
    body: Request,
) -> Created<EnrollmentTokenView> {
    // No body at all (as before tokens had limits): a token without limits.
    let req = if body.body().size_hint().exact() == Some(0) {
        CreateEnrollmentTokenRequest::default()
    } else {
        JsonBody::<CreateEnrollmentTokenRequest>::from_request(body, &s)
            .await?
            .0
    };
    let now = now_ms();
    let view = s
        .write(move |tx| service::create_enrollment_token(tx, &token, &network_id, &req, now))
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn list_enrollment_tokens(
    State(s): State<AppState>,
    Bearer(token): Bearer,
) -> Answer<EnrollmentTokensResponse> {
    Ok(Json(
        s.store
            .read(move |tx| service::list_enrollment_tokens(tx, &token))
            .await?,
    ))
}

pub(super) async fn revoke_enrollment_token(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(token_id): PathId,
) -> Answer<EnrollmentTokenInfo> {
    let now = now_ms();
    Ok(Json(
        s.write(move |tx| service::revoke_enrollment_token(tx, &token, &token_id, now))
            .await?,
    ))
}

pub(super) async fn set_cluster_state(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(cluster_id): PathId,
    JsonBody(req): JsonBody<ClusterStateRequest>,
) -> Answer<ClusterStateView> {
    Ok(Json(
        s.write(move |tx| service::set_cluster_state(tx, &token, &cluster_id, &req))
            .await?,
    ))
}

/// Ends the caller's enrollment retry window after its first authenticated read found its token unused (one
/// write per peer, ever; see `service::enroll`).
async fn first_read(s: &AppState, token: &Presented) -> Result<(), ApiError> {
    let (t, now) = (token.clone(), now_ms());
    s.write(move |tx| service::first_use(tx, &t, now)).await
}

pub(super) async fn members(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(network_id): PathId,
) -> Answer<MembersResponse> {
    let t = token.clone();
    let (answer, unused) = s.store.read(move |tx| service::members(tx, &t, &network_id)).await?;
    if unused {
        first_read(&s, &token).await?;
    }
    Ok(Json(answer))
}

pub(super) async fn watch(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(network_id): PathId,
    QueryArgs(query): QueryArgs<WatchQuery>,
) -> Result<Response, ApiError> {
    let wait_ms = query.wait_ms.unwrap_or(WATCH_DEFAULT_WAIT_MS);
    if wait_ms > WATCH_MAX_WAIT_MS {
        return Err(ApiError::bad_request(format!(
            "wait_ms {wait_ms} is above the longest wait, {WATCH_MAX_WAIT_MS} ms"
        )));
    }
    let since = query.since;
    let (t, id) = (token.clone(), network_id.clone());
    let (network, unused) = s.store.read(move |tx| service::watch_started(tx, &t, &id)).await?;
    if unused {
        first_read(&s, &token).await?;
    }
    // The access check and the revision, re-read after every wake-up: a token deleted meanwhile gets 401.
    let revision = || {
        let (token, network_id) = (token.clone(), network_id.clone());
        s.store
            .read(move |tx| service::watched_network(tx, &token, &network_id).map(|n| n.revision))
    };
    let (state, id) = (&s, network_id.as_str());
    let answer = move |revision| async move {
        let body = state.watchers.snapshot(&state.store, id, revision).await?;
        Ok::<_, ApiError>(([(CONTENT_TYPE, "application/json")], body).into_response())
    };
    let current = network.revision;
    if current != since {
        return answer(current).await;
    }
    let _slot = s.watchers.hold(&token.key_id, s.limits.watches_per_token)?;
    let mut waiting = s.watchers.subscribe(&network_id);
    // A change committed between the first read and the subscription was announced to nobody: read again.
    let current = revision().await?;
    if current != since {
        return answer(current).await;
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let woken = tokio::select! {
        woken = timeout_at(deadline, waiting.past(since)) => woken,
        // The server is stopping: answer as a timeout would, so the client polls again after the restart.
        () = s.watchers.stopped() => return Ok(StatusCode::NO_CONTENT.into_response()),
    };
    if woken == Ok(true) {
        let current = revision().await?;
        if current != since {
            return answer(current).await;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn enroll(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> Created<EnrollResponse> {
    let now = now_ms();
    let answer = s.write(move |tx| service::enroll(tx, &token, &req, now)).await?;
    let answer = s
        .store
        .read(move |tx| {
            let mut answer = answer;
            service::enrolled_members(tx, &mut answer).map(|()| answer)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

pub(super) async fn handshake(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<HandshakeRequest>,
) -> Answer<HandshakeResponse> {
    let now = now_ms();
    Ok(Json(
        s.write(move |tx| service::handshake(tx, &token, &req, now)).await?,
    ))
}

pub(super) async fn report(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(cluster_id): PathId,
    JsonBody(req): JsonBody<ReportRequest>,
) -> Answer<ClusterStateView> {
    let now = now_ms();
    Ok(Json(
        s.write(move |tx| service::report(tx, &token, &cluster_id, &req, now))
            .await?,
    ))
}

pub(super) async fn peer_report(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<PeerReportRequest>,
) -> Answer<PeerReportResponse> {
    // Authenticated by a read first, so bogus tokens never reach the single writer and cannot use up a
    // real token's report budget.
    let presented = token.clone();
    s.store
        .read(move |tx| service::authenticate(tx, &presented, &[TokenKind::Peer]).map(drop))
        .await?;
    s.reports
        .admit(&token.key_id, std::time::Instant::now(), s.limits.report_min_interval)?;
    let now = now_ms();
    Ok(Json(
        s.write(move |tx| service::peer_report(tx, &token, &req, now)).await?,
    ))
}

pub(super) async fn list_peers(State(s): State<AppState>, Bearer(token): Bearer) -> Answer<PeersResponse> {
    let (now, ttls) = (now_ms(), s.ttls);
    Ok(Json(
        s.store
            .read(move |tx| service::list_peers(tx, &token, &ttls, now))
            .await?,
    ))
}

pub(super) async fn delete_peer(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(peer_id): PathId,
) -> Result<StatusCode, ApiError> {
    let (now, ttls) = (now_ms(), s.ttls);
    s.write(move |tx| service::delete_peer(tx, &token, &peer_id, &ttls, now))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn set_site_prefixes(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(peer_id): PathId,
    JsonBody(req): JsonBody<SetSitePrefixesRequest>,
) -> Answer<PeerView> {
    let (now, ttls) = (now_ms(), s.ttls);
    Ok(Json(
        s.write(move |tx| service::set_site_prefixes(tx, &token, &peer_id, &req, &ttls, now))
            .await?,
    ))
}

pub(super) async fn list_clusters(State(s): State<AppState>, Bearer(token): Bearer) -> Answer<ClustersResponse> {
    Ok(Json(s.store.read(move |tx| service::list_clusters(tx, &token)).await?))
}

pub(super) async fn list_vips(State(s): State<AppState>, Bearer(token): Bearer) -> Answer<VipsResponse> {
    Ok(Json(s.store.read(move |tx| service::list_vips(tx, &token)).await?))
}

pub(super) async fn move_vip(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(vip_id): PathId,
    JsonBody(req): JsonBody<VipMoveRequest>,
) -> Answer<VipView> {
    Ok(Json(
        s.write(move |tx| service::move_vip(tx, &token, &vip_id, &req)).await?,
    ))
}

pub(super) async fn set_vip_quorum(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(vip_id): PathId,
    JsonBody(req): JsonBody<SetQuorumRequest>,
) -> Answer<VipView> {
    Ok(Json(
        s.write(move |tx| service::set_vip_quorum(tx, &token, &vip_id, &req))
            .await?,
    ))
}

pub(super) async fn create_floating(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(network_id): PathId,
    JsonBody(req): JsonBody<CreateFloatingRequest>,
) -> Created<FloatingView> {
    let now = now_ms();
    let view = s
        .write(move |tx| service::create_floating(tx, &token, &network_id, &req, now))
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn list_floating(State(s): State<AppState>, Bearer(token): Bearer) -> Answer<FloatingResponse> {
    Ok(Json(s.store.read(move |tx| service::list_floating(tx, &token)).await?))
}

pub(super) async fn set_floating(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(id): PathId,
    JsonBody(req): JsonBody<SetFloatingRequest>,
) -> Answer<FloatingView> {
    Ok(Json(
        s.write(move |tx| service::set_floating(tx, &token, &id, &req)).await?,
    ))
}

pub(super) async fn delete_floating(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    s.write(move |tx| service::delete_floating(tx, &token, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn move_floating(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(id): PathId,
    JsonBody(req): JsonBody<VipMoveRequest>,
) -> Answer<FloatingView> {
    Ok(Json(
        s.write(move |tx| service::move_floating(tx, &token, &id, &req)).await?,
    ))
}

pub(super) async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(required) = &s.metrics_token {
        if !required.admits(headers.get(AUTHORIZATION).map(|v| v.as_bytes())) {
            return Err(ApiError::unauthorized());
        }
    }
    // Per-object gauges only behind the token: they name networks, VIPs and peers.
    let (store, ttls, detailed) = (s.store.clone(), s.ttls, s.metrics_token.is_some());
    let census = s
        .census
        .get(std::time::Instant::now(), || {
            store.read(move |tx| service::census(tx, &ttls, now_ms(), detailed))
        })
        .await?;
    let text = s
        .metrics
        .render(&census, s.watchers.waiting(), &s.connections)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot render the registry metrics");
            ApiError::new(ErrorKind::Internal, code::INTERNAL, "cannot render the metrics")
        })?;
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
