//! The records of [`ReadTx`] and [`WriteRecords`] on etcd keys (the layout is in [`super`]'s documentation), over
//! a transaction that reads at one revision, buffers its writes and commits them with compares.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use etcd_client::{Compare, CompareOp, GetOptions, GetResponse, KvClient, Txn, TxnOp, TxnOpResponse};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::runtime::Handle;

use super::commit::CommitMarker;
use super::REQUEST_TIMEOUT;
use crate::model::{Account, Cluster, ClusterMember, Floating, Network, Peer, PrefixHold, TokenKind, TokenRecord, Vip};
use crate::store::{ReadTx, StoreError, WriteRecords};

/// A value as read at the transaction's revision.
#[derive(Clone)]
struct Stored {
    value: Vec<u8>,
    /// etcd's revision of the key's creation: the creation order of records.
    created: i64,
}

/// What the writer knows of one key from earlier transactions: its value (`None`: absent) and its
/// `mod_revision` then (0: absent). No creation revision: lists, which order by it, always come from etcd.
#[derive(Clone)]
struct Cached {
    value: Option<Vec<u8>>,
    mod_revision: i64,
}

/// Most keys a writer's [`ReadCache`] holds (about 8 per peer): a full cache forgets its oldest key for
/// each new one.
const CACHE_KEYS: usize = 65_536;

/// Families of keys (after the key prefix) that the writer presumes absent when its cache does not hold
/// them: the pointers and unique values a new peer or membership claims (`peer-id/`, `peer-key/`,
/// `peer-name/`, `peer-addr/`, `member-id/`), looked up mostly to find them free. Presumed absent, such a
/// read costs no round trip; it is compared at commit like a read of an absent key (`mod_revision` 0), so
/// a key that exists fails the commit, and the rerun reads it. Not tokens: a token presumed absent would
/// log a refusal of a caller that is known.
const PRESUMED_ABSENT: [&str; 5] = ["peer-id/", "peer-key/", "peer-name/", "peer-addr/", "member-id/"];

/// Most keys a commit's conflict reads again in one etcd `Txn` (etcd refuses more than `--max-txn-ops`).
const REREAD_PER_TXN: usize = 100;

/// The writer's read cache: keys its earlier transactions read or committed, each with the `mod_revision`
/// it had. A read served from it is compared at commit with that `mod_revision`, like any read, so a key
/// another replica changed since makes the commit fail; a conflict reads again what the transaction read,
/// in one round trip (a lost answer empties the cache), and the transaction runs again on that.
#[derive(Default)]
pub(super) struct ReadCache {
    keys: HashMap<String, Cached>,
    /// The keys in the order they came in, oldest first (with some already forgotten, skipped when met).
    order: VecDeque<String>,
    /// Keys of the [`PRESUMED_ABSENT`] families that a conflict found may exist and that were not read
    /// again since: they are read from etcd, not presumed absent.
    doubted: HashSet<String>,
}

impl ReadCache {
    fn remember(&mut self, key: &str, value: Option<Vec<u8>>, mod_revision: i64) {
        self.doubted.remove(key);
        if self
            .keys
            .insert(key.to_owned(), Cached { value, mod_revision })
            .is_some()
        {
            return;
        }
        self.order.push_back(key.to_owned());
        while self.keys.len() > CACHE_KEYS {
            match self.order.pop_front() {
                Some(oldest) => self.keys.remove(&oldest),
                None => break,
            };
        }
        // Forgotten keys leave their place in `order`: start it again from what is held when they pile up.
        if self.order.len() > 2 * CACHE_KEYS {
            self.order = self.keys.keys().cloned().collect();
        }
    }

    /// Takes a change seen in etcd ([`super::hints`]) if it is newer than what the cache holds of the key.
    pub(super) fn hint(&mut self, hint: super::hints::Hint) {
        let known = self.keys.get(&hint.key).map_or(0, |c| c.mod_revision);
        if hint.revision <= known {
            return;
        }
        match hint.value {
            Some(value) => self.remember(&hint.key, Some(value), hint.revision),
            None => self.remember(&hint.key, None, 0),
        }
    }

    /// Forgets every key (a commit whose outcome is unknown).
    fn clear(&mut self) {
        self.keys.clear();
        self.order.clear();
    }

    /// Forgets `key`; one of a presumed-absent family is no longer presumed absent.
    fn forget(&mut self, key: &str, prefix: &str) {
        self.keys.remove(key);
        if presumable(key, prefix) {
            if self.doubted.len() >= CACHE_KEYS {
                self.doubted.clear();
            }
            self.doubted.insert(key.to_owned());
        }
    }
}

/// Whether `key` (under the key prefix `prefix`) is of a [`PRESUMED_ABSENT`] family.
fn presumable(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| PRESUMED_ABSENT.iter().any(|family| rest.starts_with(family)))
}

/// A buffered write: `None` deletes.
#[derive(Clone)]
struct Buffered {
    value: Option<Vec<u8>>,
    /// Order of first write in this transaction (records created here list after the stored ones).
    seq: i64,
}

/// One attempt of a request: reads at one revision, writes buffered until [`EtcdTx::commit`].
pub(super) struct EtcdTx<'a> {
    kv: KvClient,
    runtime: &'a Handle,
    prefix: &'a str,
    /// The revision every read from etcd is made at (the first one's).
    revision: Option<i64>,
    /// The writer's read cache (`None`: a reader's transaction, which reads everything from etcd).
    cache: Option<&'a mut ReadCache>,
    /// Whether a read came from the cache: then even a transaction without writes commits its compares.
    cached_reads: bool,
    /// What etcd answered for each prefix listed in this transaction (at its revision, so listing again
    /// answers the same): key, stored value, `mod_revision`.
    listed: HashMap<String, Vec<(String, Stored, i64)>>,
    /// Keys read one by one, with the `mod_revision` seen (0: absent): compared at commit.
    compares: HashMap<String, i64>,
    /// Prefixes of version keys read as a whole (registry-wide lists): compared at commit.
    range_compares: BTreeSet<String>,
    /// What was read, by key (`None`: absent).
    seen: HashMap<String, Option<Vec<u8>>>,
    writes: BTreeMap<String, Buffered>,
    /// Version keys to touch at commit.
    touched: BTreeSet<String>,
    /// The first failed read: the request fails and writes nothing.
    failure: Option<String>,
    /// How to take back what each request of the batch added, newest last.
    undo: Vec<Undo>,
}

/// One change to take back when a request's part of the batch is undone.
enum Undo {
    /// The key's buffered write before (`None`: it had none).
    Write(String, Option<Buffered>),
    Touch(String),
    Compare(String),
    RangeCompare(String),
    Seen(String),
}

/// The state of the transaction before a request ran ([`EtcdTx::mark`]).
#[derive(Clone, Copy)]
pub(super) struct Mark(usize);

fn corrupt(table: &'static str, message: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.to_string(),
    }
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(table, e))
}

fn text(table: &'static str, bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| corrupt(table, e))
}

/// The owner part of a token's listing key.
fn token_scope(account_id: &str, kind: TokenKind) -> String {
    format!("{account_id}/{kind}")
}

impl<'a> EtcdTx<'a> {
    pub(super) fn new(kv: KvClient, runtime: &'a Handle, prefix: &'a str, cache: Option<&'a mut ReadCache>) -> Self {
        EtcdTx {
            kv,
            runtime,
            prefix,
            revision: None,
            cache,
            cached_reads: false,
            listed: HashMap::new(),
            compares: HashMap::new(),
            range_compares: BTreeSet::new(),
            seen: HashMap::new(),
            writes: BTreeMap::new(),
            touched: BTreeSet::new(),
            failure: None,
            undo: Vec::new(),
        }
    }

    /// Where the next request of the batch starts.
    pub(super) fn mark(&self) -> Mark {
        Mark(self.undo.len())
    }

    /// Takes back the writes made since `mark` (a failed request). Its reads stay compared: the batch
    /// answers its failure only if what it read still holds at commit.
    pub(super) fn undo_writes(&mut self, mark: Mark) {
        self.undo_since(mark, false);
    }

    /// Takes back everything since `mark`, reads too (a request moved to the next batch).
    pub(super) fn undo_all(&mut self, mark: Mark) {
        self.undo_since(mark, true);
    }

    fn undo_since(&mut self, mark: Mark, reads: bool) {
        while self.undo.len() > mark.0 {
            match self.undo.pop() {
                Some(Undo::Write(key, before)) => {
                    match before {
                        Some(b) => self.writes.insert(key, b),
                        None => self.writes.remove(&key),
                    };
                }
                Some(Undo::Touch(key)) => {
                    self.touched.remove(&key);
                }
                Some(Undo::Compare(key)) if reads => {
                    self.compares.remove(&key);
                }
                Some(Undo::RangeCompare(key)) if reads => {
                    self.range_compares.remove(&key);
                }
                Some(Undo::Seen(key)) if reads => {
                    self.seen.remove(&key);
                }
                _ => {}
            }
        }
    }

    /// What the commit would send, the commit marker's compare and put included.
    pub(super) fn size(&self) -> super::TxnSize {
        super::TxnSize {
            compares: self.compares.len() + self.range_compares.len() + 1,
            writes: self.writes.len() + self.touched.iter().filter(|k| !self.writes.contains_key(*k)).count() + 1,
        }
    }

    /// The etcd operations and compares the commit would send: each at most `limit`.
    pub(super) fn within(&self, limit: usize) -> bool {
        self.writes.len() + self.touched.len() <= limit && self.compares.len() + self.range_compares.len() <= limit
    }

    fn compare(&mut self, key: String, mod_revision: i64) {
        if self.compares.insert(key.clone(), mod_revision).is_none() {
            self.undo.push(Undo::Compare(key));
        }
    }

    fn see(&mut self, key: String, value: Option<Vec<u8>>) {
        if !self.seen.contains_key(&key) {
            self.seen.insert(key.clone(), value);
            self.undo.push(Undo::Seen(key));
        }
    }

    fn touch(&mut self, key: String) {
        if self.touched.insert(key.clone()) {
            self.undo.push(Undo::Touch(key));
        }
    }

    /// The failure of a read, if one failed (the closure may have hidden it).
    pub(super) fn take_failure(&mut self) -> Option<StoreError> {
        self.failure.take().map(StoreError::Etcd)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.to_owned();
        key.push_str(&parts.join("/"));
        key
    }

    /// Reads `key` (or every key under it, with `prefix`) at the transaction's revision.
    fn fetch(&mut self, key: &str, prefix: bool) -> Result<GetResponse, StoreError> {
        if let Some(failure) = &self.failure {
            return Err(StoreError::Etcd(failure.clone()));
        }
        let mut options = GetOptions::new();
        if let Some(revision) = self.revision {
            options = options.with_revision(revision);
        }
        if prefix {
            options = options.with_prefix();
        }
        let mut kv = self.kv.clone();
        let key = key.to_owned();
        let answer = self
            .runtime
            .block_on(async move { tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key, Some(options))).await });
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(self.fail(format!("etcd read failed: {e}"))),
            Err(_) => return Err(self.fail(format!("etcd did not answer a read within {REQUEST_TIMEOUT:?}"))),
        };
        if self.revision.is_none() {
            self.revision = response.header().map(|h| h.revision());
        }
        Ok(response)
    }

    fn fail(&mut self, message: String) -> StoreError {
        self.failure = Some(message.clone());
        StoreError::Etcd(message)
    }

    /// The value of `key`: this transaction's own write, else the stored one (compared at commit).
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(buffered) = self.writes.get(key) {
            return Ok(buffered.value.clone());
        }
        if let Some(seen) = self.seen.get(key) {
            return Ok(seen.clone());
        }
        if let Some(hit) = self.cached(key) {
            self.compare(key.to_owned(), hit.mod_revision);
            self.see(key.to_owned(), hit.value.clone());
            return Ok(hit.value);
        }
        if self.presumes_absent(key) {
            self.cached_reads = true;
            self.compare(key.to_owned(), 0);
            self.see(key.to_owned(), None);
            return Ok(None);
        }
        let response = self.fetch(key, false)?;
        let found = response.kvs().first();
        let mod_revision = found.map_or(0, |kv| kv.mod_revision());
        let value = found.map(|kv| kv.value().to_vec());
        self.remember(key, value.clone(), mod_revision);
        self.compare(key.to_owned(), mod_revision);
        self.see(key.to_owned(), value.clone());
        Ok(value)
    }

    /// What the writer's cache knows of `key` (the read is then compared like one from etcd).
    fn cached(&mut self, key: &str) -> Option<Cached> {
        let hit = self.cache.as_ref()?.keys.get(key)?.clone();
        self.cached_reads = true;
        Some(hit)
    }

    /// Whether the writer presumes `key` absent without reading it ([`PRESUMED_ABSENT`]).
    fn presumes_absent(&self, key: &str) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| !cache.doubted.contains(key) && presumable(key, self.prefix))
    }

    /// Puts what etcd answered for `key` into the writer's cache.
    fn remember(&mut self, key: &str, value: Option<Vec<u8>>, mod_revision: i64) {
        if let Some(cache) = self.cache.as_deref_mut() {
            cache.remember(key, value, mod_revision);
        }
    }

    fn get_json<T: DeserializeOwned>(&mut self, table: &'static str, key: &str) -> Result<Option<T>, StoreError> {
        self.get(key)?.map(|bytes| decode(table, &bytes)).transpose()
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.buffer(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.buffer(key, None);
    }

    fn buffer(&mut self, key: String, value: Option<Vec<u8>>) {
        let before = self.writes.get(&key).cloned();
        let seq = before.as_ref().map_or(self.undo.len() as i64, |b| b.seq);
        self.writes.insert(key.clone(), Buffered { value, seq });
        self.undo.push(Undo::Write(key, before));
    }

    fn put_json<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| corrupt("(write)", e))?;
        self.put(key, bytes);
        Ok(())
    }

    /// Every value under `prefix` as of the transaction's revision with its own writes applied, in creation
    /// order (stored ones by creation revision, then those created here in write order).
    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let stored = match self.listed.get(prefix) {
            Some(stored) => stored.clone(),
            None => {
                let response = self.fetch(prefix, true)?;
                let stored: Vec<_> = response
                    .kvs()
                    .iter()
                    .map(|kv| {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let value = Stored {
                            value: kv.value().to_vec(),
                            created: kv.create_revision(),
                        };
                        (key, value, kv.mod_revision())
                    })
                    .collect();
                self.listed.insert(prefix.to_owned(), stored.clone());
                stored
            }
        };
        let mut found: BTreeMap<String, (i64, i64, Vec<u8>)> = BTreeMap::new();
        for (key, stored, mod_revision) in stored {
            self.remember(&key, Some(stored.value.clone()), mod_revision);
            self.see(key.clone(), Some(stored.value.clone()));
            found.insert(key, (stored.created, 0, stored.value));
        }
        for (key, buffered) in self.writes.range(prefix.to_owned()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match &buffered.value {
                Some(value) => {
                    let order = found
                        .get(key)
                        .map_or((i64::MAX, buffered.seq), |(created, seq, _)| (*created, *seq));
                    found.insert(key.clone(), (order.0, order.1, value.clone()));
                }
                None => {
                    found.remove(key);
                }
            }
        }
        let mut list: Vec<_> = found.into_iter().collect();
        list.sort_by(|(ka, (ca, sa, _)), (kb, (cb, sb, _))| (ca, sa, ka).cmp(&(cb, sb, kb)));
        Ok(list.into_iter().map(|(key, (_, _, value))| (key, value)).collect())
    }

    /// Reads the version key of `coll` of `owner` for the commit's compare (not this transaction's touch).
    fn watch_scope(&mut self, coll: &str, owner: &str) -> Result<(), StoreError> {
        let version = self.key(&["ver", coll, owner]);
        if self.compares.contains_key(&version) {
            return Ok(());
        }
        if let Some(hit) = self.cached(&version) {
            self.compare(version, hit.mod_revision);
            return Ok(());
        }
        let response = self.fetch(&version, false)?;
        let found = response.kvs().first();
        let seen = found.map_or(0, |kv| kv.mod_revision());
        let value = found.map(|kv| kv.value().to_vec());
        self.remember(&version, value, seen);
        self.compare(version, seen);
        Ok(())
    }

    /// The records of `coll` of `owner`, in creation order.
    fn scoped<T: DeserializeOwned>(
        &mut self,
        table: &'static str,
        coll: &str,
        owner: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.watch_scope(coll, owner)?;
        let prefix = self.key(&[coll, owner, ""]);
        self.list(&prefix)?
            .into_iter()
            .map(|(_, value)| decode(table, &value))
            .collect()
    }

    /// The records of `coll` of every owner, in creation order.
    fn everywhere<T: DeserializeOwned>(&mut self, table: &'static str, coll: &str) -> Result<Vec<T>, StoreError> {
        let versions = self.key(&["ver", coll, ""]);
        if self.range_compares.insert(versions.clone()) {
            self.undo.push(Undo::RangeCompare(versions));
        }
        let prefix = self.key(&[coll, ""]);
        self.list(&prefix)?
            .into_iter()
            .map(|(_, value)| decode(table, &value))
            .collect()
    }

    /// The owner of record `id` of `coll`, from its pointer.
    fn owner(&mut self, coll: &str, id: &str) -> Result<Option<String>, StoreError> {
        let pointer = self.key(&[&format!("{coll}-id"), id]);
        self.get(&pointer)?.map(|bytes| text("pointers", bytes)).transpose()
    }

    /// Record `id` of `coll`, found through its pointer.
    fn by_id<T: DeserializeOwned>(
        &mut self,
        table: &'static str,
        coll: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(owner) = self.owner(coll, id)? else {
            return Ok(None);
        };
        let key = self.key(&[coll, &owner, id]);
        self.get_json(table, &key)
    }

    /// Stores record `id` of `coll` under `owner` (moving it from another owner), with its pointer.
    fn put_scoped<T: Serialize>(&mut self, coll: &str, owner: &str, id: &str, record: &T) -> Result<(), StoreError> {
        if let Some(old) = self.owner(coll, id)? {
            if old != owner {
                self.delete_scoped(coll, &old, id);
            }
        }
        let pointer = self.key(&[&format!("{coll}-id"), id]);
        self.put(pointer, owner.as_bytes().to_vec());
        let key = self.key(&[coll, owner, id]);
        self.put_json(key, record)?;
        let version = self.key(&["ver", coll, owner]);
        self.touch(version);
        Ok(())
    }

    /// Deletes record `id` of `coll` of `owner` (not its pointer).
    fn delete_scoped(&mut self, coll: &str, owner: &str, id: &str) {
        let key = self.key(&[coll, owner, id]);
        self.delete(key);
        let version = self.key(&["ver", coll, owner]);
        self.touch(version);
    }

    /// Stores an entry of a listing index (`coll` of `owner`, no record of its own).
    fn put_index(&mut self, coll: &str, owner: &str, id: &str) {
        let key = self.key(&[coll, owner, id]);
        self.put(key, Vec::new());
        let version = self.key(&["ver", coll, owner]);
        self.touch(version);
    }

    /// The ids of a listing index, in creation order.
    fn index(&mut self, coll: &str, owner: &str) -> Result<Vec<String>, StoreError> {
        self.watch_scope(coll, owner)?;
        let prefix = self.key(&[coll, owner, ""]);
        Ok(self
            .list(&prefix)?
            .into_iter()
            .map(|(key, _)| key[prefix.len()..].to_owned())
            .collect())
    }

    /// Claims unique `value` of `what` in `network_id` for peer `peer_id`; refuses one another peer holds.
    fn claim(&mut self, what: &str, network_id: &str, value: &str, peer_id: &str) -> Result<(), StoreError> {
        let key = self.key(&[what, network_id, value]);
        match self.get(&key)? {
            Some(holder) if holder != peer_id.as_bytes() => Err(StoreError::Constraint(format!(
                "{what} {value:?} of network {network_id} belongs to another peer"
            ))),
            Some(_) => Ok(()),
            None => {
                self.put(key, peer_id.as_bytes().to_vec());
                Ok(())
            }
        }
    }

    /// Frees unique `value` of `what` in `network_id` if peer `peer_id` holds it.
    fn release(&mut self, what: &str, network_id: &str, value: &str, peer_id: &str) -> Result<(), StoreError> {
        let key = self.key(&[what, network_id, value]);
        if self.get(&key)?.is_some_and(|holder| holder == peer_id.as_bytes()) {
            self.delete(key);
        }
        Ok(())
    }

    /// The unique values of a peer: (index, value).
    fn unique_values(peer: &Peer) -> [(&'static str, String); 3] {
        [
            ("peer-key", peer.public_key.clone()),
            ("peer-name", peer.name.clone()),
            ("peer-addr", peer.address.to_string()),
        ]
    }

    /// Commits the buffered writes if nothing read changed, guarded by the writer's `marker`. A
    /// transaction without writes whose reads all came from etcd has nothing to commit (they were one
    /// consistent revision); one that read from the cache sends its compares alone. Keeps the writer's cache
    /// current: what it committed is remembered, a conflict forgets what it read, a lost answer empties it.
    pub(super) fn commit(&mut self, marker: &mut CommitMarker) -> Committed {
        let committed = if self.writes.is_empty() && self.touched.is_empty() {
            if self.cached_reads {
                self.validate()
            } else {
                Committed::Yes(None)
            }
        } else {
            self.send(marker)
        };
        match &committed {
            Committed::Yes(revision) => self.remember_commit(*revision),
            // Something this transaction read changed: what it read is forgotten and read again, in one
            // round trip, for its rerun; the rest of the cache stays (whatever is read from it is compared
            // again).
            Committed::Conflict => {
                let read: BTreeSet<String> = self.seen.keys().chain(self.compares.keys()).cloned().collect();
                if let Some(cache) = self.cache.as_deref_mut() {
                    for key in &read {
                        cache.forget(key, self.prefix);
                    }
                    self.reread(read);
                }
            }
            // Whether the writes landed, and at which revision, is not known here: nothing cached holds.
            Committed::Lost(_) => {
                if let Some(cache) = self.cache.as_deref_mut() {
                    cache.clear();
                }
            }
        }
        committed
    }

    /// Reads `keys` again into the writer's cache, [`REREAD_PER_TXN`] per `Txn` of gets (one round trip
    /// each). Keys left unread by a failed `Txn` stay forgotten: the rerun reads them one by one.
    fn reread(&mut self, keys: BTreeSet<String>) {
        let keys: Vec<String> = keys.into_iter().collect();
        for chunk in keys.chunks(REREAD_PER_TXN) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|key| TxnOp::get(key.as_str(), None))
                    .collect::<Vec<_>>(),
            );
            let mut kv = self.kv.clone();
            let answer = self
                .runtime
                .block_on(async move { tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await });
            let Ok(Ok(response)) = answer else {
                return;
            };
            let Some(cache) = self.cache.as_deref_mut() else {
                return;
            };
            for (key, op) in chunk.iter().zip(response.op_responses()) {
                if let TxnOpResponse::Get(got) = op {
                    let found = got.kvs().first();
                    cache.remember(
                        key,
                        found.map(|kv| kv.value().to_vec()),
                        found.map_or(0, |kv| kv.mod_revision()),
                    );
                }
            }
        }
    }

    /// Sends the compares of a transaction without writes: whether its cached reads still hold.
    fn validate(&mut self) -> Committed {
        let compares = self.compares();
        let mut kv = self.kv.clone();
        let txn = Txn::new().when(compares);
        let answer = self
            .runtime
            .block_on(async move { tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await });
        match answer {
            Ok(Ok(response)) if response.succeeded() => Committed::Yes(None),
            Ok(Ok(_)) => Committed::Conflict,
            Ok(Err(e)) => Committed::Lost(format!("etcd transaction failed: {e}")),
            Err(_) => Committed::Lost(format!(
                "etcd did not answer the transaction within {REQUEST_TIMEOUT:?}"
            )),
        }
    }

    /// Puts what a commit at `revision` wrote into the writer's cache: etcd gave every key of the `Txn` that
    /// `mod_revision` (a deleted key is absent: 0), whatever the key held before.
    fn remember_commit(&mut self, revision: Option<i64>) {
        let Some(cache) = self.cache.as_deref_mut() else {
            return;
        };
        let Some(revision) = revision else {
            return;
        };
        let written = self.writes.iter().map(|(key, b)| (key, b.value.clone())).chain(
            self.touched
                .iter()
                .filter(|key| !self.writes.contains_key(*key))
                .map(|key| (key, Some(Vec::new()))),
        );
        for (key, value) in written {
            match value {
                Some(value) => cache.remember(key, Some(value), revision),
                None => cache.remember(key, None, 0),
            }
        }
    }

    /// The compares of everything read: each key's `mod_revision`, each registry-wide list's version range.
    fn compares(&self) -> Vec<Compare> {
        let revision = self.revision.unwrap_or(0);
        let mut compares: Vec<Compare> = self
            .compares
            .iter()
            .map(|(key, seen)| Compare::mod_revision(key.as_str(), CompareOp::Equal, *seen))
            .collect();
        compares.extend(
            self.range_compares
                .iter()
                .map(|p| Compare::mod_revision(p.as_str(), CompareOp::Less, revision + 1).with_prefix()),
        );
        compares
    }

    /// Sends the buffered writes in one `Txn` with the compares and the marker's guard.
    fn send(&mut self, marker: &mut CommitMarker) -> Committed {
        let (guard, mark) = marker.guard();
        let mut compares = self.compares();
        compares.push(guard);
        let mut ops: Vec<TxnOp> = self
            .writes
            .iter()
            .map(|(key, b)| match &b.value {
                Some(value) => TxnOp::put(key.as_str(), value.clone(), None),
                None => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        ops.extend(
            self.touched
                .iter()
                .filter(|key| !self.writes.contains_key(*key))
                .map(|key| TxnOp::put(key.as_str(), Vec::new(), None)),
        );
        ops.push(mark);
        let txn = Txn::new().when(compares).and_then(ops);
        let mut kv = self.kv.clone();
        let answer = self
            .runtime
            .block_on(async move { tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await });
        match answer {
            Ok(Ok(response)) => {
                let succeeded = response.succeeded();
                let revision = response.header().map_or(0, |h| h.revision());
                marker.answered(succeeded, revision);
                if succeeded {
                    Committed::Yes(Some(revision))
                } else {
                    Committed::Conflict
                }
            }
            Ok(Err(e)) => Committed::Lost(format!("etcd transaction failed: {e}")),
            Err(_) => Committed::Lost(format!(
                "etcd did not answer the transaction within {REQUEST_TIMEOUT:?}"
            )),
        }
    }
}

/// What became of a commit.
pub(super) enum Committed {
    /// Written at this etcd revision (`None`: nothing to write).
    Yes(Option<i64>),
    /// A compare failed: nothing was written; run again.
    Conflict,
    /// No answer: the `Txn` may or may not have committed (resolve it through the marker).
    Lost(String),
}

impl ReadTx for EtcdTx<'_> {
    fn token(&mut self, key_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let key = self.key(&["token", key_id]);
        self.get_json("tokens", &key)
    }

    fn tokens(&mut self, account_id: &str, kind: TokenKind) -> Result<Vec<TokenRecord>, StoreError> {
        let ids = self.index("token-acct", &token_scope(account_id, kind))?;
        let mut tokens = Vec::with_capacity(ids.len());
        for id in ids {
            tokens.extend(self.token(&id)?);
        }
        Ok(tokens)
    }

    fn account(&mut self, id: &str) -> Result<Option<Account>, StoreError> {
        let key = self.key(&["account", id]);
        self.get_json("accounts", &key)
    }

    fn account_by_name(&mut self, name: &str) -> Result<Option<Account>, StoreError> {
        let key = self.key(&["account-name", name]);
        match self.get(&key)? {
            Some(id) => {
                let id = text("accounts", id)?;
                self.account(&id)
            }
            None => Ok(None),
        }
    }

    fn network(&mut self, id: &str) -> Result<Option<Network>, StoreError> {
        self.by_id("networks", "network", id)
    }

    fn peer(&mut self, id: &str) -> Result<Option<Peer>, StoreError> {
        self.by_id("peers", "peer", id)
    }

    fn peer_by_key(&mut self, network_id: &str, public_key: &str) -> Result<Option<Peer>, StoreError> {
        let key = self.key(&["peer-key", network_id, public_key]);
        match self.get(&key)? {
            Some(id) => self.peer(&text("peers", id)?),
            None => Ok(None),
        }
    }

    fn peer_by_name(&mut self, network_id: &str, name: &str) -> Result<Option<Peer>, StoreError> {
        let key = self.key(&["peer-name", network_id, name]);
        match self.get(&key)? {
            Some(id) => self.peer(&text("peers", id)?),
            None => Ok(None),
        }
    }

    fn peers(&mut self, network_id: &str) -> Result<Vec<Peer>, StoreError> {
        self.scoped("peers", "peer", network_id)
    }

    fn cluster(&mut self, id: &str) -> Result<Option<Cluster>, StoreError> {
        self.by_id("clusters", "cluster", id)
    }

    fn latest_active_cluster(&mut self, network_id: &str) -> Result<Option<Cluster>, StoreError> {
        Ok(self
            .clusters(network_id)?
            .into_iter()
            .rev()
            .find(|c| c.state == crate::model::ClusterState::Active))
    }

    fn membership(&mut self, peer_id: &str) -> Result<Option<ClusterMember>, StoreError> {
        self.by_id("cluster_members", "member", peer_id)
    }

    fn vip(&mut self, id: &str) -> Result<Option<Vip>, StoreError> {
        self.by_id("vips", "vip", id)
    }

    fn networks(&mut self, account_id: &str) -> Result<Vec<Network>, StoreError> {
        self.scoped("networks", "network", account_id)
    }

    fn vips(&mut self, network_id: &str) -> Result<Vec<Vip>, StoreError> {
        self.scoped("vips", "vip", network_id)
    }

    fn clusters(&mut self, network_id: &str) -> Result<Vec<Cluster>, StoreError> {
        let mut clusters: Vec<Cluster> = self.scoped("clusters", "cluster", network_id)?;
        // Stable: equal creation times keep the creation order.
        clusters.sort_by_key(|c| c.created_at_ms);
        Ok(clusters)
    }

    fn cluster_members(&mut self, cluster_id: &str) -> Result<Vec<ClusterMember>, StoreError> {
        let mut members: Vec<ClusterMember> = self.scoped("cluster_members", "member", cluster_id)?;
        members.sort_by_key(|m| m.joined_at_ms);
        Ok(members)
    }

    fn silent_peers(&mut self, before_ms: u64) -> Result<Vec<Peer>, StoreError> {
        let mut peers = self.all_peers()?;
        peers.retain(|p| p.last_seen_ms < before_ms);
        Ok(peers)
    }

    fn all_peers(&mut self) -> Result<Vec<Peer>, StoreError> {
        self.everywhere("peers", "peer")
    }

    fn all_clusters(&mut self) -> Result<Vec<Cluster>, StoreError> {
        let mut clusters: Vec<Cluster> = self.everywhere("clusters", "cluster")?;
        clusters.sort_by_key(|c| c.created_at_ms);
        Ok(clusters)
    }

    fn held_prefixes(&mut self, network_id: &str) -> Result<Vec<IpNet>, StoreError> {
        Ok(self.peers(network_id)?.iter().flat_map(Peer::held).collect())
    }

    fn prefix_holds(&mut self, network_id: &str) -> Result<Vec<PrefixHold>, StoreError> {
        self.scoped("prefix_holds", "hold", network_id)
    }

    fn floating(&mut self, id: &str) -> Result<Option<Floating>, StoreError> {
        self.by_id("floating", "float", id)
    }

    fn floatings(&mut self, network_id: &str) -> Result<Vec<Floating>, StoreError> {
        self.scoped("floating", "float", network_id)
    }
}

impl WriteRecords for EtcdTx<'_> {
    fn put_account(&mut self, account: &Account) -> Result<(), StoreError> {
        let key = self.key(&["account", &account.id]);
        self.put_json(key, account)?;
        // The first account of a name keeps the name's lookup (accounts are never renamed or removed).
        let name = self.key(&["account-name", &account.name]);
        if self.get(&name)?.is_none() {
            self.put(name, account.id.as_bytes().to_vec());
        }
        Ok(())
    }

    fn put_network(&mut self, network: &Network) -> Result<(), StoreError> {
        self.put_scoped("network", &network.account_id, &network.id, network)
    }

    fn put_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        let key = self.key(&["token", &token.key_id]);
        if self.get(&key)?.is_some() {
            return Err(StoreError::Constraint(format!(
                "token key id {:?} is taken",
                token.key_id
            )));
        }
        self.put_json(key, token)?;
        self.put_index("token-acct", &token_scope(&token.account_id, token.kind), &token.key_id);
        if let Some(peer_id) = &token.peer_id {
            self.put_index("token-peer", peer_id, &token.key_id);
        }
        Ok(())
    }

    fn update_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        let Some(mut stored) = self.token(&token.key_id)? else {
            return Err(corrupt("tokens", format!("update of missing token {:?}", token.key_id)));
        };
        stored.limits.uses = token.limits.uses;
        stored.limits.revoked_at_ms = token.limits.revoked_at_ms;
        let key = self.key(&["token", &token.key_id]);
        self.put_json(key, &stored)
    }

    fn put_peer(&mut self, peer: &Peer) -> Result<(), StoreError> {
        let old = self.peer(&peer.id)?;
        let new_values = Self::unique_values(peer);
        let old_values = old.as_ref().map(|o| (o.network_id.clone(), Self::unique_values(o)));
        for (what, value) in &new_values {
            // An index the stored record already holds is already claimed.
            let unchanged = old_values.as_ref().is_some_and(|(network, values)| {
                *network == peer.network_id && values.contains(&(what, value.clone()))
            });
            if !unchanged {
                self.claim(what, &peer.network_id, value, &peer.id)?;
            }
        }
        if let Some((network, values)) = old_values {
            for (what, value) in values {
                if network != peer.network_id || !new_values.contains(&(what, value.clone())) {
                    self.release(what, &network, &value, &peer.id)?;
                }
            }
        }
        self.put_scoped("peer", &peer.network_id, &peer.id, peer)
    }

    fn put_cluster(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        self.put_scoped("cluster", &cluster.network_id, &cluster.id, cluster)
    }

    fn put_member(&mut self, member: &ClusterMember) -> Result<(), StoreError> {
        self.put_scoped("member", &member.cluster_id, &member.peer_id, member)
    }

    fn put_vip(&mut self, vip: &Vip) -> Result<(), StoreError> {
        self.put_scoped("vip", &vip.network_id, &vip.id, vip)
    }

    fn delete_peer(&mut self, peer_id: &str) -> Result<(), StoreError> {
        let Some(peer) = self.peer(peer_id)? else {
            return Ok(());
        };
        let named = self.vips(&peer.network_id)?.into_iter().find(|v| {
            v.candidates.iter().any(|c| c == peer_id)
                || v.holder.as_deref() == Some(peer_id)
                || v.move_to.as_deref() == Some(peer_id)
        });
        if let Some(vip) = named {
            return Err(StoreError::Constraint(format!(
                "peer {peer_id} is still named by VIP {}",
                vip.id
            )));
        }
        for key_id in self.index("token-peer", peer_id)? {
            if let Some(token) = self.token(&key_id)? {
                let listing = self.key(&["token-acct", &token_scope(&token.account_id, token.kind), &key_id]);
                self.delete(listing);
                let version = self.key(&["ver", "token-acct", &token_scope(&token.account_id, token.kind)]);
                self.touch(version);
            }
            let record = self.key(&["token", &key_id]);
            self.delete(record);
            self.delete_scoped("token-peer", peer_id, &key_id);
        }
        if let Some(member) = self.membership(peer_id)? {
            self.delete_scoped("member", &member.cluster_id, peer_id);
            let pointer = self.key(&["member-id", peer_id]);
            self.delete(pointer);
        }
        for (what, value) in Self::unique_values(&peer) {
            self.release(what, &peer.network_id, &value, peer_id)?;
        }
        self.delete_scoped("peer", &peer.network_id, peer_id);
        let pointer = self.key(&["peer-id", peer_id]);
        self.delete(pointer);
        Ok(())
    }

    fn put_floating(&mut self, floating: &Floating) -> Result<(), StoreError> {
        self.put_scoped("float", &floating.network_id, &floating.id, floating)
    }

    fn delete_floating(&mut self, id: &str) -> Result<(), StoreError> {
        if let Some(owner) = self.owner("float", id)? {
            self.delete_scoped("float", &owner, id);
            let pointer = self.key(&["float-id", id]);
            self.delete(pointer);
        }
        Ok(())
    }

    fn put_prefix_hold(&mut self, hold: &PrefixHold) -> Result<(), StoreError> {
        let key = self.key(&["hold", &hold.network_id, &hold.prefix.to_string()]);
        self.put_json(key, hold)?;
        let version = self.key(&["ver", "hold", &hold.network_id]);
        self.touch(version);
        Ok(())
    }

    fn delete_prefix_hold(&mut self, network_id: &str, prefix: IpNet) -> Result<(), StoreError> {
        self.delete_scoped("hold", network_id, &prefix.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::hints::Hint;
    use super::{ReadCache, CACHE_KEYS};

    /// A full cache forgets its oldest keys, one per new key, and never holds more than [`CACHE_KEYS`];
    /// a key forgotten and remembered again comes back.
    #[test]
    fn a_full_cache_forgets_its_oldest_keys() {
        let mut cache = ReadCache::default();
        for i in 0..CACHE_KEYS + 10 {
            cache.remember(&format!("k{i}"), None, 1);
        }
        assert_eq!(cache.keys.len(), CACHE_KEYS);
        assert!(
            (0..10).all(|i| !cache.keys.contains_key(&format!("k{i}"))),
            "the oldest went first"
        );
        assert!(cache.keys.contains_key("k10") && cache.keys.contains_key(&format!("k{}", CACHE_KEYS + 9)));
        for round in 0..3 * CACHE_KEYS {
            let key = format!("k{}", 10 + round % 100);
            cache.forget(&key, "");
            cache.remember(&key, None, 2);
        }
        assert_eq!(cache.keys.len(), CACHE_KEYS);
        assert!(cache.order.len() <= 2 * CACHE_KEYS + 1, "forgotten keys do not pile up");
        assert!(cache.keys.contains_key("k10"));
    }

    /// A hint newer than what the cache holds replaces it (a deletion as absent, `mod_revision` 0); an
    /// older or equal one is ignored.
    #[test]
    fn only_newer_hints_are_taken() {
        let hint = |key: &str, value: Option<&str>, revision| Hint {
            key: key.to_owned(),
            value: value.map(|v| v.as_bytes().to_vec()),
            revision,
        };
        let held = |cache: &ReadCache, key: &str| {
            cache.keys.get(key).map(|c| {
                (
                    c.value.clone().map(|v| String::from_utf8(v).expect("utf-8")),
                    c.mod_revision,
                )
            })
        };
        let mut cache = ReadCache::default();
        cache.remember("a", Some(b"committed".to_vec()), 10);
        cache.hint(hint("a", Some("older"), 9));
        cache.hint(hint("a", Some("same"), 10));
        assert_eq!(held(&cache, "a"), Some((Some("committed".to_owned()), 10)));
        cache.hint(hint("a", Some("newer"), 11));
        assert_eq!(held(&cache, "a"), Some((Some("newer".to_owned()), 11)));
        cache.hint(hint("a", None, 12));
        assert_eq!(held(&cache, "a"), Some((None, 0)));
        cache.hint(hint("b", Some("new key"), 13));
        assert_eq!(held(&cache, "b"), Some((Some("new key".to_owned()), 13)));
    }
}
