//! Versioned migrations of the SQLite schema.
//!
//! `schema_version` holds one row with the version the file is at; migration N (1-based) takes it from N-1
//! to N inside one transaction together with the version bump, so a crash leaves the file at N-1 or N, never
//! between. Shipped migrations are never edited: a change is a new entry.

use rusqlite::{Connection, OptionalExtension};

use super::super::StoreError;

/// The migrations, in order; `MIGRATIONS[n - 1]` takes the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, networks, tokens, peers, VIPs, clusters and their members.
    "
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        overlay_prefix TEXT NOT NULL,
        vip_pool TEXT NOT NULL,
        revision INTEGER NOT NULL,
        next_peer_offset INTEGER NOT NULL,
        next_vip_offset INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX networks_by_account ON networks(account_id);
    CREATE TABLE peers (
        id TEXT PRIMARY KEY,
        network_id TEXT NOT NULL REFERENCES networks(id),
        name TEXT NOT NULL,
        public_key TEXT NOT NULL,
        endpoint TEXT,
        address TEXT NOT NULL,
        lifecycle TEXT NOT NULL,
        roles TEXT NOT NULL,
        routed_prefixes TEXT NOT NULL,
        last_seen INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (network_id, public_key),
        UNIQUE (network_id, name),
        UNIQUE (network_id, address)
    );
    CREATE TABLE tokens (
        key_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        secret_hash BLOB NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        network_id TEXT REFERENCES networks(id),
        peer_id TEXT REFERENCES peers(id),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE vips (
        id TEXT PRIMARY KEY,
        network_id TEXT NOT NULL REFERENCES networks(id),
        address TEXT NOT NULL,
        holder TEXT REFERENCES peers(id),
        epoch_term INTEGER,
        epoch_rank INTEGER,
        UNIQUE (network_id, address)
    );
    CREATE TABLE vip_candidates (
        vip_id TEXT NOT NULL REFERENCES vips(id),
        rank INTEGER NOT NULL,
        peer_id TEXT NOT NULL REFERENCES peers(id),
        PRIMARY KEY (vip_id, rank),
        UNIQUE (vip_id, peer_id)
    );
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        network_id TEXT NOT NULL REFERENCES networks(id),
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        vip_id TEXT NOT NULL REFERENCES vips(id),
        join_token TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX clusters_by_network_state ON clusters(network_id, state);
    CREATE TABLE cluster_members (
        peer_id TEXT PRIMARY KEY REFERENCES peers(id),
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        role TEXT NOT NULL,
        joined_at INTEGER NOT NULL
    );
    CREATE INDEX cluster_members_by_cluster ON cluster_members(cluster_id);
    ",
    // 2: reported VIP state (confirmed peers), operator move requests, and the indexes of the reaper's
    // lookups (silent peers, and what hangs off a peer).
    "
    ALTER TABLE vips ADD COLUMN confirmed_peers INTEGER;
    ALTER TABLE vips ADD COLUMN move_to TEXT REFERENCES peers(id);
    ALTER TABLE vips ADD COLUMN move_seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX peers_by_last_seen ON peers(last_seen);
    CREATE INDEX tokens_by_peer ON tokens(peer_id);
    CREATE INDEX vip_candidates_by_peer ON vip_candidates(peer_id);
    CREATE INDEX vips_by_network ON vips(network_id);
    ",
    // 3: limits of enrollment tokens (expiry, use count, roles, revocation; NULL = none, which is what
    // every earlier token keeps), and the enrollment token each peer enrolled with (NULL for earlier peers).
    "
    ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE tokens ADD COLUMN max_uses INTEGER;
    ALTER TABLE tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tokens ADD COLUMN roles TEXT;
    ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
    ALTER TABLE peers ADD COLUMN enrolled_by TEXT;
    CREATE INDEX tokens_by_account_kind ON tokens(account_id, kind);
    ",
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// The version the file is at (0 for an empty file).
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    let table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if table.is_none() {
        return Ok(0);
    }
    Ok(conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Brings the file to [`latest`], one transaction per migration; refuses a file newer than this build.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = version(&tx)?;
        if current > latest() {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known: latest(),
            });
        }
        let Some(sql) = usize::try_from(current).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [current + 1])?;
        tx.commit()?;
        tracing::info!(version = current + 1, "registry store migrated");
    }
}
