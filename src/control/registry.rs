//! `sdwanctl registry …`: the human rendering of the registry's admin answers (the client that fetches
//! them is [`crate::client::admin`]).

use std::fmt::Write as _;
use std::time::Duration;

use crate::vocab::wire::{
    CandidateView, ClusterStateView, ClustersResponse, EnrollmentTokenInfo, EnrollmentTokenView,
    EnrollmentTokensResponse, EpochView, FloatingResponse, FloatingView, MemberView, MoveRequestView, NetworkView,
    NetworksResponse, PeerView, PeersResponse, QuorumView, VipView, VipsResponse,
};
use crate::vocab::PrefixKind;

/// `sdwanctl registry networks`.
pub fn networks(n: &NetworksResponse) -> String {
    if n.networks.is_empty() {
        return "no networks\n".to_owned();
    }
    let rows: Vec<Vec<String>> = n
        .networks
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.id.clone(),
                n.overlay_prefix.to_string(),
                n.vip_pool.to_string(),
                n.revision.to_string(),
                or_dash(n.overlay_prefix_v4.map(|p| p.to_string()).as_deref()),
                pod_pools(n),
                joined(n.site_ranges.iter()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "OVERLAY",
            "VIP POOL",
            "REVISION",
            "OVERLAY V4",
            "POD POOLS",
            "SITE RANGES",
        ],
        &rows,
    )
}

/// A network's pod pools as `create-network --pod-pool` takes them (`PREFIX:NODE_LEN`), comma-separated.
fn pod_pools(n: &NetworkView) -> String {
    joined(n.pod_pools.iter().map(|p| format!("{}:{}", p.prefix, p.node_len)))
}

/// Items comma-separated, `-` for none.
fn joined<T: ToString>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// A member's prefixes: pod shares as they are, site prefixes marked `(site)`; `-` for none.
fn member_prefixes(m: &MemberView) -> String {
    joined(m.prefixes.iter().map(|p| match p.kind {
        PrefixKind::Pod => p.prefix.to_string(),
        PrefixKind::Site => format!("{}(site)", p.prefix),
    }))
}

/// `sdwanctl registry create-network`: the new network and what to do next.
pub fn network_created(n: &NetworkView) -> String {
    let mut workload = String::new();
    if let Some(v4) = n.overlay_prefix_v4 {
        let _ = write!(workload, ", IPv4 overlay {v4}");
    }
    if !n.pod_pools.is_empty() {
        let _ = write!(workload, ", pod pools {}", pod_pools(n));
    }
    if !n.site_ranges.is_empty() {
        let _ = write!(workload, ", site ranges {}", joined(n.site_ranges.iter()));
    }
    format!(
        "network {} created: id {}, overlay {}, VIP pool {}{workload}; issue enrollment tokens with `sdwanctl \
         registry tokens create --network {}`\n",
        n.name, n.id, n.overlay_prefix, n.vip_pool, n.id
    )
}

/// `sdwanctl registry clusters`.
pub fn clusters(c: &ClustersResponse) -> String {
    if c.clusters.is_empty() {
        return "no clusters\n".to_owned();
    }
    let rows: Vec<Vec<String>> = c
        .clusters
        .iter()
        .map(|c| {
            let members: Vec<String> = c.members.iter().map(|(name, role)| format!("{name}({role})")).collect();
            vec![
                c.name.clone(),
                c.cluster_id.clone(),
                c.state.to_string(),
                c.api_endpoint.clone(),
                or_dash(c.vip.holder.as_deref()),
                members.join(","),
            ]
        })
        .collect();
    table(&["NAME", "ID", "STATE", "API", "HOLDER", "MEMBERS"], &rows)
}

/// `sdwanctl registry vips`.
pub fn vips(v: &VipsResponse) -> String {
    if v.vips.is_empty() {
        return "no VIPs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = v
        .vips
        .iter()
        .map(|v| {
            let candidates: Vec<&str> = v.candidates.iter().map(|c| c.name.as_str()).collect();
            vec![
                v.address.to_string(),
                v.vip_id.clone(),
                or_dash(v.cluster_id.as_deref()),
                or_dash(v.holder.as_deref()),
                v.epoch.map_or_else(|| "-".to_owned(), epoch),
                v.confirmed_peers.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                candidates.join(","),
                move_request(v.move_request.as_ref()),
                quorum(v.quorum.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "ID",
            "CLUSTER",
            "HOLDER",
            "EPOCH",
            "CONFIRMED",
            "CANDIDATES",
            "MOVE",
            "QUORUM",
        ],
        &rows,
    )
}

/// `sdwanctl registry floating list`.
pub fn floating(f: &FloatingResponse) -> String {
    if f.floating.is_empty() {
        return "no floating prefixes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = f
        .floating
        .iter()
        .map(|f| {
            vec![
                f.prefix.to_string(),
                f.floating_id.clone(),
                or_dash(f.gateway.map(|g| g.to_string()).as_deref()),
                or_dash(f.holder.as_deref()),
                f.epoch.map_or_else(|| "-".to_owned(), epoch),
                if f.candidates.is_empty() {
                    "none (not routed)".to_owned()
                } else {
                    names(&f.candidates)
                },
                quorum(f.quorum.as_ref()),
                move_request(f.move_request.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "PREFIX",
            "ID",
            "GATEWAY",
            "HOLDER",
            "EPOCH",
            "CANDIDATES",
            "QUORUM",
            "MOVE",
        ],
        &rows,
    )
}

/// Peer names, comma-separated.
fn names(peers: &[CandidateView]) -> String {
    peers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(",")
}

/// Quorum mode in one cell: `off`, `on`, or `on (witnesses a,b)`.
fn quorum(q: Option<&QuorumView>) -> String {
    match q {
        None => "off".to_owned(),
        Some(q) if q.witnesses.is_empty() => "on".to_owned(),
        Some(q) => format!("on (witnesses {})", names(&q.witnesses)),
    }
}

/// A pending move in one cell: `to NAME (#SEQ)`, `-` for none.
fn move_request(m: Option<&MoveRequestView>) -> String {
    m.map_or_else(|| "-".to_owned(), |m| format!("to {} (#{})", m.to, m.seq))
}

/// `sdwanctl registry floating create|set`: the prefix now; `what` says what happened.
pub fn floating_changed(f: &FloatingView, what: &str) -> String {
    let gateway = f.gateway.map_or_else(String::new, |g| format!(", gateway {g}"));
    let candidates = if f.candidates.is_empty() {
        "none".to_owned()
    } else {
        names(&f.candidates)
    };
    format!(
        "floating prefix {} ({}) {what}: candidates {candidates}{gateway}, quorum {}; every daemon routes it to \
         its holder\n",
        f.prefix,
        f.floating_id,
        quorum(f.quorum.as_ref())
    )
}

/// `sdwanctl registry floating delete`: what was done (`given` is the prefix or id the operator typed).
pub fn floating_deleted(given: &str, id: &str) -> String {
    let which = if given == id {
        id.to_owned()
    } else {
        format!("{given} ({id})")
    };
    format!("floating prefix {which} deleted; every daemon stops routing it\n")
}

/// `sdwanctl registry floating move`: what was requested.
pub fn floating_moved(f: &FloatingView) -> String {
    match &f.move_request {
        Some(m) => format!(
            "move of floating prefix {} to {} requested (#{}); its holder hands it over once it sees the request\n",
            f.prefix, m.to, m.seq
        ),
        None => format!("floating prefix {}: no move pending\n", f.prefix),
    }
}

/// `sdwanctl registry vip-quorum`: the VIP's quorum mode now.
pub fn vip_quorum(v: &VipView) -> String {
    format!(
        "VIP {} ({}): quorum {}; the voters are its candidates ({}) and the witnesses\n",
        v.address,
        v.vip_id,
        quorum(v.quorum.as_ref()),
        names(&v.candidates)
    )
}

/// `sdwanctl registry peers`; `now_ms` dates the last-seen column.
pub fn peers(p: &PeersResponse, now_ms: u64) -> String {
    if p.peers.is_empty() {
        return "no peers\n".to_owned();
    }
    let rows: Vec<Vec<String>> = p
        .peers
        .iter()
        .map(|p| {
            let m = &p.member;
            let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
            let silent = Duration::from_secs(now_ms.saturating_sub(m.last_seen_ms) / 1000);
            vec![
                m.name.clone(),
                m.peer_id.clone(),
                m.address.to_string(),
                or_dash(m.address_v4.map(|a| a.to_string()).as_deref()),
                member_prefixes(m),
                m.lifecycle.to_string(),
                if roles.is_empty() {
                    "-".to_owned()
                } else {
                    roles.join(",")
                },
                p.cluster
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |(id, role)| format!("{id} ({role})")),
                format!("{} ago", humantime::format_duration(silent)),
                if p.stale {
                    "stale"
                } else if p.silent {
                    "silent"
                } else {
                    "live"
                }
                .to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "ADDRESS",
            "V4",
            "PREFIXES",
            "CLASS",
            "ROLES",
            "CLUSTER",
            "LAST SEEN",
            "STATE",
        ],
        &rows,
    )
}

/// `sdwanctl registry move`: what was requested.
pub fn moved(v: &VipView) -> String {
    match &v.move_request {
        Some(m) => format!(
            "move of VIP {} to {} requested (#{}); its holder hands it over once it sees the request\n",
            v.address, m.to, m.seq
        ),
        None => format!("VIP {}: no move pending\n", v.address),
    }
}

/// `sdwanctl registry remove-peer`: what was done (`given` is the name or id the operator typed).
pub fn removed(given: &str, peer_id: &str) -> String {
    let peer = if given == peer_id {
        format!("peer {peer_id}")
    } else {
        format!("peer {given} ({peer_id})")
    };
    format!(
        "{peer} removed (tokens, cluster membership, VIP candidacy; its /32 and prefixes are held down before \
         reuse); every daemon drops it\n"
    )
}

/// `sdwanctl registry site-prefixes`: the peer's prefixes now.
pub fn site_prefixes_set(p: &PeerView) -> String {
    let m = &p.member;
    let sites = joined(
        m.prefixes
            .iter()
            .filter(|r| r.kind == PrefixKind::Site)
            .map(|r| r.prefix),
    );
    format!(
        "peer {} ({}): site prefixes {sites}; all its prefixes: {}; every daemon routes them to it\n",
        m.name,
        m.peer_id,
        member_prefixes(m)
    )
}

/// `sdwanctl registry tokens create`: the token (shown once, alone on its first line) and its limits.
pub fn token_created(t: &EnrollmentTokenView, now_ms: u64) -> String {
    format!(
        "{}\nenrollment token {} for network {}: {}; it is shown only now\n",
        t.token,
        t.info.id,
        t.info.network_id,
        limits(&t.info, now_ms)
    )
}

/// `sdwanctl registry tokens revoke`: what was done.
pub fn token_revoked(t: &EnrollmentTokenInfo) -> String {
    format!(
        "enrollment token {} revoked: it answers 401 token_revoked from now on (peers it enrolled keep their own \
         tokens)\n",
        t.id
    )
}

/// `sdwanctl registry tokens list`; `now_ms` decides which tokens are expired.
pub fn tokens(t: &EnrollmentTokensResponse, now_ms: u64) -> String {
    if t.tokens.is_empty() {
        return "no enrollment tokens\n".to_owned();
    }
    let rows: Vec<Vec<String>> = t
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.network_id.clone(),
                time(t.created_at_ms),
                t.expires_at_ms.map_or_else(|| "never".to_owned(), time),
                format!(
                    "{}/{}",
                    t.uses,
                    t.max_uses.map_or_else(|| "unlimited".to_owned(), |m| m.to_string())
                ),
                roles(t.roles.as_deref()),
                token_state(t, now_ms).to_owned(),
            ]
        })
        .collect();
    table(
        &["ID", "NETWORK", "CREATED", "EXPIRES", "USES", "ROLES", "STATE"],
        &rows,
    )
}

/// `sdwanctl registry cluster-state`: the state now.
pub fn cluster_state(c: &ClusterStateView) -> String {
    format!("cluster {} is {}\n", c.cluster_id, c.state)
}

/// One line of a token's limits.
fn limits(t: &EnrollmentTokenInfo, now_ms: u64) -> String {
    format!(
        "expires {}, {} use(s) of {}, roles {}, {}",
        t.expires_at_ms.map_or_else(|| "never".to_owned(), time),
        t.uses,
        t.max_uses.map_or_else(|| "unlimited".to_owned(), |m| m.to_string()),
        roles(t.roles.as_deref()),
        token_state(t, now_ms)
    )
}

/// Whether a token can still enroll at `now_ms`, in one word.
fn token_state(t: &EnrollmentTokenInfo, now_ms: u64) -> &'static str {
    if t.revoked_at_ms.is_some() {
        "revoked"
    } else if t.expires_at_ms.is_some_and(|at| now_ms >= at) {
        "expired"
    } else if t.max_uses.is_some_and(|m| t.uses >= m) {
        "used-up"
    } else {
        "active"
    }
}

fn roles(roles: Option<&[crate::vocab::Role]>) -> String {
    match roles {
        None => "all".to_owned(),
        Some([]) => "none".to_owned(),
        Some(r) => r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
    }
}

/// A Unix-ms time as RFC 3339 UTC, to the second.
fn time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn epoch(e: EpochView) -> String {
    format!("{}.{}", e.term, e.rank)
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// Left-aligned columns two spaces apart, trailing blanks trimmed.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::wire::{ClusterView, MemberView, PeerView};
    use crate::vocab::{ClusterState, Lifecycle, Role};

    fn vip() -> VipView {
        VipView {
            vip_id: "v-1".into(),
            address: "fd00:5d:f::1".parse().expect("address"),
            cluster_id: Some("c-1".into()),
            candidates: ["s1", "s2"]
                .iter()
                .enumerate()
                .map(|(i, n)| CandidateView {
                    peer_id: format!("p-{i}"),
                    name: (*n).into(),
                    address: format!("fd00:5d::{}", i + 1).parse().expect("address"),
                })
                .collect(),
            holder: Some("s1".into()),
            epoch: Some(EpochView { term: 4, rank: 0 }),
            confirmed_peers: Some(3),
            move_request: Some(MoveRequestView {
                to: "s2".into(),
                seq: 2,
            }),
            quorum: None,
        }
    }

    #[test]
    fn vips_render_holder_epoch_candidates_and_move() {
        let text = vips(&VipsResponse { vips: vec![vip()] });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("ADDRESS       ID   CLUSTER  HOLDER  EPOCH"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "fd00:5d:f::1  v-1  c-1      s1      4.0    3          s1,s2       to s2 (#2)  off"
        );
        assert_eq!(vips(&VipsResponse { vips: vec![] }), "no VIPs\n");
        assert!(moved(&vip()).contains("to s2 requested (#2)"));
    }

    fn floating_view() -> FloatingView {
        let v = vip();
        FloatingView {
            floating_id: "f-1".into(),
            prefix: "203.0.113.0/24".parse().expect("prefix"),
            gateway: Some("203.0.113.1".parse().expect("gateway")),
            candidates: v.candidates.clone(),
            holder: Some("s2".into()),
            epoch: Some(EpochView { term: 7, rank: 1 }),
            move_request: None,
            quorum: Some(QuorumView {
                witnesses: vec![CandidateView {
                    peer_id: "p-9".into(),
                    name: "w".into(),
                    address: "fd00:5d::9".parse().expect("address"),
                }],
            }),
        }
    }

    #[test]
    fn floating_prefixes_render_holder_candidates_and_quorum() {
        let f = floating_view();
        let orphan = FloatingView {
            floating_id: "f-2".into(),
            prefix: "2001:db8:6::/48".parse().expect("prefix"),
            gateway: None,
            candidates: vec![],
            holder: None,
            epoch: None,
            move_request: Some(MoveRequestView {
                to: "s1".into(),
                seq: 1,
            }),
            quorum: None,
        };
        let text = floating(&FloatingResponse {
            floating: vec![f.clone(), orphan.clone()],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("PREFIX           ID   GATEWAY      HOLDER  EPOCH"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "203.0.113.0/24   f-1  203.0.113.1  s2      7.1    s1,s2              on (witnesses w)  -"
        );
        assert_eq!(
            lines[2],
            "2001:db8:6::/48  f-2  -            -       -      none (not routed)  off               to s1 (#1)"
        );
        assert_eq!(
            floating(&FloatingResponse { floating: vec![] }),
            "no floating prefixes\n"
        );
        assert_eq!(
            floating_changed(&f, "created"),
            "floating prefix 203.0.113.0/24 (f-1) created: candidates s1,s2, gateway 203.0.113.1, quorum on \
             (witnesses w); every daemon routes it to its holder\n"
        );
        assert!(floating_moved(&orphan).contains("2001:db8:6::/48 to s1 requested (#1)"));
        assert!(floating_moved(&f).contains("no move pending"));
        assert_eq!(
            floating_deleted("203.0.113.0/24", "f-1"),
            "floating prefix 203.0.113.0/24 (f-1) deleted; every daemon stops routing it\n"
        );
        let quorate = VipView {
            quorum: Some(QuorumView { witnesses: vec![] }),
            ..vip()
        };
        assert_eq!(
            vip_quorum(&quorate),
            "VIP fd00:5d:f::1 (v-1): quorum on; the voters are its candidates (s1,s2) and the witnesses\n"
        );
    }

    #[test]
    fn clusters_and_peers_render_one_row_each() {
        let c = ClusterView {
            cluster_id: "c-1".into(),
            name: "prod".into(),
            network_id: "n-1".into(),
            state: ClusterState::Active,
            api_endpoint: "https://[fd00:5d:f::1]:6443".into(),
            vip: vip(),
            members: vec![("s1".into(), Role::Server), ("a1".into(), Role::Agent)],
            created_at_ms: 0,
        };
        let text = clusters(&ClustersResponse { clusters: vec![c] });
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("active  https://[fd00:5d:f::1]:6443  s1      s1(server),a1(agent)")),
            "{text}"
        );
        let peer = PeerView {
            member: MemberView {
                peer_id: "p-0".into(),
                name: "s1".into(),
                public_key: "k".into(),
                endpoint: None,
                address: "fd00:5d::1".parse().expect("address"),
                routed_prefixes: vec![],
                address_v4: None,
                prefixes: Vec::new(),
                lifecycle: Lifecycle::Spot,
                roles: vec![Role::Server],
                last_seen_ms: 1_000,
            },
            network_id: "n-1".into(),
            cluster: Some(("c-1".into(), Role::Server)),
            stale: true,
            silent: false,
        };
        let text = peers(
            &PeersResponse {
                peers: vec![peer.clone()],
            },
            66_000,
        );
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("spot   server  c-1 (server)  1m 5s ago  stale")),
            "{text}"
        );
        let silent = PeerView {
            stale: false,
            silent: true,
            ..peer
        };
        let text = peers(&PeersResponse { peers: vec![silent] }, 21_000);
        assert!(
            text.lines().nth(1).is_some_and(|l| l.ends_with("20s ago    silent")),
            "{text}"
        );
    }

    #[test]
    fn prefixes_render_in_peers_networks_and_site_prefix_answers() {
        use crate::vocab::{PodPool, RoutedPrefix};
        let prefix = |p: &str, kind| RoutedPrefix {
            prefix: p.parse().expect("prefix"),
            kind,
        };
        let member = MemberView {
            peer_id: "p-0".into(),
            name: "edge".into(),
            public_key: "k".into(),
            endpoint: None,
            address: "fd00:5d::1".parse().expect("address"),
            routed_prefixes: vec!["fd00:42::/64".parse().expect("prefix")],
            address_v4: Some("192.0.2.1".parse().expect("address")),
            prefixes: vec![
                prefix("198.51.100.0/28", PrefixKind::Pod),
                prefix("fd00:42::/64", PrefixKind::Pod),
                prefix("203.0.113.0/26", PrefixKind::Site),
            ],
            lifecycle: Lifecycle::Persistent,
            roles: vec![],
            last_seen_ms: 0,
        };
        let peer = PeerView {
            member,
            network_id: "n-1".into(),
            cluster: None,
            stale: false,
            silent: false,
        };
        let text = peers(
            &PeersResponse {
                peers: vec![peer.clone()],
            },
            0,
        );
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l
                    .contains("fd00:5d::1  192.0.2.1  198.51.100.0/28,fd00:42::/64,203.0.113.0/26(site)  persistent")),
            "{text}"
        );
        assert_eq!(
            site_prefixes_set(&peer),
            "peer edge (p-0): site prefixes 203.0.113.0/26; all its prefixes: \
             198.51.100.0/28,fd00:42::/64,203.0.113.0/26(site); every daemon routes them to it\n"
        );
        let network = NetworkView {
            id: "n-1".into(),
            account_id: "a".into(),
            name: "pods".into(),
            overlay_prefix: "fd00:5d::/48".parse().expect("prefix"),
            vip_pool: "fd00:5d:f::/64".parse().expect("prefix"),
            overlay_prefix_v4: None,
            pod_pools: vec![PodPool {
                prefix: "198.51.100.0/24".parse().expect("prefix"),
                node_len: 28,
            }],
            site_ranges: vec![],
            revision: 1,
        };
        let text = networks(&NetworksResponse {
            networks: vec![network.clone()],
        });
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("1         -           198.51.100.0/24:28  -")),
            "{text}"
        );
        assert!(network_created(&network).contains("VIP pool fd00:5d:f::/64, pod pools 198.51.100.0/24:28;"));
    }

    #[test]
    fn tokens_render_limits_and_state_never_a_secret() {
        let info = |id: &str| EnrollmentTokenInfo {
            id: id.into(),
            network_id: "n-1".into(),
            created_at_ms: 0,
            expires_at_ms: Some(86_400_000),
            max_uses: Some(3),
            uses: 1,
            roles: Some(vec![Role::Agent]),
            revoked_at_ms: None,
        };
        let revoked = EnrollmentTokenInfo {
            revoked_at_ms: Some(5),
            roles: None,
            max_uses: None,
            expires_at_ms: None,
            ..info("t-2")
        };
        let list = EnrollmentTokensResponse {
            tokens: vec![info("t-1"), revoked],
        };
        let text = tokens(&list, 1_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID   NETWORK  CREATED"), "{text}");
        assert!(
            lines[1].ends_with("1970-01-02T00:00:00Z  1/3          agent  active"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("never                 1/unlimited  all    revoked"),
            "{text}"
        );
        assert!(tokens(&list, 86_400_000)
            .lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("expired")));
        let created = EnrollmentTokenView {
            token: "sdwe_x_y".into(),
            info: info("t-1"),
        };
        let text = token_created(&created, 0);
        assert_eq!(
            text.lines().next(),
            Some("sdwe_x_y"),
            "the token alone on the first line"
        );
        assert!(text.contains("1 use(s) of 3, roles agent, active"), "{text}");
        assert!(token_revoked(&info("t-1")).contains("t-1 revoked"));
        assert_eq!(
            tokens(&EnrollmentTokensResponse { tokens: vec![] }, 0),
            "no enrollment tokens\n"
        );
    }
}
