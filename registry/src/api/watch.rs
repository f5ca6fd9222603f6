//! Change notification for the long-poll watch: one `tokio::sync::watch` channel per watched network,
//! carrying the newest revision known to be durable, and the write wrapper that feeds it; the per-token
//! cap on waiting watches; the shared snapshots the watches answer with; and the stop that ends every
//! waiting watch at once when the server shuts down.
//!
//! A write runs inside [`Recording`], which notes every network revision the request stores. Only after
//! the store acknowledged the write (so the revision is durable) are those revisions announced; a watcher
//! woken by an announcement reads the network afresh, so it never sees a revision that could be lost.
//!
//! **Fan-out.** One change wakes every watcher of the network. Each re-checks its token and reads the
//! network's revision (constant work), then answers the network's serialized snapshot for that revision,
//! which is built once, by whichever watcher asks first, and shared by all ([`Watchers::snapshot`]): one
//! change costs one snapshot, not one per watcher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::{watch, Notify, OnceCell};

use crate::error::{code, ApiError, ErrorKind};
use crate::model::Network;
use crate::service;
use crate::store::{AfterCommit, Store, StoreError, WriteTx};

/// Snapshots kept at most (one per network, the newest); beyond, the cache starts over.
const MAX_SNAPSHOTS: usize = 1024;

/// The watched networks, the number of clients waiting on them, and their shared snapshots.
#[derive(Debug, Default)]
pub struct Watchers {
    networks: Mutex<HashMap<String, watch::Sender<u64>>>,
    waiting: AtomicUsize,
    /// Waiting watches per token key id (entries at zero are removed).
    per_token: Mutex<HashMap<String, usize>>,
    /// The newest snapshot asked for, per network.
    snapshots: Mutex<HashMap<String, Arc<Snapshot>>>,
    /// Snapshots built since the start.
    built: AtomicU64,
    /// Set once the server stops ([`Watchers::stop`]): waiting watches answer at once.
    stopping: AtomicBool,
    /// Wakes the waiting watches when the server stops.
    stop: Notify,
}

/// One network's serialized snapshot at one revision, built at most once.
#[derive(Debug)]
struct Snapshot {
    revision: u64,
    body: OnceCell<Bytes>,
}

impl Watchers {
    /// Tells the watchers of `network_id` that `revision` is durable (no-op when nobody watches it, or a
    /// newer revision was announced already).
    pub fn announce(&self, network_id: &str, revision: u64) {
        let Ok(networks) = self.networks.lock() else { return };
        if let Some(sender) = networks.get(network_id) {
            sender.send_if_modified(|known| {
                let newer = revision > *known;
                if newer {
                    *known = revision;
                }
                newer
            });
        }
    }

    /// Registers a waiting client of `network_id`: it sees every later announcement and is counted until
    /// dropped (answer sent, timeout, or client gone).
    pub(super) fn subscribe(self: &Arc<Self>, network_id: &str) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let receiver = match self.networks.lock() {
            Ok(mut networks) => networks
                .entry(network_id.to_owned())
                .or_insert_with(|| watch::Sender::new(0))
                .subscribe(),
            // A poisoned map cannot happen (nothing panics under the lock); a receiver that never fires
            // only makes the watch time out with 204, and the client polls again.
            Err(_) => watch::Sender::new(0).subscribe(),
        };
        Waiting {
            watchers: self.clone(),
            network_id: network_id.to_owned(),
            receiver: Some(receiver),
        }
    }

    /// The server is stopping: every waiting watch answers 204 now, and later ones do not wait. A daemon
    /// takes that as an ordinary timeout and polls again (the restarted registry, once it is back), so
    /// a stop is not held for up to the longest watch wait.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Completes once [`Watchers::stop`] was called (at once if it was already).
    pub(super) async fn stopped(&self) {
        let notified = self.stop.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Clients waiting in a watch now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Snapshots built since the start (one per network revision answered, however many watchers).
    pub fn snapshots_built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// Takes one of the `cap` watch slots of the token `key_id` (authenticated), for as long as the
    /// returned slot lives; 429 `too_many_watches` when they are all taken.
    pub(super) fn hold(self: &Arc<Self>, key_id: &str, cap: usize) -> Result<WatchSlot, ApiError> {
        let refused = || {
            ApiError::new(
                ErrorKind::TooManyRequests,
                code::TOO_MANY_WATCHES,
                format!("this token already holds {cap} watches; wait for one to end"),
            )
        };
        let mut per_token = self.per_token.lock().map_err(|_| refused())?;
        let held = per_token.entry(key_id.to_owned()).or_insert(0);
        if *held >= cap {
            return Err(refused());
        }
        *held += 1;
        Ok(WatchSlot {
            watchers: self.clone(),
            key_id: key_id.to_owned(),
        })
    }

    /// The JSON of network `network_id` at `revision` (or later), as the watch answers it: built by the
    /// first caller (in a read of `store`), shared by every other. Callers must have checked access.
    pub(super) async fn snapshot(
        &self,
        store: &Arc<dyn Store>,
        network_id: &str,
        revision: u64,
    ) -> Result<Bytes, ApiError> {
        let entry = {
            let mut snapshots = self.snapshots.lock().map_err(|_| poisoned())?;
            match snapshots.get(network_id) {
                // A newer one serves an older ask too: the watcher only needs one that is not its `since`.
                Some(s) if s.revision >= revision => s.clone(),
                _ => {
                    if snapshots.len() >= MAX_SNAPSHOTS {
                        snapshots.clear();
                    }
                    let fresh = Arc::new(Snapshot {
                        revision,
                        body: OnceCell::new(),
                    });
                    snapshots.insert(network_id.to_owned(), fresh.clone());
                    fresh
                }
            }
        };
        let body = entry
            .body
            .get_or_try_init(|| async {
                let id = network_id.to_owned();
                let network = store.read(move |tx| service::network_snapshot(tx, &id)).await?;
                let json = serde_json::to_vec(&network).map_err(|e| {
                    tracing::error!(error = %e, "cannot serialize a network snapshot");
                    ApiError::new(ErrorKind::Internal, code::INTERNAL, "cannot serialize the network")
                })?;
                self.built.fetch_add(1, Ordering::Relaxed);
                Ok::<_, ApiError>(Bytes::from(json))
            })
            .await?;
        Ok(body.clone())
    }
}

fn poisoned() -> ApiError {
    ApiError::new(ErrorKind::Internal, code::INTERNAL, "the watch state is unusable")
}

/// One of a token's watch slots ([`Watchers::hold`]); dropping it frees the slot.
pub(super) struct WatchSlot {
    watchers: Arc<Watchers>,
    key_id: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Ok(mut per_token) = self.watchers.per_token.lock() {
            if let Some(held) = per_token.get_mut(&self.key_id) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    per_token.remove(&self.key_id);
                }
            }
        }
    }
}

/// One waiting client; dropping it uncounts the client and forgets the network's channel once nobody
/// waits on it.
pub(super) struct Waiting {
    watchers: Arc<Watchers>,
    network_id: String,
    receiver: Option<watch::Receiver<u64>>,
}

impl Waiting {
    /// Waits until a revision above `since` is announced. `false`: the channel is gone (the wait ends
    /// as a timeout would).
    pub(super) async fn past(&mut self, since: u64) -> bool {
        match &mut self.receiver {
            Some(receiver) => receiver.wait_for(|revision| *revision > since).await.is_ok(),
            None => false,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.receiver = None;
        self.watchers.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut networks) = self.watchers.networks.lock() {
            if networks.get(&self.network_id).is_some_and(|s| s.receiver_count() == 0) {
                networks.remove(&self.network_id);
                // Nobody waits on it: its snapshot would only hold memory until the next change.
                if let Ok(mut snapshots) = self.watchers.snapshots.lock() {
                    snapshots.remove(&self.network_id);
                }
            }
        }
    }
}

/// A write transaction that notes the network revisions it stores, for [`Watchers::announce`] after commit.
pub struct Recording<'a> {
    tx: &'a mut dyn WriteTx,
    /// (network id, revision) of every network stored, in order.
    pub revisions: Vec<(String, u64)>,
}

impl<'a> Recording<'a> {
    /// Wraps `tx`.
    pub fn new(tx: &'a mut dyn WriteTx) -> Self {
        Recording {
            tx,
            revisions: Vec::new(),
        }
    }
}

crate::store::delegate_read_tx!(Recording<'_>);

crate::store::delegate_write_records!(
    Recording<'_>,
    fn put_network(&mut self, network: &Network) -> Result<(), StoreError> {
        self.tx.put_network(network)?;
        self.revisions.push((network.id.clone(), network.revision));
        Ok(())
    }
);

impl WriteTx for Recording<'_> {
    fn after_commit(&mut self, effect: AfterCommit) {
        self.tx.after_commit(effect);
    }
}
