//! The writes of [`WriteRecords`] in SQL: inserts, updates and the removal of a peer, on the rows
//! [`super`] decodes.

use ipnet::IpNet;
use rusqlite::params;

use super::{corrupt, join, join_pools, optional_signed, signed, SqlTx};
use crate::model::{Account, Cluster, ClusterMember, Floating, Network, Peer, PrefixHold, Quorum, TokenRecord, Vip};
use crate::store::{StoreError, WriteRecords};

impl WriteRecords for SqlTx<'_> {
    fn put_account(&mut self, a: &Account) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO accounts (id, name, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET name = ?2, created_at = ?3",
            )?
            .execute(params![a.id, a.name, signed(a.created_at_ms)?])?;
        Ok(())
    }

    fn put_network(&mut self, n: &Network) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO networks (id, account_id, name, overlay_prefix, vip_pool, revision, next_peer_offset, \
                 next_vip_offset, created_at, overlay_prefix_v4, pod_pools, site_ranges) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (id) DO UPDATE SET account_id = ?2, name = ?3, overlay_prefix = ?4, vip_pool = ?5, \
                 revision = ?6, next_peer_offset = ?7, next_vip_offset = ?8, created_at = ?9, \
                 overlay_prefix_v4 = ?10, pod_pools = ?11, site_ranges = ?12",
            )?
            .execute(params![
                n.id,
                n.account_id,
                n.name,
                n.overlay_prefix.to_string(),
                n.vip_pool.to_string(),
                signed(n.revision)?,
                signed(n.next_peer_offset)?,
                signed(n.next_vip_offset)?,
                signed(n.created_at_ms)?,
                n.overlay_prefix_v4.map(|p| p.to_string()),
                join_pools(&n.pod_pools),
                join(&n.site_ranges),
            ])?;
        Ok(())
    }

    fn put_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
        let l = &t.limits;
        self.conn
            .prepare_cached(
                "INSERT INTO tokens (key_id, kind, secret_hash, account_id, network_id, peer_id, created_at, \
                 expires_at, max_uses, uses, roles, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                t.key_id,
                t.kind.as_str(),
                &t.secret_hash[..],
                t.account_id,
                t.network_id,
                t.peer_id,
                signed(t.created_at_ms)?,
                optional_signed(l.expires_at_ms)?,
                optional_signed(l.max_uses)?,
                signed(l.uses)?,
                l.roles.as_deref().map(join),
                optional_signed(l.revoked_at_ms)?,
            ])?;
        Ok(())
    }

    fn update_token(&mut self, t: &TokenRecord) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached("UPDATE tokens SET uses = ?2, revoked_at = ?3 WHERE key_id = ?1")?
            .execute(params![
                t.key_id,
                signed(t.limits.uses)?,
                optional_signed(t.limits.revoked_at_ms)?
            ])?;
        if changed == 1 {
            Ok(())
        } else {
            Err(corrupt("tokens", format!("update of missing token {:?}", t.key_id)))
        }
    }

    fn put_peer(&mut self, p: &Peer) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO peers (id, network_id, name, public_key, endpoint, address, lifecycle, roles, \
                 last_seen, created_at, enrolled_by, address_v4, pod_prefixes, site_prefixes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT (id) DO UPDATE SET network_id = ?2, name = ?3, public_key = ?4, endpoint = ?5, \
                 address = ?6, lifecycle = ?7, roles = ?8, last_seen = ?9, created_at = ?10, enrolled_by = ?11, \
                 address_v4 = ?12, pod_prefixes = ?13, site_prefixes = ?14",
            )?
            .execute(params![
                p.id,
                p.network_id,
                p.name,
                p.public_key,
                p.endpoint.map(|e| e.to_string()),
                p.address.to_string(),
                p.lifecycle.as_str(),
                join(&p.roles),
                signed(p.last_seen_ms)?,
                signed(p.created_at_ms)?,
                p.enrolled_by,
                p.address_v4.map(|a| a.to_string()),
                join(&p.pod_prefixes),
                join(&p.site_prefixes),
            ])?;
        Ok(())
    }

    fn put_cluster(&mut self, c: &Cluster) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO clusters (id, account_id, network_id, name, state, vip_id, join_token, created_at, \
                 agent_token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO UPDATE SET \
                 account_id = ?2, network_id = ?3, name = ?4, state = ?5, vip_id = ?6, join_token = ?7, \
                 created_at = ?8, agent_token = ?9",
            )?
            .execute(params![
                c.id,
                c.account_id,
                c.network_id,
                c.name,
                c.state.as_str(),
                c.vip_id,
                c.join_token,
                signed(c.created_at_ms)?,
                c.agent_token,
            ])?;
        Ok(())
    }

    fn put_member(&mut self, m: &ClusterMember) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO cluster_members (peer_id, cluster_id, role, joined_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (peer_id) DO UPDATE SET cluster_id = ?2, role = ?3, joined_at = ?4",
            )?
            .execute(params![
                m.peer_id,
                m.cluster_id,
                m.role.as_str(),
                signed(m.joined_at_ms)?
            ])?;
        Ok(())
    }

    fn put_vip(&mut self, v: &Vip) -> Result<(), StoreError> {
        let (term, rank) = epoch_columns(v.epoch)?;
        self.conn
            .prepare_cached(
                "INSERT INTO vips (id, network_id, address, holder, epoch_term, epoch_rank, confirmed_peers, \
                 move_to, move_seq, quorum, witnesses) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (id) DO UPDATE SET network_id = ?2, address = ?3, holder = ?4, epoch_term = ?5, \
                 epoch_rank = ?6, confirmed_peers = ?7, move_to = ?8, move_seq = ?9, quorum = ?10, witnesses = ?11",
            )?
            .execute(params![
                v.id,
                v.network_id,
                v.address.to_string(),
                v.holder,
                term,
                rank,
                v.confirmed_peers,
                v.move_to,
                signed(v.move_seq)?,
                v.quorum.is_some(),
                witnesses(v.quorum.as_ref()),
            ])?;
        self.conn
            .prepare_cached("DELETE FROM vip_candidates WHERE vip_id = ?1")?
            .execute([&v.id])?;
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO vip_candidates (vip_id, rank, peer_id) VALUES (?1, ?2, ?3)")?;
        for (rank, peer_id) in v.candidates.iter().enumerate() {
            insert.execute(params![v.id, signed(rank as u64)?, peer_id])?;
        }
        Ok(())
    }

    fn put_floating(&mut self, f: &Floating) -> Result<(), StoreError> {
        let (term, rank) = epoch_columns(f.epoch)?;
        self.conn
            .prepare_cached(
                "INSERT INTO floating (id, network_id, prefix, gateway, candidates, holder, epoch_term, epoch_rank, \
                 move_to, move_seq, quorum, witnesses, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT (id) DO UPDATE SET \
                 network_id = ?2, prefix = ?3, gateway = ?4, candidates = ?5, holder = ?6, epoch_term = ?7, \
                 epoch_rank = ?8, move_to = ?9, move_seq = ?10, quorum = ?11, witnesses = ?12, created_at = ?13",
            )?
            .execute(params![
                f.id,
                f.network_id,
                f.prefix.to_string(),
                f.gateway.map(|g| g.to_string()),
                join(&f.candidates),
                f.holder,
                term,
                rank,
                f.move_to,
                signed(f.move_seq)?,
                f.quorum.is_some(),
                witnesses(f.quorum.as_ref()),
                signed(f.created_at_ms)?,
            ])?;
        Ok(())
    }

    fn delete_floating(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM floating WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    fn delete_peer(&mut self, peer_id: &str) -> Result<(), StoreError> {
        for sql in [
            "DELETE FROM tokens WHERE peer_id = ?1",
            "DELETE FROM cluster_members WHERE peer_id = ?1",
            "DELETE FROM peers WHERE id = ?1",
        ] {
            self.conn.prepare_cached(sql)?.execute([peer_id])?;
        }
        Ok(())
    }

    fn put_prefix_hold(&mut self, h: &PrefixHold) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO prefix_holds (network_id, prefix, until, released_by) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (network_id, prefix) DO UPDATE SET until = ?3, released_by = ?4",
            )?
            .execute(params![
                h.network_id,
                h.prefix.to_string(),
                signed(h.until_ms)?,
                h.released_by
            ])?;
        Ok(())
    }

    fn delete_prefix_hold(&mut self, network_id: &str, prefix: IpNet) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM prefix_holds WHERE network_id = ?1 AND prefix = ?2")?
            .execute(params![network_id, prefix.to_string()])?;
        Ok(())
    }
}

/// An epoch as its two columns (term, rank), both NULL for none.
fn epoch_columns(epoch: Option<sdwand::vocab::Epoch>) -> Result<(Option<i64>, Option<i64>), StoreError> {
    Ok(match epoch {
        Some(e) => (Some(signed(e.term)?), Some(i64::from(e.rank))),
        None => (None, None),
    })
}

/// The witnesses column of quorum mode (empty when it is off).
fn witnesses(quorum: Option<&Quorum>) -> String {
    quorum.map_or_else(String::new, |q| join(&q.witnesses))
}
