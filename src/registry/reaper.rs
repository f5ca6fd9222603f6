//! The reaper: a periodic task that removes ephemeral and spot peers silent past their TTL
//! ([`crate::registry::service::reap`]), each with its full cascade, in one transaction per pass. Removals
//! bump the revision and wake the watchers like any other write.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::api::{self, AppState};
use super::service;

/// The running reaper; dropping it stops it.
#[derive(Debug)]
pub struct Reaper(JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the reaper looks: a quarter of the shortest TTL, between 1 s and 30 s, so a peer is removed
/// at most a quarter TTL late.
pub fn period(state: &AppState) -> Duration {
    (state.ttls.spot.min(state.ttls.ephemeral) / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Starts the reaper over `state`'s store, with `state`'s TTLs.
pub fn spawn(state: AppState) -> Reaper {
    let up_since = api::now_ms();
    Reaper(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period(&state));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (ttls, now) = (state.ttls, api::now_ms());
            if let Err(e) = state.write(move |tx| service::reap(tx, &ttls, now, up_since)).await {
                tracing::warn!(error = %e, "reaper pass failed; retrying at the next one");
            }
        }
    }))
}
