//! Enrollment (enrollment token) and the member list (peer or admin token).
//!
//! An enrollment token is a limited credential: it may expire, have a use count, allow only some roles,
//! and be revoked ([`crate::model::TokenLimits`]). What an enrollee says about itself (its name
//! against [`PeerName`]'s rule, its key and endpoint in [`super::validate`]) is checked before anything is
//! stored.
//!
//! # Retries
//!
//! A daemon whose enrollment answer was lost enrolls again with the same name and key. That retry gets the
//! same peer and a new peer token only while (1) the retry comes with the enrollment token that enrolled
//! the peer and (2) the peer never used its token: its first authenticated call of any kind — a report
//! (which a daemon sends as soon as it starts), a handshake, a cluster report, or a read of the members or
//! the watch ([`first_use`]) — marks it seen. The earlier peer token stays valid: a retry never takes a
//! working identity away from anyone.
//! Any other retry is 409 `already_enrolled`: once a peer is running, its identity cannot be claimed by
//! someone who merely knows its name, its public key and an enrollment token.

use super::reap::prefix_list;
use super::views::{self, member_view};
use super::{alloc, authenticate, issue_token, prefixes, refusal, scope, validate};
use crate::error::{code, ApiError};
use crate::model::{Network, Peer, Role, TokenKind, TokenRecord, TokenSpent};
use crate::store::{ReadTx, WriteTx};
use crate::token::{self, Presented};
use sdwand::vocab::name::PeerName;
use sdwand::vocab::wire::{EnrollRequest, EnrollResponse, MembersResponse};

/// `POST /v1/peers/enroll`: adds a peer to the enrollment token's network, allocates its /128 (and its /32
/// and pod shares: [`prefixes::allocate`]) and issues its peer token. A retry of the same enrollment: see the module documentation.
pub fn enroll(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    req: &EnrollRequest,
    now_ms: u64,
) -> Result<EnrollResponse, ApiError> {
    let mut grant = authenticate(tx, presented, &[TokenKind::Enrollment])?;
    let network_id = scope(&grant.network_id)?;
    let mut network = tx.network(network_id)?.ok_or_else(ApiError::unauthorized)?;
    usable(&grant, now_ms, false)?;
    PeerName::parse(&req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = validate::public_key(&req.public_key).map_err(ApiError::bad_request)?;
    if let Some(endpoint) = req.endpoint {
        validate::endpoint(endpoint).map_err(ApiError::bad_request)?;
    }
    let mut roles = req.roles.clone();
    roles.sort();
    roles.dedup();
    if let Some(role) = roles.iter().find(|r| !grant.limits.allows(**r)) {
        return Err(refuse(
            &grant,
            ApiError::forbidden(
                code::ROLE_NOT_ALLOWED,
                format!(
                    "enrollment token {} does not allow role {role} (it allows: {}); ask the operator for a \
                     token with that role",
                    grant.key_id,
                    allowed(&grant)
                ),
            ),
        ));
    }
    let public_key = key.to_base64();
    if let Some(peer) = tx.peer_by_key(&network.id, &public_key)? {
        return retry(tx, &grant, &network, peer, req, now_ms);
    }
    if tx.peer_by_name(&network.id, &req.name)?.is_some() {
        return Err(refuse(
            &grant,
            ApiError::conflict(code::NAME_TAKEN, format!("a peer named {:?} already exists", req.name)),
        ));
    }
    usable(&grant, now_ms, true)?;
    let (address, next) = alloc::next_peer_address(&network).ok_or_else(|| {
        ApiError::conflict(
            code::ADDRESSES_EXHAUSTED,
            format!("no address left in {}", network.overlay_prefix),
        )
    })?;
    let allocation = prefixes::allocate(tx, &network, now_ms)?;
    let peer = Peer {
        id: token::new_id()?,
        network_id: network.id.clone(),
        name: req.name.clone(),
        public_key,
        endpoint: req.endpoint,
        address,
        lifecycle: req.lifecycle,
        roles,
        address_v4: allocation.address_v4,
        pod_prefixes: allocation.pod_prefixes,
        site_prefixes: Vec::new(),
        last_seen_ms: now_ms,
        created_at_ms: now_ms,
        enrolled_by: Some(grant.key_id.clone()),
    };
    network.next_peer_offset = next;
    network.revision += 1;
    tx.put_network(&network)?;
    tx.put_peer(&peer)?;
    grant.limits.uses += 1;
    tx.update_token(&grant)?;
    let peer_token = issue_peer_token(tx, &grant, &peer, now_ms)?;
    tx.after_commit(Box::new({
        let (network_id, peer) = (network.id.clone(), peer.clone());
        move || {
            tracing::info!(
                account = %grant.account_id, network = %network_id, peer = %peer.name, id = %peer.id,
                address = %peer.address, address_v4 = ?peer.address_v4,
                pod_prefixes = %prefix_list(&peer.pod_prefixes), lifecycle = %peer.lifecycle,
                token = %grant.key_id, uses = grant.limits.uses, "peer enrolled"
            );
        }
    }));
    // The member list is read after the commit ([`enrolled_members`]): building it here would hold the
    // single writer for time that grows with the network, and every other write waits for it.
    Ok(EnrollResponse {
        peer_id: peer.id,
        network_id: network.id,
        address,
        address_v4: peer.address_v4,
        overlay_prefix: network.overlay_prefix,
        peer_token,
        revision: network.revision,
        members: Vec::new(),
        overlay_prefix_v4: None,
        pod_pools: Vec::new(),
        site_ranges: Vec::new(),
    })
}

/// A second enrollment of an enrolled key: the same peer with one more token if it is a retry of a lost
/// answer (same name, same enrollment token, peer token never used); 409 otherwise.
fn retry(
    tx: &mut dyn WriteTx,
    grant: &TokenRecord,
    network: &Network,
    peer: Peer,
    req: &EnrollRequest,
    now_ms: u64,
) -> Result<EnrollResponse, ApiError> {
    if peer.name != req.name {
        return Err(refuse(
            grant,
            ApiError::conflict(
                code::DUPLICATE_PUBLIC_KEY,
                format!(
                    "this public key is already enrolled in the network as {:?} (a restarted peer keeps its \
                     identity in its state directory; to enroll again, remove the peer first)",
                    peer.name
                ),
            ),
        ));
    }
    let why = if peer.enrolled_by.as_deref() != Some(grant.key_id.as_str()) {
        Some("it enrolled with another enrollment token")
    } else if peer.token_used() {
        Some("its peer token is in use")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(refuse(
            grant,
            ApiError::conflict(
                code::ALREADY_ENROLLED,
                format!(
                    "peer {:?} is already enrolled and {why}: a running peer keeps its identity in its state \
                     directory; to enroll this key again, an operator removes the peer first",
                    peer.name
                ),
            ),
        ));
    }
    let peer_token = issue_peer_token(tx, grant, &peer, now_ms)?;
    tx.after_commit(Box::new({
        let (name, id) = (peer.name.clone(), peer.id.clone());
        move || tracing::info!(peer = %name, %id, "enrollment retried before first use; another peer token issued")
    }));
    Ok(EnrollResponse {
        peer_id: peer.id,
        network_id: network.id.clone(),
        address: peer.address,
        address_v4: peer.address_v4,
        overlay_prefix: network.overlay_prefix,
        peer_token,
        revision: network.revision,
        members: Vec::new(),
        overlay_prefix_v4: None,
        pod_pools: Vec::new(),
        site_ranges: Vec::new(),
    })
}

/// 401 if the enrollment `grant` is revoked, expired, or (`new_use`) has no use left.
fn usable(grant: &TokenRecord, now_ms: u64, new_use: bool) -> Result<(), ApiError> {
    let Some(spent) = grant.limits.spent(now_ms, new_use) else {
        return Ok(());
    };
    let (code, message) = match spent {
        TokenSpent::Revoked => (code::TOKEN_REVOKED, "was revoked by an operator"),
        TokenSpent::Expired => (code::TOKEN_EXPIRED, "has expired"),
        TokenSpent::UsedUp => (code::TOKEN_USED_UP, "has no enrollment left"),
    };
    Err(refuse(
        grant,
        ApiError::unauthorized_because(
            code,
            format!(
                "enrollment token {} {message}: ask the operator for a new one",
                grant.key_id
            ),
        ),
    ))
}

/// Logs the refusal of `grant` (by key id) and answers `error`.
fn refuse(grant: &TokenRecord, error: ApiError) -> ApiError {
    refusal::log(&grant.key_id, error.code, &error.message);
    error
}

/// The roles `grant` allows, for messages.
fn allowed(grant: &TokenRecord) -> String {
    match &grant.limits.roles {
        None => "every role".to_owned(),
        Some(roles) if roles.is_empty() => "no role".to_owned(),
        Some(roles) => roles.iter().map(|r: &Role| r.as_str()).collect::<Vec<_>>().join(", "),
    }
}

/// Issues and stores a new peer token for `peer` (of the enrollment `grant`'s account); returns its text.
fn issue_peer_token(tx: &mut dyn WriteTx, grant: &TokenRecord, peer: &Peer, now_ms: u64) -> Result<String, ApiError> {
    let issued = issue_token(tx, TokenKind::Peer)?;
    tx.put_token(&TokenRecord {
        network_id: Some(peer.network_id.clone()),
        peer_id: Some(peer.id.clone()),
        ..TokenRecord::new(
            issued.key_id,
            TokenKind::Peer,
            issued.secret_hash,
            grant.account_id.clone(),
            now_ms,
        )
    })?;
    Ok(issued.text)
}

/// Completes an [`enroll`] answer after its commit: the network's member list, the revision it is at
/// (the enrollment's or a later one) and the ranges the members' prefixes are checked against (without
/// them the daemon would drop every member's prefixes from its first view).
pub fn enrolled_members(tx: &mut dyn ReadTx, answer: &mut EnrollResponse) -> Result<(), ApiError> {
    let network = tx.network(&answer.network_id)?.ok_or_else(ApiError::unauthorized)?;
    answer.members = tx.peers(&network.id)?.iter().map(member_view).collect();
    answer.revision = answer.revision.max(network.revision);
    answer.overlay_prefix_v4 = network.overlay_prefix_v4;
    answer.pod_pools = network.pod_pools;
    answer.site_ranges = network.site_ranges;
    Ok(())
}

/// Whether `caller` is a peer that has never used its token (its first read must end the enrollment retry
/// window, [`first_use`]), one lookup of its peer. Admin tokens: `false`, without a lookup.
pub(super) fn unused_peer_token(tx: &mut dyn ReadTx, caller: &TokenRecord) -> Result<bool, ApiError> {
    if caller.kind != TokenKind::Peer {
        return Ok(false);
    }
    Ok(tx.peer(scope(&caller.peer_id)?)?.is_some_and(|p| !p.token_used()))
}

/// Marks the calling peer seen, and so its token used, if it never was: a read call (members, watch) is
/// the peer's first use as much as a write is (see the module documentation, "Retries").
pub fn first_use(tx: &mut dyn WriteTx, presented: &Presented, now_ms: u64) -> Result<(), ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer])?;
    if let Some(mut peer) = tx.peer(scope(&caller.peer_id)?)?.filter(|p| !p.token_used()) {
        peer.mark_seen(now_ms);
        tx.put_peer(&peer)?;
    }
    Ok(())
}

/// `GET /v1/networks/{id}/members`: the member list, for a peer of the network or its account's admin, and
/// whether the caller is a peer that never used its token (then this is its first read, which must end the
/// enrollment retry window: [`first_use`]), found in the member list itself, so it costs no extra read.
pub fn members(
    tx: &mut dyn ReadTx,
    presented: &Presented,
    network_id: &str,
) -> Result<(MembersResponse, bool), ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer, TokenKind::Admin])?;
    let network = visible_network(tx, &caller, network_id)?;
    let peers = tx.peers(&network.id)?;
    let unused = caller.kind == TokenKind::Peer
        && peers
            .iter()
            .any(|p| caller.peer_id.as_deref() == Some(p.id.as_str()) && !p.token_used());
    Ok((snapshot_of(tx, &network, &peers)?, unused))
}

/// The whole network as daemons see it, at its current revision: members, VIPs and floating prefixes.
pub(super) fn snapshot(tx: &mut dyn ReadTx, network: &Network) -> Result<MembersResponse, ApiError> {
    let peers = tx.peers(&network.id)?;
    snapshot_of(tx, network, &peers)
}

/// [`snapshot`] with the network's peers already read.
fn snapshot_of(tx: &mut dyn ReadTx, network: &Network, peers: &[Peer]) -> Result<MembersResponse, ApiError> {
    let vips = views::network_vips(tx, &network.id, peers)?;
    let floating = views::network_floating(tx, &network.id, peers)?;
    Ok(MembersResponse {
        network_id: network.id.clone(),
        revision: network.revision,
        overlay_prefix: Some(network.overlay_prefix),
        vip_pool: Some(network.vip_pool),
        overlay_prefix_v4: network.overlay_prefix_v4,
        pod_pools: network.pod_pools.clone(),
        site_ranges: network.site_ranges.clone(),
        members: peers.iter().map(member_view).collect(),
        vips,
        floating,
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
