//! Removing peers: the cascade shared by the reaper and `DELETE /v1/peers/{id}`, and the reaper's choice
//! of silent peers.
//!
//! A removed peer leaves nothing behind: its tokens (refused from then on), its cluster membership, its
//! candidacy and witness role in VIPs and floating prefixes (the others keep their order), any holder or
//! move target naming it, and the peer row. A floating prefix whose last candidate leaves stays, with no
//! candidate: nobody holds or routes it until an operator names new candidates (or deletes it). Its network's revision is bumped, so every daemon drops it from its interface. Its /32,
//! pod shares and site prefixes go into a hold-down ([`Ttls::prefix_hold_down`]).

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;

use super::prefixes;
use crate::error::ApiError;
use crate::model::Peer;
use crate::store::WriteTx;
use sdwand::vocab::Lifecycle;

/// How long peers may stay silent (no call to the registry) before they are stale or reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// Ephemeral peers are removed after this; persistent peers are shown stale after it.
    pub ephemeral: Duration,
    /// Spot peers are removed after this (shorter than `ephemeral`).
    pub spot: Duration,
    /// A peer silent longer than this (but not yet stale) is shown `silent` in listings; nothing else
    /// changes. The default, [`DEFAULT_SILENT_AFTER`], is three of sdwand's default report intervals.
    pub silent_after: Duration,
    /// How long the /32, pod shares and site prefixes of a removed or reaped peer are held down before
    /// another peer may get them. Daemons learn of a removal within one watch round trip (seconds), and
    /// then drop the old peer's routes; a daemon cut off from the registry keeps routing the prefixes to
    /// the old peer's key, and WireGuard's cryptokey routing drops what the new holder sends it, so no
    /// traffic reaches the wrong node. The default, [`DEFAULT_PREFIX_HOLD_DOWN`], leaves ample margin.
    pub prefix_hold_down: Duration,
}

/// The default [`Ttls::prefix_hold_down`]: ten minutes, many watch round trips (a watch waits at most a
/// minute) and daemon restarts.
pub const DEFAULT_PREFIX_HOLD_DOWN: Duration = Duration::from_secs(600);

/// sdwand's default `registry.report_interval`; the registry does not know the daemons' own settings.
pub const DAEMON_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The default [`Ttls::silent_after`]: three missed reports at sdwand's default interval.
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(3 * DAEMON_REPORT_INTERVAL.as_secs());

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            ephemeral: Duration::from_secs(600),
            spot: Duration::from_secs(120),
            silent_after: DEFAULT_SILENT_AFTER,
            prefix_hold_down: DEFAULT_PREFIX_HOLD_DOWN,
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

    /// Whether `peer` has been silent longer than `silent_after`, but not past its class's TTL, at `now_ms`
    /// (a persistent peer whose node died shows so within seconds, not after `ephemeral_ttl`).
    pub fn silent(&self, peer: &Peer, now_ms: u64) -> bool {
        let after = u64::try_from(self.silent_after.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(peer.last_seen_ms) > after && !self.stale(peer, now_ms)
    }

    /// Whether `peer` has been silent past its class's TTL at `now_ms`.
    pub fn stale(&self, peer: &Peer, now_ms: u64) -> bool {
        let ttl = u64::try_from(self.of(peer.lifecycle).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(peer.last_seen_ms) > ttl
    }
}

/// A pass removes at most this share of a network's peers (at least one): a wrong clock or a lost write
/// cannot empty a network at once, and a network that really lost many peers is emptied over a few passes.
pub const MAX_REAPED_SHARE_PERCENT: usize = 10;

/// Removes ephemeral and spot peers silent past their TTL at `now_ms`, each with its full cascade, at
/// most [`MAX_REAPED_SHARE_PERCENT`] % of each network's peers (at least one; the longest silent first);
/// answers the removed peers. Persistent peers are never removed.
///
/// Silence counts from `counts_from_ms` at the earliest: the registry's start, or the last moment it may
/// have missed reports (see [`crate::reaper`]). Peers cannot report to a registry that is down
/// or deaf, so one back from an outage longer than a TTL must not reap them all.
pub fn reap(tx: &mut dyn WriteTx, ttls: &Ttls, now_ms: u64, counts_from_ms: u64) -> Result<Vec<Peer>, ApiError> {
    let shortest = u64::try_from(ttls.spot.min(ttls.ephemeral).as_millis()).unwrap_or(u64::MAX);
    let mut silent: Vec<Peer> = tx
        .silent_peers(now_ms.saturating_sub(shortest))?
        .into_iter()
        .filter(|peer| {
            let heard = Peer {
                last_seen_ms: peer.last_seen_ms.max(counts_from_ms),
                ..peer.clone()
            };
            peer.lifecycle != Lifecycle::Persistent && ttls.stale(&heard, now_ms)
        })
        .collect();
    silent.sort_by_key(|p| p.last_seen_ms);
    let mut budget: HashMap<String, usize> = HashMap::new();
    let (mut removed, mut deferred) = (Vec::new(), 0usize);
    for peer in silent {
        if !budget.contains_key(&peer.network_id) {
            let size = tx.peers(&peer.network_id)?.len();
            budget.insert(peer.network_id.clone(), (size * MAX_REAPED_SHARE_PERCENT / 100).max(1));
        }
        let Some(left) = budget.get_mut(&peer.network_id).filter(|left| **left > 0) else {
            deferred += 1;
            continue;
        };
        *left -= 1;
        let held_down = remove_peer(tx, &peer, ttls.hold_until(now_ms))?;
        tx.after_commit(Box::new({
            let peer = peer.clone();
            move || {
                tracing::info!(
                    peer = %peer.name, id = %peer.id, network = %peer.network_id, lifecycle = %peer.lifecycle,
                    silent_s = now_ms.saturating_sub(peer.last_seen_ms) / 1000,
                    held_down = %prefix_list(&held_down), "silent peer reaped"
                );
            }
        }));
        removed.push(peer);
    }
    if deferred > 0 {
        let removed = removed.len();
        tx.after_commit(Box::new(move || {
            tracing::warn!(
                deferred,
                removed,
                "reaping is capped at {MAX_REAPED_SHARE_PERCENT} % of a network per pass; the others wait for the \
                 next passes"
            );
        }));
    }
    Ok(removed)
}

/// Prefixes as one log field: `198.51.100.16/28,fd00:42:0:1::/64` (`-` for none).
pub(super) fn prefix_list(prefixes: &[IpNet]) -> String {
    if prefixes.is_empty() {
        return "-".to_owned();
    }
    prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

impl Ttls {
    /// When a prefix released at `now_ms` is free again.
    pub fn hold_until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(u64::try_from(self.prefix_hold_down.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Removes `peer` with everything hanging off it, holds its prefixes down until `hold_until_ms` and bumps
/// its network's revision; answers the prefixes held down.
pub fn remove_peer(tx: &mut dyn WriteTx, peer: &Peer, hold_until_ms: u64) -> Result<Vec<IpNet>, ApiError> {
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
        if let Some(quorum) = &mut vip.quorum {
            quorum.witnesses.retain(|id| *id != peer.id);
        }
        if vip != before {
            tx.put_vip(&vip)?;
        }
    }
    super::floating::forget_peer(tx, peer)?;
    let held_down = prefixes::release(tx, peer, hold_until_ms)?;
    tx.delete_peer(&peer.id)?;
    if let Some(mut network) = tx.network(&peer.network_id)? {
        network.revision += 1;
        tx.put_network(&network)?;
    }
    Ok(held_down)
}
