//! k3s bootstrap and join handshakes, and the k3s state a server reports (peer token).
//!
//! A peer is a member of at most one cluster. Bootstrap creates the cluster, its VIP (the caller its first
//! candidate), its join (server) token and its agent token; a retry by the same server returns the same cluster and VIP. A join adds
//! the caller as server or agent; a joining server is appended to the VIP's candidates, so candidate order
//! is join order (the store serializes writes). A retried join returns the same answer without appending
//! again. An agent joining another cluster than its own (named, or the most recent active one when no
//! target is named) moves there; a server stays where it is (409 `already_member`). A VIP has at most
//! [`MAX_CANDIDATES`] candidates (what the failover protocol carries): one more server is refused (409
//! `too_many_candidates`). A peer sees only the clusters of its own network: any other id is 404.
//!
//! A server's answer carries both k3s tokens (`token` and `agent-token` of its drop-in), an agent's only the
//! agent token, which k3s accepts for agents and refuses for servers: an agent's drop-in cannot join a
//! server. A cluster from before agent tokens gets one at its first handshake. Tokens are never logged.

use super::{authenticate, check_name, scope};
use crate::error::{code, ApiError};
use crate::model::{Cluster, ClusterMember, ClusterState, Peer, Role, TokenKind, TokenRecord, Vip};
use crate::store::{ReadTx, StoreError, WriteTx};
use crate::token::{self, Presented};
use sdwand::vocab::wire::{
    CandidateView, ClusterStateView, HandshakeRequest, HandshakeResponse, K3sStatus, Phase, ReportRequest,
};
use sdwand::vocab::MAX_CANDIDATES;

/// The port of the k3s API server behind the VIP.
pub const K3S_API_PORT: u16 = 6443;

/// `POST /v1/runtime/handshake`.
pub fn handshake(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    req: &HandshakeRequest,
    now_ms: u64,
) -> Result<HandshakeResponse, ApiError> {
    let (caller, peer) = caller_peer(tx, presented, now_ms)?;
    if !peer.roles.contains(&req.role) {
        return Err(ApiError::forbidden(
            code::ROLE_NOT_ENROLLED,
            format!("peer {:?} did not enroll with role {}", peer.name, req.role),
        ));
    }
    match req.phase {
        Phase::Bootstrap => bootstrap(tx, &caller, &peer, req, now_ms),
        Phase::JoinRequest => join(tx, &caller, &peer, req, now_ms),
    }
}

/// `POST /v1/clusters/{id}/report`: a server of the cluster reports k3s ready (bootstrapping → active) or
/// failed (→ error). Ready on a cluster in error state is refused (409): error is left by an operator
/// (`POST /v1/clusters/{id}/state`, [`super::set_cluster_state`]).
pub fn report(
    tx: &mut dyn WriteTx,
    presented: &Presented,
    cluster_id: &str,
    req: &ReportRequest,
    now_ms: u64,
) -> Result<ClusterStateView, ApiError> {
    let (caller, peer) = caller_peer(tx, presented, now_ms)?;
    let mut cluster = visible_cluster(tx, &caller, cluster_id)?;
    let is_server = tx
        .membership(&peer.id)?
        .is_some_and(|m| m.cluster_id == cluster.id && m.role == Role::Server);
    if !is_server {
        return Err(ApiError::forbidden(
            code::NOT_CLUSTER_SERVER,
            format!("peer {:?} is not a k3s server of cluster {cluster_id:?}", peer.name),
        ));
    }
    let state = match (req.k3s, cluster.state) {
        (K3sStatus::Ready, ClusterState::Error) => return Err(cluster_error(&cluster)),
        (K3sStatus::Ready, _) => ClusterState::Active,
        (K3sStatus::Failed, _) => ClusterState::Error,
    };
    if state != cluster.state {
        tx.after_commit(Box::new({
            let (id, old, name) = (cluster.id.clone(), cluster.state, peer.name.clone());
            move || tracing::info!(cluster = %id, %old, new = %state, peer = %name, "cluster state")
        }));
        cluster.state = state;
        tx.put_cluster(&cluster)?;
    }
    Ok(ClusterStateView {
        cluster_id: cluster.id,
        state,
    })
}

/// The calling peer (peer token), its last-seen time updated.
fn caller_peer(tx: &mut dyn WriteTx, presented: &Presented, now_ms: u64) -> Result<(TokenRecord, Peer), ApiError> {
    let caller = authenticate(tx, presented, &[TokenKind::Peer])?;
    let mut peer = tx.peer(scope(&caller.peer_id)?)?.ok_or_else(ApiError::unauthorized)?;
    peer.mark_seen(now_ms);
    tx.put_peer(&peer)?;
    Ok((caller, peer))
}

fn bootstrap(
    tx: &mut dyn WriteTx,
    caller: &TokenRecord,
    peer: &Peer,
    req: &HandshakeRequest,
    now_ms: u64,
) -> Result<HandshakeResponse, ApiError> {
    if req.role != Role::Server {
        return Err(ApiError::bad_request("phase bootstrap is for role server"));
    }
    if req.target_cluster_id.is_some() {
        return Err(ApiError::bad_request("target_cluster_id is for phase join_request"));
    }
    if let Some(name) = &req.cluster_name {
        check_name("cluster_name", name)?;
    }
    if let Some(member) = tx.membership(&peer.id)? {
        let cluster = stored_cluster(tx, &member.cluster_id)?;
        let vip = stored_vip(tx, &cluster.vip_id)?;
        let same_name = req.cluster_name.as_ref().is_none_or(|n| *n == cluster.name);
        if member.role == Role::Server && vip.candidates.first() == Some(&peer.id) && same_name {
            return answer(tx, &cluster, &vip, Role::Server);
        }
        return Err(already_member(peer, &member));
    }
    let mut network = tx.network(&peer.network_id)?.ok_or_else(ApiError::unauthorized)?;
    let (address, next) = super::alloc::next_vip_address(&network).ok_or_else(|| {
        ApiError::conflict(
            code::VIP_POOL_EXHAUSTED,
            format!("no address left in the VIP pool {}", network.vip_pool),
        )
    })?;
    let vip = Vip {
        id: token::new_id()?,
        network_id: network.id.clone(),
        address,
        candidates: vec![peer.id.clone()],
        holder: None,
        epoch: None,
        confirmed_peers: None,
        move_to: None,
        move_seq: 0,
        quorum: None,
    };
    let id = token::new_id()?;
    let cluster = Cluster {
        name: req.cluster_name.clone().unwrap_or_else(|| format!("k3s-{}", &id[..8])),
        id,
        account_id: caller.account_id.clone(),
        network_id: network.id.clone(),
        state: ClusterState::Bootstrapping,
        vip_id: vip.id.clone(),
        join_token: token::new_join_secret()?,
        agent_token: Some(token::new_join_secret()?),
        created_at_ms: now_ms,
    };
    network.next_vip_offset = next;
    network.revision += 1;
    tx.put_network(&network)?;
    tx.put_vip(&vip)?;
    tx.put_cluster(&cluster)?;
    tx.put_member(&ClusterMember {
        cluster_id: cluster.id.clone(),
        peer_id: peer.id.clone(),
        role: Role::Server,
        joined_at_ms: now_ms,
    })?;
    tx.after_commit(Box::new({
        let (cluster, address, peer) = (cluster.clone(), vip.address, peer.clone());
        move || {
            tracing::info!(
                account = %cluster.account_id, network = %peer.network_id, cluster = %cluster.id, vip = %address,
                peer = %peer.name, id = %peer.id, "cluster bootstrapped"
            );
        }
    }));
    answer(tx, &cluster, &vip, Role::Server)
}

fn join(
    tx: &mut dyn WriteTx,
    caller: &TokenRecord,
    peer: &Peer,
    req: &HandshakeRequest,
    now_ms: u64,
) -> Result<HandshakeResponse, ApiError> {
    if req.cluster_name.is_some() {
        return Err(ApiError::bad_request("cluster_name is for phase bootstrap"));
    }
    let cluster = match req.target_cluster_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => visible_cluster(tx, caller, id)?,
        None => tx.latest_active_cluster(&peer.network_id)?.ok_or_else(|| {
            ApiError::not_found(
                code::NO_ACTIVE_CLUSTER,
                "no active cluster in this peer's network: bootstrap one (and report k3s ready), or name it in \
                 target_cluster_id",
            )
        })?,
    };
    if cluster.state == ClusterState::Error {
        return Err(cluster_error(&cluster));
    }
    let mut vip = stored_vip(tx, &cluster.vip_id)?;
    match tx.membership(&peer.id)? {
        Some(m) if m.cluster_id == cluster.id && m.role == req.role => return answer(tx, &cluster, &vip, req.role),
        // An agent's target changed (sdwand reloaded with another target_cluster_id): it moves. An agent
        // holds no VIP candidacy, so nothing else changes.
        Some(m) if m.cluster_id != cluster.id && m.role == Role::Agent && req.role == Role::Agent => {
            let (name, to) = (peer.name.clone(), cluster.id.clone());
            tx.after_commit(Box::new(move || {
                tracing::info!(peer = %name, from = %m.cluster_id, %to, "agent moved to another cluster");
            }));
        }
        Some(m) => return Err(already_member(peer, &m)),
        None => {}
    }
    if req.role == Role::Server && vip.candidates.len() >= MAX_CANDIDATES {
        return Err(ApiError::conflict(
            code::TOO_MANY_CANDIDATES,
            format!(
                "the VIP of cluster {:?} has {MAX_CANDIDATES} candidates, the most a VIP can have: join as agent, \
                 or remove a server first",
                cluster.id
            ),
        ));
    }
    tx.put_member(&ClusterMember {
        cluster_id: cluster.id.clone(),
        peer_id: peer.id.clone(),
        role: req.role,
        joined_at_ms: now_ms,
    })?;
    if req.role == Role::Server {
        vip.candidates.push(peer.id.clone());
        // A witness that becomes a candidate votes as a candidate: one voter, never two.
        if let Some(quorum) = &mut vip.quorum {
            quorum.witnesses.retain(|w| *w != peer.id);
        }
        tx.put_vip(&vip)?;
        let mut network = tx.network(&peer.network_id)?.ok_or_else(ApiError::unauthorized)?;
        network.revision += 1;
        tx.put_network(&network)?;
    }
    tx.after_commit(Box::new({
        let (cluster, peer, role) = (cluster.clone(), peer.clone(), req.role);
        move || {
            tracing::info!(
                account = %cluster.account_id, network = %peer.network_id, cluster = %cluster.id, peer = %peer.name,
                id = %peer.id, %role, "peer joined the cluster"
            );
        }
    }));
    answer(tx, &cluster, &vip, req.role)
}

/// The cluster if the caller may see it: in its network (peer token) or its account (admin token); 404
/// otherwise, as if it did not exist.
pub(super) fn visible_cluster(tx: &mut dyn ReadTx, caller: &TokenRecord, id: &str) -> Result<Cluster, ApiError> {
    let in_scope = |c: &Cluster| match caller.kind {
        TokenKind::Admin => c.account_id == caller.account_id,
        TokenKind::Peer | TokenKind::Enrollment => caller.network_id.as_deref() == Some(c.network_id.as_str()),
    };
    tx.cluster(id)?
        .filter(in_scope)
        .ok_or_else(|| ApiError::not_found(code::CLUSTER_NOT_FOUND, format!("no cluster {id:?}")))
}

fn stored_cluster(tx: &mut dyn ReadTx, id: &str) -> Result<Cluster, ApiError> {
    tx.cluster(id)?.ok_or_else(|| dangling("cluster_members", id))
}

fn stored_vip(tx: &mut dyn ReadTx, id: &str) -> Result<Vip, ApiError> {
    tx.vip(id)?.ok_or_else(|| dangling("clusters", id))
}

fn dangling(table: &'static str, id: &str) -> ApiError {
    StoreError::Corrupt {
        table,
        message: format!("reference to missing {id:?}"),
    }
    .into()
}

fn already_member(peer: &Peer, m: &ClusterMember) -> ApiError {
    ApiError::conflict(
        code::ALREADY_MEMBER,
        format!(
            "peer {:?} is already a {} of cluster {:?} (a peer belongs to one cluster)",
            peer.name, m.role, m.cluster_id
        ),
    )
}

fn cluster_error(cluster: &Cluster) -> ApiError {
    ApiError::conflict(
        code::CLUSTER_ERROR,
        format!("cluster {:?} is in error state", cluster.id),
    )
}

/// The handshake answer for a member of `cluster` in `role`; gives the cluster its agent token first if it
/// has none yet (a cluster from before agent tokens).
fn answer(tx: &mut dyn WriteTx, cluster: &Cluster, vip: &Vip, role: Role) -> Result<HandshakeResponse, ApiError> {
    let agent_token = match &cluster.agent_token {
        Some(t) => t.clone(),
        None => {
            let t = token::new_join_secret()?;
            tx.put_cluster(&Cluster {
                agent_token: Some(t.clone()),
                ..cluster.clone()
            })?;
            let id = cluster.id.clone();
            tx.after_commit(Box::new(move || {
                tracing::info!(cluster = %id, "cluster given an agent token (created before agent tokens)");
            }));
            t
        }
    };
    let join_token = match role {
        Role::Server => cluster.join_token.clone(),
        Role::Agent => agent_token.clone(),
    };
    let mut vip_candidates = Vec::with_capacity(vip.candidates.len());
    for id in &vip.candidates {
        let p = tx.peer(id)?.ok_or_else(|| dangling("vip_candidates", id))?;
        vip_candidates.push(CandidateView {
            peer_id: p.id,
            name: p.name,
            address: p.address,
        });
    }
    Ok(HandshakeResponse {
        cluster_id: cluster.id.clone(),
        cluster_name: cluster.name.clone(),
        state: cluster.state,
        role,
        api_endpoint: format!("https://[{}]:{K3S_API_PORT}", vip.address),
        join_token,
        agent_token: Some(agent_token),
        vip: vip.address,
        vip_candidates,
    })
}
