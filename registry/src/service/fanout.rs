//! The watch, split for a cheap fan-out: [`watched_network`] authenticates a watcher and reads its
//! network's revision (constant work per watcher; [`watch_started`] for the first read of a request, which
//! also finds out whether it is the caller's first use of its token), [`network_snapshot`] builds the network as daemons see
//! it (work in the size of the network), which the API builds once per revision and shares between every
//! watcher it wakes.

use super::authenticate;
use super::enroll::{snapshot, unused_peer_token, visible_network};
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

/// [`watched_network`] for a watch's first read, and whether the caller is a peer that never used its token
/// (then this is its first read, which must end the enrollment retry window: [`super::first_use`]). Costs
/// one lookup of the caller's peer in the same transaction, for peer tokens only.
pub fn watch_started(
    tx: &mut dyn ReadTx,
    presented: &Presented,
    network_id: &str,
) -> Result<(Network, bool), ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer, TokenKind::Admin])?;
    let network = visible_network(tx, &caller, network_id)?;
    let unused = unused_peer_token(tx, &caller)?;
    Ok((network, unused))
}

/// The whole network `network_id` at its current revision, with no access check: only for a caller that
/// passed [`watched_network`].
pub fn network_snapshot(tx: &mut dyn ReadTx, network_id: &str) -> Result<MembersResponse, ApiError> {
    let network = tx
        .network(network_id)?
        .ok_or_else(|| ApiError::not_found(code::NETWORK_NOT_FOUND, format!("no network {network_id:?}")))?;
    snapshot(tx, &network)
}
