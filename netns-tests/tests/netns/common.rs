//! Helpers shared by the netns tests: lab construction (at most [`max_labs`] labs at a time), VIP
//! assertions (ground truth on the interfaces, answers seen by an observer's probe), small waits.

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::{Lab, LabGuard, Layout, ProbeOptions, UpOptions};
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

/// How many labs the tests run at once: `SDWAN_LAB_PARALLEL`, default 2. Whatever `--test-threads` says,
/// this bounds the load, which the timing-sensitive VIP tests (5 ms probes, 50 ms heartbeats) need on a
/// small machine.
pub fn max_labs() -> usize {
    std::env::var("SDWAN_LAB_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

/// A place among the [`max_labs`] labs that may run at once; freed on drop.
#[derive(Debug)]
pub struct Slot(());

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Longest a test waits for a slot (every other test holding one must end in that time).
const SLOT_WAIT: Duration = Duration::from_secs(900);

/// Waits (at most 15 minutes) for a free slot.
pub fn slot() -> Slot {
    let (lock, cvar) = &SLOTS;
    let start = Instant::now();
    let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
    while *used >= max_labs() {
        let left = SLOT_WAIT.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "no free lab slot within {SLOT_WAIT:?}");
        used = cvar.wait_timeout(used, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    *used += 1;
    Slot(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, cvar) = &SLOTS;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cvar.notify_one();
    }
}

/// A guarded lab holding a [`Slot`]: the lab is removed first, then the slot freed (field order).
#[derive(Debug)]
pub struct TestLab {
    lab: LabGuard,
    _slot: Slot,
}

impl Deref for TestLab {
    type Target = LabGuard;
    fn deref(&self) -> &LabGuard {
        &self.lab
    }
}

impl DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut LabGuard {
        &mut self.lab
    }
}

/// Builds a guarded lab of `peers` peers, after checking root.
pub fn lab(prefix: &str, peers: usize) -> TestLab {
    lab_with(UpOptions::new(&unique_name(prefix), peers))
}

/// Builds a guarded static lab (no registry: `[[members]]` in every config) of `peers` peers, for tests that
/// edit the member list.
pub fn static_lab(prefix: &str, peers: usize) -> TestLab {
    let mut opts = UpOptions::new(&unique_name(prefix), peers);
    opts.registry = false;
    lab_with(opts)
}

/// Builds a guarded lab from `opts`, after checking root and waiting for a slot.
pub fn lab_with(opts: UpOptions) -> TestLab {
    require_root();
    let slot = slot();
    let name = opts.name.clone();
    let lab = LabGuard::up(opts).unwrap_or_else(|e| panic!("lab {name} did not come up: {e}"));
    TestLab { lab, _slot: slot }
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

/// Peers of a VIP lab: candidates p1..p3, observers p4 and p5.
pub const VIP_PEERS: usize = 5;
/// The candidates of a VIP lab.
pub const CANDIDATES: [usize; 3] = [1, 2, 3];
/// The observers of a VIP lab (followers: they route the VIP, never hold it).
pub const OBSERVERS: [usize; 2] = [4, 5];

/// A 5-peer lab whose first 3 peers are the VIP's candidates (heartbeats every 50 ms, dead after 4);
/// `up` has waited until one peer holds the VIP and every peer agrees.
pub fn vip_lab(prefix: &str) -> TestLab {
    let mut opts = UpOptions::new(&unique_name(prefix), VIP_PEERS);
    opts.vip_candidates = CANDIDATES.len();
    lab_with(opts)
}

/// `p3`.
pub fn name(i: usize) -> String {
    Layout::peer_name(i)
}

/// Waits (at most `timeout`) until one peer holds the VIP and every running peer agrees; returns it.
pub fn settled(lab: &Lab, timeout: Duration) -> usize {
    lab.wait_vip_settled(timeout)
        .unwrap_or_else(|e| panic!("the VIP does not settle: {e}"))
}

/// Waits (at most `timeout`) until the VIP has settled on `expected`.
pub fn wait_holder(lab: &Lab, expected: usize, timeout: Duration) -> Duration {
    sdwan_lab::wait_until(timeout, Duration::from_millis(50), || {
        lab.vip_settled().ok().flatten() == Some(expected)
    })
    .unwrap_or_else(|e| panic!("the VIP did not settle on p{expected}: {e}\n{}", lab.vip_view()))
}

/// Waits (at most 10 s) until `holder` alone of the floating candidates serves the site's gateway address;
/// panics with `what` and the candidates that serve it otherwise.
pub fn wait_sole_gateway(lab: &Lab, holder: usize, what: &str) {
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.gateway_holders().is_ok_and(|h| h == [holder])
    })
    .unwrap_or_else(|e| panic!("{what}: {e}: holders {:?}", lab.gateway_holders()));
}

/// Waits (at most `timeout`) until `holder` says it is holding and every peer whose daemon runs names it as
/// holder, whoever else still has the address (e.g. a node whose daemon was killed).
pub fn wait_believed(lab: &Lab, holder: usize, timeout: Duration) -> Duration {
    let agreed = || -> sdwan_lab::Result<bool> {
        if lab.vip_role(holder)?.as_deref() != Some("holding") {
            return Ok(false);
        }
        for i in 1..=lab.peer_count() {
            if lab.sdwand_pid(i)?.is_some() && lab.vip_believed_holder(i)? != Some(name(holder)) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    sdwan_lab::wait_until(timeout, Duration::from_millis(50), || agreed().unwrap_or(false))
        .unwrap_or_else(|e| panic!("the running peers do not agree on p{holder}: {e}\n{}", lab.vip_view()))
}

/// The first candidate, in promotion order, that is not in `excluding`: who takes over when those die.
pub fn next_candidate(excluding: &[usize]) -> usize {
    *CANDIDATES
        .iter()
        .find(|c| !excluding.contains(c))
        .expect("a candidate is left")
}

/// Asserts that the VIP is on `holder`'s interface and on no other for the whole of `duration` (polled
/// every 100 ms): an observation window, not a wait.
pub fn assert_sole_holder_for(lab: &Lab, holder: usize, duration: Duration) {
    let start = Instant::now();
    loop {
        let holders = lab.holders().expect("ip -6 addr");
        assert_eq!(
            holders,
            [holder],
            "after {:?} of {duration:?}, the VIP is on {holders:?} instead of p{holder} alone\n{}",
            start.elapsed(),
            lab.vip_view()
        );
        if start.elapsed() >= duration {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Probes the VIP from `observer` for 300 ms (every 5 ms) and asserts that `node` answered, and nobody
/// else: where the observer's traffic to the VIP lands.
pub fn assert_answered_by(lab: &Lab, observer: usize, node: usize) {
    let report = lab
        .probe(observer, ProbeOptions::new(Duration::from_millis(300)))
        .expect("probe runs");
    let expected = name(node);
    assert_eq!(
        report.answer_sequence(),
        [expected.as_str()],
        "p{observer}'s requests to {VIP_ADDR} should land on p{node}: {report}\n{}",
        lab.vip_view()
    );
    assert!(
        report.answered * 10 >= report.sent * 9,
        "p{observer} -> {VIP_ADDR}: too many requests lost: {report}"
    );
}

/// The sum of the failover counters of `peers` (each reads its running daemon's metrics).
pub fn failovers(lab: &Lab, peers: impl IntoIterator<Item = usize>) -> f64 {
    lab.vip_failovers_of(peers).expect("failover counters")
}

/// Peer `i`'s failovers with `reason` (0 when the series does not exist).
pub fn failovers_for(lab: &Lab, i: usize, reason: &str) -> f64 {
    lab.vip_failovers_by_reason(i)
        .expect("failover counters")
        .get(reason)
        .copied()
        .unwrap_or(0.0)
}

/// Waits (at most `timeout`) until peer `i` reports `role`.
pub fn wait_role(lab: &Lab, i: usize, role: &str, timeout: Duration) {
    sdwan_lab::wait_until(timeout, Duration::from_millis(20), || {
        lab.vip_role(i).ok().flatten().as_deref() == Some(role)
    })
    .unwrap_or_else(|e| panic!("p{i} is not {role}: {e}\n{}", lab.vip_view()));
}
