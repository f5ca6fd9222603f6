//! Views of stored records as the API shows them (VIPs and floating prefixes with their candidates and
//! witnesses, clusters, peers).

use std::collections::HashMap;

use ipnet::IpNet;

use crate::error::ApiError;
use crate::model::{Floating, Peer, Quorum, Vip};
use crate::store::{ReadTx, StoreError};
use sdwand::vocab::wire::{CandidateView, EpochView, FloatingView, MemberView, MoveRequestView, QuorumView, VipView};
use sdwand::vocab::Epoch;

/// The peers of a network, by id.
pub(super) type PeerIndex<'a> = HashMap<&'a str, &'a Peer>;

/// Indexes `peers` by id.
pub(super) fn index(peers: &[Peer]) -> PeerIndex<'_> {
    peers.iter().map(|p| (p.id.as_str(), p)).collect()
}

/// Every VIP of a network as daemons see it: creation order, candidates in rank order, the cluster whose
/// API endpoint it is. `peers` are the network's peers.
pub(super) fn network_vips(tx: &mut dyn ReadTx, network_id: &str, peers: &[Peer]) -> Result<Vec<VipView>, ApiError> {
    let by_id = index(peers);
    let clusters = tx.clusters(network_id)?;
    let cluster_of: HashMap<&str, &str> = clusters.iter().map(|c| (c.vip_id.as_str(), c.id.as_str())).collect();
    tx.vips(network_id)?
        .iter()
        .map(|v| vip_view(v, &by_id, cluster_of.get(v.id.as_str()).copied()))
        .collect()
}

/// One VIP as the API shows it. A candidate, holder or move target missing from `peers` is a corrupt
/// store (the cascade of a removal takes a peer out of every VIP first).
pub(super) fn vip_view(vip: &Vip, peers: &PeerIndex<'_>, cluster_id: Option<&str>) -> Result<VipView, ApiError> {
    let claim = claim_view(
        peers,
        &vip.candidates,
        vip.holder.as_deref(),
        vip.move_to.as_deref(),
        vip.move_seq,
        vip.quorum.as_ref(),
    )?;
    Ok(VipView {
        vip_id: vip.id.clone(),
        address: vip.address,
        cluster_id: cluster_id.map(str::to_owned),
        candidates: claim.candidates,
        holder: claim.holder,
        epoch: epoch_view(vip.epoch),
        confirmed_peers: vip.confirmed_peers,
        move_request: claim.move_request,
        quorum: claim.quorum,
    })
}

/// Every floating prefix of a network as daemons see it, in creation order. `peers` are the network's peers.
pub(super) fn network_floating(
    tx: &mut dyn ReadTx,
    network_id: &str,
    peers: &[Peer],
) -> Result<Vec<FloatingView>, ApiError> {
    let by_id = index(peers);
    tx.floatings(network_id)?
        .iter()
        .map(|f| floating_view(f, &by_id))
        .collect()
}

/// One floating prefix as the API shows it (a peer it names that is missing from `peers`: a corrupt store).
pub(super) fn floating_view(f: &Floating, peers: &PeerIndex<'_>) -> Result<FloatingView, ApiError> {
    let claim = claim_view(
        peers,
        &f.candidates,
        f.holder.as_deref(),
        f.move_to.as_deref(),
        f.move_seq,
        f.quorum.as_ref(),
    )?;
    Ok(FloatingView {
        floating_id: f.id.clone(),
        prefix: f.prefix,
        gateway: f.gateway,
        candidates: claim.candidates,
        holder: claim.holder,
        epoch: epoch_view(f.epoch),
        move_request: claim.move_request,
        quorum: claim.quorum,
    })
}

/// What VIPs and floating prefixes show alike, with peer ids turned into names.
struct ClaimView {
    candidates: Vec<CandidateView>,
    holder: Option<String>,
    move_request: Option<MoveRequestView>,
    quorum: Option<QuorumView>,
}

fn claim_view(
    peers: &PeerIndex<'_>,
    candidates: &[String],
    holder: Option<&str>,
    move_to: Option<&str>,
    move_seq: u64,
    quorum: Option<&Quorum>,
) -> Result<ClaimView, ApiError> {
    let find = |id: &str| peers.get(id).copied().ok_or_else(|| dangling(id));
    let candidate = |id: &String| {
        find(id).map(|p| CandidateView {
            peer_id: p.id.clone(),
            name: p.name.clone(),
            address: p.address,
        })
    };
    Ok(ClaimView {
        candidates: candidates.iter().map(candidate).collect::<Result<Vec<_>, _>>()?,
        holder: holder.map(|id| find(id).map(|p| p.name.clone())).transpose()?,
        move_request: move_to
            .map(|id| {
                find(id).map(|p| MoveRequestView {
                    to: p.name.clone(),
                    seq: move_seq,
                })
            })
            .transpose()?,
        quorum: quorum
            .map(|q| {
                q.witnesses
                    .iter()
                    .map(candidate)
                    .collect::<Result<Vec<_>, _>>()
                    .map(|witnesses| QuorumView { witnesses })
            })
            .transpose()?,
    })
}

fn epoch_view(epoch: Option<Epoch>) -> Option<EpochView> {
    epoch.map(|e| EpochView {
        term: e.term,
        rank: e.rank,
    })
}

/// A peer as a network member: `prefixes` are its pod shares then its site prefixes, `routed_prefixes`
/// the IPv6 ones of them (what daemons older than `prefixes` route).
pub(super) fn member_view(p: &Peer) -> MemberView {
    let prefixes = p.prefixes();
    MemberView {
        peer_id: p.id.clone(),
        name: p.name.clone(),
        public_key: p.public_key.clone(),
        endpoint: p.endpoint,
        address: p.address,
        routed_prefixes: prefixes
            .iter()
            .filter_map(|r| match r.prefix {
                IpNet::V6(v6) => Some(v6),
                IpNet::V4(_) => None,
            })
            .collect(),
        address_v4: p.address_v4,
        prefixes,
        lifecycle: p.lifecycle,
        roles: p.roles.clone(),
        last_seen_ms: p.last_seen_ms,
    }
}

/// A reference to a record that is not there: the store is corrupt.
pub(super) fn dangling(id: &str) -> ApiError {
    StoreError::Corrupt {
        table: "vips",
        message: format!("reference to missing peer or VIP {id:?}"),
    }
    .into()
}
