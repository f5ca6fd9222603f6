//! The record operations of [`ReadTx`] and [`WriteRecords`] in SQL. The caller opens and ends the transaction;
//! this only reads and writes rows, with cached prepared statements.
//!
//! Here: the transaction, the row decoding and the reads; [`write`]: the writes.

use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

use rusqlite::{Connection, OptionalExtension};

use super::super::{ReadTx, StoreError};
use crate::model::{
    Account, Cluster, ClusterMember, Floating, Network, Peer, PodPool, PrefixHold, Quorum, TokenKind, TokenLimits,
    TokenRecord, Vip,
};
use sdwand::vocab::Epoch;

mod write;

/// A transaction on one connection (begun and ended by the caller).
pub(super) struct SqlTx<'c> {
    pub(super) conn: &'c Connection,
}

fn corrupt(table: &'static str, message: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        message: message.to_string(),
    }
}

fn parse<T: FromStr>(table: &'static str, text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| corrupt(table, format!("{text:?}: {e}")))
}

fn unsigned(table: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(table, format!("negative value {v}")))
}

fn signed(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt("(write)", format!("value {v} out of range")))
}

fn list<T: FromStr>(table: &'static str, text: &str) -> Result<Vec<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| parse(table, s))
        .collect()
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Pod pools as stored: `prefix node_len`, comma-separated.
fn join_pools(pools: &[PodPool]) -> String {
    pools
        .iter()
        .map(|p| format!("{} {}", p.prefix, p.node_len))
        .collect::<Vec<_>>()
        .join(",")
}

fn pools(table: &'static str, text: &str) -> Result<Vec<PodPool>, StoreError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (prefix, node_len) = s
                .split_once(' ')
                .ok_or_else(|| corrupt(table, format!("pod pool {s:?} is not `prefix node_len`")))?;
            Ok(PodPool {
                prefix: parse(table, prefix)?,
                node_len: parse(table, node_len)?,
            })
        })
        .collect()
}

const PEER_COLUMNS: &str = "id, network_id, name, public_key, endpoint, address, lifecycle, roles, last_seen, \
                            created_at, enrolled_by, address_v4, pod_prefixes, site_prefixes";
const NETWORK_COLUMNS: &str = "account_id, name, overlay_prefix, vip_pool, revision, next_peer_offset, \
                               next_vip_offset, created_at, overlay_prefix_v4, pod_pools, site_ranges";
const TOKEN_COLUMNS: &str = "key_id, kind, secret_hash, account_id, network_id, peer_id, created_at, expires_at, \
                             max_uses, uses, roles, revoked_at";
const CLUSTER_COLUMNS: &str = "id, account_id, network_id, name, state, vip_id, join_token, created_at, agent_token";
const VIP_COLUMNS: &str =
    "id, network_id, address, holder, epoch_term, epoch_rank, confirmed_peers, move_to, move_seq, quorum, witnesses";
const FLOATING_COLUMNS: &str = "id, network_id, prefix, gateway, candidates, holder, epoch_term, epoch_rank, move_to, \
                                move_seq, quorum, witnesses, created_at";

/// The raw columns of a VIP row (read with rusqlite's `TryFrom<&Row>` for tuples).
type VipRow = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    String,
);

/// The raw columns of a floating prefix row.
type FloatingRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    String,
    i64,
);

/// A stored epoch from its two columns (both or neither).
fn epoch(table: &'static str, term: Option<i64>, rank: Option<i64>) -> Result<Option<Epoch>, StoreError> {
    match (term, rank) {
        (Some(term), Some(rank)) => Ok(Some(Epoch {
            term: unsigned(table, term)?,
            rank: u16::try_from(rank).map_err(|_| corrupt(table, format!("epoch rank {rank}")))?,
        })),
        _ => Ok(None),
    }
}

/// Quorum mode from its two columns: the flag and the witnesses' ids.
fn quorum(table: &'static str, on: i64, witnesses: &str) -> Result<Option<Quorum>, StoreError> {
    Ok((on != 0)
        .then(|| list(table, witnesses))
        .transpose()?
        .map(|witnesses| Quorum { witnesses }))
}

fn floating(row: FloatingRow) -> Result<Floating, StoreError> {
    const T: &str = "floating";
    let (id, network_id, prefix, gateway, candidates, holder, term, rank, move_to, move_seq, on, witnesses, created) =
        row;
    Ok(Floating {
        id,
        network_id,
        prefix: parse(T, &prefix)?,
        gateway: gateway.map(|g| parse(T, &g)).transpose()?,
        candidates: list(T, &candidates)?,
        holder,
        epoch: epoch(T, term, rank)?,
        move_to,
        move_seq: unsigned(T, move_seq)?,
        quorum: quorum(T, on, &witnesses)?,
        created_at_ms: unsigned(T, created)?,
    })
}

/// The raw columns of a network row (without its id).
type NetworkRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    String,
    String,
);

/// The raw columns of a peer row (decoded outside the rusqlite closure, whose error type is rusqlite's).
type PeerRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
);

fn peer(row: PeerRow) -> Result<Peer, StoreError> {
    let (
        id,
        network_id,
        name,
        public_key,
        endpoint,
        address,
        lifecycle,
        roles,
        last_seen,
        created,
        enrolled_by,
        address_v4,
        pod_prefixes,
        site_prefixes,
    ) = row;
    const T: &str = "peers";
    Ok(Peer {
        id,
        network_id,
        name,
        public_key,
        endpoint: endpoint.map(|e| parse(T, &e)).transpose()?,
        address: parse(T, &address)?,
        lifecycle: parse(T, &lifecycle)?,
        roles: list(T, &roles)?,
        address_v4: address_v4.map(|a| parse(T, &a)).transpose()?,
        pod_prefixes: list(T, &pod_prefixes)?,
        site_prefixes: list(T, &site_prefixes)?,
        last_seen_ms: unsigned(T, last_seen)?,
        created_at_ms: unsigned(T, created)?,
        enrolled_by,
    })
}

/// The raw columns of a token row.
type TokenRow = (
    String,
    String,
    Vec<u8>,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
    Option<i64>,
);

fn token(row: TokenRow) -> Result<TokenRecord, StoreError> {
    const T: &str = "tokens";
    let (key_id, kind, hash, account_id, network_id, peer_id, created, expires, max_uses, uses, roles, revoked) = row;
    let optional = |v: Option<i64>| v.map(|v| unsigned(T, v)).transpose();
    Ok(TokenRecord {
        key_id,
        kind: parse(T, &kind)?,
        secret_hash: hash.try_into().map_err(|_| corrupt(T, "secret hash is not 32 bytes"))?,
        account_id,
        network_id,
        peer_id,
        created_at_ms: unsigned(T, created)?,
        limits: TokenLimits {
            expires_at_ms: optional(expires)?,
            max_uses: optional(max_uses)?,
            uses: unsigned(T, uses)?,
            roles: roles.map(|r| list(T, &r)).transpose()?,
            revoked_at_ms: optional(revoked)?,
        },
    })
}

fn optional_signed(v: Option<u64>) -> Result<Option<i64>, StoreError> {
    v.map(signed).transpose()
}

type ClusterRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
);

fn cluster(row: ClusterRow) -> Result<Cluster, StoreError> {
    let (id, account_id, network_id, name, state, vip_id, join_token, created, agent_token) = row;
    Ok(Cluster {
        id,
        account_id,
        network_id,
        name,
        state: parse("clusters", &state)?,
        vip_id,
        join_token,
        agent_token,
        created_at_ms: unsigned("clusters", created)?,
    })
}

impl SqlTx<'_> {
    fn many_peers(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Peer>, StoreError> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE {filter} ORDER BY rowid");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| PeerRow::try_from(r))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(peer).collect()
    }

    fn many_clusters(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Cluster>, StoreError> {
        let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE {filter} ORDER BY created_at, rowid");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| ClusterRow::try_from(r))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(cluster).collect()
    }

    fn vip_with_candidates(&self, row: VipRow) -> Result<Vip, StoreError> {
        const T: &str = "vips";
        let (id, network_id, address, holder, term, rank, confirmed, move_to, move_seq, on, witnesses) = row;
        let epoch = epoch(T, term, rank)?;
        let candidates = self
            .conn
            .prepare_cached("SELECT peer_id FROM vip_candidates WHERE vip_id = ?1 ORDER BY rank")?
            .query_map([&id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Vip {
            network_id,
            address: parse(T, &address)?,
            candidates,
            holder,
            epoch,
            confirmed_peers: confirmed
                .map(|c| u32::try_from(c).map_err(|_| corrupt(T, format!("confirmed_peers {c}"))))
                .transpose()?,
            move_to,
            move_seq: unsigned(T, move_seq)?,
            quorum: quorum(T, on, &witnesses)?,
            id,
        })
    }

    fn one_peer(&self, filter: &str, args: impl rusqlite::Params) -> Result<Option<Peer>, StoreError> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE {filter}");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row(args, |r| PeerRow::try_from(r))
            .optional()?;
        row.map(peer).transpose()
    }

    fn one_cluster(&self, filter: &str, args: impl rusqlite::Params) -> Result<Option<Cluster>, StoreError> {
        let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE {filter}");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row(args, |r| ClusterRow::try_from(r))
            .optional()?;
        row.map(cluster).transpose()
    }
}

impl ReadTx for SqlTx<'_> {
    fn token(&mut self, key_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE key_id = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row([key_id], |r| TokenRow::try_from(r))
            .optional()?;
        row.map(token).transpose()
    }

    fn tokens(&mut self, account_id: &str, kind: TokenKind) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE account_id = ?1 AND kind = ?2 ORDER BY rowid");
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map([account_id, kind.as_str()], |r| TokenRow::try_from(r))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(token).collect()
    }

    fn account(&mut self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT name, created_at FROM accounts WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .optional()?;
        row.map(|(name, created)| {
            Ok(Account {
                id: id.to_owned(),
                name,
                created_at_ms: unsigned("accounts", created)?,
            })
        })
        .transpose()
    }

    fn account_by_name(&mut self, name: &str) -> Result<Option<Account>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT id, created_at FROM accounts WHERE name = ?1 ORDER BY rowid LIMIT 1")?
            .query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .optional()?;
        row.map(|(id, created)| {
            Ok(Account {
                id,
                name: name.to_owned(),
                created_at_ms: unsigned("accounts", created)?,
            })
        })
        .transpose()
    }

    fn network(&mut self, id: &str) -> Result<Option<Network>, StoreError> {
        const T: &str = "networks";
        let sql = format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE id = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], |r| NetworkRow::try_from(r))
            .optional()?;
        let Some((account_id, name, overlay, pool, revision, next_peer, next_vip, created, v4, pod_pools, sites)) = row
        else {
            return Ok(None);
        };
        Ok(Some(Network {
            id: id.to_owned(),
            account_id,
            name,
            overlay_prefix: parse(T, &overlay)?,
            vip_pool: parse(T, &pool)?,
            revision: unsigned(T, revision)?,
            next_peer_offset: unsigned(T, next_peer)?,
            next_vip_offset: unsigned(T, next_vip)?,
            created_at_ms: unsigned(T, created)?,
            overlay_prefix_v4: v4.map(|p| parse(T, &p)).transpose()?,
            pod_pools: pools(T, &pod_pools)?,
            site_ranges: list(T, &sites)?,
        }))
    }

    fn peer(&mut self, id: &str) -> Result<Option<Peer>, StoreError> {
        self.one_peer("id = ?1", [id])
    }

    fn peer_by_key(&mut self, network_id: &str, public_key: &str) -> Result<Option<Peer>, StoreError> {
        self.one_peer("network_id = ?1 AND public_key = ?2", [network_id, public_key])
    }

    fn peer_by_name(&mut self, network_id: &str, name: &str) -> Result<Option<Peer>, StoreError> {
        self.one_peer("network_id = ?1 AND name = ?2", [network_id, name])
    }

    fn peers(&mut self, network_id: &str) -> Result<Vec<Peer>, StoreError> {
        self.many_peers("network_id = ?1", [network_id])
    }

    fn cluster(&mut self, id: &str) -> Result<Option<Cluster>, StoreError> {
        self.one_cluster("id = ?1", [id])
    }

    fn latest_active_cluster(&mut self, network_id: &str) -> Result<Option<Cluster>, StoreError> {
        self.one_cluster(
            "network_id = ?1 AND state = 'active' ORDER BY created_at DESC, rowid DESC LIMIT 1",
            [network_id],
        )
    }

    fn membership(&mut self, peer_id: &str) -> Result<Option<ClusterMember>, StoreError> {
        const T: &str = "cluster_members";
        let row = self
            .conn
            .prepare_cached("SELECT cluster_id, role, joined_at FROM cluster_members WHERE peer_id = ?1")?
            .query_row([peer_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })
            .optional()?;
        row.map(|(cluster_id, role, joined)| {
            Ok(ClusterMember {
                cluster_id,
                peer_id: peer_id.to_owned(),
                role: parse(T, &role)?,
                joined_at_ms: unsigned(T, joined)?,
            })
        })
        .transpose()
    }

    fn vip(&mut self, id: &str) -> Result<Option<Vip>, StoreError> {
        let sql = format!("SELECT {VIP_COLUMNS} FROM vips WHERE id = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], |r| VipRow::try_from(r))
            .optional()?;
        row.map(|r| self.vip_with_candidates(r)).transpose()
    }

    fn networks(&mut self, account_id: &str) -> Result<Vec<Network>, StoreError> {
        let ids = self
            .conn
            .prepare_cached("SELECT id FROM networks WHERE account_id = ?1 ORDER BY rowid")?
            .query_map([account_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut networks = Vec::with_capacity(ids.len());
        for id in ids {
            networks.extend(self.network(&id)?);
        }
        Ok(networks)
    }

    fn vips(&mut self, network_id: &str) -> Result<Vec<Vip>, StoreError> {
        let sql = format!("SELECT {VIP_COLUMNS} FROM vips WHERE network_id = ?1 ORDER BY rowid");
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map([network_id], |r| VipRow::try_from(r))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|r| self.vip_with_candidates(r)).collect()
    }

    fn clusters(&mut self, network_id: &str) -> Result<Vec<Cluster>, StoreError> {
        self.many_clusters("network_id = ?1", [network_id])
    }

    fn cluster_members(&mut self, cluster_id: &str) -> Result<Vec<ClusterMember>, StoreError> {
        const T: &str = "cluster_members";
        let rows = self
            .conn
            .prepare_cached(
                "SELECT peer_id, role, joined_at FROM cluster_members WHERE cluster_id = ?1 \
                 ORDER BY joined_at, rowid",
            )?
            .query_map([cluster_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(peer_id, role, joined)| {
                Ok(ClusterMember {
                    cluster_id: cluster_id.to_owned(),
                    peer_id,
                    role: parse(T, &role)?,
                    joined_at_ms: unsigned(T, joined)?,
                })
            })
            .collect()
    }

    fn silent_peers(&mut self, before_ms: u64) -> Result<Vec<Peer>, StoreError> {
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        self.many_peers("last_seen < ?1", [before])
    }

    fn all_peers(&mut self) -> Result<Vec<Peer>, StoreError> {
        self.many_peers("1", [])
    }

    fn all_clusters(&mut self) -> Result<Vec<Cluster>, StoreError> {
        self.many_clusters("1", [])
    }

    fn held_prefixes(&mut self, network_id: &str) -> Result<Vec<IpNet>, StoreError> {
        const T: &str = "peers";
        let mut stmt = self.conn.prepare_cached(
            "SELECT address_v4, pod_prefixes, site_prefixes FROM peers WHERE network_id = ?1 AND \
             (address_v4 IS NOT NULL OR pod_prefixes != '' OR site_prefixes != '')",
        )?;
        let mut rows = stmt.query([network_id])?;
        let mut held = Vec::new();
        while let Some(row) = rows.next()? {
            if let Some(a) = row.get_ref(0)?.as_str_or_null().map_err(|e| corrupt(T, e))? {
                held.push(IpNet::V4(Ipv4Net::from(parse::<Ipv4Addr>(T, a)?)));
            }
            for column in [1, 2] {
                held.extend(list::<IpNet>(
                    T,
                    row.get_ref(column)?.as_str().map_err(|e| corrupt(T, e))?,
                )?);
            }
        }
        Ok(held)
    }

    fn floating(&mut self, id: &str) -> Result<Option<Floating>, StoreError> {
        let sql = format!("SELECT {FLOATING_COLUMNS} FROM floating WHERE id = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], |r| FloatingRow::try_from(r))
            .optional()?;
        row.map(floating).transpose()
    }

    fn floatings(&mut self, network_id: &str) -> Result<Vec<Floating>, StoreError> {
        let sql = format!("SELECT {FLOATING_COLUMNS} FROM floating WHERE network_id = ?1 ORDER BY rowid");
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map([network_id], |r| FloatingRow::try_from(r))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(floating).collect()
    }

    fn prefix_holds(&mut self, network_id: &str) -> Result<Vec<PrefixHold>, StoreError> {
        const T: &str = "prefix_holds";
        let rows = self
            .conn
            .prepare_cached("SELECT prefix, until, released_by FROM prefix_holds WHERE network_id = ?1 ORDER BY rowid")?
            .query_map([network_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(prefix, until, released_by)| {
                Ok(PrefixHold {
                    network_id: network_id.to_owned(),
                    prefix: parse(T, &prefix)?,
                    until_ms: unsigned(T, until)?,
                    released_by,
                })
            })
            .collect()
    }
}
