//! The watch, split for a cheap fan-out: [`watched_network`] authenticates a watcher and reads its
//! network's revision (constant work per watcher), [`network_snapshot`] builds the network as daemons see
//! it (work in the size of the network), which the API builds once per revision and shares between every
//! watcher it wakes.

use super::authenticate;
use super::enroll::{snapshot, visible_network};
use crate::error::{code, ApiError};
use crate::model::{Network, TokenKind};
use crate::store::ReadTx;
use crate::token::Presented;
use sdwand::vocab::wire::MembersResponse;

/// `GET /v1/networks/{id}/watch`'s check: the network, if the caller (a peer of it, or an admin of its
/// account) may watch it; 401/403/404 otherwise.
pub fn watched_network(tx: &mut dyn ReadTx, presented: &Presented, network_id: &str) -> Result<Network, ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer, TokenKind::Admin])?;
    visible_network(tx, &caller, network_id)
}

/// The whole network `network_id` at its current revision, with no access check: only for a caller that
/// passed [`watched_network`].
pub fn network_snapshot(tx: &mut dyn ReadTx, network_id: &str) -> Result<MembersResponse, ApiError> {
    let network = tx
        .network(network_id)?
        .ok_or_else(|| ApiError::not_found(code::NETWORK_NOT_FOUND, format!("no network {network_id:?}")))?;
    snapshot(tx, &network)
}
