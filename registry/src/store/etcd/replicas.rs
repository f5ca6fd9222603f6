//! What the replicas sharing one key prefix coordinate through etcd besides the records: change
//! notification across replicas ([`Replicas::follow`]) and the election of the one replica that runs the
//! background work ([`Replicas::elect`]).
//!
//! **Following.** One etcd watch per registry process on `<prefix>network/`: every committed write of a
//! network record, whichever replica made it, carries the network's new revision, which is handed to the
//! caller (the server's watchers) in etcd's revision order. The watch starts after a snapshot (one read of
//! every network record, each announced) and resumes from the revision after the last event seen when its
//! stream breaks; when etcd has compacted that revision away, the follower takes a new snapshot and resumes
//! after it. Announcing a revision wakes only the watchers waiting on an older one, so a snapshot wakes
//! exactly those that missed something, and a watcher never goes back to an older revision.
//!
//! **Electing.** `<prefix>leader` is created, if absent, in one `Txn` with a lease of [`LEADER_TTL`] and
//! holds the replica's id. Its holder leads while it keeps the lease alive (every third of the TTL) and the
//! key is still its own; it stops leading at once when a renewal fails or answers the lease gone, when the
//! key names another lease, or when the TTL it was last granted runs out before a renewal answered
//! (minus a quarter of it, so it stops before etcd lets another replica in). Others try to create the key every
//! [`CAMPAIGN_PERIOD`]: when the leader dies its lease expires within the TTL and the next try wins.
//! A replica that stops (drops its [`Election`]) revokes its lease, so another takes over at its next try.
//!
//! Leadership is an efficiency, not a safety, device: the work it guards (the reaper's pass) is an
//! optimistic transaction over the current records, so two replicas that both believe they lead for a
//! moment (a paused process that has not yet noticed its loss) at worst run the same pass twice, and the
//! second finds nothing left to do.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{backoff, ClientRuntime, REQUEST_TIMEOUT};

/// The lease of the leader key: a dead leader's work moves to another replica within this.
pub const LEADER_TTL: Duration = Duration::from_secs(5);

/// How often a replica that does not lead tries to.
pub const CAMPAIGN_PERIOD: Duration = Duration::from_secs(1);

/// The etcd side of several replicas on one key prefix, from [`super::EtcdStore::replicas`].
#[derive(Clone)]
pub struct Replicas {
    pub(super) client: Client,
    pub(super) prefix: String,
    /// This replica's id, as the leader key shows it.
    pub(super) id: String,
    /// Keeps the client's runtime (and the tasks spawned on it) alive as long as this lives.
    pub(super) runtime: Arc<ClientRuntime>,
}

/// A task on the client's runtime, aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running follower ([`Replicas::follow`]); dropping it stops it.
pub struct Follower {
    _task: Task,
}

/// The running election ([`Replicas::elect`]); dropping it stops campaigning and gives leadership up.
pub struct Election {
    leading: watch::Receiver<bool>,
    task: Option<Task>,
    resign: Option<(Client, Arc<ClientRuntime>, watch::Receiver<i64>)>,
}

impl Election {
    /// `true` while this replica leads; every change is sent.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task = None;
        // Revoke the lease of a leadership held now, so another replica takes over at its next try
        // instead of after the TTL (best effort: without an answer the lease simply expires).
        // A thread of its own: this may run inside a runtime, where `block_on` is not allowed.
        if let Some((client, runtime, lease)) = self.resign.take() {
            let lease = *lease.borrow();
            if lease != 0 {
                let _ = std::thread::Builder::new()
                    .name("registry-etcd-resign".into())
                    .spawn(move || {
                        let mut leases = client.lease_client();
                        let revoke = async move { tokio::time::timeout(REQUEST_TIMEOUT, leases.revoke(lease)).await };
                        let _ = runtime.handle().block_on(revoke);
                    });
            }
        }
    }
}

/// The part of a network record the follower reads.
#[derive(Deserialize)]
struct NetworkRevision {
    id: String,
    revision: u64,
}

/// How a watch ended.
enum Ended {
    /// The revision to resume from was compacted: take a snapshot.
    Compacted(i64),
    /// The stream broke or etcd refused it: resume from the same revision after a pause.
    Failed(String),
}

impl Replicas {
    /// This replica's id (random per process), as the leader key shows it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn networks(&self) -> String {
        format!("{}network/", self.prefix)
    }

    fn leader_key(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// Calls `announce(network id, revision)` for every network revision committed by any replica, from
    /// now on, in commit order (see the module's documentation); also the current revision of every network
    /// when it starts and after a compaction made it lose track.
    pub fn follow(&self, announce: impl Fn(&str, u64) + Send + Sync + 'static) -> Follower {
        self.spawn_follower(None, announce)
    }

    /// [`Replicas::follow`] resuming at etcd revision `start` instead of from a snapshot: every network
    /// revision committed from `start` on is announced, or, if etcd compacted `start` away, the current
    /// revision of every network (then the changes after it).
    pub fn follow_from(&self, start: i64, announce: impl Fn(&str, u64) + Send + Sync + 'static) -> Follower {
        self.spawn_follower(Some(start), announce)
    }

    fn spawn_follower(&self, start: Option<i64>, announce: impl Fn(&str, u64) + Send + Sync + 'static) -> Follower {
        let replicas = self.clone();
        let task = self
            .runtime
            .handle()
            .spawn(async move { replicas.follow_loop(start, &announce).await });
        Follower { _task: Task(task) }
    }

    async fn follow_loop(&self, start: Option<i64>, announce: &(impl Fn(&str, u64) + Send + Sync)) {
        let mut from = start;
        let mut failures = 0u32;
        loop {
            let start = match from {
                Some(start) => start,
                None => match self.snapshot(announce).await {
                    Ok(revision) => revision + 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the networks from etcd; retrying");
                        failures += 1;
                        tokio::time::sleep(pause(failures)).await;
                        continue;
                    }
                },
            };
            from = Some(start);
            match self.watch_from(start, announce, &mut from).await {
                Ended::Compacted(compacted) => {
                    tracing::info!(
                        resume = start,
                        compacted,
                        "etcd compacted the revisions the watch would resume from: reading every network again"
                    );
                    from = None;
                }
                Ended::Failed(e) => {
                    tracing::warn!(error = %e, resume = ?from, "the etcd watch of network changes broke; resuming");
                    failures += 1;
                    tokio::time::sleep(pause(failures)).await;
                    continue;
                }
            }
            failures = 0;
        }
    }

    /// Announces the current revision of every network; answers the revision it read at.
    async fn snapshot(&self, announce: &(impl Fn(&str, u64) + Send + Sync)) -> Result<i64, String> {
        let mut kv = self.client.kv_client();
        let read = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(self.networks(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
        for kv in read.kvs() {
            self.announce_record(kv.key(), kv.value(), announce);
        }
        read.header()
            .map(|h| h.revision())
            .ok_or_else(|| "etcd answered without a revision".into())
    }

    fn announce_record(&self, key: &[u8], value: &[u8], announce: &(impl Fn(&str, u64) + Send + Sync)) {
        match serde_json::from_slice::<NetworkRevision>(value) {
            Ok(network) => announce(&network.id, network.revision),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(key),
                error = %e,
                "a network record in etcd does not decode; its watchers are not woken"
            ),
        }
    }

    /// Watches network records from revision `start`, announcing each put; keeps `from` at the revision
    /// after the last event handled.
    async fn watch_from(
        &self,
        start: i64,
        announce: &(impl Fn(&str, u64) + Send + Sync),
        from: &mut Option<i64>,
    ) -> Ended {
        let mut watches = self.client.watch_client();
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, watches.watch(self.networks(), Some(options))).await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Ended::Failed(e.to_string()),
            Err(_) => return Ended::Failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Failed("etcd closed the watch stream".into()),
                Err(e) => return Ended::Failed(e.to_string()),
            };
            if response.compact_revision() > 0 {
                return Ended::Compacted(response.compact_revision());
            }
            if response.canceled() {
                return Ended::Failed(format!("etcd cancelled the watch: {}", response.cancel_reason()));
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() == EventType::Put {
                    self.announce_record(kv.key(), kv.value(), announce);
                }
                *from = Some(kv.mod_revision() + 1);
            }
        }
    }

    /// Campaigns for the leader key until dropped (see the module's documentation). Gains and losses are
    /// logged with this replica's id.
    pub fn elect(&self) -> Election {
        self.elect_with(LEADER_TTL)
    }

    /// [`Replicas::elect`] with a lease of `ttl` (etcd raises a TTL below its minimum, about 1.5 s).
    pub fn elect_with(&self, ttl: Duration) -> Election {
        let (leading_tx, leading) = watch::channel(false);
        let (lease_tx, lease) = watch::channel(0i64);
        let replicas = self.clone();
        let task = self
            .runtime
            .handle()
            .spawn(async move { replicas.campaign(ttl, &leading_tx, &lease_tx).await });
        Election {
            leading,
            task: Some(Task(task)),
            resign: Some((self.client.clone(), self.runtime.clone(), lease)),
        }
    }

    async fn campaign(&self, ttl: Duration, leading: &watch::Sender<bool>, lease: &watch::Sender<i64>) {
        let mut failures = 0u32;
        loop {
            match self.try_lead(ttl).await {
                Ok(Some((id, granted))) => {
                    failures = 0;
                    lease.send_replace(id);
                    leading.send_replace(true);
                    tracing::info!(replica = %self.id, lease = id, "this registry replica leads: it runs the reaper");
                    let why = self.hold(id, granted).await;
                    leading.send_replace(false);
                    lease.send_replace(0);
                    tracing::warn!(replica = %self.id, reason = %why, "this registry replica no longer leads");
                    let mut leases = self.client.lease_client();
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, leases.revoke(id)).await;
                }
                Ok(None) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cannot campaign for leadership in etcd; retrying");
                }
            }
            tokio::time::sleep(CAMPAIGN_PERIOD.max(pause(failures))).await;
        }
    }

    /// Takes the leader key if it is free: the lease id and its granted TTL, or `None` if another holds it.
    async fn try_lead(&self, ttl: Duration) -> Result<Option<(i64, Duration)>, String> {
        let timed = |what: &str| format!("{what}: no answer within {REQUEST_TIMEOUT:?}");
        let mut kv = self.client.kv_client();
        let key = self.leader_key();
        let held = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key.as_str(), None))
            .await
            .map_err(|_| timed("reading the leader key"))?
            .map_err(|e| e.to_string())?;
        if !held.kvs().is_empty() {
            return Ok(None);
        }
        let mut leases = self.client.lease_client();
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let grant = tokio::time::timeout(REQUEST_TIMEOUT, leases.grant(seconds, None))
            .await
            .map_err(|_| timed("granting a lease"))?
            .map_err(|e| e.to_string())?;
        let (id, granted) = (grant.id(), Duration::from_secs(grant.ttl().max(0).unsigned_abs()));
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.id.as_str(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let claimed = tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await;
        match claimed {
            Ok(Ok(answer)) if answer.succeeded() => Ok(Some((id, granted))),
            other => {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, leases.revoke(id)).await;
                match other {
                    Ok(Ok(_)) => Ok(None),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(timed("claiming the leader key")),
                }
            }
        }
    }

    /// Keeps lease `id` alive while the leader key is ours; answers why leadership ended.
    async fn hold(&self, id: i64, granted: Duration) -> String {
        let lost_in_time = || "no lease renewal answered in time: another replica may take over".to_string();
        let started = Instant::now();
        let mut valid_until = started + granted;
        let renew_every = granted / 3;
        // Leadership ends this long before the lease could expire without a renewal.
        let margin = granted / 4;
        let key = self.leader_key();
        let mut kv = self.client.kv_client();
        let mut leases = self.client.lease_client();
        let mut stream = None;
        let mut next = started + renew_every;
        loop {
            let stop_at = valid_until.checked_sub(margin).unwrap_or(valid_until);
            tokio::select! {
                () = tokio::time::sleep_until(stop_at) => return lost_in_time(),
                () = tokio::time::sleep_until(next) => {}
            }
            let sent = Instant::now();
            next = sent + renew_every;
            let renewal = async {
                if stream.is_none() {
                    stream = Some(leases.keep_alive(id).await.map_err(|e| e.to_string())?);
                }
                let Some((keeper, answers)) = stream.as_mut() else {
                    return Err("no keep-alive stream".to_string());
                };
                keeper.keep_alive().await.map_err(|e| e.to_string())?;
                let answer = answers
                    .message()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "etcd closed the keep-alive stream".to_string())?;
                let owner = kv.get(key.as_str(), None).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((answer.ttl(), owner.kvs().first().map(|kv| kv.lease())))
            };
            match tokio::time::timeout_at(stop_at.max(sent), renewal).await {
                Ok(Ok((ttl, owner))) => {
                    if ttl <= 0 {
                        return "the lease expired".into();
                    }
                    if owner != Some(id) {
                        return "the leader key is no longer this replica's".into();
                    }
                    valid_until = sent + Duration::from_secs(ttl.unsigned_abs());
                }
                // A failed renewal: a new stream, soon; the deadline above ends leadership if none answers.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a lease renewal failed");
                    stream = None;
                    next = Instant::now() + backoff(8);
                }
                Err(_) => return lost_in_time(),
            }
        }
    }
}

/// The pause after `failures` failed attempts in a row: growing, jittered, at most about 5 s.
pub(super) fn pause(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(100u64 << failures.min(5)) + backoff(6)
}
