//! Floating prefixes and quorum mode (admin token), scoped to the admin's account like VIPs and peers:
//! another account's ids answer 404.
//!
//! A floating prefix is a LAN or range behind several gateways (its candidates): every member routes it to
//! the candidate that holds it, and the daemons move it with the VIP failover protocol under its key
//! ([`sdwand::vocab::floating_key`]). The registry only stores it, checks it, and records what daemons
//! report; it never decides who holds.
//!
//! **Checks** ([`check_prefix_free`]), like site prefixes': canonical, no default route or special space
//! (400); no overlap (409 `prefix_conflict`, naming what it overlaps) with the overlay prefix, the VIP pool
//! (and so every VIP), the IPv4 overlay prefix (and so every /32), the pod pools (and so every pod share),
//! any peer's site prefix, or another floating prefix; none with a prefix in hold-down (409
//! `prefix_held_down`). The gateway lies inside the prefix and is not its network address (nor, for IPv4 up
//! to a /30, its broadcast address). 1 to [`MAX_CANDIDATES`] candidates and at most [`MAX_WITNESSES`]
//! witnesses, distinct members of the network, no peer both (400).
//!
//! **Removal of a peer** ([`forget_peer`]) takes it out of every candidate and witness list, holder and move
//! target. A floating prefix whose last candidate leaves is kept with no candidate: nobody holds it and no
//! member routes it, until an operator names new candidates (`PUT /v1/floating/{id}`) or deletes it.

use super::authenticate;
use super::prefixes::{check_prefix, overlap};
use super::views;
use crate::error::{code, ApiError};
use crate::model::{Floating, Network, Peer, Quorum, TokenKind, TokenRecord, Vip};
use crate::store::{ReadTx, WriteTx};
use crate::token::{self, Presented};
use ipnet::IpNet;
use sdwand::vocab::wire::{
    CreateFloatingRequest, FloatingResponse, FloatingView, SetFloatingRequest, SetQuorumRequest, VipMoveRequest,
    VipView,
};
use sdwand::vocab::MAX_CANDIDATES;
use std::net::IpAddr;

/// The most witnesses a VIP or floating prefix may have.
pub const MAX_WITNESSES: usize = MAX_CANDIDATES;

/// The most floating prefixes a network may have (every daemon runs one failover machine for each).
pub const MAX_FLOATING: usize = 256;

fn admin(tx: &mut dyn ReadTx, presented: &Presented) -> Result<TokenRecord, ApiError> {
    authenticate(tx, presented, &[TokenKind::Admin])
}

/// The network if it belongs to the caller's account; 404 otherwise.
fn own_network(tx: &mut dyn ReadTx, caller: &TokenRecord, network_id: &str) -> Result<Network, ApiError> {
    tx.network(network_id)?
        .filter(|n| n.account_id == caller.account_id)
        .ok_or_else(|| ApiError::not_found(code::NETWORK_NOT_FOUND, format!("no network {network_id:?}")))
}

/// The floating prefix and its network if they belong to the caller's account; 404 otherwise.
fn visible(tx: &mut dyn ReadTx, caller: &TokenRecord, id: &str) -> Result<(Floating, Network), ApiError> {
    let not_found = || ApiError::not_found(code::FLOATING_NOT_FOUND, format!("no floating prefix {id:?}"));
    let floating = tx.floating(id)?.ok_or_else(not_found)?;
    let network = tx
        .network(&floating.network_id)?
        .filter(|n| n.account_id == caller.account_id)
        .ok_or_else(not_found)?;
    Ok((floating, network))
}

/// The VIP and its network if they belong to the caller's account; 404 otherwise.
fn visible_vip(tx: &mut dyn ReadTx, caller: &TokenRecord, id: &str) -> Result<(Vip, Network), ApiError> {
    let not_found = || ApiError::not_found(code::VIP_NOT_FOUND, format!("no VIP {id:?}"));
    let vip = tx.vip(id)?.ok_or_else(not_found)?;
    let network = tx
        .network(&vip.network_id)?
        .filter(|n| n.account_id == caller.account_id)
        .ok_or_else(not_found)?;
    Ok((vip, network))
}

/// The peers `given` names (each a peer id or name of `network`), as peer ids in the given order; `field`
/// names the list in messages. Unknown or repeated peers: 400.
fn resolve(tx: &mut dyn ReadTx, network: &Network, field: &str, given: &[String]) -> Result<Vec<Peer>, ApiError> {
    let mut peers: Vec<Peer> = Vec::with_capacity(given.len());
    for (i, g) in given.iter().enumerate() {
        let by_id = tx.peer(g)?.filter(|p| p.network_id == network.id);
        let peer = match by_id {
            Some(p) => p,
            None => tx.peer_by_name(&network.id, g)?.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{field}[{i}] {g:?}: no peer of network {:?} has this name or id (see GET /v1/peers)",
                    network.name
                ))
            })?,
        };
        if let Some(j) = peers.iter().position(|p| p.id == peer.id) {
            return Err(ApiError::bad_request(format!(
                "{field}[{i}] {g:?} names peer {:?} again ({field}[{j}]): each peer at most once",
                peer.name
            )));
        }
        peers.push(peer);
    }
    Ok(peers)
}

/// Checks a candidate list's length (1 to [`MAX_CANDIDATES`]), before its peers are looked up.
fn check_candidates(candidates: &[String]) -> Result<(), ApiError> {
    if candidates.is_empty() || candidates.len() > MAX_CANDIDATES {
        return Err(ApiError::bad_request(format!(
            "candidates has {} peers: give 1 to {MAX_CANDIDATES} (the gateways that can serve the prefix, best first)",
            candidates.len()
        )));
    }
    Ok(())
}

/// Checks a witness list's length (at most [`MAX_WITNESSES`]), before its peers are looked up.
fn check_witness_count(witnesses: &[String]) -> Result<(), ApiError> {
    if witnesses.len() > MAX_WITNESSES {
        return Err(ApiError::bad_request(format!(
            "witnesses has {} peers: at most {MAX_WITNESSES}",
            witnesses.len()
        )));
    }
    Ok(())
}

/// Checks witnesses against the candidates: none of them a candidate.
fn check_witnesses(candidates: &[String], witnesses: &[Peer]) -> Result<(), ApiError> {
    if let Some((i, w)) = witnesses.iter().enumerate().find(|(_, w)| candidates.contains(&w.id)) {
        return Err(ApiError::bad_request(format!(
            "witnesses[{i}] {:?} is a candidate: a peer votes as a candidate or as a witness, not both",
            w.name
        )));
    }
    Ok(())
}

fn ids(peers: &[Peer]) -> Vec<String> {
    peers.iter().map(|p| p.id.clone()).collect()
}

/// Checks a gateway address of `prefix`: inside it, not its network address, nor (IPv4 up to a /30) its
/// broadcast address.
fn check_gateway(prefix: IpNet, gateway: IpAddr) -> Result<(), ApiError> {
    if !prefix.contains(&gateway) {
        return Err(ApiError::bad_request(format!(
            "gateway {gateway} is not inside prefix {prefix}: give an address of the prefix (e.g. {})",
            prefix.hosts().next().unwrap_or(prefix.network())
        )));
    }
    if gateway == prefix.network() && prefix.max_prefix_len() - prefix.prefix_len() > 1 {
        return Err(ApiError::bad_request(format!(
            "gateway {gateway} is the network address of {prefix}: give a host address of it"
        )));
    }
    if matches!(prefix, IpNet::V4(_)) && prefix.prefix_len() <= 30 && gateway == prefix.broadcast() {
        return Err(ApiError::bad_request(format!(
            "gateway {gateway} is the broadcast address of {prefix}: give a host address of it"
        )));
    }
    Ok(())
}

/// Checks that `prefix` may float in `network` at `now_ms` (see the module documentation).
pub(super) fn check_prefix_free(
    tx: &mut dyn ReadTx,
    network: &Network,
    prefix: IpNet,
    now_ms: u64,
) -> Result<(), ApiError> {
    check_prefix("prefix", prefix).map_err(ApiError::bad_request)?;
    let conflict = |what: String| {
        ApiError::conflict(
            code::PREFIX_CONFLICT,
            format!("prefix {prefix} overlaps {what}: a floating prefix must overlap nothing else the network routes"),
        )
    };
    let mut fixed: Vec<(IpNet, String)> = vec![
        (
            IpNet::V6(network.vip_pool),
            format!("the network's VIP pool {} (VIPs come from it)", network.vip_pool),
        ),
        (
            IpNet::V6(network.overlay_prefix),
            format!("the network's overlay prefix {} (peers' /128s)", network.overlay_prefix),
        ),
    ];
    if let Some(v4) = network.overlay_prefix_v4 {
        fixed.push((
            IpNet::V4(v4),
            format!("the network's IPv4 overlay prefix {v4} (peers' /32s)"),
        ));
    }
    for (i, pool) in network.pod_pools.iter().enumerate() {
        fixed.push((
            pool.prefix,
            format!("pod pool pod_pools[{i}] {} (peers' pod shares)", pool.prefix),
        ));
    }
    if let Some((_, what)) = fixed.into_iter().find(|(net, _)| overlap(*net, prefix)) {
        return Err(conflict(what));
    }
    for peer in tx.peers(&network.id)? {
        if let Some(theirs) = peer.site_prefixes.iter().find(|p| overlap(**p, prefix)) {
            return Err(conflict(format!(
                "site prefix {theirs} of peer {:?} (id {}): take it off that peer first",
                peer.name, peer.id
            )));
        }
    }
    for other in tx.floatings(&network.id)? {
        if overlap(other.prefix, prefix) {
            return Err(conflict(format!("floating prefix {} (id {})", other.prefix, other.id)));
        }
    }
    for hold in tx.prefix_holds(&network.id)?.iter().filter(|h| h.until_ms > now_ms) {
        if overlap(hold.prefix, prefix) {
            return Err(ApiError::conflict(
                code::PREFIX_HELD_DOWN,
                format!(
                    "prefix {prefix} overlaps {}, which removed peer {:?} held: it is held down for {} s more, so that \
                     no node still routing it to that peer sends the prefix's traffic there",
                    hold.prefix,
                    hold.released_by,
                    hold.until_ms.saturating_sub(now_ms).div_ceil(1000)
                ),
            ));
        }
    }
    Ok(())
}

/// Bumps the network's revision, so every daemon's watch sees the change.
fn bump(tx: &mut dyn WriteTx, mut network: Network) -> Result<(), ApiError> {
    network.revision += 1;
    tx.put_network(&network)?;
    Ok(())
}

fn view(tx: &mut dyn ReadTx, floating: &Floating) -> Result<FloatingView, ApiError> {
    let peers = tx.peers(&floating.network_id)?;
    views::floating_view(floating, &views::index(&peers))
}

/// `POST /v1/networks/{id}/floating`: a new floating prefix of a network of the account, checked as the
/// module documentation says, at `now_ms`; bumps the revision. Answers the prefix.
pub fn create_floating(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    network_id: &str,
    req: &CreateFloatingRequest,
    now_ms: u64,
) -> Result<FloatingView, ApiError> {
    let caller = admin(tx, presented)?;
    let network = own_network(tx, &caller, network_id)?;
    check_prefix_free(tx, &network, req.prefix, now_ms)?;
    if let Some(gateway) = req.gateway {
        check_gateway(req.prefix, gateway)?;
    }
    check_candidates(&req.candidates)?;
    check_witness_count(&req.witnesses)?;
    let candidates = ids(&resolve(tx, &network, "candidates", &req.candidates)?);
    if !req.quorum && !req.witnesses.is_empty() {
        return Err(ApiError::bad_request(
            "witnesses are given but quorum is off: add \"quorum\": true (witnesses only vote in quorum mode)",
        ));
    }
    let witnesses = resolve(tx, &network, "witnesses", &req.witnesses)?;
    check_witnesses(&candidates, &witnesses)?;
    let count = tx.floatings(&network.id)?.len();
    if count >= MAX_FLOATING {
        return Err(ApiError::conflict(
            code::TOO_MANY_FLOATING,
            format!(
                "network {:?} has {count} floating prefixes, the most a network can have: delete one, or use fewer, \
                 larger prefixes",
                network.name
            ),
        ));
    }
    let floating = Floating {
        id: token::new_id()?,
        network_id: network.id.clone(),
        prefix: req.prefix,
        gateway: req.gateway,
        candidates,
        holder: None,
        epoch: None,
        move_to: None,
        move_seq: 0,
        quorum: req.quorum.then(|| Quorum {
            witnesses: ids(&witnesses),
        }),
        created_at_ms: now_ms,
    };
    tx.put_floating(&floating)?;
    tx.after_commit(Box::new({
        let (caller, network_id, floating) = (caller.clone(), network.id.clone(), floating.clone());
        let (candidates, quorum) = (req.candidates.clone(), req.quorum);
        move || {
            tracing::info!(
                account = %caller.account_id, network = %network_id, floating = %floating.id, prefix = %floating.prefix,
                ?candidates, quorum, token = %caller.key_id, "floating prefix created"
            );
        }
    }));
    bump(tx, network)?;
    view(tx, &floating)
}

/// `GET /v1/floating`: every floating prefix of the account, by network then creation order.
pub fn list_floating(tx: &mut dyn ReadTx, presented: &Presented) -> Result<FloatingResponse, ApiError> {
    let caller = admin(tx, presented)?;
    let mut floating = Vec::new();
    for network in tx.networks(&caller.account_id)? {
        let peers = tx.peers(&network.id)?;
        floating.extend(views::network_floating(tx, &network.id, &peers)?);
    }
    Ok(FloatingResponse { floating })
}

/// `PUT /v1/floating/{id}`: changes the candidates, quorum mode or witnesses of a floating prefix of the
/// account (what the request leaves out is kept). A holder or move target that is no candidate any more is
/// forgotten (the next report says who holds). Bumps the revision if anything changed.
pub fn set_floating(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    id: &str,
    req: &SetFloatingRequest,
) -> Result<FloatingView, ApiError> {
    let caller = admin(tx, presented)?;
    let (mut floating, network) = visible(tx, &caller, id)?;
    let before = floating.clone();
    if let Some(given) = &req.candidates {
        check_candidates(given)?;
        floating.candidates = ids(&resolve(tx, &network, "candidates", given)?);
    }
    if let Some(given) = &req.witnesses {
        check_witness_count(given)?;
    }
    let quorum_on = req.quorum.unwrap_or(floating.quorum.is_some());
    let witnesses = match (&req.witnesses, quorum_on) {
        (Some(given), true) => ids(&resolve(tx, &network, "witnesses", given)?),
        (Some(given), false) if !given.is_empty() => {
            return Err(ApiError::bad_request(
                "witnesses are given but quorum is off: add \"quorum\": true (witnesses only vote in quorum mode)",
            ))
        }
        _ => floating.quorum.take().map(|q| q.witnesses).unwrap_or_default(),
    };
    floating.quorum = quorum_on.then_some(Quorum { witnesses });
    if let Some(q) = &floating.quorum {
        let peers = q
            .witnesses
            .iter()
            .filter_map(|w| tx.peer(w).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        check_witnesses(&floating.candidates, &peers)?;
    }
    let candidates = floating.candidates.clone();
    floating.holder = floating.holder.take().filter(|h| candidates.contains(h));
    floating.move_to = floating.move_to.take().filter(|m| candidates.contains(m));
    if floating != before {
        tx.put_floating(&floating)?;
        tx.after_commit(Box::new({
            let (caller, network_id, floating) = (caller.clone(), network.id.clone(), floating.clone());
            move || {
                tracing::info!(
                    account = %caller.account_id, network = %network_id, floating = %floating.id,
                    prefix = %floating.prefix, candidates = ?floating.candidates, quorum = ?floating.quorum,
                    token = %caller.key_id, "floating prefix changed by an operator"
                );
            }
        }));
        bump(tx, network)?;
    }
    view(tx, &floating)
}

/// `DELETE /v1/floating/{id}`: deletes a floating prefix of the account and bumps the revision: every
/// daemon stops routing it (its holder removes its route and gateway address).
pub fn delete_floating(tx: &mut dyn WriteTx, presented: &Presented, id: &str) -> Result<(), ApiError> {
    let caller = admin(tx, presented)?;
    let (floating, network) = visible(tx, &caller, id)?;
    tx.delete_floating(&floating.id)?;
    tx.after_commit(Box::new({
        let network_id = network.id.clone();
        move || {
            tracing::info!(
                account = %caller.account_id, network = %network_id, floating = %floating.id, prefix = %floating.prefix,
                token = %caller.key_id, "floating prefix deleted by an operator"
            );
        }
    }));
    bump(tx, network)
}

/// `POST /v1/floating/{id}/move`: asks the holder of a floating prefix to hand it over to the candidate
/// named `to`, as `POST /v1/vips/{id}/move` does for a VIP. `to` not a peer of the network: 400; a peer
/// but not a candidate: 409 `not_a_candidate`.
pub fn move_floating(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    id: &str,
    req: &VipMoveRequest,
) -> Result<FloatingView, ApiError> {
    let caller = admin(tx, presented)?;
    let (mut floating, network) = visible(tx, &caller, id)?;
    let what = format!("floating prefix {}", floating.prefix);
    let target = super::operator::move_target(tx, &network.id, &req.to, &floating.candidates, &what)?;
    floating.move_to = Some(target.id.clone());
    floating.move_seq += 1;
    tx.put_floating(&floating)?;
    tx.after_commit(Box::new({
        let (prefix, seq) = (floating.prefix, floating.move_seq);
        move || tracing::info!(floating = %prefix, to = %target.name, seq, "floating prefix move requested")
    }));
    bump(tx, network)?;
    view(tx, &floating)
}

/// `PUT /v1/vips/{id}/quorum`: turns quorum mode of a VIP of the account on (with these witnesses) or off.
/// Witnesses are members of the VIP's network and not its candidates (400). Bumps the revision if it
/// changed. Answers the VIP.
pub fn set_vip_quorum(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    vip_id: &str,
    req: &SetQuorumRequest,
) -> Result<VipView, ApiError> {
    let caller = admin(tx, presented)?;
    let (mut vip, network) = visible_vip(tx, &caller, vip_id)?;
    if !req.enabled && !req.witnesses.is_empty() {
        return Err(ApiError::bad_request(
            "witnesses are given but enabled is false: witnesses only vote in quorum mode",
        ));
    }
    check_witness_count(&req.witnesses)?;
    let witnesses = resolve(tx, &network, "witnesses", &req.witnesses)?;
    check_witnesses(&vip.candidates, &witnesses)?;
    let quorum = req.enabled.then(|| Quorum {
        witnesses: ids(&witnesses),
    });
    if vip.quorum != quorum {
        vip.quorum = quorum;
        tx.put_vip(&vip)?;
        tx.after_commit(Box::new({
            let (caller, network_id, address, quorum) =
                (caller.clone(), network.id.clone(), vip.address, vip.quorum.clone());
            move || {
                tracing::info!(
                    account = %caller.account_id, network = %network_id, vip = %address, ?quorum,
                    token = %caller.key_id, "VIP quorum mode set by an operator"
                );
            }
        }));
        bump(tx, network.clone())?;
    }
    let peers = tx.peers(&network.id)?;
    let cluster_id = tx
        .clusters(&network.id)?
        .into_iter()
        .find(|c| c.vip_id == vip.id)
        .map(|c| c.id);
    views::vip_view(&vip, &views::index(&peers), cluster_id.as_deref())
}

/// Takes a peer being removed out of every floating prefix of its network: candidacy, witness role, holder
/// and move target (the caller bumps the revision).
pub(super) fn forget_peer(tx: &mut dyn WriteTx, peer: &Peer) -> Result<(), ApiError> {
    for mut floating in tx.floatings(&peer.network_id)? {
        let before = floating.clone();
        floating.candidates.retain(|id| *id != peer.id);
        if let Some(q) = &mut floating.quorum {
            q.witnesses.retain(|id| *id != peer.id);
        }
        if floating.holder.as_deref() == Some(peer.id.as_str()) {
            floating.holder = None;
        }
        if floating.move_to.as_deref() == Some(peer.id.as_str()) {
            floating.move_to = None;
        }
        if floating != before {
            if floating.candidates.is_empty() {
                tx.after_commit(Box::new({
                    let (floating, peer_name) = (floating.clone(), peer.name.clone());
                    move || {
                        tracing::warn!(
                            network = %floating.network_id, floating = %floating.id, prefix = %floating.prefix,
                            peer = %peer_name,
                            "the last candidate of a floating prefix was removed: nobody routes it until an \
                             operator names new candidates"
                        );
                    }
                }));
            }
            tx.put_floating(&floating)?;
        }
    }
    Ok(())
}
