//! The registry's request errors: an HTTP-independent kind, a stable machine-readable code and a message
//! for humans. The API layer turns them into `{"error": {"code": …, "message": …}}` with the kind's status.
//!
//! Access rules, in the order they are checked:
//! - no token, a malformed one, or one the registry does not know (or whose secret does not match):
//!   **401** `unauthorized`;
//! - a valid token of a kind the route does not take (a peer token on an admin route, an enrollment token
//!   on a handshake): **403** `wrong_token_kind`;
//! - an object outside the token's scope — another account's, or another network's for a network-scoped
//!   token: **404**, exactly as if it did not exist, so a token cannot even learn what exists elsewhere
//!   (ids are random too). 403 is kept for "you are known and this route is not for you", never for "this
//!   object exists but is not yours".
//!
//! A missing or malformed token is refused before the body is read; checks that need the store (unknown
//! token, wrong kind) run with the request's transaction, after the body parsed, so a malformed body with
//! a well-formed but invalid token answers 400, not 401. That reveals only the public request schema.

use super::store::StoreError;
use super::token::EntropyError;

/// The `code` of an error answer: stable strings clients may match on.
pub mod code {
    /// The body is not valid JSON for the route, or a field is invalid.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The body is larger than the registry accepts.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// No token, or not a valid one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A valid token of a kind this route does not take.
    pub const WRONG_TOKEN_KIND: &str = "wrong_token_kind";
    /// The peer did not enroll with the role it asks to act in.
    pub const ROLE_NOT_ENROLLED: &str = "role_not_enrolled";
    /// The caller is not a k3s server of the cluster it reports on.
    pub const NOT_CLUSTER_SERVER: &str = "not_cluster_server";
    /// No such route.
    pub const NOT_FOUND: &str = "not_found";
    /// The route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// No such network (in the caller's scope).
    pub const NETWORK_NOT_FOUND: &str = "network_not_found";
    /// No such cluster (in the caller's scope).
    pub const CLUSTER_NOT_FOUND: &str = "cluster_not_found";
    /// No such peer (in the caller's scope).
    pub const PEER_NOT_FOUND: &str = "peer_not_found";
    /// No such VIP (in the caller's scope).
    pub const VIP_NOT_FOUND: &str = "vip_not_found";
    /// A manual move names a peer that is not a candidate of the VIP.
    pub const NOT_A_CANDIDATE: &str = "not_a_candidate";
    /// A join without a target found no active cluster in the caller's network.
    pub const NO_ACTIVE_CLUSTER: &str = "no_active_cluster";
    /// The public key is already enrolled in the network.
    pub const DUPLICATE_PUBLIC_KEY: &str = "duplicate_public_key";
    /// The peer name is already taken in the network.
    pub const NAME_TAKEN: &str = "name_taken";
    /// The network's overlay prefix has no address left.
    pub const ADDRESSES_EXHAUSTED: &str = "addresses_exhausted";
    /// The network's VIP pool has no address left.
    pub const VIP_POOL_EXHAUSTED: &str = "vip_pool_exhausted";
    /// The cluster is in error state.
    pub const CLUSTER_ERROR: &str = "cluster_error";
    /// The peer already belongs to another cluster (or to this one in another role).
    pub const ALREADY_MEMBER: &str = "already_member";
    /// The cluster lives in another network of the account, which the caller cannot reach.
    pub const NETWORK_MISMATCH: &str = "network_mismatch";
    /// The registry failed (store, randomness); the request was not done.
    pub const INTERNAL: &str = "internal";
    /// The registry is shutting down.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The token already holds as many watches as the registry allows (`watches_per_token`).
    pub const TOO_MANY_WATCHES: &str = "too_many_watches";
    /// The token called this route again sooner than the registry allows (`report_min_interval`).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The request was not answered within `request_timeout`.
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
}

/// The class of an error, which decides its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409.
    Conflict,
    /// 413.
    PayloadTooLarge,
    /// 429.
    TooManyRequests,
    /// 500.
    Internal,
    /// 503.
    Unavailable,
}

/// A request that could not be done, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Status class.
    pub kind: ErrorKind,
    /// One of [`code`].
    pub code: &'static str,
    /// For humans; never contains a secret.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code::BAD_REQUEST, message)
    }

    /// 401 `unauthorized`, with one message for every cause so it tells an attacker nothing.
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorKind::Unauthorized,
            code::UNAUTHORIZED,
            "a valid bearer token is required (Authorization: Bearer sdw…)",
        )
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// 403 with `code`.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => Self::new(
                ErrorKind::Unavailable,
                code::UNAVAILABLE,
                "the registry is shutting down",
            ),
            e => {
                tracing::error!(error = %e, "registry store error");
                Self::new(
                    ErrorKind::Internal,
                    code::INTERNAL,
                    "the registry could not store the request; retry",
                )
            }
        }
    }
}

impl From<EntropyError> for ApiError {
    fn from(e: EntropyError) -> Self {
        tracing::error!(error = %e, "registry randomness error");
        Self::new(
            ErrorKind::Internal,
            code::INTERNAL,
            "the registry could not generate a secret; retry",
        )
    }
}
