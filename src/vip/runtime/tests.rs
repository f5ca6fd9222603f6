//! The runtime's own rules, in process: which datagrams reach the machines, what the runtime does when
//! the socket binds or fails, fresh incarnations for new machines, and gauges refreshed only for the
//! machines an input reached.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::time::Instant;

use prometheus::Registry;

use super::socket::Transport;
use super::*;
use crate::vip::wire::{Body, Header, Heartbeat, Message};
use crate::vip::PeerState;

const ME: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 1);
const PEER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 2);
const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0xf, 0, 0, 0, 0, 1);
const VIP2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0xf, 0, 0, 0, 0, 2);

/// A two-member configuration on interface `ifname` with failover port `port` and the VIPs `vips`
/// (both members candidates).
fn config(ifname: &str, port: u16, vips: &[Ipv6Addr]) -> Config {
    let mut text = format!(
        "[interface]\nname = \"{ifname}\"\naddress = \"{ME}\"\noverlay_prefix = \"fd00:5d::/64\"\n\
         [failover]\nport = {port}\n\
         [[members]]\nname = \"a\"\npublic_key = \"i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=\"\naddress = \"{ME}\"\n\
         [[members]]\nname = \"b\"\npublic_key = \"adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=\"\naddress = \"{PEER}\"\n"
    );
    for v in vips {
        text += &format!("[[vip]]\naddress = \"{v}\"\ncandidates = [\"a\", \"b\"]\n");
    }
    crate::config::parse(Path::new("/test.toml"), &text).expect("a valid test configuration")
}

struct Scene {
    rt: VipRuntime,
    registry: Registry,
    state: tempfile::TempDir,
}

fn scene(cfg: &Config) -> Scene {
    let registry = Registry::new();
    let metrics = VipMetrics::register(&registry);
    let state = tempfile::tempdir().expect("a temporary state directory");
    let rt = VipRuntime::new(cfg, Incarnations::load(state.path()), |_| Adopt::Nothing, metrics);
    Scene { rt, registry, state }
}

impl Scene {
    /// The value of the sample of `name` whose labels include every pair of `labels`.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.registry.gather().into_iter().find(|f| f.name() == name)?;
        family
            .get_metric()
            .iter()
            .find(|m| {
                labels
                    .iter()
                    .all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v))
            })
            .map(|m| {
                if m.get_counter().has_value() {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                }
            })
    }

    fn rejected(&self, reason: &str) -> f64 {
        self.sample("sdwand_vip_datagrams_rejected_total", &[("reason", reason)])
            .unwrap_or(0.0)
    }

    fn received(&self) -> f64 {
        self.sample(
            "sdwand_vip_datagrams_total",
            &[("direction", "received"), ("kind", "heartbeat")],
        )
        .unwrap_or(0.0)
    }

    /// Puts a heartbeat from `sender` for `vip` in the receive buffer and hands it to the runtime as
    /// received from `from`.
    fn deliver(&mut self, vip: Ipv6Addr, sender: Ipv6Addr, from: SocketAddr, seq: u64) {
        let msg = Message {
            header: Header {
                vip,
                sender,
                incarnation: 1,
                seq,
            },
            body: Body::Heartbeat(Heartbeat {
                state: PeerState::Standby,
                healthy: true,
                interval_ms: 50,
                view: None,
                sent_at_us: 1,
                echo_at_us: 0,
                echo_held_us: 0,
                liveness: Vec::new(),
                vote: None,
            }),
        };
        let bytes = msg.to_bytes();
        self.rt.buf[..bytes.len()].copy_from_slice(&bytes);
        self.rt
            .handle(Input::Datagram { len: bytes.len(), from }, Instant::now());
    }
}

fn at(addr: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0))
}

/// A data plane that does nothing.
struct NoPlane;

impl DataPlane for NoPlane {
    async fn add_address(&mut self, _: Ipv6Addr) {}
    async fn remove_address(&mut self, _: Ipv6Addr) {}
    fn route(&mut self, _: Ipv6Addr, _: Option<Ipv6Addr>) {}
    async fn route_floating(&mut self, _: Ipv6Addr, _: IpNet, _: Option<Ipv6Addr>) {}
    async fn add_gateway(&mut self, _: Ipv6Addr, _: IpNet, _: &str) {}
    async fn remove_gateway(&mut self, _: Ipv6Addr) {}
    async fn address_lifetime(&mut self, _: Ipv6Addr, _: Option<std::time::Duration>) {}
    async fn gateway_lifetime(&mut self, _: Ipv6Addr, _: Option<std::time::Duration>) {}
}

#[test]
fn a_datagram_from_another_port_than_the_failover_port_is_dropped() {
    let mut s = scene(&config("sdwan0", 851, &[VIP]));
    // Any process on the peer can bind its overlay address with an ephemeral port.
    s.deliver(VIP, PEER, at(PEER, 40000), 1);
    assert_eq!(s.rejected("bad_port"), 1.0);
    assert_eq!(s.received(), 0.0, "the machine got it");
    // Control: the same datagram from the failover port reaches the machine.
    s.deliver(VIP, PEER, at(PEER, 851), 2);
    assert_eq!(s.received(), 1.0);
    assert_eq!(s.rejected("bad_port"), 1.0);
}

#[test]
fn a_datagram_from_this_nodes_own_address_is_dropped() {
    let mut s = scene(&config("sdwan0", 851, &[VIP]));
    s.deliver(VIP, ME, at(ME, 851), 1);
    assert_eq!(s.rejected("own_address"), 1.0);
    assert_eq!(s.received(), 0.0);
    // A sender that is not the source is still a forgery.
    s.deliver(VIP, ME, at(PEER, 851), 2);
    assert_eq!(s.rejected("forged_sender"), 1.0);
    assert_eq!(s.received(), 0.0);
}

#[test]
fn the_socket_state_is_tracked_published_and_explained() {
    let mut s = scene(&config("sdwan0", 851, &[VIP]));
    assert_eq!(s.sample("sdwand_vip_socket_bound", &[]), Some(0.0));
    assert!(s.rt.needs_bind());
    assert_eq!(
        s.rt.transport(),
        Transport {
            bound: false,
            error: None
        }
    );
    // No interface with this index or name in this namespace: the bind fails and says why.
    s.rt.ensure_bound(u32::MAX, Instant::now());
    let t = s.rt.transport();
    assert!(!t.bound);
    let error = t.error.expect("the reason is kept");
    assert!(error.contains("failover socket [fd00:5d::1]:851 on sdwan0"), "{error}");
    assert!(s.rt.needs_bind());
    assert_eq!(s.sample("sdwand_vip_socket_bound", &[]), Some(0.0));
    // A receive error on a bound socket takes it down with its reason.
    s.rt.handle(Input::SocketError(io::Error::other("boom")), Instant::now());
    assert_eq!(s.rt.transport().error.as_deref(), Some("receiving failed: boom"));
}

#[tokio::test]
async fn a_bound_socket_is_published_and_rebound_after_an_error() {
    // The loopback interface exists everywhere; binding it needs no privilege with an unprivileged port.
    let mut s = scene(&config("lo", 47851, &[VIP]));
    s.rt.ensure_bound(1, Instant::now());
    assert_eq!(
        s.rt.transport(),
        Transport {
            bound: true,
            error: None
        }
    );
    assert!(!s.rt.needs_bind());
    assert_eq!(s.sample("sdwand_vip_socket_bound", &[]), Some(1.0));
    s.rt.handle(Input::SocketError(io::Error::other("boom")), Instant::now());
    assert!(s.rt.needs_bind());
    assert_eq!(s.sample("sdwand_vip_socket_bound", &[]), Some(0.0));
    s.rt.ensure_bound(1, Instant::now());
    assert!(s.rt.transport().bound, "{:?}", s.rt.transport());
    assert_eq!(s.sample("sdwand_vip_socket_bound", &[]), Some(1.0));
    // The interface went away (the userspace implementation exited): down until bound again.
    s.rt.unbind(Instant::now(), "gone".into());
    assert_eq!(
        s.rt.transport(),
        Transport {
            bound: false,
            error: Some("gone".into())
        }
    );
    assert_eq!(s.sample("sdwand_vip_socket_bound", &[]), Some(0.0));
}

#[tokio::test]
async fn without_vips_nothing_is_bound() {
    let mut s = scene(&config("lo", 47852, &[]));
    assert!(!s.rt.needs_bind());
    s.rt.ensure_bound(1, Instant::now());
    assert!(!s.rt.transport().bound);
}

#[tokio::test]
async fn a_vip_removed_and_added_again_gets_a_fresh_incarnation() {
    let cfg = config("sdwan0", 851, &[VIP]);
    let mut s = scene(&cfg);
    let recorded = |dir: &Path| -> u64 {
        std::fs::read_to_string(dir.join("incarnation"))
            .expect("the incarnation is recorded")
            .trim()
            .parse()
            .expect("a number")
    };
    let first = recorded(s.state.path());
    s.rt.reload(&config("sdwan0", 851, &[]), &mut NoPlane, Instant::now())
        .await;
    assert_eq!(recorded(s.state.path()), first, "removing a VIP takes none");
    s.rt.reload(&cfg, &mut NoPlane, Instant::now()).await;
    assert!(
        recorded(s.state.path()) > first,
        "the re-added VIP's machine reused one"
    );
}

#[tokio::test]
async fn gauges_are_refreshed_only_for_the_machines_an_input_reached() {
    let mut s = scene(&config("sdwan0", 851, &[VIP, VIP2]));
    s.rt.flush(&mut NoPlane).await;
    let term = |s: &Scene, vip: Ipv6Addr| s.sample("sdwand_vip_epoch_term", &[("vip", &vip.to_string())]);
    assert_eq!(term(&s, VIP2), Some(0.0), "published at start");
    // A marker only a refresh of VIP2's gauges would overwrite.
    let marker = VipGauges {
        role: PeerState::Listening,
        term: 999,
        confirmed: 0,
        peers: 0,
        healthy: true,
        single_candidate: false,
    };
    s.rt.metrics.set_vip(&VIP2.to_string(), &marker);
    s.rt.metrics.set_vip(&VIP.to_string(), &marker);
    s.deliver(VIP, PEER, at(PEER, 851), 1);
    s.rt.flush(&mut NoPlane).await;
    assert_eq!(term(&s, VIP), Some(0.0), "the VIP the datagram was for is refreshed");
    assert_eq!(term(&s, VIP2), Some(999.0), "another VIP's gauges were refreshed");
}

#[test]
fn only_a_candidate_that_adopted_the_address_starts_assumed_healthy() {
    for adopt in [Adopt::Nothing, Adopt::HeldHere, Adopt::RoutedTo(PEER)] {
        for candidate in [false, true] {
            assert!(starts_healthy(false, candidate, adopt), "no check: always healthy");
            assert_eq!(
                starts_healthy(true, candidate, adopt),
                candidate && adopt == Adopt::HeldHere,
                "{adopt:?}, candidate {candidate}"
            );
        }
    }
}

#[tokio::test]
async fn the_single_candidate_gauge_follows_a_reload() {
    let text = |candidates: &str| {
        format!(
            "[interface]\nname = \"sdwan0\"\naddress = \"{ME}\"\noverlay_prefix = \"fd00:5d::/64\"\n\
             [[members]]\nname = \"a\"\npublic_key = \"i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=\"\naddress = \"{ME}\"\n\
             [[members]]\nname = \"b\"\npublic_key = \"adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=\"\naddress = \"{PEER}\"\n\
             [[vip]]\naddress = \"{VIP}\"\ncandidates = [{candidates}]\n"
        )
    };
    let parse = |t: String| crate::config::parse(Path::new("/test.toml"), &t).expect("a valid test configuration");
    let mut s = scene(&parse(text("\"a\"")));
    s.rt.flush(&mut NoPlane).await;
    let gauge = |s: &Scene| s.sample("sdwand_vip_single_candidate", &[("vip", &VIP.to_string())]);
    assert_eq!(gauge(&s), Some(1.0), "one candidate");
    s.rt.reload(&parse(text("\"a\", \"b\"")), &mut NoPlane, Instant::now())
        .await;
    assert_eq!(gauge(&s), Some(0.0), "a second candidate joined");
    s.rt.reload(&parse(text("\"a\"")), &mut NoPlane, Instant::now()).await;
    assert_eq!(gauge(&s), Some(1.0), "it left again");
}

#[test]
fn only_the_sole_candidate_warns_that_the_vip_cannot_fail_over() {
    let params = |me: Ipv6Addr, candidates: Vec<Ipv6Addr>| Params {
        vip: VIP,
        me,
        candidates,
        peers: vec![],
        timers: config("sc0", 51900, &[]).failover.timers(),
        quorum: None,
    };
    assert!(warns_single_candidate(&params(ME, vec![ME])));
    // A server that joins sees the first server alone before the view with its own candidacy arrives.
    assert!(!warns_single_candidate(&params(PEER, vec![ME])));
    assert!(!warns_single_candidate(&params(ME, vec![ME, PEER])));
    assert!(
        cannot_fail_over(&params(PEER, vec![ME])),
        "the gauge still says so on every node"
    );
}
