//! Building the `sdwand.toml` of a lab peer from `PeerParams` and [`Layout`]: every section the lab
//! writes (`[interface]`, `[backend]`, `[daemon]`, `[failover]`/`[[vip]]`, `[registry]`, `[k3s]`).
//!
//! Pure: nothing here touches the file system, a namespace or a process; the [`Lab`](crate::Lab) builds
//! the parameters from its options and writes what this returns. Topic files (`lab.rs`, `vip.rs`,
//! `registry.rs`) call here, never the other way round.

use std::path::Path;
use std::time::Duration;

use super::{
    BackendSection, DaemonSection, FailoverSection, InterfaceSection, K3sSection, Member, NodeConfig, RegistrySection,
    VipSection,
};
use crate::layout::{self, Layout, CLUSTER_NAME};

/// What a peer's configuration takes from the lab's options, the same for every peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerParams {
    /// The members' `persistent_keepalive` (seconds).
    pub persistent_keepalive: u16,
    /// The daemons' `resync_interval` (humantime).
    pub resync_interval: String,
    /// The daemons' `teardown_on_exit`.
    pub teardown_on_exit: bool,
    /// Whether the peers enroll with a registry instead of carrying static members and VIPs.
    pub registry: bool,
    /// The registry's replicas: every peer's `[registry]` lists them all (`urls`) when there are several.
    pub registry_replicas: usize,
    /// Whether the peers run pods (`[k3s] pod_network = "sdwan"`; registry labs only).
    pub pods: bool,
    /// The lab's VIP.
    pub vip: VipParams,
    /// The lab's floating prefixes: their candidates are the first `floating` peers; 0: none (see
    /// [`crate::floating`]).
    pub floating: usize,
    /// The families of the floating prefixes (one `[[floating]]` entry each).
    pub floating_family: crate::floating::FloatingFamily,
    /// Whether the floating prefix has a health check.
    pub floating_health: bool,
    /// Quorum mode of the floating prefix: `Some(witnesses)` (peer names); `None`: off.
    pub floating_quorum: Option<Vec<String>>,
}

/// The lab's one VIP, [`layout::VIP_ADDR`]: its candidates and failover timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VipParams {
    /// The first `candidates` peers, in order, are its candidates; 0: no VIP and no `[failover]`.
    pub candidates: usize,
    /// `failover.interval`.
    pub interval: Duration,
    /// `failover.dead_after`.
    pub dead_after: u32,
}

/// The configuration of peer `i`, with the static member list `members` (cleared with a registry).
pub(crate) fn peer_config(
    layout: &Layout,
    i: usize,
    opts: &PeerParams,
    wireguard_go: &Path,
    members: Vec<Member>,
) -> NodeConfig {
    let dir = layout.peer_dir(i);
    let (failover, vip) = failover_sections(&opts.vip);
    let mut config = NodeConfig {
        interface: InterfaceSection {
            name: layout.wg_if(i),
            private_key_file: dir.join("private.key"),
            listen_port: layout::LISTEN_PORT,
            mtu: 1420,
            address: Some(Layout::overlay_addr(i)),
            overlay_prefix: Some(layout::OVERLAY_PREFIX.to_owned()),
            persistent_keepalive: opts.persistent_keepalive,
        },
        backend: BackendSection {
            kind: "userspace".to_owned(),
            userspace_path: wireguard_go.to_owned(),
        },
        daemon: DaemonSection {
            state_dir: dir.join("state"),
            // Every address of the namespace: tests scrape 127.0.0.1 from inside it, a Prometheus server on
            // another peer scrapes the underlay address (the `prometheus` netns test).
            metrics_listen: "0.0.0.0:9581".parse().expect("constant address"),
            resync_interval: opts.resync_interval.clone(),
            teardown_on_exit: opts.teardown_on_exit,
            // Only with a VIP: a daemon without failover support refuses unknown keys.
            control_socket: layout.control_socket(i),
        },
        failover,
        vip,
        floating: Vec::new(),
        registry: None,
        k3s: None,
        members,
    };
    if opts.floating > 0 {
        config.floating = crate::floating::sections(
            opts.floating,
            opts.floating_family,
            opts.floating_health,
            opts.floating_quorum.as_deref(),
        );
        config.failover.get_or_insert_with(|| failover_section(&opts.vip));
    }
    if opts.registry {
        config.interface.address = None;
        config.interface.overlay_prefix = None;
        config.vip.clear();
        config.members.clear();
        config.registry = Some(registry_section(layout, i, "persistent", opts.registry_replicas));
        config.k3s = k3s_section(layout, i, opts.vip.candidates);
        if opts.pods {
            // Pods need [k3s] (pod_network lives there): without a cluster, an agent whose handshake the
            // registry refuses until one exists (the CNI configuration does not wait for it).
            let k3s = config
                .k3s
                .take()
                .unwrap_or_else(|| K3sSection::join("agent", "", layout.k3s_config(i)));
            config.k3s = Some(k3s.with_pods(layout, i));
        }
    }
    config
}

/// The `[failover]` section and the `[[vip]]` list every peer gets (none without candidates).
pub(crate) fn failover_sections(vip: &VipParams) -> (Option<FailoverSection>, Vec<VipSection>) {
    if vip.candidates == 0 {
        return (None, Vec::new());
    }
    let failover = failover_section(vip);
    let vip = VipSection {
        address: layout::VIP_ADDR,
        candidates: (1..=vip.candidates).map(Layout::peer_name).collect(),
    };
    (Some(failover), vec![vip])
}

/// The `[failover]` section with the lab's timers.
fn failover_section(vip: &VipParams) -> FailoverSection {
    FailoverSection {
        port: layout::FAILOVER_PORT,
        interval: humantime(vip.interval),
        dead_after: vip.dead_after,
        preempt: false,
        preempt_delay: "5s".to_owned(),
    }
}

/// A duration as the daemon's config writes it: `50ms`, or `1500us` below millisecond precision.
pub fn humantime(d: Duration) -> String {
    if Duration::from_millis(d.as_millis() as u64) == d {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// The `[registry]` section of peer `i` (persistent unless `lifecycle` says otherwise): `url` with one
/// replica, `urls` with all of them (in replica order) with several.
pub(crate) fn registry_section(l: &Layout, i: usize, lifecycle: &str, replicas: usize) -> RegistrySection {
    let (url, urls) = match replicas {
        0 | 1 => (Some(layout::registry_url()), Vec::new()),
        n => (None, (1..=n).map(Layout::replica_url).collect()),
    };
    RegistrySection {
        url,
        urls,
        insecure: true,
        enrollment_token_file: l.registry_dir().join("enrollment-token"),
        name: Layout::peer_name(i),
        endpoint: (Layout::underlay_addr(i), layout::LISTEN_PORT).into(),
        lifecycle: lifecycle.to_owned(),
        report_interval: Some("1s".to_owned()),
    }
}

/// The `[k3s]` section of peer `i` of a lab with `k` VIP candidates: p1 bootstraps the cluster, p2..pK join
/// it as servers, the rest as agents (most recent active cluster). None without candidates.
pub(crate) fn k3s_section(l: &Layout, i: usize, k: usize) -> Option<K3sSection> {
    let path = l.k3s_config(i);
    match i {
        _ if k == 0 => None,
        1 => Some(K3sSection::bootstrap(CLUSTER_NAME, path)),
        _ if i <= k => Some(K3sSection::join("server", "", path)),
        _ => Some(K3sSection::join("agent", "", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_for_the_config() {
        assert_eq!(humantime(Duration::from_millis(50)), "50ms");
        assert_eq!(humantime(Duration::from_secs(2)), "2000ms");
        assert_eq!(humantime(Duration::from_micros(12_500)), "12500us");
    }

    #[test]
    fn k3s_roles_follow_the_index() {
        let l = Layout::new("t").unwrap();
        let roles: Vec<Option<(String, bool)>> = (1..=5)
            .map(|i| k3s_section(&l, i, 3).map(|k| (k.role, k.bootstrap)))
            .collect();
        assert_eq!(
            roles,
            [
                Some(("server".into(), true)),
                Some(("server".into(), false)),
                Some(("server".into(), false)),
                Some(("agent".into(), false)),
                Some(("agent".into(), false)),
            ]
        );
        assert_eq!(k3s_section(&l, 1, 0), None);
    }

    /// The lab's `sdwand.toml`, static (three peers, two VIP candidates) and with a registry, is what
    /// the daemon's own parser accepts: the lab's typed copy of the schema cannot drift unnoticed.
    #[test]
    fn rendered_peer_configs_pass_the_daemon_parser() {
        let l = Layout::new("t").unwrap();
        let wireguard_go = Path::new("/usr/bin/wireguard-go");
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: Layout::peer_name(i),
                public_key: wireguard_control::Key::generate_private().get_public().to_base64(),
                endpoint: (Layout::underlay_addr(i), layout::LISTEN_PORT).into(),
                address: Layout::overlay_addr(i),
                routed_prefixes: Vec::new(),
            })
            .collect();
        for (registry, registry_replicas) in [(false, 1), (true, 1), (true, 2)] {
            let opts = PeerParams {
                registry_replicas,
                floating: 2,
                floating_family: crate::floating::FloatingFamily::Dual,
                floating_health: false,
                floating_quorum: Some(vec![Layout::peer_name(3)]),
                persistent_keepalive: 25,
                resync_interval: "2s".to_owned(),
                teardown_on_exit: true,
                registry,
                pods: false,
                vip: VipParams {
                    candidates: 2,
                    interval: Duration::from_millis(50),
                    dead_after: 4,
                },
            };
            for i in 1..=3 {
                let text = peer_config(&l, i, &opts, wireguard_go, members.clone())
                    .render()
                    .unwrap();
                let parsed = sdwand::config::parse(Path::new("sdwand.toml"), &text);
                assert!(parsed.is_ok(), "registry={registry} p{i}: {parsed:?}\n{text}");
                if let Ok(parsed) = parsed.map(|c| c.registry) {
                    let urls = parsed.map(|r| r.urls).unwrap_or_default();
                    assert_eq!(urls.len(), if registry { registry_replicas } else { 0 }, "{text}");
                }
            }
        }
    }
}
