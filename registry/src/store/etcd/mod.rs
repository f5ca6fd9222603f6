//! The distributed backend: the registry's records in etcd, as optimistic transactions.
//!
//! **Layout.** Every key starts with the configured key prefix (several registries can share one etcd).
//! `<prefix>schema` holds the layout's version ([`SCHEMA_VERSION`]), checked when the store opens: an empty
//! prefix gets it, a prefix holding other data or another version is refused. Records are JSON (the
//! `serde` form of [`crate::model`]). A collection whose records are listed by an owner (peers, VIPs,
//! `float`s and clusters of a network, networks of an account, members of a cluster, hold-downs of a network) keeps
//! each record at `<coll>/<owner>/<id>`, a pointer `<coll>-id/<id>` holding the owner (lookups by id) and a
//! version key `ver/<coll>/<owner>` that every write to the collection of that owner touches. Tokens live at
//! `token/<key id>`, listed through `token-acct/<account>/<kind>/<key id>` and `token-peer/<peer>/<key id>`;
//! unique peer keys, names and addresses through `peer-key/`, `peer-name/` and `peer-addr/<network>/…`
//! (each holding the peer id); accounts at `account/<id>`, the first account of a name at
//! `account-name/<name>`. Lists come in creation order (etcd's `create_revision` of the record, which an
//! update keeps, like SQLite's rowid). Beside the records: `leader` names the replica that runs the reaper
//! (under a lease, [`replicas`]) and `writer/<replica id>` is each replica's commit marker ([`commit`]).
//!
//! **Transactions** ([`tx`]). A transaction reads through etcd at one revision (the first read's; the
//! writer's also from its read cache, below),
//! remembers the `mod_revision` of every key it read (0 for an absent one), buffers its writes (later reads
//! see them) and commits them in one etcd `Txn` whose compares are those revisions: if anything it read
//! changed meanwhile, nothing is written and it runs again on fresh reads, at most [`ATTEMPTS`] times with a
//! jittered, growing pause, then its requests fail with [`StoreError::Commit`]. The answer is sent after etcd
//! acknowledged the `Txn`, that is once a majority of its members wrote it to their logs. Since a closure may
//! run several times, whatever it must do outside the transaction (its log lines) it defers with
//! [`super::WriteTx::after_commit`]: a rerun drops what the run before deferred, and only a request whose
//! writes the acknowledged `Txn` (or a lost one found landed, below) holds runs its effects, right before
//! its answer; an undone request, a batch out of attempts, a fenced or unresolved `Txn` runs none.
//!
//! **The writer's read cache** ([`tx`]). A writer keeps, across its batches, every key it read or
//! committed, with its value and the `mod_revision` it had (a commit remembers every key it wrote, read
//! or not, at the `Txn`'s revision: etcd gives them all that one), up to a bounded number of keys. It
//! keeps no creation revisions: lists, which order by them, always come from etcd.
//! A read served from there is compared at commit with that `mod_revision`, like one from etcd, so a key
//! another replica changed meanwhile fails the `Txn`: the writer then reads every key the batch read again,
//! in one `Txn` of gets (a lost answer empties the cache instead), and the batch runs again on those. A
//! batch without writes that read from the cache sends its compares alone before answering.
//! The keys a new peer or membership claims (its id's pointer, its public key, name and address, its
//! membership pointer) are looked up mostly to find them free: the writer presumes such a key absent
//! when its cache does not hold it, without a round trip, and compares it at commit with `mod_revision`
//! 0. One that exists (another replica wrote it) fails the commit, is read again with the rest and is not
//! presumed absent again until read: the cost of a wrong guess is one conflict. Tokens are not presumed
//! absent (a caller's token wrongly taken for unknown would log a refusal). The cache also takes, before
//! each batch, what any replica wrote, from a watch of the whole key prefix ([`hints`]): newer than what
//! it holds, never trusted (compared at commit like everything else), so a request about a peer another
//! replica enrolled reads nothing from etcd either. Lists always come from etcd (once per prefix and transaction: listing again
//! answers the first answer, it is the same revision). Reads from the cache may be older than the
//! transaction's revision; the compares make the commit see them as of the commit's revision, which is what
//! a serializable answer needs.
//!
//! **Writes** go to one writer thread per store (per replica), which runs whatever is queued (up to
//! [`MAX_BATCH`] requests) in one transaction, one request after the other, like the SQLite backend's group
//! commit: requests of one replica never conflict with each other, only with other replicas, and a busy
//! replica sends one `Txn` per batch. A request whose closure fails has its writes taken back (an undo log
//! plays the savepoint) and the others keep theirs; one whose read failed answers at once with nothing
//! written. A batch stops before the request that would take it past [`MAX_OPS`] writes or compares (etcd
//! refuses more than `--max-txn-ops`, 128 by default); that request starts the next batch.
//!
//! **Why lists are safe.** A list of an owner's records is not covered by the revisions of the keys it
//! returned: a record added (or removed) meanwhile changes no key the closure read. So every write to
//! `<coll>/<owner>/…` also writes the version key `ver/<coll>/<owner>` (a blind put: it compares nothing,
//! so writers never conflict over it), and a list compares that version key's `mod_revision`: any insert,
//! update or delete in the listed scope makes the lister's commit fail and run again. The registry-wide
//! lists (`all_peers`, `silent_peers`, `all_clusters`) compare the whole `ver/<coll>/` range with
//! `mod_revision < read revision + 1` (version keys are never deleted, so a touched or new one is always
//! seen). Keys read one by one compare their own `mod_revision`; keys that came from a list are covered by
//! its version key. The cost: a write that lists a network's peers (an enrollment allocating prefixes)
//! conflicts with any concurrent change to a peer of that network made through another replica.
//!
//! **Reads** run on [`READERS`] threads at one revision, without compares (nothing to commit).
//!
//! **Threads.** The closures are synchronous and read as they go, so they run on the store's own threads,
//! which wait for etcd with `block_on` on the store's own small tokio runtime: the server's runtime workers
//! never block.
//!
//! **Replicas** ([`Replicas`], from [`EtcdStore::replicas`]): several processes on one key prefix follow
//! each other's network changes through an etcd watch (the server announces them to its watchers) and
//! elect the one that runs the reaper through a lease.
//!
//! **Endpoints** ([`endpoints`]): the client is opened on the members that accept connections, and a task
//! takes the endpoints of members that stop accepting them out of the client's balancing and puts them
//! back once they accept again.
//!
//! **Lost answers** ([`commit`]): a `Txn` whose answer never came (a broken connection, a timeout) may have
//! committed. Each writer guards its `Txn`s with its own marker key ([`CommitMarker`]), and the batch's
//! requests are answered only once the marker says which: committed (success), or fenced off so that it
//! never applies (their failure, with nothing written). Should etcd stay silent for [`RESOLVE_WITHIN`],
//! the requests answer that their outcome is unknown, and the writer resolves the marker before its next
//! `Txn`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
};
use tokio::runtime::{Handle, Runtime};

use super::{ReadJob, Store, StoreError, WriteJob};

pub mod commit;
mod endpoints;
mod hints;
pub mod replicas;
mod tx;

pub use commit::{CommitMarker, Outcome};
pub use replicas::{Election, Follower, Replicas, CAMPAIGN_PERIOD, LEADER_TTL};
use tx::{Committed, EtcdTx, ReadCache};

/// The version of the key layout and record format under the key prefix.
pub const SCHEMA_VERSION: i64 = 1;

/// Threads running read requests at once (each waits for etcd while its closure reads).
pub const READERS: usize = 16;

/// Runs of a write closure before its request fails with [`StoreError::Commit`].
pub const ATTEMPTS: u32 = 16;

/// Most write requests committed in one etcd transaction.
pub const MAX_BATCH: usize = 64;

/// Most writes, and most compares, of one etcd transaction: a batch stops before a request that would go
/// past it (etcd refuses more than `--max-txn-ops`, 128 by default).
pub const MAX_OPS: usize = 112;

/// How long the writer keeps asking whether a `Txn` whose answer was lost committed, before it answers its
/// requests that it does not know (and asks again before its next `Txn`).
pub const RESOLVE_WITHIN: Duration = Duration::from_secs(30);

/// How long one etcd call may take before the request fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening the store may wait for etcd.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The size of one committed etcd `Txn`: what etcd's `--max-txn-ops` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnSize {
    /// Compares: one per key read, one per listed scope's version key, the commit marker's.
    pub compares: usize,
    /// Puts and deletes, the commit marker's included.
    pub writes: usize,
}

/// The size of the last `Txn` with writes a store's writer committed ([`EtcdStore::txn_sizes`]): for
/// diagnostics and benchmarks (the `handshake` bench sends bare `Txn`s of a join's size as its floor).
#[derive(Debug, Clone, Default)]
pub struct TxnSizes(Arc<Mutex<Option<TxnSize>>>);

impl TxnSizes {
    /// The last committed `Txn`'s size; `None` before the first.
    pub fn last(&self) -> Option<TxnSize> {
        self.0.lock().ok().and_then(|last| *last)
    }

    fn record(&self, size: TxnSize) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(size);
        }
    }
}

/// Where the etcd store is and how to reach it (`[store]` with `backend = "etcd"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the etcd members (`http://` or, with TLS, `https://`).
    pub endpoints: Vec<String>,
    /// Every key of this registry starts with it; ends with `/`.
    pub key_prefix: String,
    /// TLS to etcd; `None`: plain `http://` endpoints.
    pub tls: Option<EtcdTls>,
}

/// The PEM files of TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates (`ca_file`).
    pub ca: PathBuf,
    /// A client certificate and its key (`cert_file`, `key_file`), when etcd asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The etcd store. Dropping it lets the threads finish what is queued, then closes the connections.
pub struct EtcdStore {
    writes: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    reads: Option<mpsc::Sender<Box<dyn ReadJob>>>,
    threads: Vec<JoinHandle<()>>,
    /// The writer's last commit's size.
    sizes: TxnSizes,
    /// What [`EtcdStore::replicas`] hands out.
    replicas: Replicas,
}

/// The etcd client's runtime, shut down without waiting when its last holder drops it: the store may be
/// opened or dropped inside another runtime, where dropping a runtime the usual way would block (and
/// panics).
struct ClientRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl ClientRuntime {
    fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl EtcdStore {
    /// Connects to etcd and checks (or, on an empty key prefix, writes) the schema version. Blocks the
    /// calling thread until etcd answered, at most a few seconds; refuses an unreachable etcd and a prefix
    /// holding data of another version or of something else.
    pub fn open(options: &EtcdOptions) -> Result<Self, StoreError> {
        Self::open_with(options, true)
    }

    /// [`EtcdStore::open`] without the watch that feeds the writer's cache what other replicas write
    /// ([`hints`]): the cache then learns only from this writer's reads and commits. For tests of the
    /// conflict paths, which a hint arriving first would skip.
    pub fn open_without_hints(options: &EtcdOptions) -> Result<Self, StoreError> {
        Self::open_with(options, false)
    }

    fn open_with(options: &EtcdOptions, hinted: bool) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("registry-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd(format!("cannot start the etcd client's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let runtime = Arc::new(ClientRuntime {
            runtime: Some(runtime),
            handle: handle.clone(),
        });
        let opening = options.clone();
        // A thread of its own: the caller may be a runtime's worker, where `block_on` is not allowed.
        let connecting = handle.clone();
        let id = crate::token::new_id().map_err(|e| StoreError::Etcd(format!("cannot draw a replica id: {e}")))?;
        let replica = id.clone();
        let opened = std::thread::spawn(move || {
            connecting.block_on(async {
                let client = connect(&opening).await?;
                let marker = CommitMarker::claim(&mut client.kv_client(), &opening.key_prefix, &replica)
                    .await
                    .map_err(|e| StoreError::Unreachable {
                        endpoints: opening.endpoints.join(", "),
                        message: format!("cannot write this replica's commit marker: {e}"),
                    })?;
                Ok::<_, StoreError>((client, marker))
            })
        })
        .join()
        .map_err(|_| StoreError::Etcd("the etcd connection thread panicked".into()))??;
        let (client, marker) = opened;
        if options.endpoints.len() > 1 {
            handle.spawn(endpoints::keep(
                client.clone(),
                options.endpoints.clone(),
                connect_options(options)?,
            ));
        }
        let connection = |client: &Client| Connection {
            client: client.clone(),
            runtime: handle.clone(),
            prefix: options.key_prefix.clone(),
        };
        let spawn = |name: String, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(work)
                .map_err(|e| StoreError::Etcd(format!("cannot start a thread: {e}")))
        };
        let (writes, write_queue) = mpsc::channel();
        let writer = connection(&client);
        let sizes = TxnSizes::default();
        let recorded = sizes.clone();
        let (hint_tx, hint_rx) = mpsc::sync_channel(hints::QUEUED);
        if hinted {
            handle.spawn(hints::feed(client.clone(), options.key_prefix.clone(), hint_tx));
        }
        let mut threads = vec![spawn(
            "registry-etcd-writer".into(),
            Box::new(move || writer.write_loop(&write_queue, &hint_rx, marker, &recorded)),
        )?];
        let (reads, read_queue) = mpsc::channel();
        let read_queue = Arc::new(Mutex::new(read_queue));
        for i in 0..READERS {
            let reader = connection(&client);
            let queue = read_queue.clone();
            threads.push(spawn(
                format!("registry-etcd-reader-{i}"),
                Box::new(move || reader.read_loop(&queue)),
            )?);
        }
        Ok(EtcdStore {
            writes: Some(writes),
            reads: Some(reads),
            threads,
            sizes,
            replicas: Replicas {
                client,
                prefix: options.key_prefix.clone(),
                id,
                runtime,
            },
        })
    }

    /// Whether an account is stored under the key prefix (every other record belongs to one): a prefix
    /// that holds a registry (`migrate` refuses to copy into one).
    pub async fn has_accounts(&self) -> Result<bool, StoreError> {
        let mut kv = self.replicas.client.kv_client();
        let accounts = format!("{}account/", self.replicas.prefix);
        let found = self
            .replicas
            .runtime
            .handle()
            .spawn(async move {
                let options = GetOptions::new().with_prefix().with_keys_only().with_limit(1);
                tokio::time::timeout(REQUEST_TIMEOUT, kv.get(accounts, Some(options))).await
            })
            .await
            .map_err(|e| StoreError::Etcd(format!("the etcd client's runtime stopped: {e}")))?;
        match found {
            Ok(Ok(answer)) => Ok(!answer.kvs().is_empty()),
            Ok(Err(e)) => Err(StoreError::Etcd(format!("etcd read failed: {e}"))),
            Err(_) => Err(StoreError::Etcd(format!(
                "etcd did not answer a read within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    /// The size of the writer's last commit, as it changes (a handle that outlives the store).
    pub fn txn_sizes(&self) -> TxnSizes {
        self.sizes.clone()
    }

    /// What this replica shares with the others on its key prefix: the watch of network changes and the
    /// election of the replica that runs background work. It keeps the etcd client alive while it lives.
    pub fn replicas(&self) -> Replicas {
        self.replicas.clone()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.writes = None;
        self.reads = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a registry etcd thread panicked");
            }
        }
    }
}

impl Store for EtcdStore {
    fn submit_write(&self, job: Box<dyn WriteJob>) {
        super::queue_write(self.writes.as_ref(), job);
    }

    fn submit_read(&self, job: Box<dyn ReadJob>) {
        match &self.reads {
            Some(reads) => {
                if let Err(mpsc::SendError(job)) = reads.send(job) {
                    job.fail(StoreError::Closed);
                }
            }
            None => job.fail(StoreError::Closed),
        }
    }
}

/// A thread's way to etcd.
struct Connection {
    client: Client,
    runtime: Handle,
    prefix: String,
}

impl Connection {
    fn tx<'a>(&'a self, cache: Option<&'a mut ReadCache>) -> EtcdTx<'a> {
        EtcdTx::new(self.client.kv_client(), &self.runtime, &self.prefix, cache)
    }

    fn read_loop(&self, queue: &Mutex<mpsc::Receiver<Box<dyn ReadJob>>>) {
        loop {
            let job = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            match job {
                Ok(job) => job.run(&mut self.tx(None)),
                Err(mpsc::RecvError) => return,
            }
        }
    }

    /// Takes what is queued (up to [`MAX_BATCH`] requests) and commits it as one transaction guarded by
    /// `marker`, after putting the `hints` that came in into its cache; once the queue is closed, deletes the
    /// marker key.
    fn write_loop(
        &self,
        queue: &mpsc::Receiver<Box<dyn WriteJob>>,
        hints: &mpsc::Receiver<hints::Hint>,
        mut marker: CommitMarker,
        sizes: &TxnSizes,
    ) {
        let mut pending: VecDeque<Box<dyn WriteJob>> = VecDeque::new();
        let mut cache = ReadCache::default();
        loop {
            if pending.is_empty() {
                match queue.recv() {
                    Ok(job) => pending.push_back(job),
                    Err(mpsc::RecvError) => {
                        if !marker.pending() {
                            let (mut kv, key) = (self.client.kv_client(), marker.key().to_owned());
                            let _ = self.runtime.block_on(async move {
                                tokio::time::timeout(REQUEST_TIMEOUT, kv.delete(key, None)).await
                            });
                        }
                        return;
                    }
                }
            }
            while pending.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => break,
                }
            }
            while let Ok(hint) = hints.try_recv() {
                cache.hint(hint);
            }
            let batch: Vec<_> = pending.drain(..).collect();
            let deferred = self.commit_batch(batch, &mut marker, &mut cache, sizes);
            for job in deferred.into_iter().rev() {
                pending.push_front(job);
            }
        }
    }

    /// Runs `batch` in one transaction and commits it, again on a conflict; answers every request it
    /// committed or failed and gives back those that did not fit ([`MAX_OPS`]) for the next batch.
    fn commit_batch(
        &self,
        mut batch: Vec<Box<dyn WriteJob>>,
        marker: &mut CommitMarker,
        cache: &mut ReadCache,
        sizes: &TxnSizes,
    ) -> Vec<Box<dyn WriteJob>> {
        if marker.pending() && self.resolve(marker).is_none() {
            for job in batch {
                job.finish(Err(StoreError::Commit(
                    "etcd has not said yet whether an earlier transaction of this replica committed; nothing \
                     of this request was written"
                        .into(),
                )));
            }
            return Vec::new();
        }
        for attempt in 0..ATTEMPTS {
            let mut tx = self.tx(Some(&mut *cache));
            let mut ran = Vec::with_capacity(batch.len());
            let mut deferred = Vec::new();
            for mut job in batch.drain(..) {
                if !deferred.is_empty() {
                    deferred.push(job);
                    continue;
                }
                let mark = tx.mark();
                let keep = job.run(&mut tx);
                if let Some(e) = tx.take_failure() {
                    // A read failed: nothing of it is kept, and it answers now.
                    tx.undo_writes(mark);
                    job.finish(Err(e));
                } else if !ran.is_empty() && !tx.within(MAX_OPS) {
                    tx.undo_all(mark);
                    deferred.push(job);
                } else {
                    if !keep {
                        tx.undo_writes(mark);
                    }
                    ran.push(job);
                }
            }
            let size = tx.size();
            let answer = match tx.commit(marker) {
                Committed::Yes(revision) => {
                    if revision.is_some() {
                        sizes.record(size);
                    }
                    Ok(())
                }
                Committed::Conflict => {
                    batch = ran;
                    batch.extend(deferred);
                    std::thread::sleep(backoff(attempt));
                    continue;
                }
                Committed::Lost(e) => match self.resolve(marker) {
                    Some(Outcome::Landed) => {
                        tracing::info!(error = %e, "an etcd transaction's answer was lost; it committed");
                        Ok(())
                    }
                    Some(Outcome::Fenced) => Err(format!("{e}; nothing of it was written")),
                    None => Err(format!(
                        "{e}, and etcd did not say within {RESOLVE_WITHIN:?} whether it committed: the request \
                         may be done"
                    )),
                },
            };
            for job in ran {
                job.finish(answer.clone().map_err(StoreError::Commit));
            }
            return deferred;
        }
        for job in batch {
            job.finish(Err(StoreError::Commit(format!(
                "{ATTEMPTS} attempts conflicted with concurrent writes"
            ))));
        }
        Vec::new()
    }

    /// Asks etcd, again and again for at most [`RESOLVE_WITHIN`], whether the marker's pending `Txn`
    /// committed ([`CommitMarker::resolve`]); `None`: no answer (it stays pending).
    fn resolve(&self, marker: &mut CommitMarker) -> Option<Outcome> {
        let deadline = std::time::Instant::now() + RESOLVE_WITHIN;
        let mut attempt = 0u32;
        loop {
            let mut kv = self.client.kv_client();
            let asked = self
                .runtime
                .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, marker.resolve(&mut kv)).await });
            match asked {
                Ok(Ok(outcome)) => return Some(outcome),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot learn whether an etcd transaction committed"),
                Err(_) => tracing::warn!("etcd did not answer whether a transaction committed"),
            }
            if std::time::Instant::now() >= deadline {
                tracing::error!(
                    "etcd did not say within {RESOLVE_WITHIN:?} whether a transaction committed; asking again \
                     before the next one"
                );
                return None;
            }
            attempt = attempt.saturating_add(1);
            std::thread::sleep(backoff(attempt.saturating_add(4)) * 4);
        }
    }
}

/// A random pause before attempt `attempt + 1`: up to 1 ms, doubling per attempt up to 64 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling_us = 1_000u64 << attempt.min(6);
    let mut random = [0u8; 8];
    let jitter = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random) % ceiling_us,
        Err(_) => ceiling_us / 2,
    };
    Duration::from_micros(jitter + 1)
}

/// How the client connects: timeouts, keep-alives and TLS.
fn connect_options(options: &EtcdOptions) -> Result<ConnectOptions, StoreError> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(tls) = &options.tls {
        connect = connect.with_tls(tls_options(tls)?);
    }
    Ok(connect)
}

/// Connects and checks the schema version under the key prefix.
async fn connect(options: &EtcdOptions) -> Result<Client, StoreError> {
    let endpoints = options.endpoints.join(", ");
    let unreachable = |e: &dyn std::fmt::Display| StoreError::Unreachable {
        endpoints: endpoints.clone(),
        message: e.to_string(),
    };
    let connect = connect_options(options)?;
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let reachable = endpoints::reachable(&options.endpoints).await;
        let client = Client::connect(&reachable, Some(connect))
            .await
            .map_err(|e| unreachable(&e))?;
        check_schema(&client, &options.key_prefix).await.map_err(|e| match e {
            CheckError::Etcd(e) => unreachable(&e),
            CheckError::Store(e) => e,
        })?;
        Ok(client)
    })
    .await;
    opened.unwrap_or_else(|_| Err(unreachable(&format!("no answer within {CONNECT_TIMEOUT:?}"))))
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StoreError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| StoreError::Etcd(format!("cannot read {}: {e}", path.display())))
    };
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}

enum CheckError {
    Etcd(etcd_client::Error),
    Store(StoreError),
}

impl From<etcd_client::Error> for CheckError {
    fn from(e: etcd_client::Error) -> Self {
        CheckError::Etcd(e)
    }
}

/// Accepts a prefix of this schema version; gives an empty prefix the version; refuses anything else.
async fn check_schema(client: &Client, prefix: &str) -> Result<(), CheckError> {
    let mut kv = client.kv_client();
    let key = format!("{prefix}schema");
    let incompatible = |message: String| {
        CheckError::Store(StoreError::Incompatible {
            prefix: prefix.to_owned(),
            message,
        })
    };
    for _ in 0..2 {
        let found = kv.get(key.as_str(), None).await?;
        if let Some(stored) = found.kvs().first() {
            let text = String::from_utf8_lossy(stored.value()).into_owned();
            return match text.trim().parse::<i64>() {
                Ok(SCHEMA_VERSION) => Ok(()),
                Ok(v) if v > SCHEMA_VERSION => Err(CheckError::Store(StoreError::SchemaTooNew {
                    found: v,
                    known: SCHEMA_VERSION,
                })),
                Ok(v) => Err(incompatible(format!(
                    "holds schema version {v}, which this registry (version {SCHEMA_VERSION}) cannot read"
                ))),
                Err(_) => Err(incompatible(format!(
                    "has {key} = {text:?}, not a schema version: it is not a registry's data"
                ))),
            };
        }
        let any = kv
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only().with_limit(1)),
            )
            .await?;
        if let Some(other) = any.kvs().first() {
            return Err(incompatible(format!(
                "holds keys (e.g. {:?}) but no schema version: it is not a registry's data",
                String::from_utf8_lossy(other.key())
            )));
        }
        // An empty prefix: claim it, unless another registry just did (then check what it wrote).
        let claimed = kv
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), SCHEMA_VERSION.to_string(), None)]),
            )
            .await?;
        if claimed.succeeded() {
            tracing::info!(prefix, version = SCHEMA_VERSION, "registry etcd store initialized");
            return Ok(());
        }
    }
    Err(incompatible("changed while it was being initialized: retry".into()))
}
