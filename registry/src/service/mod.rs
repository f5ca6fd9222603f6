//! The registry's logic: what each request does, as functions over a store transaction.
//!
//! Nothing here does I/O or reads the clock: the API layer passes the request time and runs these inside
//! [`crate::store`] transactions, so every check and every write of a request commit together (a
//! request that fails leaves nothing behind). Functions that run in write transactions may run more than
//! once (see [`crate::store::Store::write`]) and have no other effects.
//!
//! Every function authenticates its caller first ([`authenticate`]) and scopes every lookup to the caller's
//! account (and network, for network-scoped tokens); see [`crate::error`] for the 401/403/404
//! rules. Refusals of a known token are logged through [`refusal`], once per token and reason.

use super::error::{code, ApiError};
use super::model::{TokenKind, TokenRecord};
use super::store::ReadTx;
use super::token::{self, Issued, Presented};
use sdwand::vocab::name::PeerName;

mod admin;
pub mod alloc;
mod enroll;
mod fanout;
mod handshake;
mod operator;
mod reap;
mod refusal;
mod state;
mod validate;
mod views;

pub use admin::{
    create_account, create_enrollment_token, create_network, list_enrollment_tokens, list_networks,
    revoke_enrollment_token,
};
pub use enroll::{enroll, enrolled_members, first_use, members};
pub use fanout::{network_snapshot, watch_started, watched_network};
pub use handshake::{handshake, report};
pub use operator::{census, delete_peer, list_clusters, list_peers, list_vips, move_vip, set_cluster_state};
pub use reap::{reap, remove_peer, Ttls};
pub use state::peer_report;

/// Finds the token's record and checks its secret and kind. Unknown token, wrong secret, or a kind prefix
/// that is not the stored kind: 401 `unauthorized`; a revoked token: 401 `token_revoked`; a kind not in
/// `accept`: 403.
pub fn authenticate(tx: &mut dyn ReadTx, presented: &Presented, accept: &[TokenKind]) -> Result<TokenRecord, ApiError> {
    let record = tx
        .token(&presented.key_id)?
        .filter(|r| r.kind == presented.kind && presented.matches(&r.secret_hash))
        .ok_or_else(ApiError::unauthorized)?;
    if record.limits.revoked_at_ms.is_some() {
        refusal::log(&record.key_id, code::TOKEN_REVOKED, "a revoked token was presented");
        return Err(ApiError::unauthorized_because(
            code::TOKEN_REVOKED,
            format!("token {} was revoked by an operator: ask for a new one", record.key_id),
        ));
    }
    if !accept.contains(&record.kind) {
        let wanted: Vec<&str> = accept.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::forbidden(
            code::WRONG_TOKEN_KIND,
            format!(
                "this route takes a {} token, not a {} token",
                wanted.join(" or "),
                record.kind
            ),
        ));
    }
    Ok(record)
}

/// Checks a name other than a peer's (network, account, cluster): the peer name rule
/// ([`sdwand::vocab::name`]), with `what` named in the 400's message.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    PeerName::parse(name).map(drop).map_err(|e| {
        ApiError::bad_request(format!(
            "{what} {name:?} {}: use {}",
            e.problem(),
            sdwand::vocab::name::RULE
        ))
    })
}

/// Issues a token of `kind` whose key id no stored token has (a 64-bit random collision is all but
/// impossible, but it must never turn into an overwrite: the store refuses one, and this picks another id).
fn issue_token(tx: &mut dyn ReadTx, kind: TokenKind) -> Result<Issued, ApiError> {
    for _ in 0..4 {
        let issued = token::issue(kind)?;
        if tx.token(&issued.key_id)?.is_none() {
            return Ok(issued);
        }
        tracing::warn!(key_id = %issued.key_id, "a new token's key id is taken; issuing another");
    }
    Err(ApiError::new(
        super::error::ErrorKind::Internal,
        code::INTERNAL,
        "the registry could not pick a free token id; retry",
    ))
}

/// The field of a network- or peer-scoped token that must be there (a record without it is corrupt: 401).
fn scope(field: &Option<String>) -> Result<&str, ApiError> {
    field.as_deref().ok_or_else(ApiError::unauthorized)
}
