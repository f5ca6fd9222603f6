//! Removing peers: the cascade shared by the reaper and `DELETE /v1/peers/{id}`, and the reaper's choice
//! of silent peers.
//!
//! A removed peer leaves nothing behind: its tokens (refused from then on), its cluster membership, its
//! VIP candidacy (the other candidates keep their order), any VIP's holder or move target naming it, and
//! the peer row. Its network's revision is bumped, so every daemon drops it from its interface.

use std::time::Duration;

use crate::registry::error::ApiError;
use crate::registry::model::{Lifecycle, Peer};
use crate::registry::store::WriteTx;

/// How long peers may stay silent (no call to the registry) before they are stale or reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// Ephemeral peers are removed after this; persistent peers are shown stale after it.
    pub ephemeral: Duration,
    /// Spot peers are removed after this (shorter than `ephemeral`).
    pub spot: Duration,
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            ephemeral: Duration::from_secs(600),
            spot: Duration::from_secs(120),
        }
    }
}

impl Ttls {
    /// The silence after which a peer of `class` is stale (and, unless persistent, reaped).
    pub fn of(&self, class: Lifecycle) -> Duration {
        match class {
            Lifecycle::Persistent | Lifecycle::Ephemeral => self.ephemeral,
            Lifecycle::Spot => self.spot,
        }
    }

    /// Whether `peer` has been silent past its class's TTL at `now_ms`.
    pub fn stale(&self, peer: &Peer, now_ms: u64) -> bool {
        let ttl = u64::try_from(self.of(peer.lifecycle).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(peer.last_seen_ms) > ttl
    }
}

/// Removes every ephemeral or spot peer silent past its TTL at `now_ms`, each with its full cascade;
/// answers the removed peers. Persistent peers are never removed.
///
/// Silence counts from `up_since_ms` at the earliest (when the registry started): peers cannot report to
/// a registry that is down, so a registry back from an outage longer than a TTL must not reap them all.
pub fn reap(tx: &mut dyn WriteTx, ttls: &Ttls, now_ms: u64, up_since_ms: u64) -> Result<Vec<Peer>, ApiError> {
    let shortest = u64::try_from(ttls.spot.min(ttls.ephemeral).as_millis()).unwrap_or(u64::MAX);
    let silent = tx.silent_peers(now_ms.saturating_sub(shortest))?;
    let mut removed = Vec::new();
    for peer in silent {
        let heard = Peer {
            last_seen_ms: peer.last_seen_ms.max(up_since_ms),
            ..peer.clone()
        };
        if peer.lifecycle != Lifecycle::Persistent && ttls.stale(&heard, now_ms) {
            remove_peer(tx, &peer)?;
            tracing::info!(
                peer = %peer.name, id = %peer.id, network = %peer.network_id, lifecycle = %peer.lifecycle,
                silent_s = now_ms.saturating_sub(peer.last_seen_ms) / 1000, "silent peer reaped"
            );
            removed.push(peer);
        }
    }
    Ok(removed)
}

/// Removes `peer` with everything hanging off it and bumps its network's revision.
pub fn remove_peer(tx: &mut dyn WriteTx, peer: &Peer) -> Result<(), ApiError> {
    for mut vip in tx.vips(&peer.network_id)? {
        let before = vip.clone();
        vip.candidates.retain(|id| *id != peer.id);
        if vip.holder.as_deref() == Some(peer.id.as_str()) {
            vip.holder = None;
            vip.confirmed_peers = None;
        }
        if vip.move_to.as_deref() == Some(peer.id.as_str()) {
            vip.move_to = None;
        }
        if vip != before {
            tx.put_vip(&vip)?;
        }
    }
    tx.delete_peer(&peer.id)?;
    if let Some(mut network) = tx.network(&peer.network_id)? {
        network.revision += 1;
        tx.put_network(&network)?;
    }
    Ok(())
}
