//! The registry's logic: what each request does, as functions over a store transaction.
//!
//! Nothing here does I/O or reads the clock: the API layer passes the request time and runs these inside
//! [`crate::registry::store`] transactions, so every check and every write of a request commit together (a
//! request that fails leaves nothing behind). Functions that run in write transactions may run more than
//! once (see [`crate::registry::store::Store::write`]) and have no other effects.
//!
//! Every function authenticates its caller first ([`authenticate`]) and scopes every lookup to the caller's
//! account (and network, for network-scoped tokens); see [`crate::registry::error`] for the 401/403/404
//! rules.

use super::error::{code, ApiError};
use super::model::{TokenKind, TokenRecord};
use super::store::ReadTx;
use super::token::Presented;

mod admin;
pub mod alloc;
mod enroll;
mod fanout;
mod handshake;
mod operator;
mod reap;
mod state;
mod views;

pub use admin::{create_account, create_enrollment_token, create_network};
pub use enroll::{enroll, enrolled_members, members, watch};
pub use fanout::{network_snapshot, watched_network};
pub use handshake::{handshake, report};
pub use operator::{census, delete_peer, list_clusters, list_peers, list_vips, move_vip};
pub use reap::{reap, remove_peer, Ttls};
pub use state::peer_report;

/// Finds the token's record and checks its secret and kind. Unknown token, wrong secret, or a kind prefix
/// that is not the stored kind: 401; a kind not in `accept`: 403.
pub fn authenticate(tx: &mut dyn ReadTx, presented: &Presented, accept: &[TokenKind]) -> Result<TokenRecord, ApiError> {
    let record = tx
        .token(&presented.key_id)?
        .filter(|r| r.kind == presented.kind && presented.matches(&r.secret_hash))
        .ok_or_else(ApiError::unauthorized)?;
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

/// Checks a name (peer, network, account, cluster): 1-64 letters, digits, `-`, `_` or `.`.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} {name:?} is not 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// The field of a network- or peer-scoped token that must be there (a record without it is corrupt: 401).
fn scope(field: &Option<String>) -> Result<&str, ApiError> {
    field.as_deref().ok_or_else(ApiError::unauthorized)
}
