//! What daemons report (peer token): liveness and their view of every VIP of the network.
//!
//! The registry keeps, per VIP, the highest epoch any daemon ever reported, with the holder and confirmed
//! peers reported at that epoch, so a daemon that restarts together with every other daemon still claims
//! above every earlier claim. Reports change no revision: they are not membership.

use std::collections::HashMap;

use super::{authenticate, scope};
use crate::registry::error::ApiError;
use crate::registry::model::{TokenKind, Vip};
use crate::registry::store::WriteTx;
use crate::registry::token::Presented;
use crate::registry::wire::{EpochView, PeerReportRequest, PeerReportResponse, VipEpochView};
use crate::vip::{Epoch, MAX_TERM};

/// `POST /v1/peers/self/report`: marks the caller seen, merges its VIP reports (reports of addresses that
/// are not VIPs of its network, or of VIPs the caller is no candidate of, are ignored) and answers the
/// highest epoch of every VIP of the network. A term above [`MAX_TERM`] is refused (400).
pub fn peer_report(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    req: &PeerReportRequest,
    now_ms: u64,
) -> Result<PeerReportResponse, ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer])?;
    let mut peer = tx.peer(scope(&caller.peer_id)?)?.ok_or_else(ApiError::unauthorized)?;
    peer.mark_seen(now_ms);
    tx.put_peer(&peer)?;
    let network = tx.network(&peer.network_id)?.ok_or_else(ApiError::unauthorized)?;
    let peer_ids: HashMap<String, String> = tx.peers(&network.id)?.into_iter().map(|p| (p.name, p.id)).collect();
    if let Some(bad) = req.vips.iter().find(|r| r.epoch.is_some_and(|e| e.term > MAX_TERM)) {
        return Err(ApiError::bad_request(format!(
            "VIP {}: term is above {MAX_TERM}; no claim gets there",
            bad.address
        )));
    }
    let mut vips = tx.vips(&network.id)?;
    for report in &req.vips {
        // Only a VIP's candidates speak for its epoch: an agent (or any other peer) cannot push it up.
        let Some(vip) = vips
            .iter_mut()
            .find(|v| v.address == report.address && v.candidates.contains(&peer.id))
        else {
            continue;
        };
        let Some(epoch) = report.epoch.map(|e| Epoch {
            term: e.term,
            rank: e.rank,
        }) else {
            continue;
        };
        let holder = report.holder.as_ref().and_then(|name| peer_ids.get(name)).cloned();
        if merge(vip, epoch, holder, report.confirmed_peers) {
            tx.put_vip(vip)?;
        }
    }
    Ok(PeerReportResponse {
        revision: network.revision,
        epochs: vips
            .iter()
            .filter_map(|v| {
                v.epoch.map(|e| VipEpochView {
                    address: v.address,
                    epoch: EpochView {
                        term: e.term,
                        rank: e.rank,
                    },
                })
            })
            .collect(),
    })
}

/// Merges one report into `vip`; `true` if it changed. A higher epoch replaces the holder and confirmed
/// peers; the same epoch fills in what the report knows; a lower one is ignored. A holder that reached the
/// target of a pending move request completes it.
fn merge(vip: &mut Vip, epoch: Epoch, holder: Option<String>, confirmed: Option<u32>) -> bool {
    let before = vip.clone();
    match vip.epoch {
        Some(stored) if epoch < stored => return false,
        Some(stored) if epoch == stored => {
            vip.holder = holder.or(vip.holder.take());
            vip.confirmed_peers = confirmed.or(vip.confirmed_peers);
        }
        _ => {
            vip.epoch = Some(epoch);
            vip.holder = holder;
            vip.confirmed_peers = confirmed;
        }
    }
    if vip.move_to.is_some() && vip.move_to == vip.holder {
        vip.move_to = None;
    }
    *vip != before
}
