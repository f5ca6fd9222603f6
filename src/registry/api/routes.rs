//! The handlers: extract, run one service function in one transaction, answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{now_ms, AppState, Bearer, JsonBody, PathId};
use crate::registry::error::ApiError;
use crate::registry::service;
use crate::registry::wire::{
    ClusterStateView, CreateNetworkRequest, EnrollRequest, EnrollResponse, EnrollmentTokenView, HandshakeRequest,
    HandshakeResponse, MembersResponse, NetworkView, ReportRequest,
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
        .store
        .write(move |tx| service::create_network(tx, &token, &req, now))
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn create_enrollment_token(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(network_id): PathId,
) -> Created<EnrollmentTokenView> {
    let now = now_ms();
    let view = s
        .store
        .write(move |tx| service::create_enrollment_token(tx, &token, &network_id, now))
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn members(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    PathId(network_id): PathId,
) -> Answer<MembersResponse> {
    Ok(Json(
        s.store
            .read(move |tx| service::members(tx, &token, &network_id))
            .await?,
    ))
}

pub(super) async fn enroll(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> Created<EnrollResponse> {
    let now = now_ms();
    let answer = s.store.write(move |tx| service::enroll(tx, &token, &req, now)).await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

pub(super) async fn handshake(
    State(s): State<AppState>,
    Bearer(token): Bearer,
    JsonBody(req): JsonBody<HandshakeRequest>,
) -> Answer<HandshakeResponse> {
    let now = now_ms();
    Ok(Json(
        s.store
            .write(move |tx| service::handshake(tx, &token, &req, now))
            .await?,
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
        s.store
            .write(move |tx| service::report(tx, &token, &cluster_id, &req, now))
            .await?,
    ))
}
