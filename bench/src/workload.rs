//! The peers a benchmark applies, as sdwand's [`Desired`] and as a `wg setconf` file, and the check that
//! a device really holds them.
//!
//! Every peer has a random key, one /128 in the overlay prefix and an endpoint in the documentation
//! ranges, and no persistent keepalive: with keepalive, `wireguard-go` would start handshakes to the fake
//! endpoints and both sides would measure crypto noise.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};
use sdwand::mesh::{ActualDevice, Desired, PeerSpec};
use wireguard_control::Key;

/// The overlay prefix the peers' /128s come from.
const OVERLAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 0);

/// One benchmark peer.
#[derive(Debug, Clone)]
pub struct BenchPeer {
    /// Public key.
    pub key: Key,
    /// Endpoint (never contacted: the device stays down and no peer has a keepalive).
    pub endpoint: SocketAddr,
    /// Its one allowed IP.
    pub allowed: IpNet,
}

/// The interface and its peers; a case uses the first N.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The interface's private key.
    pub private_key: Key,
    /// The interface's listen port.
    pub listen_port: u16,
    /// Every peer, in generation order.
    pub peers: Vec<BenchPeer>,
}

impl Workload {
    /// `n` peers with fresh random keys.
    pub fn generate(n: usize) -> Self {
        let peers = (0..n)
            .map(|i| BenchPeer {
                key: Key::generate_private().get_public(),
                endpoint: endpoint(i),
                allowed: overlay_host(i as u64 + 1),
            })
            .collect();
        Workload {
            private_key: Key::generate_private(),
            listen_port: 51820,
            peers,
        }
    }

    /// sdwand's desired state for interface `ifname` with the first `n` peers.
    pub fn desired(&self, ifname: &str, n: usize) -> Desired {
        let peers = self.peers[..n]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let address = match p.allowed.addr() {
                    std::net::IpAddr::V6(a) => a,
                    std::net::IpAddr::V4(_) => unreachable!("the workload's allowed IPs are IPv6"),
                };
                let spec = PeerSpec {
                    name: format!("bench-{i}"),
                    public_key: p.key.clone(),
                    address,
                    endpoint: Some(p.endpoint),
                    allowed_ips: BTreeSet::new(),
                    keepalive: None,
                };
                (spec, BTreeSet::from([p.allowed]))
            })
            .collect();
        let overlay = Ipv6Net::new(OVERLAY, 64).expect("valid prefix length");
        let mut desired = Desired::new(ifname, &self.private_key, self.listen_port, 1420, overlay);
        desired.set_peers(peers);
        desired
    }

    /// The same interface and first `n` peers as a `wg setconf` file.
    pub fn wg_config(&self, n: usize) -> String {
        let mut out = String::with_capacity(64 + n * 160);
        let _ = write!(
            out,
            "[Interface]\nPrivateKey = {}\nListenPort = {}\n",
            self.private_key.to_base64(),
            self.listen_port
        );
        for p in &self.peers[..n] {
            let _ = write!(
                out,
                "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = {}\n",
                p.key.to_base64(),
                p.allowed,
                p.endpoint
            );
        }
        out
    }
}

/// The /128 number `i` in the overlay prefix.
pub fn overlay_host(i: u64) -> IpNet {
    host(OVERLAY, i)
}

/// The /128 number `i` under `base` (whose low 64 bits are zero).
pub fn host(base: Ipv6Addr, i: u64) -> IpNet {
    let addr = Ipv6Addr::from(u128::from(base) | u128::from(i));
    IpNet::V6(Ipv6Net::new(addr, 128).expect("valid prefix length"))
}

/// Endpoint number `i`: spread over 192.0.2.0/24 and 198.51.100.0/24 (TEST-NET-1 and -2), then ports.
fn endpoint(i: usize) -> SocketAddr {
    let slot = i % 508;
    let ip = if slot < 254 {
        Ipv4Addr::new(192, 0, 2, (slot + 1) as u8)
    } else {
        Ipv4Addr::new(198, 51, 100, (slot - 253) as u8)
    };
    let port = (20000 + i / 508).min(65535) as u16;
    SocketAddr::new(ip.into(), port)
}

/// Checks that `actual` holds exactly the desired private key, listen port and peers with their allowed
/// IPs and endpoints. Returns what differs.
pub fn verify(actual: &ActualDevice, desired: &Desired) -> Result<(), String> {
    if actual.private_key.as_ref() != Some(&desired.private_key) {
        return Err("the private key is not the desired one".into());
    }
    if actual.listen_port != Some(desired.listen_port) {
        return Err(format!(
            "listen port {:?}, want {}",
            actual.listen_port, desired.listen_port
        ));
    }
    if actual.peers.len() != desired.peers.len() {
        return Err(format!("{} peers, want {}", actual.peers.len(), desired.peers.len()));
    }
    for (key, spec) in &desired.peers {
        let Some(have) = actual.peers.get(key) else {
            return Err(format!("peer {} is missing", spec.public_key.to_base64()));
        };
        if have.allowed_ips != spec.allowed_ips || have.endpoint != spec.endpoint {
            return Err(format!(
                "peer {}: allowed IPs {:?} endpoint {:?}, want {:?} {:?}",
                spec.public_key.to_base64(),
                have.allowed_ips,
                have.endpoint,
                spec.allowed_ips,
                spec.endpoint
            ));
        }
    }
    Ok(())
}

/// Checks that `actual` has `n` peers and that peer `key` has exactly `want` as allowed IPs.
pub fn verify_peer(actual: &ActualDevice, n: usize, key: &Key, want: IpNet) -> Result<(), String> {
    verify_peer_set(actual, n, key, &BTreeSet::from([want]))
}

/// Checks that `actual` has `n` peers and that peer `key` has exactly the set `want` as allowed IPs.
pub fn verify_peer_set(actual: &ActualDevice, n: usize, key: &Key, want: &BTreeSet<IpNet>) -> Result<(), String> {
    if actual.peers.len() != n {
        return Err(format!("{} peers, want {n}", actual.peers.len()));
    }
    let have = actual.peers.get(&key.0).map(|p| &p.allowed_ips);
    if have != Some(want) {
        return Err(format!("peer {}: allowed IPs {have:?}, want {want:?}", key.to_base64()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdwand::mesh::plan_device;

    #[test]
    fn peers_are_distinct_and_keepalive_free() {
        let w = Workload::generate(600);
        let d = w.desired("sdwb0", 600);
        assert_eq!(d.peers.len(), 600);
        assert!(d.peers.values().all(|p| p.keepalive.is_none()));
        let ips: BTreeSet<_> = d.peers.values().flat_map(|p| p.allowed_ips.iter().copied()).collect();
        assert_eq!(ips.len(), 600);
        let conf = w.wg_config(600);
        assert_eq!(conf.matches("[Peer]").count(), 600);
        assert!(!conf.contains("PersistentKeepalive"));
    }

    #[test]
    fn verify_accepts_the_planned_device_and_rejects_a_missing_peer() {
        let w = Workload::generate(3);
        let d = w.desired("sdwb0", 3);
        let mut actual = ActualDevice::default();
        plan_device(&d, &actual, std::time::SystemTime::now()).apply_to(&mut actual);
        assert_eq!(verify(&actual, &d), Ok(()));
        assert_eq!(verify_peer(&actual, 3, &w.peers[0].key, w.peers[0].allowed), Ok(()));
        actual.peers.remove(&w.peers[1].key.0);
        assert!(verify(&actual, &d).is_err());
    }
}
