//! The SQLite store: migrations, durability settings, group commit under concurrency, the isolation of
//! a failing (or panicking) request inside a batch, and the effects a request defers until its commit.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sdwan_registry::api::Recording;
use sdwan_registry::model::{Account, Network, TokenKind, TokenLimits, TokenRecord};
use sdwan_registry::store::sqlite::{SqliteOptions, SqliteStore, DB_FILE};
use sdwan_registry::store::{Store, StoreError, WriteTx};
use sdwand::vocab::Role;

fn account(i: usize) -> Account {
    Account {
        id: format!("acct-{i:04}"),
        name: format!("n{i}"),
        created_at_ms: i as u64,
    }
}

fn orphan_network(i: usize) -> Network {
    Network {
        id: format!("net-{i}"),
        account_id: "no-such-account".into(),
        name: "n".into(),
        overlay_prefix: "fd00::/64".parse().expect("prefix"),
        vip_pool: "fd00::ff00/120".parse().expect("prefix"),
        revision: 1,
        next_peer_offset: 1,
        next_vip_offset: 1,
        overlay_prefix_v4: None,
        pod_pools: Vec::new(),
        site_ranges: Vec::new(),
        created_at_ms: 0,
    }
}

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("open"))
}

/// Accounts in the file, read with a separate connection (what a restart would see).
fn stored_accounts(dir: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open");
    let mut stmt = conn.prepare("SELECT id FROM accounts ORDER BY id").expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn migrations_run_from_empty_and_reopening_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    drop(SqliteStore::open(&state, SqliteOptions::default()).expect("first open"));
    let conn = rusqlite::Connection::open(state.join(DB_FILE)).expect("open");
    let version: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 6);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN \
             ('accounts', 'networks', 'peers', 'tokens', 'vips', 'vip_candidates', 'clusters', 'cluster_members', \
             'prefix_holds', 'floating')",
            [],
            |r| r.get(0),
        )
        .expect("tables");
    assert_eq!(tables, 10);
    drop(conn);
    drop(SqliteStore::open(&state, SqliteOptions::default()).expect("reopen"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(DB_FILE)), 0o600);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("open");
    conn.execute("UPDATE schema_version SET version = 99", [])
        .expect("update");
    drop(conn);
    match SqliteStore::open(dir.path(), SqliteOptions::default()) {
        Err(StoreError::SchemaTooNew { found: 99, known: 6 }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn writes_are_durable_before_they_are_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
    let d = store.durability();
    assert_eq!(
        (d.journal_mode.as_str(), d.synchronous),
        ("wal", 2),
        "WAL with synchronous = FULL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_all_committed_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let a = account(i);
                store.write(move |tx| tx.put_account(&a)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("write");
    }
    let expected: Vec<String> = (0..200).map(|i| account(i).id).collect();
    assert_eq!(stored_accounts(dir.path()), expected);
    // Reads on the pool see every acknowledged write.
    let seen = store
        .read(|tx| {
            (0..200)
                .map(|i| tx.account(&account(i).id).map(|a| a.is_some()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .expect("read");
    assert!(seen.iter().all(|s| *s));
}

#[tokio::test]
async fn a_failing_request_does_not_poison_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Hold the writer so that everything below queues up and commits as one batch.
    let gate = store.write(|_tx| {
        std::thread::sleep(Duration::from_millis(200));
        Ok::<_, StoreError>(())
    });
    let mut writes = Vec::new();
    for i in 0..60 {
        let a = account(i);
        writes.push(store.write(move |tx| {
            tx.put_account(&a)?;
            match i % 3 {
                0 => Ok(()),
                1 => Err(StoreError::Corrupt {
                    table: "test",
                    message: "refused after writing".into(),
                }),
                _ if i % 2 == 0 => panic!("request {i} panics after writing"),
                // A database error inside the request: a network of an account that does not exist breaks
                // a foreign key.
                _ => tx.put_network(&orphan_network(i)),
            }
        }));
    }
    gate.await.expect("gate");
    let results = futures::future::join_all(writes).await;
    let mut expected = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match (i % 3, i % 2) {
            (0, _) => {
                r.expect("kept");
                expected.push(account(i).id);
            }
            (1, _) => assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{i}: {r:?}"),
            (_, 0) => assert!(matches!(r, Err(StoreError::Panicked)), "{i}: {r:?}"),
            _ => assert!(matches!(r, Err(StoreError::Database(_))), "{i}: {r:?}"),
        }
    }
    assert_eq!(stored_accounts(dir.path()), expected);
    // The writer survived the panics.
    let late = account(999);
    store
        .write(move |tx| tx.put_account(&late))
        .await
        .expect("write after panics");
}

/// What a request defers with `after_commit` runs once, after its writes committed and before its answer;
/// in a batch, the requests that failed after deferring (an error, a panic, a database error) run none of
/// theirs while their neighbours run their own. Also through the API's [`Recording`] wrapper.
#[tokio::test]
async fn after_commit_effects_run_once_for_committed_requests_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ran: Arc<Vec<AtomicUsize>> = Arc::new((0..30).map(|_| AtomicUsize::new(0)).collect());
    // Hold the writer so that everything below queues up and commits as one batch.
    let gate = store.write(|_tx| {
        std::thread::sleep(Duration::from_millis(200));
        Ok::<_, StoreError>(())
    });
    let mut writes = Vec::new();
    for i in 0..30 {
        let (a, ran) = (account(i), ran.clone());
        writes.push(store.write(move |tx| {
            let mut recording = Recording::new(tx);
            let tx: &mut dyn WriteTx = if i % 2 == 0 { &mut recording } else { tx };
            let counted = ran.clone();
            tx.after_commit(Box::new(move || {
                counted[i].fetch_add(1, Ordering::SeqCst);
            }));
            tx.put_account(&a)?;
            match i % 3 {
                0 => Ok(()),
                1 => Err(StoreError::Corrupt {
                    table: "test",
                    message: "refused after deferring".into(),
                }),
                _ if i % 2 == 0 => panic!("request {i} panics after deferring"),
                _ => tx.put_network(&orphan_network(i)),
            }
        }));
    }
    gate.await.expect("gate");
    let results = futures::future::join_all(writes).await;
    for (i, r) in results.into_iter().enumerate() {
        // Read right after the answer: an effect runs before its request is answered.
        let count = ran[i].load(Ordering::SeqCst);
        if i % 3 == 0 {
            r.expect("kept");
            assert_eq!(count, 1, "request {i} committed: its effect ran once");
        } else {
            assert!(r.is_err(), "request {i}: {r:?}");
            assert_eq!(count, 0, "request {i} failed: its effect never runs");
        }
    }
    assert_eq!(stored_accounts(dir.path()).len(), 10);
}

#[tokio::test]
async fn acknowledged_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let a = account(7);
        store.write(move |tx| tx.put_account(&a)).await.expect("write");
    }
    let store = open(dir.path());
    let got = store.read(|tx| tx.account(&account(7).id)).await.expect("read");
    assert_eq!(got, Some(account(7)));
}

#[tokio::test]
async fn one_commit_per_request_mode_is_correct_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), SqliteOptions { max_batch: 1 }).expect("open"));
    let writes: Vec<_> = (0..20)
        .map(|i| {
            let a = account(i);
            store.write(move |tx| tx.put_account(&a))
        })
        .collect();
    for r in futures::future::join_all(writes).await {
        r.expect("write");
    }
    assert_eq!(stored_accounts(dir.path()).len(), 20);
}

fn token_record(key_id: &str, kind: TokenKind, hash_byte: u8) -> TokenRecord {
    TokenRecord::new(key_id.into(), kind, [hash_byte; 32], account(0).id, 5)
}

/// L2: a key-id collision never turns one token into another: the second insert fails, the first record
/// stays as it was.
#[tokio::test]
async fn a_token_insert_never_overwrites_another_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let admin = token_record("0011223344556677", TokenKind::Admin, 1);
    let first = admin.clone();
    store
        .write(move |tx| {
            tx.put_account(&account(0))?;
            tx.put_token(&first)
        })
        .await
        .expect("first insert");
    let colliding = token_record("0011223344556677", TokenKind::Peer, 2);
    let second = store.write(move |tx| tx.put_token(&colliding)).await;
    assert!(matches!(second, Err(StoreError::Database(_))), "{second:?}");
    let key = admin.key_id.clone();
    let stored = store
        .read(move |tx| tx.token(&key))
        .await
        .expect("read")
        .expect("still there");
    assert_eq!(stored, admin);
}

/// Limits round-trip; only uses and revocation change after issue; tokens written before limits existed
/// (schema v2 rows, NULL columns) read as unlimited.
#[tokio::test]
async fn token_limits_round_trip_and_old_tokens_are_unlimited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let limited = TokenRecord {
        network_id: None,
        limits: TokenLimits {
            expires_at_ms: Some(1_000),
            max_uses: Some(3),
            uses: 0,
            roles: Some(vec![Role::Agent]),
            revoked_at_ms: None,
        },
        ..token_record("aaaaaaaaaaaaaaaa", TokenKind::Enrollment, 3)
    };
    let mut updated = limited.clone();
    updated.limits.uses = 2;
    updated.limits.revoked_at_ms = Some(9);
    let (insert, update) = (limited.clone(), updated.clone());
    store
        .write(move |tx| {
            tx.put_account(&account(0))?;
            tx.put_token(&insert)?;
            tx.update_token(&update)
        })
        .await
        .expect("write");
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("open");
    conn.execute(
        "INSERT INTO tokens (key_id, kind, secret_hash, account_id, created_at) VALUES ('bbbbbbbbbbbbbbbb', \
         'enrollment', zeroblob(32), 'acct-0000', 1)",
        [],
    )
    .expect("an old-style row");
    drop(conn);
    let tokens = store
        .read(|tx| tx.tokens("acct-0000", TokenKind::Enrollment))
        .await
        .expect("read");
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], updated);
    assert_eq!(tokens[1].limits, TokenLimits::default());
    let missing = token_record("cccccccccccccccc", TokenKind::Enrollment, 4);
    let update = store.write(move |tx| tx.update_token(&missing)).await;
    assert!(update.is_err(), "an update of a missing token is an error");
}
