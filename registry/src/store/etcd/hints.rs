//! What other replicas write, fed to this replica's writer cache as hints.
//!
//! A writer's read cache knows only what its own writer read or committed, so a request about a peer
//! another replica enrolled read the peer's token, pointer and record from etcd, one round trip each, on
//! the replica's single writer thread. [`feed`] watches the whole key prefix and hands every change (key,
//! value and `mod_revision`; a deletion as absent) to the writer, which takes into its cache, before each
//! batch, those newer than what it knows ([`super::tx::ReadCache::hint`]).
//!
//! A hint is never trusted: whatever the writer reads from its cache is compared at commit like any read,
//! so a stale hint costs one conflict and a lost one a round trip. So the feed drops hints while the writer
//! is behind (a bounded channel), and when its watch breaks it opens a new one from the current revision:
//! changes missed meanwhile only leave the cache colder.

use std::sync::mpsc::{SyncSender, TrySendError};

use etcd_client::{Client, EventType, WatchOptions};

use super::replicas::pause;

/// Most hints waiting for the writer; more are dropped.
pub(super) const QUEUED: usize = 16_384;

/// One change under the key prefix.
pub(super) struct Hint {
    pub(super) key: String,
    /// `None`: deleted.
    pub(super) value: Option<Vec<u8>>,
    /// The change's revision (the key's new `mod_revision`, or its deletion's).
    pub(super) revision: i64,
}

/// Watches every key under `prefix` and sends each change to the writer through `hints`, until the writer
/// is gone.
pub(super) async fn feed(client: Client, prefix: String, hints: SyncSender<Hint>) {
    let mut failures = 0u32;
    loop {
        match watch(&client, &prefix, &hints).await {
            Ok(()) => return,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "the etcd watch feeding the writer's cache broke; opening another");
                tokio::time::sleep(pause(failures)).await;
            }
        }
    }
}

/// One watch from the current revision: `Ok` once the writer is gone, `Err` when the watch broke.
async fn watch(client: &Client, prefix: &str, hints: &SyncSender<Hint>) -> Result<(), String> {
    let mut stream = client
        .watch_client()
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("etcd closed the watch stream".into()),
            Err(e) => return Err(e.to_string()),
        };
        if response.canceled() {
            return Err(format!("etcd cancelled the watch: {}", response.cancel_reason()));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            let hint = Hint {
                key: key.to_owned(),
                value: (event.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                revision: kv.mod_revision(),
            };
            match hints.try_send(hint) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
    }
}
