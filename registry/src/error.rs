//! The registry's request errors: an HTTP-independent kind, a stable machine-readable code and a message
//! for humans. The API layer turns them into `{"error": {"code": …, "message": …}}` with the kind's status.
//!
//! Access rules, in the order they are checked:
//! - no token, a malformed one, or one the registry does not know (or whose secret does not match):
//!   **401** `unauthorized`;
//! - a token whose secret matched but that an operator revoked, or (enrollment) that expired or whose uses
//!   are used up: **401** `token_revoked`, `token_expired`, `token_used_up` (only the holder of the secret
//!   learns which);
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::store::StoreError;
use super::token::EntropyError;

/// The second (Unix time) of the last store error logged at error level.
static STORE_ERROR_LOGGED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether a store error may be logged at error level now: the first of each second is; under a lasting
/// failure (a full disk fails every write) the rest go to debug instead of one error line per request.
fn store_errors_logged_now() -> bool {
    let second = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    first_in(&STORE_ERROR_LOGGED, second)
}

/// Whether `second` differs from the one `last` holds (which becomes `second`).
fn first_in(last: &AtomicU64, second: u64) -> bool {
    last.swap(second, Ordering::Relaxed) != second
}

/// The `code` of an error answer: stable strings clients may match on.
pub mod code {
    /// The body is not valid JSON for the route, or a field is invalid.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The body is larger than the registry accepts.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// No token, or not a valid one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A valid enrollment token past its expiry time (401; ask the operator for a new one).
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// A valid token an operator revoked (401).
    pub const TOKEN_REVOKED: &str = "token_revoked";
    /// A valid enrollment token whose every allowed use is used (401).
    pub const TOKEN_USED_UP: &str = "token_used_up";
    /// The enrollment token does not allow a role the enrollment names (403).
    pub const ROLE_NOT_ALLOWED: &str = "role_not_allowed";
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
    /// No such floating prefix (in the caller's scope).
    pub const FLOATING_NOT_FOUND: &str = "floating_not_found";
    /// The network has the most floating prefixes a network can have.
    pub const TOO_MANY_FLOATING: &str = "too_many_floating";
    /// No such enrollment token (in the caller's scope).
    pub const TOKEN_NOT_FOUND: &str = "token_not_found";
    /// A manual move names a peer that is not a candidate of the VIP or floating prefix.
    pub const NOT_A_CANDIDATE: &str = "not_a_candidate";
    /// A join without a target found no active cluster in the caller's network.
    pub const NO_ACTIVE_CLUSTER: &str = "no_active_cluster";
    /// The public key is already enrolled in the network.
    pub const DUPLICATE_PUBLIC_KEY: &str = "duplicate_public_key";
    /// An account with this name exists already (`sdwan-registry init-account`).
    pub const ACCOUNT_NAME_TAKEN: &str = "account_name_taken";
    /// The peer name is already taken in the network.
    pub const NAME_TAKEN: &str = "name_taken";
    /// The peer (same name and key) is enrolled already and its enrollment cannot be retried: its peer
    /// token was used, or the retry comes with another enrollment token.
    pub const ALREADY_ENROLLED: &str = "already_enrolled";
    /// The network's overlay prefix has no address left.
    pub const ADDRESSES_EXHAUSTED: &str = "addresses_exhausted";
    /// A pod pool or the IPv4 overlay prefix of the network has no free share or address left (the
    /// message names it and when the first hold-down ends).
    pub const POOL_EXHAUSTED: &str = "pool_exhausted";
    /// A site or floating prefix overlaps a prefix the network already routes (another peer's, a floating
    /// prefix, the overlay prefixes, the VIP pool or a pod pool; the message names it).
    pub const PREFIX_CONFLICT: &str = "prefix_conflict";
    /// A site or floating prefix overlaps a prefix a removed peer held, still in its hold-down.
    pub const PREFIX_HELD_DOWN: &str = "prefix_held_down";
    /// The network's VIP pool has no address left.
    pub const VIP_POOL_EXHAUSTED: &str = "vip_pool_exhausted";
    /// The cluster is in error state.
    pub const CLUSTER_ERROR: &str = "cluster_error";
    /// The peer already belongs to another cluster (or to this one in another role).
    pub const ALREADY_MEMBER: &str = "already_member";
    /// The cluster's VIP has the most candidates a VIP can have ([`sdwand::vocab::MAX_CANDIDATES`]).
    pub const TOO_MANY_CANDIDATES: &str = "too_many_candidates";
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

    /// 401 with `code` and `message`: only for a caller that proved it holds the token's secret (an
    /// expired or revoked token), so the detail tells nothing to anyone else.
    pub fn unauthorized_because(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, code, message)
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
                if store_errors_logged_now() {
                    tracing::error!(error = %e, "registry store error (more in this second are logged at debug)");
                } else {
                    tracing::debug!(error = %e, "registry store error");
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_store_error_per_second_is_logged_at_error() {
        let last = AtomicU64::new(u64::MAX);
        assert!(first_in(&last, 10));
        assert!(!first_in(&last, 10));
        assert!(!first_in(&last, 10));
        assert!(first_in(&last, 11));
    }
}
