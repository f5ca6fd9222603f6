//! Whether a `Txn` whose answer was lost committed: each writer's commit marker, and the resolution of an
//! ambiguous commit.
//!
//! An etcd call that fails with a transport error or times out may have been applied or not, and may even
//! be applied later (it can still sit in the leader's proposal queue). The store must not answer either way
//! on a guess: "failed" for writes that landed would make a client retry what is done, "done" for writes that
//! did not would lose an acknowledged request.
//!
//! So every replica's writer owns one key, `<prefix>writer/<replica id>`, written by nobody else: each of its
//! `Txn`s also compares that key's `mod_revision` with the one its last commit left and puts the `Txn`'s
//! sequence number there ([`CommitMarker::guard`]). When the answer is lost, [`CommitMarker::resolve`] sends
//! one more `Txn`: if the key still has the old `mod_revision`, it puts a fence value there, and then the lost
//! `Txn` can never apply (its compare now fails); otherwise the key changed, which only the lost `Txn` can
//! have done, and its sequence number is there to prove it. Either way the answer is exact: landed (answer
//! success) or fenced (answer the failure: nothing of it is or will be written).
//!
//! A replica's marker key stays behind when it is killed (a few bytes per process start); a stopped store
//! deletes its own.

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp, TxnOpResponse};

/// One writer's marker key and what its last commit left there.
#[derive(Debug)]
pub struct CommitMarker {
    key: String,
    /// The key's `mod_revision` after this writer's last known commit (or fence).
    last: i64,
    /// The sequence number of the last guarded `Txn`.
    seq: u64,
    /// A guarded `Txn` whose outcome is not known yet.
    pending: Option<u64>,
}

/// What happened to a `Txn` whose answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It committed: its writes are there.
    Landed,
    /// It did not, and now never will: nothing of it is written.
    Fenced,
}

impl CommitMarker {
    /// Writes the marker key of replica `replica` under `prefix` and starts from it.
    pub async fn claim(kv: &mut KvClient, prefix: &str, replica: &str) -> Result<Self, etcd_client::Error> {
        let key = format!("{prefix}writer/{replica}");
        let put = kv.put(key.as_str(), "0", None).await?;
        let last = put.header().map_or(0, |h| h.revision());
        Ok(CommitMarker {
            key,
            last,
            seq: 0,
            pending: None,
        })
    }

    /// The marker key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The compare and the write to add to the next `Txn` (which is then pending until
    /// [`CommitMarker::answered`] or [`CommitMarker::resolve`]).
    pub fn guard(&mut self) -> (Compare, TxnOp) {
        self.seq += 1;
        self.pending = Some(self.seq);
        (
            Compare::mod_revision(self.key.as_str(), CompareOp::Equal, self.last),
            TxnOp::put(self.key.as_str(), self.seq.to_string(), None),
        )
    }

    /// The pending `Txn` answered: `succeeded` at etcd revision `revision` (the marker key's new
    /// `mod_revision`), or not (a compare failed: nothing was written).
    pub fn answered(&mut self, succeeded: bool, revision: i64) {
        if succeeded {
            self.last = revision;
        }
        self.pending = None;
    }

    /// Whether a guarded `Txn`'s outcome is still unknown (the next one must resolve it first).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Decides the pending `Txn`'s outcome, fencing it off if it has not landed. An error leaves it pending
    /// (call again); `Ok(Fenced)` also when nothing was pending.
    pub async fn resolve(&mut self, kv: &mut KvClient) -> Result<Outcome, String> {
        let Some(seq) = self.pending else {
            return Ok(Outcome::Fenced);
        };
        let fence = Txn::new()
            .when([Compare::mod_revision(self.key.as_str(), CompareOp::Equal, self.last)])
            .and_then([TxnOp::put(self.key.as_str(), format!("fence-{seq}"), None)])
            .or_else([TxnOp::get(self.key.as_str(), None)]);
        let answer = kv.txn(fence).await.map_err(|e| e.to_string())?;
        if answer.succeeded() {
            self.last = answer.header().map_or(self.last, |h| h.revision());
            self.pending = None;
            return Ok(Outcome::Fenced);
        }
        let found = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())),
            _ => None,
        });
        match found {
            Some((value, revision)) if value == seq.to_string().as_bytes() => {
                self.last = revision;
                self.pending = None;
                Ok(Outcome::Landed)
            }
            Some((value, _)) => Err(format!(
                "the writer key {} holds {:?}, written by something else than this writer: two registries \
                 share a replica id, or someone edits the registry's keys",
                self.key,
                String::from_utf8_lossy(&value)
            )),
            None => Err(format!(
                "the writer key {} is gone: someone deleted the registry's keys",
                self.key
            )),
        }
    }
}
