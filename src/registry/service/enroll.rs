//! Enrollment (enrollment token) and the member list (peer or admin token).

use wireguard_control::Key;

use super::views::{self, member_view};
use super::{alloc, authenticate, check_name, scope};
use crate::registry::error::{code, ApiError};
use crate::registry::model::{Network, Peer, TokenKind, TokenRecord};
use crate::registry::store::{ReadTx, WriteTx};
use crate::registry::token::{self, Presented};
use crate::registry::wire::{EnrollRequest, EnrollResponse, MembersResponse};

/// `POST /v1/peers/enroll`: adds a peer to the enrollment token's network, allocates its /128 and issues its
/// peer token.
pub fn enroll(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    req: &EnrollRequest,
    now_ms: u64,
) -> Result<EnrollResponse, ApiError> {
    let grant = authenticate(tx, presented, &[TokenKind::Enrollment])?;
    let network_id = scope(&grant.network_id)?;
    let mut network = tx.network(network_id)?.ok_or_else(ApiError::unauthorized)?;
    check_name("peer name", &req.name)?;
    let key = Key::from_base64(req.public_key.trim())
        .map_err(|_| ApiError::bad_request("public_key is not a base64 WireGuard public key"))?;
    let public_key = key.to_base64();
    if let Some(peer) = tx.peer_by_key(&network.id, &public_key)? {
        // A retry of an enrollment whose answer was lost (or not persisted by the daemon): same name and
        // key, and the peer token never used since. It gets a new token, the old one stops working.
        if peer.name == req.name && !peer.token_used() {
            tx.delete_peer_tokens(&peer.id)?;
            let peer_token = issue_peer_token(tx, &grant, &peer, now_ms)?;
            tracing::info!(peer = %peer.name, id = %peer.id, "enrollment retried; peer token re-issued");
            return Ok(EnrollResponse {
                peer_id: peer.id,
                network_id: network.id,
                address: peer.address,
                overlay_prefix: network.overlay_prefix,
                peer_token,
                revision: network.revision,
                members: Vec::new(),
            });
        }
        return Err(ApiError::conflict(
            code::DUPLICATE_PUBLIC_KEY,
            "this public key is already enrolled in the network and in use (a restarted peer keeps its identity \
             in its state directory; to enroll again, remove the peer first)",
        ));
    }
    if tx.peer_by_name(&network.id, &req.name)?.is_some() {
        return Err(ApiError::conflict(
            code::NAME_TAKEN,
            format!("a peer named {:?} already exists", req.name),
        ));
    }
    let (address, next) = alloc::next_peer_address(&network).ok_or_else(|| {
        ApiError::conflict(
            code::ADDRESSES_EXHAUSTED,
            format!("no address left in {}", network.overlay_prefix),
        )
    })?;
    let mut roles = req.roles.clone();
    roles.sort();
    roles.dedup();
    let peer = Peer {
        id: token::new_id()?,
        network_id: network.id.clone(),
        name: req.name.clone(),
        public_key,
        endpoint: req.endpoint,
        address,
        lifecycle: req.lifecycle,
        roles,
        routed_prefixes: Vec::new(),
        last_seen_ms: now_ms,
        created_at_ms: now_ms,
    };
    network.next_peer_offset = next;
    network.revision += 1;
    tx.put_network(&network)?;
    tx.put_peer(&peer)?;
    let peer_token = issue_peer_token(tx, &grant, &peer, now_ms)?;
    // The member list is read after the commit ([`enrolled_members`]): building it here would hold the
    // single writer for time that grows with the network, and every other write waits for it.
    Ok(EnrollResponse {
        peer_id: peer.id,
        network_id: network.id,
        address,
        overlay_prefix: network.overlay_prefix,
        peer_token,
        revision: network.revision,
        members: Vec::new(),
    })
}

/// Issues and stores a new peer token for `peer` (of the enrollment `grant`'s account); returns its text.
fn issue_peer_token(tx: &mut dyn WriteTx, grant: &TokenRecord, peer: &Peer, now_ms: u64) -> Result<String, ApiError> {
    let issued = token::issue(TokenKind::Peer)?;
    tx.put_token(&TokenRecord {
        key_id: issued.key_id,
        kind: TokenKind::Peer,
        secret_hash: issued.secret_hash,
        account_id: grant.account_id.clone(),
        network_id: Some(peer.network_id.clone()),
        peer_id: Some(peer.id.clone()),
        created_at_ms: now_ms,
    })?;
    Ok(issued.text)
}

/// Completes an [`enroll`] answer after its commit: the network's member list and the revision it is at
/// (the enrollment's or a later one).
pub fn enrolled_members(tx: &mut dyn ReadTx, answer: &mut EnrollResponse) -> Result<(), ApiError> {
    let network = tx.network(&answer.network_id)?.ok_or_else(ApiError::unauthorized)?;
    answer.members = tx.peers(&network.id)?.iter().map(member_view).collect();
    answer.revision = answer.revision.max(network.revision);
    Ok(())
}

/// `GET /v1/networks/{id}/members`: the member list, for a peer of the network or its account's admin.
pub fn members(tx: &mut dyn ReadTx, presented: &Presented, network_id: &str) -> Result<MembersResponse, ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer, TokenKind::Admin])?;
    let network = visible_network(tx, &caller, network_id)?;
    snapshot(tx, &network)
}

/// `GET /v1/networks/{id}/watch`: the network if its revision is above `since`, `None` otherwise (same
/// access as [`members`]).
pub fn watch(
    tx: &mut dyn ReadTx,
    presented: &Presented,
    network_id: &str,
    since: u64,
) -> Result<Option<MembersResponse>, ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer, TokenKind::Admin])?;
    let network = visible_network(tx, &caller, network_id)?;
    // Any other revision answers at once, a lower one too: a registry restored from a backup is behind its
    // daemons, which must take its view rather than wait for it to catch up.
    if network.revision != since {
        snapshot(tx, &network).map(Some)
    } else {
        Ok(None)
    }
}

/// The whole network as daemons see it, at its current revision: members and VIPs.
pub(super) fn snapshot(tx: &mut dyn ReadTx, network: &Network) -> Result<MembersResponse, ApiError> {
    let peers = tx.peers(&network.id)?;
    let vips = views::network_vips(tx, &network.id, &peers)?;
    Ok(MembersResponse {
        network_id: network.id.clone(),
        revision: network.revision,
        overlay_prefix: Some(network.overlay_prefix),
        members: peers.iter().map(member_view).collect(),
        vips,
    })
}

/// The network if the caller may see it: its own (peer token) or one of its account (admin token); 404
/// otherwise, the same as for a network that does not exist.
pub(super) fn visible_network(
    tx: &mut dyn ReadTx,
    caller: &TokenRecord,
    network_id: &str,
) -> Result<Network, ApiError> {
    let in_scope = |n: &Network| match caller.kind {
        TokenKind::Admin => n.account_id == caller.account_id,
        TokenKind::Peer | TokenKind::Enrollment => caller.network_id.as_deref() == Some(n.id.as_str()),
    };
    tx.network(network_id)?
        .filter(in_scope)
        .ok_or_else(|| ApiError::not_found(code::NETWORK_NOT_FOUND, format!("no network {network_id:?}")))
}
