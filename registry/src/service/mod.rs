//! The registry's logic: what each request does, as functions over a store transaction.
//!
//! Nothing here does I/O or reads the clock: the API layer passes the request time and runs these inside
//! [`crate::store`] transactions, so every check and every write of a request commit together (a
//! request that fails leaves nothing behind). Functions that run in write transactions may run more than
//! once (see [`crate::store::Store::write`]) and have no other effects.
//!
//! Every function authenticates its caller first ([`authenticate`]) and scopes every lookup to the caller's
//! account (and network, for network-scoped tokens); see [`crate::error`] for the 401/403/404
//! rules. Refusals are logged through [`refusal`], once per token and reason (tokens with an unknown id
//! share one caller, `unknown-token`). Successful operator and peer actions (account, network and token
//! creation, token revocation, enrollment, cluster bootstrap and join, peer removal, reaping, site prefix
//! changes, floating prefix and quorum changes) log one line each, with the account, network, peer and token ids and the prefixes allocated,
//! assigned or held down: the registry's audit trail. Never a secret.

use super::error::{code, ApiError};
use super::model::{TokenKind, TokenRecord};
use super::store::ReadTx;
use super::token::{self, Issued, Presented};
use sdwand::vocab::name::PeerName;

mod admin;
pub mod alloc;
mod enroll;
mod fanout;
mod floating;
mod handshake;
mod operator;
pub mod prefixes;
mod reap;
pub(crate) mod refusal;
mod state;
mod validate;
mod views;

pub use admin::{
    create_account, create_enrollment_token, create_network, list_enrollment_tokens, list_networks,
    revoke_enrollment_token,
};
pub use enroll::{enroll, enrolled_members, first_use, members};
pub use fanout::{network_snapshot, watch_started, watched_network};
pub use floating::{
    create_floating, delete_floating, list_floating, move_floating, set_floating, set_vip_quorum, MAX_FLOATING,
    MAX_WITNESSES,
};
pub use handshake::{handshake, report};
pub use operator::{
    census, delete_peer, list_clusters, list_peers, list_vips, move_vip, set_cluster_state, set_site_prefixes,
};
pub use reap::{reap, remove_peer, Ttls, DAEMON_REPORT_INTERVAL, DEFAULT_PREFIX_HOLD_DOWN, DEFAULT_SILENT_AFTER};
pub use state::peer_report;

/// Finds the token's record and checks its secret and kind. Unknown token, wrong secret, or a kind prefix
/// that is not the stored kind: 401 `unauthorized`; a revoked token: 401 `token_revoked`; a kind not in
/// `accept`: 403.
pub fn authenticate(tx: &mut dyn ReadTx, presented: &Presented, accept: &[TokenKind]) -> Result<TokenRecord, ApiError> {
    let Some(record) = tx.token(&presented.key_id)? else {
        // Unknown key ids are logged under one caller, so a flood of made-up tokens warns once.
        let detail = format!("a token with an unknown id {:?} was presented", presented.key_id);
        refusal::log("unknown-token", code::UNAUTHORIZED, &detail);
        return Err(ApiError::unauthorized());
    };
    if record.kind != presented.kind || !presented.matches(&record.secret_hash) {
        // The key id is the token's public half: naming it tells the operator which token is wrong.
        refusal::log(
            &record.key_id,
            code::UNAUTHORIZED,
            "token presented with a wrong secret or kind prefix",
        );
        return Err(ApiError::unauthorized());
    }
    if record.limits.revoked_at_ms.is_some() {
        refusal::log(&record.key_id, code::TOKEN_REVOKED, "a revoked token was presented");
        return Err(ApiError::unauthorized_because(
            code::TOKEN_REVOKED,
            format!("token {} was revoked by an operator: ask for a new one", record.key_id),
        ));
    }
    if !accept.contains(&record.kind) {
        let wanted: Vec<&str> = accept.iter().map(|k| k.as_str()).collect();
        refusal::log(
            &record.key_id,
            code::WRONG_TOKEN_KIND,
            &format!("a {} token on a route for {}", record.kind, wanted.join(" or ")),
        );
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
