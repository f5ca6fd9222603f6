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
    // 4: workload prefixes. A network's IPv4 overlay prefix, pod pools (`prefix node_len`, comma-separated)
    // and site ranges; a peer's /32, pod shares and site prefixes (empty for every earlier network and
    // peer: they had none); the hold-downs of released prefixes. `peers.routed_prefixes`, which no release
    // ever filled, gives way to `site_prefixes`.
    "
    ALTER TABLE networks ADD COLUMN overlay_prefix_v4 TEXT;
    ALTER TABLE networks ADD COLUMN pod_pools TEXT NOT NULL DEFAULT '';
    ALTER TABLE networks ADD COLUMN site_ranges TEXT NOT NULL DEFAULT '';
    ALTER TABLE peers DROP COLUMN routed_prefixes;
    ALTER TABLE peers ADD COLUMN address_v4 TEXT;
    ALTER TABLE peers ADD COLUMN pod_prefixes TEXT NOT NULL DEFAULT '';
    ALTER TABLE peers ADD COLUMN site_prefixes TEXT NOT NULL DEFAULT '';
    CREATE TABLE prefix_holds (
        network_id TEXT NOT NULL REFERENCES networks(id),
        prefix TEXT NOT NULL,
        until INTEGER NOT NULL,
        released_by TEXT NOT NULL,
        PRIMARY KEY (network_id, prefix)
    );
    ",
    // 5: a k3s agent token per cluster, beside the join (server) token; NULL for earlier clusters, which
    // get one at their next handshake.
    "
    ALTER TABLE clusters ADD COLUMN agent_token TEXT;
    ",
    // 6: quorum mode of VIPs (off, no witnesses for every earlier VIP), and floating prefixes. Candidate
    // and witness lists are peer ids, comma-separated, in order.
    "
    ALTER TABLE vips ADD COLUMN quorum INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE vips ADD COLUMN witnesses TEXT NOT NULL DEFAULT '';
    CREATE TABLE floating (
        id TEXT PRIMARY KEY,
        network_id TEXT NOT NULL REFERENCES networks(id),
        prefix TEXT NOT NULL,
        gateway TEXT,
        candidates TEXT NOT NULL,
        holder TEXT REFERENCES peers(id),
        epoch_term INTEGER,
        epoch_rank INTEGER,
        move_to TEXT REFERENCES peers(id),
        move_seq INTEGER NOT NULL,
        quorum INTEGER NOT NULL,
        witnesses TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (network_id, prefix)
    );
    CREATE INDEX floating_by_network ON floating(network_id);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{PrefixHold, PrefixKind};
    use crate::store::sqlite::{SqliteOptions, SqliteStore, DB_FILE};
    use crate::store::Store;

    /// The store over a database that a registry of schema `version` wrote, holding `rows` (SQL inserts),
    /// opened (and so migrated) by this registry.
    fn old_database(dir: &std::path::Path, version: usize, rows: &str) -> Arc<dyn Store> {
        let conn = Connection::open(dir.join(DB_FILE)).expect("open");
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .expect("version table");
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).expect("old migration");
        }
        conn.execute_batch(&format!(
            "INSERT INTO schema_version (version) VALUES ({version}); {rows}"
        ))
        .expect("old rows");
        drop(conn);
        Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("migrate"))
    }

    /// A database a registry of schema 3 wrote (before workload prefixes) opens, reads its networks and
    /// peers with no prefixes, and takes the new ones.
    #[tokio::test]
    async fn a_schema_3_database_opens_and_takes_prefixes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = old_database(
            dir.path(),
            3,
            "INSERT INTO accounts (id, name, created_at) VALUES ('a', 'acme', 1);
             INSERT INTO networks (id, account_id, name, overlay_prefix, vip_pool, revision, next_peer_offset,
                 next_vip_offset, created_at) VALUES ('n', 'a', 'net', 'fd00:1::/64', 'fd00:1::ffff:0/112', 7, 2, 1, 1);
             INSERT INTO peers (id, network_id, name, public_key, endpoint, address, lifecycle, roles,
                 routed_prefixes, last_seen, created_at, enrolled_by)
                 VALUES ('p', 'n', 'edge', 'k', NULL, 'fd00:1::1', 'persistent', '', '', 5, 1, NULL);",
        );
        let (network, peer) = store
            .read(|tx| Ok::<_, StoreError>((tx.network("n")?, tx.peer("p")?)))
            .await
            .expect("read");
        let (mut network, mut peer) = (network.expect("network"), peer.expect("peer"));
        assert_eq!((network.revision, network.overlay_prefix_v4), (7, None));
        assert!(network.pod_pools.is_empty() && network.site_ranges.is_empty());
        assert_eq!((peer.address_v4, peer.prefixes()), (None, vec![]));
        network.site_ranges = vec!["192.0.2.0/24".parse().expect("range")];
        peer.site_prefixes = vec!["192.0.2.0/28".parse().expect("prefix")];
        peer.address_v4 = Some("198.51.100.1".parse().expect("address"));
        let hold = PrefixHold {
            network_id: "n".into(),
            prefix: "192.0.2.16/28".parse().expect("prefix"),
            until_ms: 99,
            released_by: "gone".into(),
        };
        let (n, p, h) = (network.clone(), peer.clone(), hold.clone());
        store
            .write(move |tx| {
                tx.put_network(&n)?;
                tx.put_peer(&p)?;
                tx.put_prefix_hold(&h)
            })
            .await
            .expect("write");
        let (network2, peer2, holds) = store
            .read(|tx| Ok::<_, StoreError>((tx.network("n")?, tx.peer("p")?, tx.prefix_holds("n")?)))
            .await
            .expect("read back");
        assert_eq!(network2, Some(network));
        assert_eq!(peer2.as_ref().map(|p| p.prefixes()[0].kind), Some(PrefixKind::Site));
        assert_eq!(peer2, Some(peer));
        assert_eq!(holds, [hold]);
    }

    /// A cluster a registry of schema 4 stored (before agent tokens) opens with no agent token, and takes one.
    #[tokio::test]
    async fn a_schema_4_cluster_opens_without_an_agent_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = old_database(
            dir.path(),
            4,
            "INSERT INTO accounts (id, name, created_at) VALUES ('a', 'acme', 1);
             INSERT INTO networks (id, account_id, name, overlay_prefix, vip_pool, revision, next_peer_offset,
                 next_vip_offset, created_at) VALUES ('n', 'a', 'net', 'fd00:1::/64', 'fd00:1::ffff:0/112', 7, 2, 2, 1);
             INSERT INTO vips (id, network_id, address) VALUES ('v', 'n', 'fd00:1::ffff:1');
             INSERT INTO clusters (id, account_id, network_id, name, state, vip_id, join_token, created_at)
                 VALUES ('c', 'a', 'n', 'prod', 'active', 'v', 'server-secret', 3);",
        );
        let cluster = store.read(|tx| tx.cluster("c")).await.expect("read").expect("cluster");
        assert_eq!(
            (cluster.join_token.as_str(), cluster.agent_token.as_deref()),
            ("server-secret", None)
        );
        let given = crate::model::Cluster {
            agent_token: Some("agent-secret".into()),
            ..cluster
        };
        let put = given.clone();
        store.write(move |tx| tx.put_cluster(&put)).await.expect("write");
        let back = store.read(|tx| tx.cluster("c")).await.expect("read back");
        assert_eq!(back, Some(given));
    }

    /// A VIP a registry of schema 5 stored (before quorum mode) opens with quorum off and takes it; the
    /// new floating table stores and lists floating prefixes.
    #[tokio::test]
    async fn a_schema_5_vip_opens_without_quorum_and_floating_prefixes_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = old_database(
            dir.path(),
            5,
            "INSERT INTO accounts (id, name, created_at) VALUES ('a', 'acme', 1);
             INSERT INTO networks (id, account_id, name, overlay_prefix, vip_pool, revision, next_peer_offset,
                 next_vip_offset, created_at) VALUES ('n', 'a', 'net', 'fd00:1::/64', 'fd00:1::ffff:0/112', 7, 2, 2, 1);
             INSERT INTO peers (id, network_id, name, public_key, endpoint, address, lifecycle, roles,
                 last_seen, created_at, enrolled_by) VALUES ('p', 'n', 'gw', 'k', NULL, 'fd00:1::1', 'persistent', '', 5, 1, NULL);
             INSERT INTO vips (id, network_id, address) VALUES ('v', 'n', 'fd00:1::ffff:1');",
        );
        let vip = store.read(|tx| tx.vip("v")).await.expect("read").expect("vip");
        assert_eq!(vip.quorum, None);
        let vip = crate::model::Vip {
            quorum: Some(crate::model::Quorum {
                witnesses: vec!["p".into()],
            }),
            ..vip
        };
        let floating = crate::model::Floating {
            id: "f".into(),
            network_id: "n".into(),
            prefix: "203.0.113.0/24".parse().expect("prefix"),
            gateway: Some("203.0.113.1".parse().expect("gateway")),
            candidates: vec!["p".into()],
            holder: Some("p".into()),
            epoch: Some(sdwand::vocab::Epoch { term: 3, rank: 0 }),
            move_to: None,
            move_seq: 2,
            quorum: Some(crate::model::Quorum::default()),
            created_at_ms: 9,
        };
        let (v, f) = (vip.clone(), floating.clone());
        store
            .write(move |tx| {
                tx.put_vip(&v)?;
                tx.put_floating(&f)
            })
            .await
            .expect("write");
        let (vip2, listed, one) = store
            .read(|tx| Ok::<_, StoreError>((tx.vip("v")?, tx.floatings("n")?, tx.floating("f")?)))
            .await
            .expect("read back");
        assert_eq!(vip2, Some(vip));
        assert_eq!((listed, one), (vec![floating.clone()], Some(floating)));
        store.write(|tx| tx.delete_floating("f")).await.expect("delete");
        assert_eq!(store.read(|tx| tx.floatings("n")).await.expect("list"), []);
    }
}
