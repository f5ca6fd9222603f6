//! The registry's HTTP API: routes, extractors and the JSON error envelope.
//!
//! Handlers parse (token, path, body), read the clock once and run one [`crate::registry::service`] function
//! in one store transaction. Every error answers `{"error": {"code": "...", "message": "..."}}` with the
//! status of its [`ErrorKind`]: malformed bodies 400, bodies over [`MAX_BODY`] 413, unknown routes 404,
//! wrong methods 405.
//!
//! | route | token | does |
//! | --- | --- | --- |
//! | `POST /v1/networks` | admin | create a network of the account |
//! | `POST /v1/networks/{id}/enrollment-tokens` | admin | issue an enrollment token for it |
//! | `GET /v1/networks/{id}/members` | peer of the network, or admin | the member list and revision |
//! | `POST /v1/peers/enroll` | enrollment | enroll a peer: /128, peer token, member list |
//! | `POST /v1/runtime/handshake` | peer | k3s `bootstrap` / `join_request` |
//! | `POST /v1/clusters/{id}/report` | peer (server member) | k3s ready / failed |

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::error::{code, ApiError, ErrorKind};
use super::store::Store;

mod extract;
mod routes;

pub use extract::{Bearer, JsonBody, PathId};

/// The largest request body accepted (every valid request is far smaller).
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store every request runs against.
    pub store: Arc<dyn Store>,
}

/// The registry's routes over `store`.
pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/v1/networks", post(routes::create_network))
        .route(
            "/v1/networks/{id}/enrollment-tokens",
            post(routes::create_enrollment_token),
        )
        .route("/v1/networks/{id}/members", get(routes::members))
        .route("/v1/peers/enroll", post(routes::enroll))
        .route("/v1/runtime/handshake", post(routes::handshake))
        .route("/v1/clusters/{id}/report", post(routes::report))
        .fallback(|| async { ApiError::not_found(code::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorKind::MethodNotAllowed,
                code::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { store })
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        (self.kind.status(), body).into_response()
    }
}
