//! `sdwan-registry migrate`: copies a registry from its SQLite state directory into an empty etcd key
//! prefix, then reads every record back from both stores and compares them.
//!
//! Everything is copied as stored: ids, token hashes with their uses, limits and revocations, network
//! revisions and address and prefix counters, peers with their prefixes and last-seen times, VIPs with
//! their candidates, holders and epochs, clusters with their members and join tokens, and prefix hold-downs.
//! Records are written one per etcd transaction in the source's order, so every list keeps its order
//! (etcd lists by creation revision). The copy is compared record by record with the source (the same reads
//! on both stores); a difference fails the migration, naming the first one.
//!
//! The source must not change meanwhile (stop the registry first): what it writes after its records were
//! read is not copied. A target prefix that already holds an account is refused: a migration never merges.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{Account, Cluster, ClusterMember, Network, Peer, PrefixHold, TokenKind, TokenRecord, Vip};
use crate::store::etcd::{EtcdOptions, EtcdStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore, DB_FILE};
use crate::store::{ReadTx, Store, StoreError};

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The source directory holds no registry database.
    #[error("{}: no registry database (registry.db) there: --from names the registry's state_dir", .0.display())]
    NoSource(PathBuf),
    /// The source database cannot be listed.
    #[error("cannot read the accounts of {}: {message}", path.display())]
    Source {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// The target prefix already holds a registry's records.
    #[error(
        "the etcd key prefix {0:?} already holds a registry (accounts): a migration never merges; choose an empty \
         key_prefix, or delete that prefix's keys (etcdctl del --prefix {0}) if they are a failed migration's"
    )]
    NotEmpty(String),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record read back from etcd differs from the source.
    #[error("the copy differs from the source: {0}; the target prefix holds a partial copy: delete its keys and migrate again")]
    Mismatch(String),
}

/// What a migration copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Accounts.
    pub accounts: usize,
    /// Tokens (admin, enrollment and peer).
    pub tokens: usize,
    /// Networks.
    pub networks: usize,
    /// Peers.
    pub peers: usize,
    /// VIPs.
    pub vips: usize,
    /// k3s clusters.
    pub clusters: usize,
    /// Cluster members.
    pub members: usize,
    /// Prefix hold-downs.
    pub holds: usize,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} accounts, {} tokens, {} networks, {} peers, {} VIPs, {} clusters, {} cluster members, {} prefix \
             hold-downs",
            self.accounts, self.tokens, self.networks, self.peers, self.vips, self.clusters, self.members, self.holds
        )
    }
}

/// Every record of a registry, in the order its lists give them.
#[derive(Debug, PartialEq)]
struct Dump {
    accounts: Vec<AccountDump>,
}

#[derive(Debug, PartialEq)]
struct AccountDump {
    account: Account,
    tokens: Vec<TokenRecord>,
    networks: Vec<NetworkDump>,
}

#[derive(Debug, PartialEq)]
struct NetworkDump {
    network: Network,
    peers: Vec<Peer>,
    vips: Vec<Vip>,
    clusters: Vec<(Cluster, Vec<ClusterMember>)>,
    holds: Vec<PrefixHold>,
}

impl Dump {
    fn counts(&self) -> Copied {
        let mut c = Copied {
            accounts: self.accounts.len(),
            ..Copied::default()
        };
        for a in &self.accounts {
            c.tokens += a.tokens.len();
            c.networks += a.networks.len();
            for n in &a.networks {
                c.peers += n.peers.len();
                c.vips += n.vips.len();
                c.clusters += n.clusters.len();
                c.members += n.clusters.iter().map(|(_, m)| m.len()).sum::<usize>();
                c.holds += n.holds.len();
            }
        }
        c
    }
}

const KINDS: [TokenKind; 3] = [TokenKind::Admin, TokenKind::Enrollment, TokenKind::Peer];

/// Reads every record of the accounts `ids` (in that order) through `tx`.
fn dump(tx: &mut dyn ReadTx, ids: &[String]) -> Result<Dump, StoreError> {
    let mut accounts = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(account) = tx.account(id)? else {
            continue;
        };
        let mut tokens = Vec::new();
        for kind in KINDS {
            tokens.extend(tx.tokens(id, kind)?);
        }
        let mut networks = Vec::new();
        for network in tx.networks(id)? {
            let mut clusters = Vec::new();
            for cluster in tx.clusters(&network.id)? {
                let members = tx.cluster_members(&cluster.id)?;
                clusters.push((cluster, members));
            }
            networks.push(NetworkDump {
                peers: tx.peers(&network.id)?,
                vips: tx.vips(&network.id)?,
                holds: tx.prefix_holds(&network.id)?,
                clusters,
                network,
            });
        }
        accounts.push(AccountDump {
            account,
            tokens,
            networks,
        });
    }
    Ok(Dump { accounts })
}

/// The ids of every account of the SQLite database in `state_dir`, oldest first (the one list the store's
/// reads do not give).
fn account_ids(state_dir: &Path) -> Result<Vec<String>, MigrateError> {
    let path = state_dir.join(DB_FILE);
    if !path.is_file() {
        return Err(MigrateError::NoSource(state_dir.to_owned()));
    }
    let failed = |e: rusqlite::Error| MigrateError::Source {
        path: path.clone(),
        message: e.to_string(),
    };
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(failed)?;
    let mut query = conn.prepare("SELECT id FROM accounts ORDER BY rowid").map_err(failed)?;
    let ids = query
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    Ok(ids)
}

/// Copies the registry in `from` (a SQLite state directory) to the empty key prefix of `to`, compares the
/// copy with the source and answers what it copied.
pub async fn migrate(from: &Path, to: &EtcdOptions) -> Result<Copied, MigrateError> {
    let ids = account_ids(from)?;
    let source: Arc<dyn Store> = Arc::new(SqliteStore::open(from, SqliteOptions::default())?);
    let reading = ids.clone();
    let original = source.read(move |tx| dump(tx, &reading)).await?;
    let target = EtcdStore::open(to)?;
    if target.has_accounts().await? {
        return Err(MigrateError::NotEmpty(to.key_prefix.clone()));
    }
    let target: Arc<dyn Store> = Arc::new(target);
    copy(&target, &original).await?;
    let reading = ids.clone();
    let copied = target.read(move |tx| dump(tx, &reading)).await?;
    if let Some(difference) = first_difference(&original, &copied) {
        return Err(MigrateError::Mismatch(difference));
    }
    Ok(original.counts())
}

/// Writes `record` in a transaction of its own.
async fn put<T: Clone + Send + Sync + 'static>(
    store: &Arc<dyn Store>,
    record: &T,
    write: fn(&mut dyn crate::store::WriteTx, &T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let record = record.clone();
    store.write(move |tx| write(tx, &record)).await
}

/// Writes every record of `dump`, one transaction each, in list order.
async fn copy(target: &Arc<dyn Store>, dump: &Dump) -> Result<(), StoreError> {
    for a in &dump.accounts {
        put(target, &a.account, |tx, r| tx.put_account(r)).await?;
        for n in &a.networks {
            put(target, &n.network, |tx, r| tx.put_network(r)).await?;
            for peer in &n.peers {
                put(target, peer, |tx, r| tx.put_peer(r)).await?;
            }
            for vip in &n.vips {
                put(target, vip, |tx, r| tx.put_vip(r)).await?;
            }
            for (cluster, members) in &n.clusters {
                put(target, cluster, |tx, r| tx.put_cluster(r)).await?;
                for member in members {
                    put(target, member, |tx, r| tx.put_member(r)).await?;
                }
            }
            for hold in &n.holds {
                put(target, hold, |tx, r| tx.put_prefix_hold(r)).await?;
            }
        }
        for token in &a.tokens {
            put(target, token, |tx, r| tx.put_token(r)).await?;
        }
    }
    Ok(())
}

/// The first record that differs between `a` (the source) and `b` (the copy), described.
fn first_difference(a: &Dump, b: &Dump) -> Option<String> {
    if a == b {
        return None;
    }
    fn list<T: PartialEq + std::fmt::Debug>(what: &str, a: &[T], b: &[T]) -> Option<String> {
        if a.len() != b.len() {
            return Some(format!("{what}: {} in the source, {} in the copy", a.len(), b.len()));
        }
        a.iter()
            .zip(b)
            .find(|(x, y)| x != y)
            .map(|(x, y)| format!("{what}: {x:?} in the source, {y:?} in the copy"))
    }
    let accounts = |d: &Dump| d.accounts.iter().map(|a| a.account.clone()).collect::<Vec<_>>();
    if let Some(d) = list("accounts", &accounts(a), &accounts(b)) {
        return Some(d);
    }
    for (x, y) in a.accounts.iter().zip(&b.accounts) {
        let account = &x.account.id;
        let found = list(&format!("tokens of account {account}"), &x.tokens, &y.tokens).or_else(|| {
            let networks = |d: &AccountDump| d.networks.iter().map(|n| n.network.clone()).collect::<Vec<_>>();
            list(&format!("networks of account {account}"), &networks(x), &networks(y))
        });
        if found.is_some() {
            return found;
        }
        for (m, n) in x.networks.iter().zip(&y.networks) {
            let id = &m.network.id;
            let found = list(&format!("peers of network {id}"), &m.peers, &n.peers)
                .or_else(|| list(&format!("VIPs of network {id}"), &m.vips, &n.vips))
                .or_else(|| list(&format!("clusters of network {id}"), &m.clusters, &n.clusters))
                .or_else(|| list(&format!("hold-downs of network {id}"), &m.holds, &n.holds));
            if found.is_some() {
                return found;
            }
        }
    }
    Some("the records differ".into())
}
