//! Answers `sdwanctl`'s requests from the daemon's state.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::control::{
    self, DaemonStatus, EndpointView, K3sView, NodePeer, NodeVip, RegistryView, Request, Response, SocketView,
    WorkloadView,
};
use crate::metrics::Metrics;
use crate::vip::runtime::VipRuntime;

use super::plane::Plane;

/// What the status answer needs besides the plane and the VIPs.
pub(super) struct Facts<'a> {
    pub(super) backend: &'a str,
    pub(super) ready: bool,
    pub(super) config: &'a Config,
    /// The metrics endpoint's state.
    pub(super) metrics: EndpointView,
    /// The overlay metrics endpoint's state, once started.
    pub(super) metrics_overlay: Option<EndpointView>,
    /// The registry link's state, with `[registry]`.
    pub(super) registry: Option<RegistryView>,
    /// The k3s handshake and drop-in, with `[k3s]`.
    pub(super) k3s: Option<K3sView>,
}

/// The answer to `request`. A move starts the handover; the caller flushes the VIP runtime afterwards.
pub(super) fn answer(request: Request, vip: &mut VipRuntime, plane: &Plane, facts: &Facts<'_>) -> Response {
    let now = Instant::now();
    match request {
        Request::Status => status(vip, plane, facts, now),
        Request::VipList => Response::Vips(
            vip.statuses(now)
                .iter()
                .map(|s| NodeVip::from_status(s, vip.prefix_of(s.vip), &|a| vip.name_of(a)))
                .collect(),
        ),
        Request::VipMove { vip: address, to } => vip_move(vip, address, to.as_deref(), now),
    }
}

/// The `sdwanctl status` answer.
fn status(vip: &VipRuntime, plane: &Plane, facts: &Facts<'_>, now: Instant) -> Response {
    let names = |a| vip.name_of(a);
    let vips = vip
        .statuses(now)
        .iter()
        .map(|s| NodeVip::from_status(s, vip.prefix_of(s.vip), &names))
        .collect();
    let transport = vip.transport();
    let me = facts.config.interface.address;
    let failover_socket = SocketView {
        address: SocketAddr::V6(SocketAddrV6::new(me, facts.config.failover.port, 0, 0)),
        bound: transport.bound,
        error: transport.error,
    };
    Response::Status(Box::new(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        interface: plane.desired.ifname.clone(),
        address: facts.config.interface.address,
        backend: facts.backend.to_owned(),
        ready: facts.ready,
        failover_socket: Some(failover_socket),
        metrics: Some(facts.metrics.clone()),
        metrics_overlay: facts.metrics_overlay.clone(),
        registry: facts.registry.clone(),
        workload: Some(WorkloadView {
            mtu: plane.desired.mtu,
            prefixes: plane.desired.workload.own.clone(),
        }),
        k3s: facts.k3s.clone(),
        peers: peers(plane),
        vips,
    }))
}

/// The peers of the status answer: the desired ones, with what the device last showed of each.
fn peers(plane: &Plane) -> Vec<NodePeer> {
    let wall = SystemTime::now();
    let snapshot = plane.device.snapshot();
    plane
        .desired
        .peers
        .iter()
        .map(|(key, spec)| {
            let actual = snapshot.and_then(|s| s.peers.get(key));
            NodePeer {
                name: spec.name.clone(),
                public_key: spec.public_key.to_base64(),
                address: spec.address,
                endpoint: actual.and_then(|p| p.endpoint).or(spec.endpoint),
                last_handshake_secs_ago: actual
                    .and_then(|p| p.last_handshake)
                    .and_then(|t| wall.duration_since(t).ok())
                    .map(|d| d.as_secs()),
                last_received_secs_ago: None,
                rx_bytes: actual.map_or(0, |p| p.rx_bytes),
                tx_bytes: actual.map_or(0, |p| p.tx_bytes),
            }
        })
        .collect()
}

/// Completes a status answer's peers from a device read made now (see [`Metrics::peers_live`]): handshake
/// ages, endpoints and counters from that read, and when each peer last sent something. Runs off the
/// event loop: the read may take up to the scrape timeout.
pub(super) async fn complete_peers(metrics: &Metrics, response: &mut Response) {
    let Response::Status(status) = response else { return };
    let (_, live) = metrics.peers_live().await;
    let wall = SystemTime::now();
    let ago = |t: Option<SystemTime>| t.and_then(|t| wall.duration_since(t).ok()).map(|d| d.as_secs());
    for peer in &mut status.peers {
        let Some(l) = live.get(&peer.public_key) else { continue };
        peer.endpoint = l.endpoint.or(peer.endpoint);
        peer.last_handshake_secs_ago = ago(l.last_handshake);
        peer.last_received_secs_ago = ago(l.last_received);
        peer.rx_bytes = l.rx;
        peer.tx_bytes = l.tx;
    }
}

/// An operator's move of `address` to the peer `to` (a name or address), or to the best successor.
fn vip_move(vip: &mut VipRuntime, address: Ipv6Addr, to: Option<&str>, now: Instant) -> Response {
    let target = match to.map(|t| control::resolve_peer(t, |n| vip.member_by_name(n))) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(refusal)) => return refusal,
    };
    match vip.request_move(address, target, now) {
        None => Response::error(
            control::code::UNKNOWN_VIP,
            format!("{address} is not a VIP configured on this node"),
        ),
        Some(Err(e)) => Response::move_refused(address, &e, &|a| vip.name_of(a)),
        Some(Ok(to)) => {
            tracing::info!(vip = %address, to = %to, "operator moved the VIP; handing over");
            Response::Moved {
                vip: address,
                to: control::NamedAddr::new(to, &|a| vip.name_of(a)),
            }
        }
    }
}
