//! What daemons report (peer token): liveness and their view of every VIP of the network.
//!
//! The registry keeps, per VIP, the highest epoch any daemon ever reported, with the holder and confirmed
//! peers reported at that epoch, so a daemon that restarts together with every other daemon still claims
//! above every earlier claim. Reports change no revision: they are not membership.
//!
//! The stored epoch is a floor every daemon claims above, so only plausible epochs get there: only a VIP's
//! candidates speak for it, a term is at most [`CATCH_UP_TERM`] or [`MAX_TERM_STEP`] above the stored
//! one (the daemons' own term bound: honest terms grow by one per claim), and floors are handed out only up to [`FLOOR_CEILING`], so a claim above a floor
//! always fits below [`MAX_TERM`]. An entry that breaks a rule is skipped and named in the answer's
//! `refused`; the rest of the report, and the caller's liveness, are recorded all the same.

use std::collections::HashMap;

use super::{authenticate, refusal, scope};
use crate::error::ApiError;
use crate::model::{TokenKind, Vip};
use crate::store::WriteTx;
use crate::token::Presented;
use sdwand::vocab::wire::{EpochView, PeerReportRequest, PeerReportResponse, VipEpochView};
use sdwand::vocab::{Epoch, CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP};

/// The highest stored term handed out as a floor (or built upon): one step below [`MAX_TERM`]. A stored
/// epoch above it (written before these rules existed) is treated as absent and replaced by the next
/// plausible report.
pub const FLOOR_CEILING: u64 = MAX_TERM - MAX_TERM_STEP;

/// `POST /v1/peers/self/report`: marks the caller seen, merges its VIP reports and answers the highest
/// epoch of every VIP of the network. Reports of addresses that are not VIPs of its network, or of VIPs
/// the caller is no candidate of, are ignored; a term above [`MAX_TERM`], or a candidate's term above
/// [`CATCH_UP_TERM`] and more than [`MAX_TERM_STEP`] above the stored one, is refused (that entry only: see the module documentation).
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
    let mut vips = tx.vips(&network.id)?;
    let mut refused = Vec::new();
    for report in &req.vips {
        let Some(epoch) = report.epoch.map(|e| Epoch {
            term: e.term,
            rank: e.rank,
        }) else {
            continue;
        };
        // Only a VIP's candidates speak for its epoch: an agent (or any other peer) cannot push it up.
        let vip = vips
            .iter_mut()
            .find(|v| v.address == report.address && v.candidates.contains(&peer.id));
        if let Err(why) = plausible(vip.as_deref(), epoch) {
            let line = format!("VIP {}: {why}", report.address);
            refusal::log(&peer.id, "implausible_epoch", &format!("peer {:?}: {line}", peer.name));
            refused.push(line);
            continue;
        }
        let Some(vip) = vip else { continue };
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
                floor(v).map(|e| VipEpochView {
                    address: v.address,
                    epoch: EpochView {
                        term: e.term,
                        rank: e.rank,
                    },
                })
            })
            .collect(),
        refused,
    })
}

/// Whether `epoch` may be taken for `vip` (`None`: not a VIP the reporter is a candidate of, where only
/// the absolute bound applies); the reason if not.
fn plausible(vip: Option<&Vip>, epoch: Epoch) -> Result<(), String> {
    if epoch.term > MAX_TERM {
        return Err(format!("term {} is above {MAX_TERM}; no claim gets there", epoch.term));
    }
    let Some(vip) = vip else { return Ok(()) };
    let stored = floor(vip).map_or(0, |e| e.term);
    if epoch.term > (stored + MAX_TERM_STEP).max(CATCH_UP_TERM) {
        return Err(format!(
            "term {} is above {CATCH_UP_TERM} and more than {MAX_TERM_STEP} above the registry's {stored}; honest \
             terms grow by one per claim",
            epoch.term
        ));
    }
    Ok(())
}

/// The stored epoch of `vip` as a floor: `None` when there is none, or when it is above [`FLOOR_CEILING`].
fn floor(vip: &Vip) -> Option<Epoch> {
    vip.epoch.filter(|e| e.term <= FLOOR_CEILING)
}

/// Merges one report into `vip`; `true` if it changed. A higher epoch replaces the holder and confirmed
/// peers; the same epoch fills in what the report knows; a lower one is ignored. A holder that reached the
/// target of a pending move request completes it.
fn merge(vip: &mut Vip, epoch: Epoch, holder: Option<String>, confirmed: Option<u32>) -> bool {
    let before = vip.clone();
    match floor(vip) {
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
