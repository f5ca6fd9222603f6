//! What daemons report (peer token): liveness and their view of every VIP and floating prefix of the
//! network (a floating prefix is reported under its key, [`sdwand::vocab::floating_key`]).
//!
//! The registry keeps, per VIP and floating prefix, the highest epoch any daemon ever reported, with the holder and confirmed
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
use crate::model::TokenKind;
use crate::store::WriteTx;
use crate::token::Presented;
use sdwand::vocab::wire::{EpochView, PeerReportRequest, PeerReportResponse, VipEpochView};
use sdwand::vocab::{Epoch, CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP};
use std::net::Ipv6Addr;

/// The highest stored term handed out as a floor (or built upon): one step below [`MAX_TERM`]. A stored
/// epoch above it (written before these rules existed) is treated as absent and replaced by the next
/// plausible report.
pub const FLOOR_CEILING: u64 = MAX_TERM - MAX_TERM_STEP;

/// `POST /v1/peers/self/report`: marks the caller seen, merges its VIP reports and answers the highest
/// epoch of every VIP and floating prefix of the network. Reports of addresses that are neither a VIP nor a
/// floating prefix's key of its network, or of ones the caller is no candidate of, are ignored; a term above
/// [`MAX_TERM`], or a candidate's term above [`CATCH_UP_TERM`] and more than [`MAX_TERM_STEP`] above the
/// stored one, is refused (that entry only: see the module documentation).
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
    let mut floating = tx.floatings(&network.id)?;
    let mut refused = Vec::new();
    for report in &req.vips {
        let Some(epoch) = report.epoch.map(|e| Epoch {
            term: e.term,
            rank: e.rank,
        }) else {
            continue;
        };
        // Only candidates speak for an epoch: an agent (or any other peer) cannot push it up.
        let mut claim = vips
            .iter_mut()
            .find(|v| v.address == report.address && v.candidates.contains(&peer.id))
            .map(|v| Claim {
                epoch: &mut v.epoch,
                holder: &mut v.holder,
                confirmed: Some(&mut v.confirmed_peers),
                move_to: &mut v.move_to,
            });
        let mut which = Which::Vip;
        let mut what = format!("VIP {}", report.address);
        if claim.is_none() {
            claim = floating
                .iter_mut()
                .find(|f| f.key() == report.address && f.candidates.contains(&peer.id))
                .map(|f| {
                    what = format!("floating prefix {}", f.prefix);
                    Claim {
                        epoch: &mut f.epoch,
                        holder: &mut f.holder,
                        confirmed: None,
                        move_to: &mut f.move_to,
                    }
                });
            which = Which::Floating;
        }
        if let Err(why) = plausible(claim.as_ref().map(|c| *c.epoch), epoch) {
            let line = format!("{what}: {why}");
            refusal::log(&peer.id, "implausible_epoch", &format!("peer {:?}: {line}", peer.name));
            refused.push(line);
            continue;
        }
        let Some(claim) = claim else { continue };
        let holder = report.holder.as_ref().and_then(|name| peer_ids.get(name)).cloned();
        // A floating prefix keeps no confirmed-peer count (its view has none).
        let confirmed = report.confirmed_peers.filter(|_| matches!(which, Which::Vip));
        if claim.merge(epoch, holder, confirmed) {
            store(tx, which, report.address, &vips, &floating)?;
        }
    }
    let vip_floors = vips.iter().map(|v| (v.address, v.epoch));
    let floating_floors = floating.iter().map(|f| (f.key(), f.epoch));
    Ok(PeerReportResponse {
        revision: network.revision,
        epochs: vip_floors
            .chain(floating_floors)
            .filter_map(|(address, stored)| {
                floor(stored).map(|e| VipEpochView {
                    address,
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

/// Whether a merged report was a VIP's or a floating prefix's.
#[derive(Clone, Copy)]
enum Which {
    Vip,
    Floating,
}

/// Stores the VIP or floating prefix of key `address` after a merge changed it.
fn store(
    tx: &mut dyn WriteTx,
    which: Which,
    address: Ipv6Addr,
    vips: &[crate::model::Vip],
    floating: &[crate::model::Floating],
) -> Result<(), ApiError> {
    match which {
        Which::Vip => {
            if let Some(v) = vips.iter().find(|v| v.address == address) {
                tx.put_vip(v)?;
            }
        }
        Which::Floating => {
            if let Some(f) = floating.iter().find(|f| f.key() == address) {
                tx.put_floating(f)?;
            }
        }
    }
    Ok(())
}

/// The reported parts of a VIP or a floating prefix (which has no confirmed-peer count).
struct Claim<'a> {
    epoch: &'a mut Option<Epoch>,
    holder: &'a mut Option<String>,
    confirmed: Option<&'a mut Option<u32>>,
    move_to: &'a mut Option<String>,
}

/// Whether `epoch` may be taken for a VIP or floating prefix whose stored epoch is `stored` (`None`: not
/// one the reporter is a candidate of, where only the absolute bound applies); the reason if not.
fn plausible(stored: Option<Option<Epoch>>, epoch: Epoch) -> Result<(), String> {
    if epoch.term > MAX_TERM {
        return Err(format!("term {} is above {MAX_TERM}; no claim gets there", epoch.term));
    }
    let Some(stored) = stored else { return Ok(()) };
    let stored = floor(stored).map_or(0, |e| e.term);
    if epoch.term > (stored + MAX_TERM_STEP).max(CATCH_UP_TERM) {
        return Err(format!(
            "term {} is above {CATCH_UP_TERM} and more than {MAX_TERM_STEP} above the registry's {stored}; honest \
             terms grow by one per claim",
            epoch.term
        ));
    }
    Ok(())
}

/// A stored epoch as a floor: `None` when there is none, or when it is above [`FLOOR_CEILING`].
fn floor(stored: Option<Epoch>) -> Option<Epoch> {
    stored.filter(|e| e.term <= FLOOR_CEILING)
}

impl Claim<'_> {
    /// Merges one report; `true` if it changed something. A higher epoch replaces the holder and confirmed
    /// peers; the same epoch fills in what the report knows; a lower one is ignored. A holder that reached
    /// the target of a pending move request completes it.
    fn merge(self, epoch: Epoch, holder: Option<String>, confirmed: Option<u32>) -> bool {
        let Claim {
            epoch: stored_epoch,
            holder: stored_holder,
            confirmed: stored_confirmed,
            move_to,
        } = self;
        let mut none = None;
        let stored_confirmed = match stored_confirmed {
            Some(slot) => slot,
            None => &mut none,
        };
        let before = (*stored_epoch, stored_holder.clone(), *stored_confirmed, move_to.clone());
        match floor(*stored_epoch) {
            Some(stored) if epoch < stored => return false,
            Some(stored) if epoch == stored => {
                *stored_holder = holder.or(stored_holder.take());
                *stored_confirmed = confirmed.or(*stored_confirmed);
            }
            _ => {
                *stored_epoch = Some(epoch);
                *stored_holder = holder;
                *stored_confirmed = confirmed;
            }
        }
        if move_to.is_some() && *move_to == *stored_holder {
            *move_to = None;
        }
        before != (*stored_epoch, stored_holder.clone(), *stored_confirmed, move_to.clone())
    }
}
