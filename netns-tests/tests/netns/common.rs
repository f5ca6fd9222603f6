//! Helpers shared by the netns tests.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sdwan_lab::{Lab, LabGuard, Layout, UpOptions};
use wireguard_control::{AllowedIp, Device, PeerInfo};

/// Fails the test, clearly, unless it runs as root: a netns test that cannot run must not pass.
pub fn require_root() {
    assert!(
        sdwan_lab::cmd::is_root(),
        "the netns tests need root (network namespaces, WireGuard): run `sudo -E cargo test -p sdwan-lab --test netns` \
         after `cargo build --workspace`"
    );
}

/// A lab name no other test (or concurrent run) uses: `prefix` (1-2 chars) + 4 base-36 characters.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    assert!((1..=2).contains(&prefix.len()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
    let mut s = prefix.to_owned();
    for _ in 0..4 {
        s.push(char::from_digit(x % 36, 36).expect("digit"));
        x /= 36;
    }
    s
}

/// Builds a guarded lab of `peers` peers, after checking root.
pub fn lab(prefix: &str, peers: usize) -> LabGuard {
    lab_with(UpOptions::new(&unique_name(prefix), peers))
}

/// Builds a guarded lab from `opts`, after checking root.
pub fn lab_with(opts: UpOptions) -> LabGuard {
    require_root();
    let name = opts.name.clone();
    LabGuard::up(opts).unwrap_or_else(|e| panic!("lab {name} did not come up: {e}"))
}

/// Peer `j`'s overlay address.
pub fn overlay(j: usize) -> IpAddr {
    IpAddr::V6(Layout::overlay_addr(j))
}

/// Peer `j`'s entry on a device, by public key.
pub fn entry<'a>(lab: &Lab, dev: &'a Device, j: usize) -> Option<&'a PeerInfo> {
    let key = &lab.peer(j).expect("peer").public_key;
    dev.peers.iter().find(|p| &p.config.public_key.to_base64() == key)
}

/// Allowed IPs as sorted strings, to compare entries.
pub fn allowed(p: &PeerInfo) -> Vec<String> {
    let mut v: Vec<String> = p
        .config
        .allowed_ips
        .iter()
        .map(|a: &AllowedIp| format!("{}/{}", a.address, a.cidr))
        .collect();
    v.sort();
    v
}

/// Pings `to` from peer `i` until one reply comes back, at most `timeout`.
pub fn wait_reachable(lab: &Lab, i: usize, to: IpAddr, timeout: Duration) -> Duration {
    sdwan_lab::wait_until(timeout, Duration::from_millis(50), || {
        lab.ping(i, to, 1, Duration::from_millis(200))
            .map(|s| s.lost() == 0)
            .unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("p{i} cannot reach {to}: {e}"))
}

/// Asserts that `count` pings from `i` to `to` all come back.
pub fn assert_ping(lab: &Lab, i: usize, to: IpAddr, count: u32) {
    let stats = lab.ping(i, to, count, Duration::from_millis(100)).expect("ping runs");
    assert_eq!(stats.lost(), 0, "p{i} -> {to}: {stats}");
}

/// Short bounded-wait poll interval.
pub const POLL: Duration = Duration::from_millis(20);
