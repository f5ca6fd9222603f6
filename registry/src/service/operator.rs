//! Operator listings and actions (admin token), scoped to the admin's account: another account's ids
//! answer 404, as if they did not exist.

use super::authenticate;
use super::prefixes;
use super::reap::{prefix_list, remove_peer, Ttls};
use super::views::{self, member_view};
use crate::error::{code, ApiError};
use crate::metrics::{Census, Detail, MAX_DETAIL_SERIES};
use crate::model::{Network, Peer, TokenKind, TokenRecord, Vip};
use crate::store::{ReadTx, WriteTx};
use crate::token::Presented;
use sdwand::vocab::wire::{
    ClusterStateRequest, ClusterStateView, ClusterView, ClustersResponse, PeerView, PeersResponse,
    SetSitePrefixesRequest, VipMoveRequest, VipView, VipsResponse,
};
use sdwand::vocab::{ClusterState, Lifecycle};

use super::handshake::{visible_cluster, K3S_API_PORT};

fn admin(tx: &mut dyn ReadTx, presented: &Presented) -> Result<(TokenRecord, Vec<Network>), ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Admin])?;
    let networks = tx.networks(&caller.account_id)?;
    Ok((caller, networks))
}

/// `GET /v1/peers`: every peer of the account, by network then enrollment order, with its cluster
/// membership and whether it is silent or stale at `now_ms`.
pub fn list_peers(
    tx: &mut dyn ReadTx,
    presented: &Presented,
    ttls: &Ttls,
    now_ms: u64,
) -> Result<PeersResponse, ApiError> {
    let (_, networks) = admin(tx, presented)?;
    let mut peers = Vec::new();
    for network in networks {
        for p in tx.peers(&network.id)? {
            peers.push(peer_view(tx, &p, ttls, now_ms)?);
        }
    }
    Ok(PeersResponse { peers })
}

/// A peer as operators see it, at `now_ms`.
fn peer_view(tx: &mut dyn ReadTx, p: &Peer, ttls: &Ttls, now_ms: u64) -> Result<PeerView, ApiError> {
    let cluster = tx.membership(&p.id)?.map(|m| (m.cluster_id, m.role));
    Ok(PeerView {
        member: member_view(p),
        network_id: p.network_id.clone(),
        cluster,
        stale: ttls.stale(p, now_ms),
        silent: ttls.silent(p, now_ms),
    })
}

/// `GET /v1/clusters`: every cluster of the account, newest first.
pub fn list_clusters(tx: &mut dyn ReadTx, presented: &Presented) -> Result<ClustersResponse, ApiError> {
    let (_, networks) = admin(tx, presented)?;
    let mut clusters = Vec::new();
    for network in networks {
        let peers = tx.peers(&network.id)?;
        let index = views::index(&peers);
        for cluster in tx.clusters(&network.id)? {
            let vip = tx
                .vip(&cluster.vip_id)?
                .ok_or_else(|| views::dangling(&cluster.vip_id))?;
            let members = tx
                .cluster_members(&cluster.id)?
                .into_iter()
                .map(|m| {
                    let name = index.get(m.peer_id.as_str()).map(|p| p.name.clone());
                    name.map(|n| (n, m.role)).ok_or_else(|| views::dangling(&m.peer_id))
                })
                .collect::<Result<Vec<_>, _>>()?;
            clusters.push(ClusterView {
                api_endpoint: format!("https://[{}]:{K3S_API_PORT}", vip.address),
                vip: views::vip_view(&vip, &index, Some(&cluster.id))?,
                cluster_id: cluster.id,
                name: cluster.name,
                network_id: cluster.network_id,
                state: cluster.state,
                members,
                created_at_ms: cluster.created_at_ms,
            });
        }
    }
    clusters.sort_by_key(|c| std::cmp::Reverse(c.created_at_ms));
    Ok(ClustersResponse { clusters })
}

/// `GET /v1/vips`: every VIP of the account, by network then creation order.
pub fn list_vips(tx: &mut dyn ReadTx, presented: &Presented) -> Result<VipsResponse, ApiError> {
    let (_, networks) = admin(tx, presented)?;
    let mut vips = Vec::new();
    for network in networks {
        let peers = tx.peers(&network.id)?;
        vips.extend(views::network_vips(tx, &network.id, &peers)?);
    }
    Ok(VipsResponse { vips })
}

/// `DELETE /v1/peers/{id}`: removes a peer of the account with its cascade ([`remove_peer`]) at `now_ms`;
/// its prefixes are held down for `ttls.prefix_hold_down`.
pub fn delete_peer(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    peer_id: &str,
    ttls: &Ttls,
    now_ms: u64,
) -> Result<(), ApiError> {
    let (caller, _) = admin(tx, presented)?;
    let peer = visible_peer(tx, &caller, peer_id)?;
    let held_down = remove_peer(tx, &peer, ttls.hold_until(now_ms))?;
    tx.after_commit(Box::new(move || {
        tracing::info!(
            account = %caller.account_id, network = %peer.network_id, peer = %peer.name, id = %peer.id,
            token = %caller.key_id, held_down = %prefix_list(&held_down), "peer removed by an operator"
        );
    }));
    Ok(())
}

/// `PUT /v1/peers/{id}/site-prefixes`: replaces the site prefixes of a peer of the account, checked by
/// [`prefixes::check_site_prefixes`] at `now_ms`; bumps the network's revision if they changed, so every
/// daemon routes them. Prefixes taken off a peer this way are free at once: the operator moves them
/// deliberately (a removed or reaped peer's are held down instead). Answers the peer.
pub fn set_site_prefixes(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    peer_id: &str,
    req: &SetSitePrefixesRequest,
    ttls: &Ttls,
    now_ms: u64,
) -> Result<PeerView, ApiError> {
    let (caller, _) = admin(tx, presented)?;
    let mut peer = visible_peer(tx, &caller, peer_id)?;
    let mut network = tx
        .network(&peer.network_id)?
        .ok_or_else(|| views::dangling(&peer.network_id))?;
    prefixes::check_site_prefixes(tx, &network, &peer, &req.prefixes, now_ms)?;
    if peer.site_prefixes != req.prefixes {
        let before = std::mem::replace(&mut peer.site_prefixes, req.prefixes.clone());
        tx.put_peer(&peer)?;
        network.revision += 1;
        tx.put_network(&network)?;
        tx.after_commit(Box::new({
            let (caller, network_id, peer) = (caller.clone(), network.id.clone(), peer.clone());
            move || {
                tracing::info!(
                    account = %caller.account_id, network = %network_id, peer = %peer.name, id = %peer.id,
                    token = %caller.key_id, old = %prefix_list(&before), new = %prefix_list(&peer.site_prefixes),
                    "site prefixes set by an operator"
                );
            }
        }));
    }
    peer_view(tx, &peer, ttls, now_ms)
}

/// The peer named `to` in network `network_id` when it is one of `candidates` (ids) of `what` (`VIP …`,
/// `floating prefix …`): the target of an operator's move. Not a peer of the network: 400; not a
/// candidate: 409.
pub(super) fn move_target(
    tx: &mut dyn ReadTx,
    network_id: &str,
    to: &str,
    candidates: &[String],
    what: &str,
) -> Result<Peer, ApiError> {
    let target = tx
        .peer_by_name(network_id, to)?
        .ok_or_else(|| ApiError::bad_request(format!("no peer named {to:?} in the network of {what}")))?;
    if !candidates.contains(&target.id) {
        return Err(ApiError::conflict(
            code::NOT_A_CANDIDATE,
            format!("peer {to:?} is not a candidate of {what}: only candidates can hold it"),
        ));
    }
    Ok(target)
}

/// `POST /v1/vips/{id}/move`: asks the VIP's holder to hand it over to the candidate named `to`. Records
/// `to` with the next sequence number and bumps the revision, so the holder's daemon sees it through the
/// watch. `to` not a peer of the network: 400; a peer but not a candidate: 409.
pub fn move_vip(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    vip_id: &str,
    req: &VipMoveRequest,
) -> Result<VipView, ApiError> {
    let (_, networks) = admin(tx, presented)?;
    let not_found = || ApiError::not_found(code::VIP_NOT_FOUND, format!("no VIP {vip_id:?}"));
    let mut vip: Vip = tx.vip(vip_id)?.ok_or_else(not_found)?;
    let Some(mut network) = networks.into_iter().find(|n| n.id == vip.network_id) else {
        return Err(not_found());
    };
    let target = move_target(
        tx,
        &network.id,
        &req.to,
        &vip.candidates,
        &format!("VIP {}", vip.address),
    )?;
    vip.move_to = Some(target.id.clone());
    vip.move_seq += 1;
    tx.put_vip(&vip)?;
    network.revision += 1;
    tx.put_network(&network)?;
    tx.after_commit(Box::new({
        let (address, seq) = (vip.address, vip.move_seq);
        move || tracing::info!(vip = %address, to = %target.name, seq, "VIP move requested")
    }));
    let peers = tx.peers(&network.id)?;
    let cluster_id = tx
        .clusters(&network.id)?
        .into_iter()
        .find(|c| c.vip_id == vip.id)
        .map(|c| c.id);
    views::vip_view(&vip, &views::index(&peers), cluster_id.as_deref())
}

/// `POST /v1/clusters/{id}/state`: an operator sets a cluster of the account `active` (out of `error`, once
/// its servers are repaired: joins work again) or `error` (joins are refused). `bootstrapping` is refused
/// (400): only a bootstrap creates a cluster in it.
pub fn set_cluster_state(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    cluster_id: &str,
    req: &ClusterStateRequest,
) -> Result<ClusterStateView, ApiError> {
    let (caller, _) = admin(tx, presented)?;
    let mut cluster = visible_cluster(tx, &caller, cluster_id)?;
    if req.state == ClusterState::Bootstrapping {
        return Err(ApiError::bad_request(
            "a cluster cannot be set back to bootstrapping: set it active or error",
        ));
    }
    if cluster.state != req.state {
        tx.after_commit(Box::new({
            let (id, old, new) = (cluster.id.clone(), cluster.state, req.state);
            move || tracing::info!(cluster = %id, %old, %new, "cluster state set by an operator")
        }));
        cluster.state = req.state;
        tx.put_cluster(&cluster)?;
    }
    Ok(ClusterStateView {
        cluster_id: cluster.id,
        state: cluster.state,
    })
}

/// The peer if it belongs to the caller's account; 404 otherwise.
fn visible_peer(tx: &mut dyn ReadTx, caller: &TokenRecord, peer_id: &str) -> Result<Peer, ApiError> {
    let not_found = || ApiError::not_found(code::PEER_NOT_FOUND, format!("no peer {peer_id:?}"));
    let peer = tx.peer(peer_id)?.ok_or_else(not_found)?;
    match tx.network(&peer.network_id)? {
        Some(n) if n.account_id == caller.account_id => Ok(peer),
        _ => Err(not_found()),
    }
}

/// Peers by class and staleness, clusters by state, over every account (the metrics' gauges); with
/// `detailed` (the endpoint requires a token), also each VIP and peer ([`Detail`]).
pub fn census(tx: &mut dyn ReadTx, ttls: &Ttls, now_ms: u64, detailed: bool) -> Result<Census, ApiError> {
    let peers = tx.all_peers()?;
    let clusters = tx.all_clusters()?;
    let mut census = Census::default();
    for class in [Lifecycle::Persistent, Lifecycle::Ephemeral, Lifecycle::Spot] {
        for stale in [false, true] {
            let n = peers
                .iter()
                .filter(|p| p.lifecycle == class && ttls.stale(p, now_ms) == stale)
                .count();
            census.peers.push((class, stale, n as u64));
        }
    }
    for state in [ClusterState::Bootstrapping, ClusterState::Active, ClusterState::Error] {
        census
            .clusters
            .push((state, clusters.iter().filter(|c| c.state == state).count() as u64));
    }
    if detailed {
        census.detail = Some(detail(tx, &peers)?);
    }
    Ok(census)
}

/// The per-object figures of [`census`]: every VIP, then every floating prefix, then every peer, up to
/// [`MAX_DETAIL_SERIES`].
fn detail(tx: &mut dyn ReadTx, peers: &[Peer]) -> Result<Detail, ApiError> {
    let names: std::collections::HashMap<&str, &str> = peers.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
    let networks: std::collections::BTreeSet<&str> = peers.iter().map(|p| p.network_id.as_str()).collect();
    let mut detail = Detail::default();
    let mut room = MAX_DETAIL_SERIES;
    for network in &networks {
        for vip in tx.vips(network)? {
            if room == 0 {
                detail.dropped += 1;
                continue;
            }
            room -= 1;
            let holder = vip.holder.as_deref().and_then(|h| names.get(h).copied()).unwrap_or("");
            detail.vips.push((
                (*network).to_owned(),
                vip.address.to_string(),
                holder.to_owned(),
                vip.epoch.map(|e| e.term),
            ));
        }
    }
    for network in &networks {
        for floating in tx.floatings(network)? {
            if room == 0 {
                detail.dropped += 1;
                continue;
            }
            room -= 1;
            let holder = floating
                .holder
                .as_deref()
                .and_then(|h| names.get(h).copied())
                .unwrap_or("");
            detail.floating.push((
                (*network).to_owned(),
                floating.prefix.to_string(),
                holder.to_owned(),
                floating.epoch.map(|e| e.term),
            ));
        }
    }
    for p in peers {
        if room == 0 {
            detail.dropped += 1;
            continue;
        }
        room -= 1;
        detail
            .peers
            .push((p.network_id.clone(), p.name.clone(), p.last_seen_ms));
    }
    Ok(detail)
}
