//! Change notification for the long-poll watch: one `tokio::sync::watch` channel per watched network,
//! carrying the newest revision known to be durable, and the write wrapper that feeds it.
//!
//! A write runs inside [`Recording`], which notes every network revision the request stores. Only after
//! the store acknowledged the write (so the revision is durable) are those revisions announced; a watcher
//! woken by an announcement reads the network afresh, so it never sees a revision that could be lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::registry::model::{Account, Cluster, ClusterMember, Network, Peer, TokenKind, TokenRecord, Vip};
use crate::registry::store::{ReadTx, StoreError, WriteTx};

/// The watched networks and the number of clients waiting on them.
#[derive(Debug, Default)]
pub struct Watchers {
    networks: Mutex<HashMap<String, watch::Sender<u64>>>,
    waiting: AtomicUsize,
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

    /// Clients waiting in a watch now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
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

impl ReadTx for Recording<'_> {
    fn token(&mut self, key_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tx.token(key_id)
    }
    fn tokens(&mut self, account_id: &str, kind: TokenKind) -> Result<Vec<TokenRecord>, StoreError> {
        self.tx.tokens(account_id, kind)
    }
    fn account(&mut self, id: &str) -> Result<Option<Account>, StoreError> {
        self.tx.account(id)
    }
    fn network(&mut self, id: &str) -> Result<Option<Network>, StoreError> {
        self.tx.network(id)
    }
    fn peer(&mut self, id: &str) -> Result<Option<Peer>, StoreError> {
        self.tx.peer(id)
    }
    fn peer_by_key(&mut self, network_id: &str, public_key: &str) -> Result<Option<Peer>, StoreError> {
        self.tx.peer_by_key(network_id, public_key)
    }
    fn peer_by_name(&mut self, network_id: &str, name: &str) -> Result<Option<Peer>, StoreError> {
        self.tx.peer_by_name(network_id, name)
    }
    fn peers(&mut self, network_id: &str) -> Result<Vec<Peer>, StoreError> {
        self.tx.peers(network_id)
    }
    fn cluster(&mut self, id: &str) -> Result<Option<Cluster>, StoreError> {
        self.tx.cluster(id)
    }
    fn latest_active_cluster(&mut self, network_id: &str) -> Result<Option<Cluster>, StoreError> {
        self.tx.latest_active_cluster(network_id)
    }
    fn membership(&mut self, peer_id: &str) -> Result<Option<ClusterMember>, StoreError> {
        self.tx.membership(peer_id)
    }
    fn vip(&mut self, id: &str) -> Result<Option<Vip>, StoreError> {
        self.tx.vip(id)
    }
    fn networks(&mut self, account_id: &str) -> Result<Vec<Network>, StoreError> {
        self.tx.networks(account_id)
    }
    fn vips(&mut self, network_id: &str) -> Result<Vec<Vip>, StoreError> {
        self.tx.vips(network_id)
    }
    fn clusters(&mut self, network_id: &str) -> Result<Vec<Cluster>, StoreError> {
        self.tx.clusters(network_id)
    }
    fn cluster_members(&mut self, cluster_id: &str) -> Result<Vec<ClusterMember>, StoreError> {
        self.tx.cluster_members(cluster_id)
    }
    fn silent_peers(&mut self, before_ms: u64) -> Result<Vec<Peer>, StoreError> {
        self.tx.silent_peers(before_ms)
    }
    fn all_peers(&mut self) -> Result<Vec<Peer>, StoreError> {
        self.tx.all_peers()
    }
    fn all_clusters(&mut self) -> Result<Vec<Cluster>, StoreError> {
        self.tx.all_clusters()
    }
}

impl WriteTx for Recording<'_> {
    fn put_account(&mut self, account: &Account) -> Result<(), StoreError> {
        self.tx.put_account(account)
    }
    fn put_network(&mut self, network: &Network) -> Result<(), StoreError> {
        self.tx.put_network(network)?;
        self.revisions.push((network.id.clone(), network.revision));
        Ok(())
    }
    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        self.tx.put_token(token)
    }
    fn update_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        self.tx.update_token(token)
    }
    fn put_peer(&mut self, peer: &Peer) -> Result<(), StoreError> {
        self.tx.put_peer(peer)
    }
    fn put_cluster(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        self.tx.put_cluster(cluster)
    }
    fn put_member(&mut self, member: &ClusterMember) -> Result<(), StoreError> {
        self.tx.put_member(member)
    }
    fn put_vip(&mut self, vip: &Vip) -> Result<(), StoreError> {
        self.tx.put_vip(vip)
    }
    fn delete_peer(&mut self, peer_id: &str) -> Result<(), StoreError> {
        self.tx.delete_peer(peer_id)
    }
}
