//! The etcd backend's own behaviour, beyond the API suite it also passes (`SDWAN_REGISTRY_TEST_STORE=etcd`):
//! conflicting writers through two stores (two replicas) on one key prefix, a failed request undoing only its
//! own writes, lists whose change makes the lister run again, and the refusals at open (unreachable etcd, a
//! newer or foreign key prefix).

mod registry_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use registry_support::etcd::{self, Etcd};
use sdwan_registry::model::{Account, Lifecycle, Peer};
use sdwan_registry::store::etcd::{EtcdOptions, EtcdStore};
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

/// Requests committed together: the one that fails leaves nothing, the others keep their writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_undoes_only_its_own_writes() {
    if !etcd::installed_or_skip("a_failed_request") {
        return;
    }
    let etcd = etcd::shared();
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&options(&etcd, "/undo/")).expect("store"));
    let writes = (0..20).map(|i| {
        store.write(move |tx| {
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

fn runtime_for_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
