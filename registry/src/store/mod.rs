//! The registry's storage: a narrow, transactional trait and its backends.
//!
//! The service logic runs as a closure over a transaction ([`ReadTx`] for reads, [`WriteTx`] for writes) and
//! sees typed records only; it never sees SQL. A backend decides how transactions are executed: the embedded
//! [`sqlite`] backend funnels every write to one thread that commits whatever is queued as one transaction
//! (group commit), with a savepoint per request; the distributed [`etcd`] backend runs the same closures as
//! optimistic transactions and retries them on conflict, which is why a write closure is `FnMut` and must not
//! have effects outside the transaction. [`open`] opens the backend a configuration names.
//!
//! Contract of [`Store::write`]: the closure's `Ok` is returned only once its writes are durable; its `Err`
//! (or a store error inside it) undoes exactly its own writes and nothing else of the batch.
//!
//! **After commit.** What a closure must do outside the transaction, above all log what it changed, it
//! hands to [`WriteTx::after_commit`] instead of doing it. The request's job (built by [`Store::write`], the
//! one owner of these effects for every backend) keeps them per run: each run of the closure starts with
//! none, a run that fails (`Err` or panic) drops its own, and they run exactly once, in order, on the
//! writer's thread right before the answer is sent, only when the transaction holding the request's writes
//! committed. A batch that failed, was fenced off or whose outcome is unknown runs none of them. A backend
//! implements [`WriteRecords`] (the records) and never sees them.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

use ipnet::IpNet;

use super::model::{Account, Cluster, ClusterMember, Floating, Network, Peer, PrefixHold, TokenKind, TokenRecord, Vip};

pub mod etcd;
pub mod sqlite;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (I/O error, full disk, corrupt file, constraint).
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// Cannot create or open the state directory or database file.
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// The path.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer registry whose schema this one does not know.
    #[error("the database schema is version {found}, newer than this registry's {known}: upgrade sdwan-registry")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A stored row does not decode (a corrupt or hand-edited database).
    #[error("corrupt record in {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What did not decode.
        message: String,
    },
    /// The transaction holding the request's writes did not commit (the request is not done).
    #[error("the transaction did not commit: {0}")]
    Commit(String),
    /// The store is shut down (or its writer thread died).
    #[error("the store is closed")]
    Closed,
    /// etcd failed a read or could not be asked (the request is not done).
    #[error("etcd: {0}")]
    Etcd(String),
    /// etcd could not be reached when the store opened.
    #[error("cannot reach etcd at {endpoints}: {message} (check [store] endpoints and TLS files, and that etcd runs)")]
    Unreachable {
        /// The configured endpoints.
        endpoints: String,
        /// What the client said.
        message: String,
    },
    /// The etcd key prefix holds something this registry cannot use.
    #[error("the etcd key prefix {prefix:?} {message} (set [store] key_prefix to this registry's own prefix)")]
    Incompatible {
        /// The prefix.
        prefix: String,
        /// What it holds.
        message: String,
    },
    /// A write would break a rule the store keeps (a unique peer name, key or address; a peer a VIP names).
    #[error("the write breaks a rule of the store: {0}")]
    Constraint(String),
    /// The request's closure panicked; its writes were rolled back.
    #[error("internal error while handling the request")]
    Panicked,
}

/// Which backend holds the registry's records, and where (`[store]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite file in `state_dir` (the default).
    Sqlite,
    /// etcd.
    Etcd(etcd::EtcdOptions),
}

/// An opened backend, with what tells the server it can no longer write.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Completes if the store can no longer write (the SQLite writer thread died); never for etcd, whose
    /// failures fail single requests.
    pub died: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// What several replicas of one store coordinate (etcd); `None`: this process is the only one (SQLite).
    pub replicas: Option<etcd::Replicas>,
}

impl From<sqlite::SqliteStore> for Opened {
    fn from(store: sqlite::SqliteStore) -> Self {
        Opened {
            died: Box::pin(store.writer_died()),
            store: Arc::new(store),
            replicas: None,
        }
    }
}

impl From<etcd::EtcdStore> for Opened {
    fn from(store: etcd::EtcdStore) -> Self {
        Opened {
            replicas: Some(store.replicas()),
            store: Arc::new(store),
            died: Box::pin(std::future::pending()),
        }
    }
}

/// Opens the backend `config` names (SQLite in `state_dir`). Opening etcd blocks the calling thread until
/// etcd answered (a few seconds at most) and refuses an unreachable etcd or a foreign key prefix.
pub fn open(config: &StoreConfig, state_dir: &Path) -> Result<Opened, StoreError> {
    Ok(match config {
        StoreConfig::Sqlite => sqlite::SqliteStore::open(state_dir, sqlite::SqliteOptions::default())?.into(),
        StoreConfig::Etcd(options) => etcd::EtcdStore::open(options)?.into(),
    })
}

/// Reads inside a transaction: a consistent snapshot.
pub trait ReadTx {
    /// A token by its public key id.
    fn token(&mut self, key_id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token of `kind` of an account, in issue order (the operator's token list).
    fn tokens(&mut self, account_id: &str, kind: TokenKind) -> Result<Vec<TokenRecord>, StoreError>;
    /// An account by id.
    fn account(&mut self, id: &str) -> Result<Option<Account>, StoreError>;
    /// The account named `name` (the oldest, if an older registry let two accounts share it).
    fn account_by_name(&mut self, name: &str) -> Result<Option<Account>, StoreError>;
    /// A network by id.
    fn network(&mut self, id: &str) -> Result<Option<Network>, StoreError>;
    /// A peer by id.
    fn peer(&mut self, id: &str) -> Result<Option<Peer>, StoreError>;
    /// The peer of `network_id` with this public key.
    fn peer_by_key(&mut self, network_id: &str, public_key: &str) -> Result<Option<Peer>, StoreError>;
    /// The peer of `network_id` with this name.
    fn peer_by_name(&mut self, network_id: &str, name: &str) -> Result<Option<Peer>, StoreError>;
    /// Every peer of a network, in enrollment order.
    fn peers(&mut self, network_id: &str) -> Result<Vec<Peer>, StoreError>;
    /// A cluster by id.
    fn cluster(&mut self, id: &str) -> Result<Option<Cluster>, StoreError>;
    /// The most recently created cluster of `network_id` in state active (ties: the later created).
    fn latest_active_cluster(&mut self, network_id: &str) -> Result<Option<Cluster>, StoreError>;
    /// A peer's cluster membership.
    fn membership(&mut self, peer_id: &str) -> Result<Option<ClusterMember>, StoreError>;
    /// A VIP by id, with its candidates in rank order.
    fn vip(&mut self, id: &str) -> Result<Option<Vip>, StoreError>;
    /// Every network of an account, in creation order.
    fn networks(&mut self, account_id: &str) -> Result<Vec<Network>, StoreError>;
    /// Every VIP of a network, in creation order, with their candidates in rank order.
    fn vips(&mut self, network_id: &str) -> Result<Vec<Vip>, StoreError>;
    /// Every cluster of a network, in creation order.
    fn clusters(&mut self, network_id: &str) -> Result<Vec<Cluster>, StoreError>;
    /// Every member of a cluster, in join order.
    fn cluster_members(&mut self, cluster_id: &str) -> Result<Vec<ClusterMember>, StoreError>;
    /// Every peer of every network last seen before `before_ms`, in enrollment order (the reaper's scan).
    fn silent_peers(&mut self, before_ms: u64) -> Result<Vec<Peer>, StoreError>;
    /// Every peer of every network (the metrics' census).
    fn all_peers(&mut self) -> Result<Vec<Peer>, StoreError>;
    /// Every cluster of every network (the metrics' census).
    fn all_clusters(&mut self) -> Result<Vec<Cluster>, StoreError>;
    /// Every /32 (as a /32 prefix), pod share and site prefix the peers of a network hold, in no particular
    /// order ([`Peer::held`] of each peer, without reading whole peers: enrollment's allocation reads it).
    fn held_prefixes(&mut self, network_id: &str) -> Result<Vec<IpNet>, StoreError>;
    /// Every hold-down of a network's released prefixes, expired ones included (the caller compares
    /// `until_ms` with its time), in the order they were first stored.
    fn prefix_holds(&mut self, network_id: &str) -> Result<Vec<PrefixHold>, StoreError>;
    /// A floating prefix by id.
    fn floating(&mut self, id: &str) -> Result<Option<Floating>, StoreError>;
    /// Every floating prefix of a network, in creation order.
    fn floatings(&mut self, network_id: &str) -> Result<Vec<Floating>, StoreError>;
}

/// Writes inside a transaction, as a backend implements them. Every `put_*` inserts the record or replaces
/// the one with its id, except [`WriteRecords::put_token`], which only inserts.
pub trait WriteRecords: ReadTx {
    /// Stores an account.
    fn put_account(&mut self, account: &Account) -> Result<(), StoreError>;
    /// Stores a network (also its revision and allocation counters).
    fn put_network(&mut self, network: &Network) -> Result<(), StoreError>;
    /// Inserts a new token record. A key id already in use is an error, never an overwrite: a random
    /// collision must not silently turn one token into another (callers pick a free key id first).
    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Stores the use count and revocation of the token with `token.key_id` (the only parts of a token
    /// that change after it is issued).
    fn update_token(&mut self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Stores a peer.
    fn put_peer(&mut self, peer: &Peer) -> Result<(), StoreError>;
    /// Stores a cluster.
    fn put_cluster(&mut self, cluster: &Cluster) -> Result<(), StoreError>;
    /// Stores a membership (keyed by peer).
    fn put_member(&mut self, member: &ClusterMember) -> Result<(), StoreError>;
    /// Stores a VIP with its candidate list.
    fn put_vip(&mut self, vip: &Vip) -> Result<(), StoreError>;
    /// Stores a floating prefix.
    fn put_floating(&mut self, floating: &Floating) -> Result<(), StoreError>;
    /// Deletes the floating prefix with this id, if there is one.
    fn delete_floating(&mut self, id: &str) -> Result<(), StoreError>;
    /// Deletes a peer with its tokens and its cluster membership. The caller first takes it out of every
    /// VIP (candidacy, holder, move target): a VIP still naming it makes this fail. It takes it out of
    /// every floating prefix too (candidacy, witness, holder, move target).
    fn delete_peer(&mut self, peer_id: &str) -> Result<(), StoreError>;
    /// Stores a hold-down, replacing the one of the same network and prefix.
    fn put_prefix_hold(&mut self, hold: &PrefixHold) -> Result<(), StoreError>;
    /// Deletes the hold-down of `prefix` in `network_id`, if there is one.
    fn delete_prefix_hold(&mut self, network_id: &str, prefix: IpNet) -> Result<(), StoreError>;
}

/// Something a request does once its writes are committed (a log line of what it changed).
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What a write closure gets: the transaction's reads and writes, and a place for what must wait until
/// they are committed.
pub trait WriteTx: WriteRecords {
    /// Runs `effect` once this request's writes are durable, and never if they are not (the closure
    /// failed, or the transaction did not commit or its outcome is unknown). Only the last run of the
    /// closure counts: effects deferred by a run that is retried are dropped. Effects run in the order they
    /// were deferred, on the writer's thread, before the request's answer is sent: keep them short.
    fn after_commit(&mut self, effect: AfterCommit);
}

/// A queued write request, as a backend sees it. Built by [`Store::write`]; backends call [`WriteJob::run`]
/// inside a transaction (once, or again after a conflict) and then [`WriteJob::finish`] exactly once.
pub trait WriteJob: Send {
    /// Runs the request's closure. `true`: keep its writes; `false`: it failed, undo them.
    fn run(&mut self, tx: &mut dyn WriteRecords) -> bool;
    /// Answers the caller: `Ok` only once the transaction holding the writes of the last [`WriteJob::run`]
    /// committed (the request's [`WriteTx::after_commit`] effects run then), or the reason it did not.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A queued read request, as a backend sees it: [`ReadJob::run`] or [`ReadJob::fail`], exactly once.
pub trait ReadJob: Send {
    /// Runs the request's closure in a read transaction and answers the caller.
    fn run(self: Box<Self>, tx: &mut dyn ReadTx);
    /// Answers the caller with the reason no read transaction could be had.
    fn fail(self: Box<Self>, error: StoreError);
}

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// Queues a write; the backend runs it and calls [`WriteJob::finish`]. Dropping it unfinished answers
    /// the caller with [`StoreError::Closed`].
    fn submit_write(&self, job: Box<dyn WriteJob>);
    /// Queues a read; the backend runs or fails it.
    fn submit_read(&self, job: Box<dyn ReadJob>);
}

/// Hands `job` to a backend's writer queue, or answers it [`StoreError::Closed`] when the queue is gone
/// (the store is shutting down) or its writer stopped.
pub(crate) fn queue_write(queue: Option<&std::sync::mpsc::Sender<Box<dyn WriteJob>>>, job: Box<dyn WriteJob>) {
    match queue {
        Some(queue) => {
            if let Err(std::sync::mpsc::SendError(job)) = queue.send(job) {
                job.finish(Err(StoreError::Closed));
            }
        }
        None => job.finish(Err(StoreError::Closed)),
    }
}

impl dyn Store {
    /// Runs `f` in a write transaction and returns its result once its writes are durable.
    ///
    /// `f` may run more than once (a backend may retry it); it must act only through the transaction, and
    /// defer anything else (its log lines) with [`WriteTx::after_commit`].
    pub fn write<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnMut(&mut dyn WriteTx) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit_write(Box::new(Write {
            f,
            result: None,
            effects: Vec::new(),
            reply,
        }));
        async move { answer.await.unwrap_or_else(|_| Err(StoreError::Closed.into())) }
    }

    /// Runs `f` in a read transaction.
    pub fn read<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + Send + 'static
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut dyn ReadTx) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit_read(Box::new(Read { f, reply }));
        async move { answer.await.unwrap_or_else(|_| Err(StoreError::Closed.into())) }
    }
}

struct Write<T, E, F> {
    f: F,
    /// The closure's last result, held until the batch's fate is known.
    result: Option<Result<T, E>>,
    /// What the closure's last run deferred until its writes are committed (none if that run failed).
    effects: Vec<AfterCommit>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> WriteJob for Write<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnMut(&mut dyn WriteTx) -> Result<T, E> + Send,
{
    fn run(&mut self, tx: &mut dyn WriteRecords) -> bool {
        // A rerun starts from nothing: what an earlier run deferred belongs to writes that were undone.
        self.effects.clear();
        let mut tx = Deferring {
            tx,
            effects: &mut self.effects,
        };
        let result =
            catch_unwind(AssertUnwindSafe(|| (self.f)(&mut tx))).unwrap_or_else(|_| Err(StoreError::Panicked.into()));
        let keep = result.is_ok();
        if !keep {
            self.effects.clear();
        }
        self.result = Some(result);
        keep
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (self.result, committed) {
            (Some(Ok(_)), Err(e)) => Err(e.into()),
            (Some(result), _) => result,
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => Err(StoreError::Closed.into()),
        };
        // `Ok` only when the closure succeeded and the transaction holding its writes committed.
        if answer.is_ok() {
            for effect in self.effects {
                // A panicking effect must not take the writer thread (and every later request) with it.
                if catch_unwind(AssertUnwindSafe(effect)).is_err() {
                    tracing::error!("an after-commit effect of a registry write panicked");
                }
            }
        }
        // The caller may have gone away (client disconnected): nothing to answer then.
        let _ = self.reply.send(answer);
    }
}

/// The transaction a write closure sees: the backend's, plus the request's after-commit effects.
struct Deferring<'a> {
    tx: &'a mut dyn WriteRecords,
    effects: &'a mut Vec<AfterCommit>,
}

impl WriteTx for Deferring<'_> {
    fn after_commit(&mut self, effect: AfterCommit) {
        self.effects.push(effect);
    }
}

/// Implements [`ReadTx`] for a wrapper of another transaction held in its field `tx` (`&mut dyn WriteTx`
/// or `&mut dyn WriteRecords`), every read going to that one: the wrappers that add something to writes
/// ([`Deferring`] here, the API's recording of network revisions) read exactly like what they wrap.
macro_rules! delegate_read_tx {
    ($ty:ty) => {
        impl $crate::store::ReadTx for $ty {
            fn token(&mut self, key_id: &str) -> Result<Option<$crate::model::TokenRecord>, $crate::store::StoreError> {
                self.tx.token(key_id)
            }
            fn tokens(
                &mut self,
                account_id: &str,
                kind: $crate::model::TokenKind,
            ) -> Result<Vec<$crate::model::TokenRecord>, $crate::store::StoreError> {
                self.tx.tokens(account_id, kind)
            }
            fn account(&mut self, id: &str) -> Result<Option<$crate::model::Account>, $crate::store::StoreError> {
                self.tx.account(id)
            }
            fn account_by_name(
                &mut self,
                name: &str,
            ) -> Result<Option<$crate::model::Account>, $crate::store::StoreError> {
                self.tx.account_by_name(name)
            }
            fn network(&mut self, id: &str) -> Result<Option<$crate::model::Network>, $crate::store::StoreError> {
                self.tx.network(id)
            }
            fn peer(&mut self, id: &str) -> Result<Option<$crate::model::Peer>, $crate::store::StoreError> {
                self.tx.peer(id)
            }
            fn peer_by_key(
                &mut self,
                network_id: &str,
                public_key: &str,
            ) -> Result<Option<$crate::model::Peer>, $crate::store::StoreError> {
                self.tx.peer_by_key(network_id, public_key)
            }
            fn peer_by_name(
                &mut self,
                network_id: &str,
                name: &str,
            ) -> Result<Option<$crate::model::Peer>, $crate::store::StoreError> {
                self.tx.peer_by_name(network_id, name)
            }
            fn peers(&mut self, network_id: &str) -> Result<Vec<$crate::model::Peer>, $crate::store::StoreError> {
                self.tx.peers(network_id)
            }
            fn cluster(&mut self, id: &str) -> Result<Option<$crate::model::Cluster>, $crate::store::StoreError> {
                self.tx.cluster(id)
            }
            fn latest_active_cluster(
                &mut self,
                network_id: &str,
            ) -> Result<Option<$crate::model::Cluster>, $crate::store::StoreError> {
                self.tx.latest_active_cluster(network_id)
            }
            fn membership(
                &mut self,
                peer_id: &str,
            ) -> Result<Option<$crate::model::ClusterMember>, $crate::store::StoreError> {
                self.tx.membership(peer_id)
            }
            fn vip(&mut self, id: &str) -> Result<Option<$crate::model::Vip>, $crate::store::StoreError> {
                self.tx.vip(id)
            }
            fn networks(&mut self, account_id: &str) -> Result<Vec<$crate::model::Network>, $crate::store::StoreError> {
                self.tx.networks(account_id)
            }
            fn vips(&mut self, network_id: &str) -> Result<Vec<$crate::model::Vip>, $crate::store::StoreError> {
                self.tx.vips(network_id)
            }
            fn clusters(&mut self, network_id: &str) -> Result<Vec<$crate::model::Cluster>, $crate::store::StoreError> {
                self.tx.clusters(network_id)
            }
            fn cluster_members(
                &mut self,
                cluster_id: &str,
            ) -> Result<Vec<$crate::model::ClusterMember>, $crate::store::StoreError> {
                self.tx.cluster_members(cluster_id)
            }
            fn silent_peers(&mut self, before_ms: u64) -> Result<Vec<$crate::model::Peer>, $crate::store::StoreError> {
                self.tx.silent_peers(before_ms)
            }
            fn all_peers(&mut self) -> Result<Vec<$crate::model::Peer>, $crate::store::StoreError> {
                self.tx.all_peers()
            }
            fn all_clusters(&mut self) -> Result<Vec<$crate::model::Cluster>, $crate::store::StoreError> {
                self.tx.all_clusters()
            }
            fn held_prefixes(&mut self, network_id: &str) -> Result<Vec<::ipnet::IpNet>, $crate::store::StoreError> {
                self.tx.held_prefixes(network_id)
            }
            fn prefix_holds(
                &mut self,
                network_id: &str,
            ) -> Result<Vec<$crate::model::PrefixHold>, $crate::store::StoreError> {
                self.tx.prefix_holds(network_id)
            }
            fn floating(&mut self, id: &str) -> Result<Option<$crate::model::Floating>, $crate::store::StoreError> {
                self.tx.floating(id)
            }
            fn floatings(
                &mut self,
                network_id: &str,
            ) -> Result<Vec<$crate::model::Floating>, $crate::store::StoreError> {
                self.tx.floatings(network_id)
            }
        }
    };
}
pub(crate) use delegate_read_tx;

delegate_read_tx!(Deferring<'_>);

/// Implements [`WriteRecords`] for a wrapper like those of [`delegate_read_tx`]: every write goes to its
/// field `tx`, except `put_network`, which the wrapper gives (`$put_network`, a whole `fn` item).
macro_rules! delegate_write_records {
    ($ty:ty, $put_network:item) => {
        impl $crate::store::WriteRecords for $ty {
            $put_network

            fn put_account(&mut self, account: &$crate::model::Account) -> Result<(), $crate::store::StoreError> {
                self.tx.put_account(account)
            }
            fn put_token(&mut self, token: &$crate::model::TokenRecord) -> Result<(), $crate::store::StoreError> {
                self.tx.put_token(token)
            }
            fn update_token(&mut self, token: &$crate::model::TokenRecord) -> Result<(), $crate::store::StoreError> {
                self.tx.update_token(token)
            }
            fn put_peer(&mut self, peer: &$crate::model::Peer) -> Result<(), $crate::store::StoreError> {
                self.tx.put_peer(peer)
            }
            fn put_cluster(&mut self, cluster: &$crate::model::Cluster) -> Result<(), $crate::store::StoreError> {
                self.tx.put_cluster(cluster)
            }
            fn put_member(&mut self, member: &$crate::model::ClusterMember) -> Result<(), $crate::store::StoreError> {
                self.tx.put_member(member)
            }
            fn put_vip(&mut self, vip: &$crate::model::Vip) -> Result<(), $crate::store::StoreError> {
                self.tx.put_vip(vip)
            }
            fn delete_peer(&mut self, peer_id: &str) -> Result<(), $crate::store::StoreError> {
                self.tx.delete_peer(peer_id)
            }
            fn put_prefix_hold(&mut self, hold: &$crate::model::PrefixHold) -> Result<(), $crate::store::StoreError> {
                self.tx.put_prefix_hold(hold)
            }
            fn delete_prefix_hold(&mut self, network_id: &str, prefix: ::ipnet::IpNet) -> Result<(), $crate::store::StoreError> {
                self.tx.delete_prefix_hold(network_id, prefix)
            }
            fn put_floating(&mut self, floating: &$crate::model::Floating) -> Result<(), $crate::store::StoreError> {
                self.tx.put_floating(floating)
            }
            fn delete_floating(&mut self, id: &str) -> Result<(), $crate::store::StoreError> {
                self.tx.delete_floating(id)
            }
        }
    };
}
pub(crate) use delegate_write_records;

delegate_write_records!(
    Deferring<'_>,
    fn put_network(&mut self, network: &Network) -> Result<(), StoreError> {
        self.tx.put_network(network)
    }
);

struct Read<T, E, F> {
    f: F,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> ReadJob for Read<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnOnce(&mut dyn ReadTx) -> Result<T, E> + Send,
{
    fn run(self: Box<Self>, tx: &mut dyn ReadTx) {
        let Read { f, reply } = *self;
        let answer = catch_unwind(AssertUnwindSafe(|| f(tx))).unwrap_or_else(|_| Err(StoreError::Panicked.into()));
        let _ = reply.send(answer);
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error.into()));
    }
}
