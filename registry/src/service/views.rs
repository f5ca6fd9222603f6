//! Views of stored records as the API shows them (VIPs with their candidates, clusters, peers).

use std::collections::HashMap;

use ipnet::IpNet;

use crate::error::ApiError;
use crate::model::{Peer, Vip};
use crate::store::{ReadTx, StoreError};
use sdwand::vocab::wire::{CandidateView, EpochView, MemberView, MoveRequestView, VipView};

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
    let find = |id: &str| peers.get(id).copied().ok_or_else(|| dangling(id));
    let candidates = vip
        .candidates
        .iter()
        .map(|id| {
            find(id).map(|p| CandidateView {
                peer_id: p.id.clone(),
                name: p.name.clone(),
                address: p.address,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let holder = vip
        .holder
        .as_deref()
        .map(|id| find(id).map(|p| p.name.clone()))
        .transpose()?;
    let move_request = vip
        .move_to
        .as_deref()
        .map(|id| {
            find(id).map(|p| MoveRequestView {
                to: p.name.clone(),
                seq: vip.move_seq,
            })
        })
        .transpose()?;
    Ok(VipView {
        vip_id: vip.id.clone(),
        address: vip.address,
        cluster_id: cluster_id.map(str::to_owned),
        candidates,
        holder,
        epoch: vip.epoch.map(|e| EpochView {
            term: e.term,
            rank: e.rank,
        }),
        confirmed_peers: vip.confirmed_peers,
        move_request,
        quorum: None,
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
