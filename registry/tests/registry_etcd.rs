//! The etcd backend's own behaviour, beyond the API suite it also passes (`SDWAN_REGISTRY_TEST_STORE=etcd`):
//! conflicting writers through two stores (two replicas) on one key prefix, a failed request undoing only its
//! own writes, lists whose change makes the lister run again, the refusals at open (unreachable etcd, a
//! newer or foreign key prefix), a writer's cached read of a key another replica changed, a key presumed
//! absent that another replica wrote, a writer learning from the watch what another replica wrote, a
//! frozen etcd member kept out of the client's rotation, and the exact
//! resolution of a transaction whose answer was lost.

mod registry_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Txn, TxnOp};
use registry_support::etcd::{self, Etcd};
use sdwan_registry::model::{Account, Lifecycle, Peer};
use sdwan_registry::store::etcd::{CommitMarker, EtcdOptions, EtcdStore, Outcome, ATTEMPTS};
use sdwan_registry::store::{Store, StoreConfig, StoreError};

fn options(etcd: &Etcd, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        key_prefix: prefix.to_owned(),
        tls: None,
    }
}

fn account(id: &str, name: &str) -> Account {
    Account {
        id: id.to_owned(),
        name: name.to_owned(),
        created_at_ms: 1,
    }
}

/// Two replicas on `prefix`: a without hints (its writer's cache learns only from its own reads and
/// commits, so it goes stale when b writes, which the conflict tests need) and b.
fn replicas_a_without_hints(etcd: &Etcd, prefix: &str) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let a = EtcdStore::open_without_hints(&options(etcd, prefix)).expect("replica a");
    let b = EtcdStore::open(&options(etcd, prefix)).expect("replica b");
    (Arc::new(a), Arc::new(b))
}

/// Writes `key = value` into etcd directly (what another program, or a newer registry, left there).
fn put_raw(etcd: &Etcd, key: &str, value: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
            .await
            .expect("connect");
        client.put(key, value, None).await.expect("put");
    });
}

/// Two replicas read the same account at the same revision and both rename it: one commit fails its
/// compare, that closure runs again on the other's result, and both requests succeed exactly once.
#[test]
fn concurrent_writers_of_one_record_both_succeed_once_after_a_retry() {
    if !etcd::installed_or_skip("concurrent_writers") {
        return;
    }
    let etcd = etcd::shared();
    let a: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, "/conflict/")).expect("replica a"));
    let b: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, "/conflict/")).expect("replica b"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(a.write(|tx| tx.put_account(&account("acc", ""))))
        .expect("seed");
    let runs = Arc::new(AtomicUsize::new(0));
    // Each closure's first run waits until the other one has read: both read the same revision.
    let (read_a, seen_a) = mpsc::channel::<()>();
    let (read_b, seen_b) = mpsc::channel::<()>();
    let rename = |store: &Arc<dyn Store>, mark: char, told: mpsc::Sender<()>, wait: mpsc::Receiver<()>| {
        let runs = runs.clone();
        let rendezvous = Mutex::new(Some((told, wait)));
        store.write(move |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            let mut account = tx.account("acc")?.expect("seeded");
            if let Some((told, wait)) = rendezvous.lock().expect("lock").take() {
                told.send(()).expect("the other writer");
                wait.recv_timeout(Duration::from_secs(10))
                    .expect("the other writer read");
            }
            account.name.push(mark);
            tx.put_account(&account)?;
            Ok::<_, StoreError>(account.name)
        })
    };
    let first = rename(&a, 'a', read_a, seen_b);
    let second = rename(&b, 'b', read_b, seen_a);
    let (first, second) = runtime.block_on(async { tokio::join!(first, second) });
    let (first, second) = (first.expect("a's write"), second.expect("b's write"));
    let stored = runtime
        .block_on(a.read(|tx| tx.account("acc")))
        .expect("read")
        .expect("account");
    assert!(
        stored.name == "ab" || stored.name == "ba",
        "each rename applied once: {:?}",
        stored.name
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3, "one closure ran twice");
    // The one that ran again saw the other's rename and answered what it committed.
    let mut answers = [first, second];
    answers.sort();
    assert_eq!(answers.iter().map(String::len).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(answers[1], stored.name);
}

/// Requests committed together: the one that fails leaves nothing and runs none of its after-commit
/// effects, the others keep their writes and run theirs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_undoes_only_its_own_writes() {
    if !etcd::installed_or_skip("a_failed_request") {
        return;
    }
    let etcd = etcd::shared();
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, "/undo/")).expect("store"));
    let ran: Arc<Vec<AtomicUsize>> = Arc::new((0..20).map(|_| AtomicUsize::new(0)).collect());
    let writes = (0..20).map(|i| {
        let ran = ran.clone();
        store.write(move |tx| {
            let counted = ran.clone();
            tx.after_commit(Box::new(move || {
                counted[i].fetch_add(1, Ordering::SeqCst);
            }));
            tx.put_account(&account(&format!("acc{i}"), &format!("name{i}")))?;
            if i % 2 == 1 {
                return Err(StoreError::Corrupt {
                    table: "test",
                    message: "odd requests fail".into(),
                });
            }
            Ok(())
        })
    });
    let answers = futures::future::join_all(writes).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.is_ok(), i % 2 == 0, "request {i}: {answer:?}");
        // What a request deferred runs once if it committed, never if it failed (its writes undone).
        let effects = ran[i].load(Ordering::SeqCst);
        assert_eq!(effects, usize::from(i % 2 == 0), "request {i}'s after-commit effects");
    }
    let stored = store
        .read(|tx| {
            (0..20)
                .map(|i| {
                    Ok((
                        tx.account(&format!("acc{i}"))?.is_some(),
                        tx.account_by_name(&format!("name{i}"))?.is_some(),
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .expect("read");
    for (i, (by_id, by_name)) in stored.into_iter().enumerate() {
        assert_eq!((by_id, by_name), (i % 2 == 0, i % 2 == 0), "account {i}");
    }
}

/// The start-up path (`store::open`, inside the server's runtime) refuses an etcd it cannot reach, naming
/// the endpoint.
#[tokio::test]
async fn an_unreachable_etcd_is_refused_at_open() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = StoreConfig::Etcd(EtcdOptions {
        endpoints: vec![endpoint.clone()],
        key_prefix: "/sdwan-registry/".into(),
        tls: None,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    match sdwan_registry::store::open(&config, dir.path()) {
        Err(e @ StoreError::Unreachable { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&endpoint), "{message}");
        }
        Err(e) => panic!("not refused as unreachable: {e}"),
        Ok(_) => panic!("opened a store on a closed port"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused within the connect timeout"
    );
}

/// A key prefix written by a newer registry, or holding something else, is refused; an empty one is
/// claimed and opens again.
#[test]
fn a_newer_or_foreign_key_prefix_is_refused_at_open() {
    if !etcd::installed_or_skip("a_newer_or_foreign_key_prefix") {
        return;
    }
    let etcd = etcd::shared();
    put_raw(&etcd, "/newer/schema", "99");
    match EtcdStore::open(&options(&etcd, "/newer/")) {
        Err(StoreError::SchemaTooNew { found: 99, known }) => assert_eq!(known, 1),
        Err(e) => panic!("not refused as newer: {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
    put_raw(&etcd, "/foreign/app/config", "{}");
    match EtcdStore::open(&options(&etcd, "/foreign/")) {
        Err(e @ StoreError::Incompatible { .. }) => {
            assert!(e.to_string().contains("/foreign/app/config"), "{e}");
        }
        Err(e) => panic!("not refused as foreign: {e}"),
        Ok(_) => panic!("opened a foreign prefix"),
    }
    drop(EtcdStore::open(&options(&etcd, "/fresh/")).expect("an empty prefix is claimed"));
    drop(EtcdStore::open(&options(&etcd, "/fresh/")).expect("and opens again"));
}

fn peer(id: &str, network_id: &str) -> Peer {
    Peer {
        id: id.to_owned(),
        network_id: network_id.to_owned(),
        name: id.to_owned(),
        public_key: format!("key-{id}"),
        endpoint: None,
        address: format!("fd00:1::{}", id.trim_start_matches('p'))
            .parse()
            .expect("address"),
        lifecycle: Lifecycle::Persistent,
        roles: Vec::new(),
        address_v4: None,
        pod_prefixes: Vec::new(),
        site_prefixes: Vec::new(),
        last_seen_ms: 1,
        created_at_ms: 1,
        enrolled_by: None,
    }
}

/// A write that counted a list commits only if the list is unchanged: replica b adds a peer after replica
/// a listed (the peers of a network, or every peer), so a's commit fails its compare and a counts again.
#[test]
fn a_list_changed_by_another_replica_makes_the_lister_run_again() {
    if !etcd::installed_or_skip("a_list_changed") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (case, everywhere) in [("net", false), ("all", true)] {
        let prefix = format!("/lists-{case}/");
        let a: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, &prefix)).expect("replica a"));
        let b: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, &prefix)).expect("replica b"));
        runtime
            .block_on(a.write(|tx| {
                tx.put_account(&account("acc", ""))?;
                tx.put_peer(&peer("p1", "n"))
            }))
            .expect("seed");
        let runs = Arc::new(AtomicUsize::new(0));
        let (listed, seen_listed) = mpsc::channel::<()>();
        let (added, seen_added) = mpsc::channel::<()>();
        let rendezvous = Mutex::new(Some((listed, seen_added)));
        let counted = runs.clone();
        let count = a.write(move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            let peers = if everywhere { tx.all_peers()? } else { tx.peers("n")? };
            if let Some((listed, added)) = rendezvous.lock().expect("lock").take() {
                listed.send(()).expect("replica b");
                added.recv_timeout(Duration::from_secs(10)).expect("replica b added");
            }
            tx.put_account(&account("acc", &peers.len().to_string()))
        });
        let add = {
            let b = b.clone();
            std::thread::spawn(move || {
                seen_listed.recv_timeout(Duration::from_secs(10)).expect("a listed");
                let added_peer = runtime_for_thread().block_on(b.write(|tx| tx.put_peer(&peer("p2", "n"))));
                added.send(()).expect("replica a");
                added_peer
            })
        };
        runtime.block_on(count).expect("count");
        add.join().expect("replica b's thread").expect("add");
        let stored = runtime
            .block_on(a.read(|tx| tx.account("acc")))
            .expect("read")
            .expect("account");
        assert_eq!(stored.name, "2", "{case}: counted after b's peer");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{case}: a ran again");
    }
}

/// Replica a's writer (without hints from a watch, below) remembers what it read and committed, and serves
/// later reads from there: when
/// replica b changes such a key, a's next write that read it (stale, from the cache) fails its compare and
/// runs again on etcd's value. Both with writes and without (a closure that only reads), and for a key a
/// wrote without reading it first (remembered at its commit's revision).
#[test]
fn a_key_changed_by_another_replica_is_not_committed_from_the_writers_cache() {
    if !etcd::installed_or_skip("a_key_changed") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = runtime_for_thread();
    for (case, writes, a_wrote) in [
        ("write", true, false),
        ("read-only", false, false),
        ("written-blind", true, true),
    ] {
        let prefix = format!("/cache-{case}/");
        let (a, b) = replicas_a_without_hints(&etcd, &prefix);
        if a_wrote {
            // a writes the account without reading it: its writer caches what it committed.
            runtime
                .block_on(a.write(|tx| tx.put_account(&account("acc", "b0"))))
                .expect("seed");
        } else {
            runtime
                .block_on(b.write(|tx| tx.put_account(&account("acc", "b0"))))
                .expect("seed");
            // a reads the account once: its writer caches it.
            let seen = runtime
                .block_on(a.write(|tx| tx.account("acc")))
                .expect("a reads")
                .expect("account");
            assert_eq!(seen.name, "b0", "{case}");
        }
        runtime
            .block_on(b.write(|tx| tx.put_account(&account("acc", "b1"))))
            .expect("b renames");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let answer = runtime
            .block_on(a.write(move |tx| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut account = tx.account("acc")?.expect("account");
                if writes {
                    account.name.push('a');
                    tx.put_account(&account)?;
                }
                Ok::<_, StoreError>(account.name)
            }))
            .expect("a's write");
        let expected = if writes { "b1a" } else { "b1" };
        assert_eq!(answer, expected, "{case}: a answered what etcd holds");
        let stored = runtime
            .block_on(b.read(|tx| tx.account("acc")))
            .expect("read")
            .expect("account");
        assert_eq!(
            stored.name,
            if writes { "b1a" } else { "b1" },
            "{case}: committed on b's rename"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "{case}: the cached read conflicted once"
        );
    }
}

/// A closure that runs again after a conflict (as in the test above: replica b changed a key replica a's
/// writer had cached) runs only what its last run deferred, once, after the commit and before the answer.
#[test]
fn a_rerun_closure_runs_only_its_last_runs_after_commit_effects() {
    if !etcd::installed_or_skip("a_rerun_closure") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = runtime_for_thread();
    let (a, b) = replicas_a_without_hints(&etcd, "/after-rerun/");
    runtime
        .block_on(b.write(|tx| tx.put_account(&account("acc", "b0"))))
        .expect("seed");
    runtime.block_on(a.write(|tx| tx.account("acc"))).expect("a caches it");
    runtime
        .block_on(b.write(|tx| tx.put_account(&account("acc", "b1"))))
        .expect("b renames");
    let runs = Arc::new(AtomicUsize::new(0));
    let effects = Arc::new(Mutex::new(Vec::new()));
    let (counted, noted) = (runs.clone(), effects.clone());
    let answer = runtime
        .block_on(a.write(move |tx| {
            let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let noted = noted.clone();
            tx.after_commit(Box::new(move || noted.lock().expect("lock").push(run)));
            let mut account = tx.account("acc")?.expect("account");
            account.name.push('a');
            tx.put_account(&account)?;
            Ok::<_, StoreError>(account.name)
        }))
        .expect("a's write");
    assert_eq!(answer, "b1a");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the cached read conflicted once");
    assert_eq!(
        *effects.lock().expect("lock"),
        [2],
        "only the second run's effect, once"
    );
}

/// A request whose commit fails (every attempt conflicts: the closure has replica b change the key it
/// read) runs none of the effects its runs deferred.
#[test]
fn a_request_whose_commit_fails_runs_no_after_commit_effect() {
    if !etcd::installed_or_skip("a_request_whose_commit_fails") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = runtime_for_thread();
    let (a, b) = replicas_a_without_hints(&etcd, "/after-failed/");
    runtime
        .block_on(b.write(|tx| tx.put_account(&account("acc", "b"))))
        .expect("seed");
    let (runs, effects) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, ran) = (runs.clone(), effects.clone());
    let answer = runtime.block_on(a.write(move |tx| {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        let ran = ran.clone();
        tx.after_commit(Box::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }));
        let mut stored = tx.account("acc")?.expect("account");
        // Replica b changes what this run read before it commits (b's writer is its own thread).
        futures::executor::block_on(b.write(move |tx| tx.put_account(&account("acc", &format!("b{run}")))))?;
        stored.name.push('a');
        tx.put_account(&stored)
    }));
    assert!(matches!(answer, Err(StoreError::Commit(_))), "{answer:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        ATTEMPTS as usize,
        "every attempt conflicted"
    );
    assert_eq!(effects.load(Ordering::SeqCst), 0, "nothing committed: no effect ran");
}

/// A conflict makes a's writer forget only what the conflicting transaction read: another key it cached
/// earlier is still served from the cache (and still compared), so when replica b changes that one too,
/// a's next write reading it conflicts once more and commits on b's value.
#[test]
fn a_conflict_forgets_only_what_the_transaction_read() {
    if !etcd::installed_or_skip("a_conflict_forgets") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = runtime_for_thread();
    let prefix = "/cache-forget/";
    let (a, b) = replicas_a_without_hints(&etcd, prefix);
    for id in ["x", "y"] {
        runtime
            .block_on(a.write(move |tx| tx.put_account(&account(id, &format!("{id}0")))))
            .expect("a writes");
    }
    // Appends `suffix` to account `id` through a, counting the closure's runs.
    let rename = |id: &'static str, suffix: &'static str| {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let name = runtime
            .block_on(a.write(move |tx| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut account = tx.account(id)?.expect("account");
                account.name.push_str(suffix);
                tx.put_account(&account)?;
                Ok::<_, StoreError>(account.name)
            }))
            .expect("a's write");
        (name, runs.load(Ordering::SeqCst))
    };
    runtime
        .block_on(b.write(|tx| tx.put_account(&account("x", "x1"))))
        .expect("b renames x");
    assert_eq!(rename("x", "a"), ("x1a".to_owned(), 2), "x: one conflict, b's name");
    runtime
        .block_on(b.write(|tx| tx.put_account(&account("y", "y1"))))
        .expect("b renames y");
    assert_eq!(
        rename("y", "a"),
        ("y1a".to_owned(), 2),
        "y was still cached after x's conflict: one conflict, b's name"
    );
}

/// The writer presumes a new peer's pointers and unique values absent without reading them from etcd;
/// where one exists (another replica wrote it), the commit fails its compare and the rerun reads it: a name
/// another replica's peer holds is refused, and a peer only another replica wrote is found, each after one
/// conflict; then it is cached (no conflict the next time).
#[test]
fn a_key_presumed_absent_that_another_replica_wrote_is_found_after_one_conflict() {
    if !etcd::installed_or_skip("a_key_presumed_absent") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = runtime_for_thread();
    let prefix = "/presumed/";
    let (a, b) = replicas_a_without_hints(&etcd, prefix);
    runtime
        .block_on(b.write(|tx| tx.put_peer(&peer("p1", "n"))))
        .expect("b writes p1");
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let refused = runtime.block_on(a.write(move |tx| {
        counted.fetch_add(1, Ordering::SeqCst);
        let mut rival = peer("p9", "n");
        rival.name = "p1".to_owned();
        tx.put_peer(&rival)
    }));
    assert!(
        matches!(refused, Err(StoreError::Constraint(_))),
        "p1's name, held through b, is refused on a: {refused:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one conflict, then the name read from etcd"
    );
    let find = || {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let found = runtime
            .block_on(a.write(move |tx| {
                counted.fetch_add(1, Ordering::SeqCst);
                tx.peer("p1")
            }))
            .expect("a reads p1");
        (found.map(|p| p.id), runs.load(Ordering::SeqCst))
    };
    assert_eq!(
        find(),
        (Some("p1".to_owned()), 2),
        "first read of p1 on a: one conflict"
    );
    assert_eq!(find(), (Some("p1".to_owned()), 1), "p1 is cached now");
    let stored = runtime
        .block_on(b.read(|tx| tx.peer_by_name("n", "p1")))
        .expect("read")
        .map(|p| p.id);
    assert_eq!(stored.as_deref(), Some("p1"), "the name still belongs to p1");
}

/// A writer's cache also takes what other replicas write, from a watch of the key prefix: a peer name
/// replica b gave is then known to replica a without a conflict (a writer without the hints presumes it
/// free and conflicts once, every time). Polled: b adds a peer, a refuses its name to another peer at
/// once, until one refusal ran a's closure only once (the hint came first), at most 50 peers within 10 s.
#[test]
fn a_writer_learns_what_another_replica_wrote_from_the_watch() {
    if !etcd::installed_or_skip("a_writer_learns") {
        return;
    }
    let etcd = etcd::shared();
    let runtime = runtime_for_thread();
    let prefix = "/hinted/";
    let a: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, prefix)).expect("replica a"));
    let b: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, prefix)).expect("replica b"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut runs_seen = Vec::new();
    for k in 1..=50 {
        assert!(
            Instant::now() < deadline,
            "no hint within 10 s: runs per refusal {runs_seen:?}"
        );
        let id = format!("p{k}");
        runtime
            .block_on(b.write(move |tx| tx.put_peer(&peer(&id, "n"))))
            .expect("b adds a peer");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let refused = runtime.block_on(a.write(move |tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut rival = peer(&format!("p{}", 1000 + k), "n");
            rival.name = format!("p{k}");
            tx.put_peer(&rival)
        }));
        assert!(
            matches!(refused, Err(StoreError::Constraint(_))),
            "p{k}'s name is refused on a: {refused:?}"
        );
        runs_seen.push(runs.load(Ordering::SeqCst));
        if runs_seen.last() == Some(&1) {
            return;
        }
    }
    panic!("a conflicted on every name b gave (runs per refusal {runs_seen:?}): no hint reached a's writer");
}

/// Continues a stopped process when dropped (also when the test fails).
struct Thaw(libc::pid_t);

impl Drop for Thaw {
    fn drop(&mut self) {
        // SAFETY: a plain signal to the etcd member this test started and stopped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// An etcd member that accepts connections but answers nothing (frozen with SIGSTOP, as a hung disk or a
/// paused VM would leave it) is taken out of the client's rotation: once it is, no read or write waits on
/// it, for longer than the request timeout (5 s, after which the client's balancer would try it again).
#[test]
fn a_frozen_etcd_member_is_taken_out_of_rotation() {
    if !etcd::installed_or_skip("a_frozen_etcd_member") {
        return;
    }
    let cluster = etcd::cluster(3);
    let leader = cluster.wait_leader(Duration::from_secs(10)).expect("a leader");
    let frozen = (leader + 1) % 3;
    let pid = cluster.members()[frozen].pid().expect("the member runs");
    let options = EtcdOptions {
        endpoints: cluster.endpoints(),
        key_prefix: "/frozen/".to_owned(),
        tls: None,
    };
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&options).expect("open"));
    let runtime = runtime_for_thread();
    runtime
        .block_on(store.write(|tx| tx.put_account(&account("acc", "a"))))
        .expect("seed");
    let pid = libc::pid_t::try_from(pid).expect("pid");
    let _thaw = Thaw(pid);
    // SAFETY: a plain signal to the etcd member this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "stop m{frozen}");
    // One call: a read, or a write, answered within a second; its duration.
    let call = |i: usize| {
        let started = Instant::now();
        let answered = runtime.block_on(async {
            let within = Duration::from_secs(1);
            if i % 2 == 0 {
                tokio::time::timeout(within, store.read(|tx| tx.account("acc")))
                    .await
                    .map(|r| r.map(|a| a.is_some()))
            } else {
                let name = format!("a{i}");
                tokio::time::timeout(within, store.write(move |tx| tx.put_account(&account("acc", &name))))
                    .await
                    .map(|r| r.map(|()| true))
            }
        });
        (matches!(answered, Ok(Ok(true))), started.elapsed())
    };
    // Settled: 20 calls in a row answered fast, within 10 s of the stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut in_a_row, mut i) = (0, 0);
    while in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "10 s after m{frozen} was stopped, calls still wait on it ({i} calls)"
        );
        i += 1;
        in_a_row = if call(i).0 { in_a_row + 1 } else { 0 };
    }
    // And it stays out: 7 s of calls (past the 5 s request timeout), every one answered within a second.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        i += 1;
        let (answered, took) = call(i);
        assert!(
            answered,
            "call {i} was not answered within 1 s (it took {took:?}) while m{frozen} is stopped"
        );
    }
}

fn runtime_for_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A transaction whose answer was lost is resolved exactly through the writer's marker: one that committed
/// is found landed; one that had not reached etcd is fenced off, and when it arrives late it applies
/// nothing; the writer goes on committing after either; a marker key written by something else is refused,
/// not guessed.
#[tokio::test]
async fn a_lost_answer_is_resolved_exactly() {
    if !etcd::installed_or_skip("a_lost_answer") {
        return;
    }
    let etcd = etcd::shared();
    let client = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .expect("connect");
    let mut kv = client.kv_client();
    let mut marker = CommitMarker::claim(&mut kv, "/ambiguous/", "replica")
        .await
        .expect("claim");
    let reader = client.kv_client();
    let exists = |key: &'static str| {
        let mut kv = reader.clone();
        async move { !kv.get(key, None).await.expect("get").kvs().is_empty() }
    };

    // Committed, answer lost.
    let (compare, mark) = marker.guard();
    kv.txn(
        Txn::new()
            .when([compare])
            .and_then([mark, TxnOp::put("/ambiguous/landed", "1", None)]),
    )
    .await
    .expect("txn");
    assert!(marker.pending());
    assert_eq!(marker.resolve(&mut kv).await, Ok(Outcome::Landed));
    assert!(!marker.pending());
    assert!(exists("/ambiguous/landed").await);

    // Lost on the way, arriving after the resolution.
    let (compare, mark) = marker.guard();
    let late = Txn::new()
        .when([compare])
        .and_then([mark, TxnOp::put("/ambiguous/late", "2", None)]);
    assert_eq!(marker.resolve(&mut kv).await, Ok(Outcome::Fenced));
    let arrived = kv.txn(late).await.expect("late txn");
    assert!(!arrived.succeeded(), "a fenced transaction never applies");
    assert!(!exists("/ambiguous/late").await);

    // The writer goes on.
    for i in 0..2 {
        let (compare, mark) = marker.guard();
        let answer = kv
            .txn(
                Txn::new()
                    .when([compare])
                    .and_then([mark, TxnOp::put("/ambiguous/next", i.to_string(), None)]),
            )
            .await
            .expect("txn");
        assert!(answer.succeeded(), "commit {i} after a resolution");
        marker.answered(true, answer.header().expect("header").revision());
    }

    // Nobody else may write the marker key: then the outcome is not guessed.
    let _ = marker.guard();
    kv.put(marker.key(), "999", None).await.expect("put");
    let refused = marker.resolve(&mut kv).await.expect_err("not guessed");
    assert!(refused.contains("something else"), "{refused}");
    assert!(marker.pending());
}

/// A commit whose answer is lost (etcd stopped by SIGSTOP between the reads and the `Txn`, continued after
/// the store's request timeout) answers what etcd holds: success if the late `Txn` landed, a failure if it
/// was fenced off, never one while the other is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_answers_what_etcd_holds() {
    if !etcd::installed_or_skip("a_commit_whose_answer_is_lost") {
        return;
    }
    // Its own etcd: the others' tests must not stop with it.
    let etcd = Etcd::start();
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, "/lost/")).expect("store"));
    let pid = libc::pid_t::try_from(etcd.pid()).expect("pid");
    let signal = move |signal| {
        // SAFETY: kill has no memory preconditions; the PID is the test's own etcd child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    };
    let stopped = Arc::new(AtomicUsize::new(0));
    let stops = stopped.clone();
    let effects = Arc::new(AtomicUsize::new(0));
    let ran = effects.clone();
    let write = store.write(move |tx| {
        let ran = ran.clone();
        tx.after_commit(Box::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }));
        // Every read put_account makes, first: after the stop only the commit goes to etcd.
        tx.account("acc")?;
        tx.account_by_name("lost")?;
        if stops.fetch_add(1, Ordering::SeqCst) == 0 {
            signal(libc::SIGSTOP);
        }
        tx.put_account(&account("acc", "lost"))
    });
    // The fault lasts past the store's 5 s request timeout, so the `Txn`'s answer is lost.
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(7));
        signal(libc::SIGCONT);
    });
    let answer = tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .expect("answered once etcd is back");
    resume.join().expect("the resuming thread");
    let stored = store.read(|tx| tx.account("acc")).await.expect("read");
    eprintln!("lost answer: {answer:?}; stored: {stored:?}");
    assert_eq!(
        answer.is_ok(),
        stored.is_some(),
        "the answer ({answer:?}) matches etcd ({stored:?})"
    );
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "the closure ran once");
    assert_eq!(
        effects.load(Ordering::SeqCst),
        usize::from(answer.is_ok()),
        "its after-commit effect ran once if it landed, never if fenced or unknown"
    );
}

/// A TCP proxy to `upstream` whose answers (upstream to client) can be held back: requests still reach etcd
/// and are applied, their answers wait until released. Dropped with the test's runtime.
async fn holding_proxy(upstream: String) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (hold, held) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(&upstream).await.expect("etcd");
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_etcd, mut to_etcd) = upstream.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_etcd).await });
            let mut held = held.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_etcd.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if held.wait_for(|h| !*h).await.is_err() || to_client.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, hold)
}

/// A commit applied by etcd whose answer is held back past the store's request timeout (and the first
/// resolution attempts with it) answers success once etcd can be asked again: it landed, and the record is
/// there. (Answering the transport error instead would tell the client a stored request failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_applied_but_unanswered_answers_success() {
    if !etcd::installed_or_skip("a_commit_applied_but_unanswered") {
        return;
    }
    let etcd = etcd::shared();
    let (endpoint, hold) = holding_proxy(etcd.endpoint.trim_start_matches("http://").to_owned()).await;
    let proxied = EtcdOptions {
        endpoints: vec![endpoint],
        key_prefix: "/unanswered/".into(),
        tls: None,
    };
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&proxied).expect("store"));
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let holding = hold.clone();
    let effects = Arc::new(AtomicUsize::new(0));
    let ran = effects.clone();
    let write = store.write(move |tx| {
        let ran = ran.clone();
        tx.after_commit(Box::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }));
        tx.account("acc")?;
        tx.account_by_name("kept")?;
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            holding.send_replace(true);
        }
        tx.put_account(&account("acc", "kept"))
    });
    // The fault lasts past the store's 5 s request timeout.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(7)).await;
        hold.send_replace(false);
    });
    let answer = tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .expect("answered once etcd answers again");
    release.await.expect("release");
    let stored = store.read(|tx| tx.account("acc")).await.expect("read");
    assert!(answer.is_ok(), "the applied commit answers success: {answer:?}");
    assert_eq!(stored.map(|a| a.name).as_deref(), Some("kept"));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the closure ran once");
    assert_eq!(effects.load(Ordering::SeqCst), 1, "its after-commit effect ran once");
}
