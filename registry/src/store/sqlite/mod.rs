//! The embedded backend: one SQLite file (WAL, `synchronous = FULL`) under the registry's state directory.
//!
//! **Writes** go to one writer thread over a channel. It takes the first queued request, then whatever else
//! is queued (up to [`SqliteOptions::max_batch`]), and runs them in one `BEGIN IMMEDIATE … COMMIT`, each
//! inside its own `SAVEPOINT`: a request that fails is rolled back to its savepoint and the others keep their
//! writes. Every request of the batch is answered after the `COMMIT` returned, which with `synchronous =
//! FULL` means after the WAL was fsync'd: one fsync per batch instead of one per request (group commit).
//! While a batch commits, new requests queue up and form the next batch, so batches grow with load and
//! an idle registry commits each request alone, without waiting. A request's after-commit effects (its log
//! lines, [`super::WriteTx::after_commit`]) run after that `COMMIT`, when it is answered; those of a
//! request rolled back to its savepoint, or of a batch whose `COMMIT` failed, never run.
//!
//! **Reads** run on a small pool of separate connections (WAL lets them read the last commit while the
//! writer writes), on tokio's blocking threads, at most [`READERS`] at once: a flood of reads (scrapes,
//! bogus tokens) waits for a reader instead of pinning hundreds of blocking threads and connections.
//!
//! **Writer death**: the writer thread is the only writer. Should it ever die (a panic outside a request's
//! closure), every later write answers [`StoreError::Closed`]; [`SqliteStore::writer_died`] completes so the
//! server can exit and be restarted instead of answering 503 forever.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{watch, Semaphore};

use super::{ReadJob, Store, StoreError, WriteJob};

mod schema;
mod tx;

use tx::SqlTx;

/// The database file's name inside the state directory.
pub const DB_FILE: &str = "registry.db";

/// Reads running at once, and idle read connections kept open.
pub const READERS: usize = 16;

/// How long a connection waits for a lock held by another process (`sdwan-registry init-account` while
/// the server runs) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tuning of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Most requests committed in one transaction; 1 disables group commit (one commit, one fsync, per
    /// request: the baseline of the benchmark).
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { max_batch: 512 }
    }
}

/// The durability settings read back from the writer connection after it was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `PRAGMA journal_mode` (`wal`).
    pub journal_mode: String,
    /// `PRAGMA synchronous` (2 = FULL: the WAL is fsync'd at every commit).
    pub synchronous: i64,
}

/// The SQLite store. Dropping it lets the writer finish what is queued, then closes the file.
pub struct SqliteStore {
    writes: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    writer: Option<JoinHandle<()>>,
    /// `true` once the writer thread died (never set by a normal shutdown).
    writer_dead: watch::Receiver<bool>,
    readers: Arc<ReadPool>,
    /// One permit per read that may run at once.
    read_slots: Arc<Semaphore>,
    durability: Durability,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `state_dir` and brings its schema up to date.
    pub fn open(state_dir: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let open_err = |path: &Path, e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| open_err(state_dir, &e))?;
        let path = state_dir.join(DB_FILE);
        let mut conn = Connection::open(&path).map_err(|e| open_err(&path, &e))?;
        // Join tokens are k3s secrets: the file (and the WAL and shm files, which SQLite creates with the
        // database's mode) is the registry user's alone.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| open_err(&path, &e))?;
        configure(&conn)?;
        let durability = Durability {
            journal_mode: conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
            synchronous: conn.pragma_query_value(None, "synchronous", |r| r.get(0))?,
        };
        if durability.journal_mode != "wal" || durability.synchronous != 2 {
            return Err(open_err(
                &path,
                &format!("durability settings not in force: {durability:?}"),
            ));
        }
        schema::migrate(&mut conn)?;
        let (writes, jobs) = mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let (dead, writer_dead) = watch::channel(false);
        let writer = std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || {
                if catch_unwind(AssertUnwindSafe(|| write_loop(conn, jobs, max_batch))).is_err() {
                    tracing::error!("the registry writer thread died: no write can be done any more");
                    let _ = dead.send(true);
                }
            })
            .map_err(|e| open_err(&path, &e))?;
        Ok(SqliteStore {
            writes: Some(writes),
            writer: Some(writer),
            writer_dead,
            readers: Arc::new(ReadPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            read_slots: Arc::new(Semaphore::new(READERS)),
            durability,
        })
    }

    /// Completes if the writer thread dies (it never does on a normal shutdown): from then on the store
    /// can only refuse writes, and the process should exit so that its service manager restarts it.
    pub fn writer_died(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut dead = self.writer_dead.clone();
        async move {
            if dead.wait_for(|dead| *dead).await.is_err() {
                // The writer ended normally (the store was dropped): it did not die.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The durability settings in force on the writer connection.
    pub fn durability(&self) -> &Durability {
        &self.durability
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the registry writer thread panicked");
            }
        }
    }
}

impl Store for SqliteStore {
    fn submit_write(&self, job: Box<dyn WriteJob>) {
        super::queue_write(self.writes.as_ref(), job);
    }

    fn submit_read(&self, job: Box<dyn ReadJob>) {
        let pool = self.readers.clone();
        let slots = self.read_slots.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                let Ok(slot) = slots.acquire_owned().await else {
                    return job.fail(StoreError::Closed);
                };
                drop(tokio::task::spawn_blocking(move || {
                    pool.run(job);
                    drop(slot);
                }));
            })),
            Err(_) => pool.run(job),
        }
    }
}

/// Settings every connection needs: WAL, fsync at every commit, enforced foreign keys, a lock wait.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(())
}

fn write_loop(conn: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>, max_batch: usize) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(max_batch);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch).map_err(|e| e.to_string());
        if let Err(e) = &committed {
            tracing::error!(error = %e, requests = batch.len(), "registry write batch failed");
        }
        for job in batch.drain(..) {
            job.finish(committed.clone().map_err(StoreError::Commit));
        }
    }
}

/// Runs a batch in one transaction, a savepoint per request. `Err` means nothing of the batch was written.
fn commit_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = batch
        .iter_mut()
        .try_for_each(|job| {
            conn.prepare_cached("SAVEPOINT request")?.execute([])?;
            if !job.run(&mut SqlTx { conn }) {
                conn.prepare_cached("ROLLBACK TO request")?.execute([])?;
            }
            conn.prepare_cached("RELEASE request")?.execute([])?;
            Ok::<_, StoreError>(())
        })
        .and_then(|()| Ok(conn.execute_batch("COMMIT")?));
    if result.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "cannot roll back a failed registry write batch");
        }
    }
    result
}

/// Read connections, opened on demand and kept for reuse.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn run(&self, job: Box<dyn ReadJob>) {
        let conn = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match conn.map(Ok).unwrap_or_else(|| self.connect()) {
            Ok(conn) => conn,
            Err(e) => return job.fail(e),
        };
        if let Err(e) = conn.execute_batch("BEGIN") {
            return job.fail(e.into());
        }
        job.run(&mut SqlTx { conn: &conn });
        // A read transaction has nothing to commit; ending it lets the WAL be checkpointed past it.
        if conn.execute_batch("COMMIT").is_ok() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < READERS {
                    idle.push(conn);
                }
            }
        }
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        configure(&conn)?;
        Ok(conn)
    }
}
