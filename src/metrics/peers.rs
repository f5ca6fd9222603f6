//! The per-peer WireGuard series and the device read behind them.
//!
//! It owns the series under sdwand's names (`sdwand_peer_*{peer}`) and under the names existing WireGuard
//! dashboards use (`wireguard_*{interface, public_key, friendly_name}`, as prometheus_wireguard_exporter
//! labels them), the read of the device they come from, and `daemon.peer_metrics` (all or none of them).
//!
//! The device is read when Prometheus scrapes ([`PeerSeries::refresh`]), so a handshake that just
//! happened shows: at most one read every [`MIN_READ_INTERVAL`] (scrapes in between share it), one read at
//! a time, each bounded by [`READ_TIMEOUT`]. When a read fails or times out, the series keep the last good
//! read and `sdwand_peer_stats_age_seconds` grows: that is the staleness rule. Handshake ages are always
//! computed at render time from the handshake's timestamp, never frozen at the read.
//!
//! Reads are applied one at a time in the order they were taken, so the byte counters only go down when
//! the device itself restarted from zero (then they count on from its new zero).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::PeerMetrics;
use crate::mesh::{ActualDevice, Desired, KeyBytes};
use crate::wg;

/// Scrapes closer together than this share one device read.
pub const MIN_READ_INTERVAL: Duration = Duration::from_secs(1);
/// A scrape waits at most this long for the device; then it answers from the last read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The labels of one configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerLabels {
    /// The member name (`peer` and `friendly_name`).
    name: String,
    /// The base64 public key (`public_key`).
    public_key: String,
}

/// What one device read said about one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerStats {
    last_handshake: Option<SystemTime>,
    rx: u64,
    tx: u64,
    endpoint: Option<SocketAddr>,
}

/// A peer as the last device read showed it, for `sdwanctl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLive {
    /// Its current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it (the device's counter).
    pub rx: u64,
    /// Bytes sent to it (the device's counter).
    pub tx: u64,
    /// When a device read first showed more bytes received from it than the read before; `None` while
    /// nothing new arrived since sdwand started.
    pub last_received: Option<SystemTime>,
}

/// The state behind the series, under one lock.
struct State {
    mode: PeerMetrics,
    ifname: String,
    /// The device to read at scrape time; `None` until the daemon set it (and in unit tests).
    device: Option<wg::Device>,
    /// Configured peers, from the last desired state.
    peers: BTreeMap<KeyBytes, PeerLabels>,
    /// The last read, for configured peers only.
    stats: BTreeMap<KeyBytes, PeerStats>,
    /// The labels the series were last published under, by key (to remove them when a peer goes or is
    /// renamed).
    published: BTreeMap<KeyBytes, PeerLabels>,
    /// When the last applied read was taken.
    read_at: Option<Instant>,
    /// Per peer: the device's received-bytes counter at the last look (scrape or resync read) and when it
    /// was last seen to change.
    received: BTreeMap<KeyBytes, (u64, Option<SystemTime>)>,
    /// Set while a read runs (only one at a time).
    reading: bool,
}

/// The per-peer series. Cheap to clone (shared state).
#[derive(Clone)]
pub struct PeerSeries {
    state: Arc<Mutex<State>>,
    age: GaugeVec,
    handshake_time: GaugeVec,
    rx: IntCounterVec,
    tx: IntCounterVec,
    wg_handshake: GaugeVec,
    wg_received: IntCounterVec,
    wg_sent: IntCounterVec,
    /// No labels: absent until the first read.
    stats_age: GaugeVec,
    enabled: IntGauge,
}

const WG_LABELS: [&str; 3] = ["interface", "public_key", "friendly_name"];

impl PeerSeries {
    /// Creates the series and registers them in `registry`.
    pub fn register(registry: &Registry) -> PeerSeries {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let s = PeerSeries {
            state: Arc::new(Mutex::new(State {
                mode: PeerMetrics::All,
                ifname: String::new(),
                device: None,
                peers: BTreeMap::new(),
                stats: BTreeMap::new(),
                published: BTreeMap::new(),
                read_at: None,
                received: BTreeMap::new(),
                reading: false,
            })),
            age: gauge(
                "sdwand_peer_last_handshake_age_seconds",
                "Seconds since the peer's last completed handshake, computed at scrape time (absent before the first).",
                &["peer"],
            ),
            handshake_time: gauge(
                "sdwand_peer_last_handshake_timestamp_seconds",
                "Unix time of the peer's last completed handshake (absent before the first).",
                &["peer"],
            ),
            rx: counter("sdwand_peer_receive_bytes_total", "Bytes received from the peer.", &["peer"]),
            tx: counter("sdwand_peer_transmit_bytes_total", "Bytes sent to the peer.", &["peer"]),
            wg_handshake: gauge(
                "wireguard_latest_handshake_seconds",
                "Unix time of the peer's last completed handshake; 0 before the first (as prometheus_wireguard_exporter).",
                &WG_LABELS,
            ),
            wg_received: counter(
                "wireguard_received_bytes_total",
                "Bytes received from the peer (as prometheus_wireguard_exporter).",
                &WG_LABELS,
            ),
            wg_sent: counter(
                "wireguard_sent_bytes_total",
                "Bytes sent to the peer (as prometheus_wireguard_exporter).",
                &WG_LABELS,
            ),
            stats_age: gauge(
                "sdwand_peer_stats_age_seconds",
                "Seconds since the device read the per-peer series come from (grows while reads fail; absent before the first).",
                &[],
            ),
            enabled: IntGauge::new(
                "sdwand_peer_metrics_enabled",
                "1 when the per-peer series are exported (daemon.peer_metrics = \"all\"), 0 when turned off.",
            )
            .expect("valid metric"),
        };
        s.enabled.set(1);
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(s.age.clone()),
            Box::new(s.handshake_time.clone()),
            Box::new(s.rx.clone()),
            Box::new(s.tx.clone()),
            Box::new(s.wg_handshake.clone()),
            Box::new(s.wg_received.clone()),
            Box::new(s.wg_sent.clone()),
            Box::new(s.stats_age.clone()),
            Box::new(s.enabled.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the peer metrics lock is never poisoned by a panic while held")
    }

    /// Sets the device read at scrape time.
    pub fn set_device(&self, device: wg::Device) {
        self.lock().device = Some(device);
    }

    /// Turns the per-peer series on or off (`daemon.peer_metrics`; follows reloads). Off removes every
    /// per-peer series at once.
    pub fn set_mode(&self, mode: PeerMetrics) {
        let mut state = self.lock();
        state.mode = mode;
        self.enabled.set(i64::from(mode == PeerMetrics::All));
        if mode == PeerMetrics::None {
            self.unpublish_all(&mut state);
        }
    }

    /// Takes the configured peers (names, keys) from a new desired state.
    pub fn observe_desired(&self, desired: &Desired) {
        let mut state = self.lock();
        state.ifname.clone_from(&desired.ifname);
        state.peers = desired
            .peers
            .iter()
            .map(|(key, spec)| {
                let labels = PeerLabels {
                    name: spec.name.clone(),
                    public_key: spec.public_key.to_base64(),
                };
                (*key, labels)
            })
            .collect();
        let configured = state.peers.clone();
        state.stats.retain(|key, _| configured.contains_key(key));
        state.received.retain(|key, _| configured.contains_key(key));
    }

    /// Notes which peers sent something since the last look, from any device read (the resync's too;
    /// the series themselves come only from scrape-time reads).
    pub fn observe_received(&self, device: &ActualDevice, now: SystemTime) {
        Self::note_received(&mut self.lock(), device, now);
    }

    fn note_received(state: &mut State, device: &ActualDevice, now: SystemTime) {
        for (key, peer) in &device.peers {
            if !state.peers.contains_key(key) {
                continue;
            }
            let rx = peer.rx_bytes;
            state
                .received
                .entry(*key)
                .and_modify(|(last, at)| {
                    if rx != *last && rx > 0 {
                        *at = Some(now);
                    }
                    *last = rx;
                })
                .or_insert((rx, None));
        }
    }

    /// The configured peers as the last scrape-time read showed them, by base64 public key, with when
    /// that read was taken (`None`: no read yet).
    pub fn live(&self) -> (Option<Instant>, BTreeMap<String, PeerLive>) {
        let state = self.lock();
        let peers = state
            .stats
            .iter()
            .map(|(key, s)| {
                let live = PeerLive {
                    endpoint: s.endpoint,
                    last_handshake: s.last_handshake,
                    rx: s.rx,
                    tx: s.tx,
                    last_received: state.received.get(key).and_then(|r| r.1),
                };
                (state.peers[key].public_key.clone(), live)
            })
            .collect();
        (state.read_at, peers)
    }

    /// Applies a device read taken at `taken` (reads taken before the last applied one are ignored).
    pub fn observe_read(&self, device: &ActualDevice, taken: Instant) {
        let mut state = self.lock();
        if state.read_at.is_some_and(|last| taken < last) {
            return;
        }
        state.read_at = Some(taken);
        let mut next = BTreeMap::new();
        for (key, peer) in &device.peers {
            if !state.peers.contains_key(key) {
                continue;
            }
            let now = PeerStats {
                last_handshake: peer.last_handshake,
                rx: peer.rx_bytes,
                tx: peer.tx_bytes,
                endpoint: peer.endpoint,
            };
            let before = state.stats.get(key).map_or((0, 0), |s| (s.rx, s.tx));
            // A device counter below the last one means the device restarted: count from its new zero.
            let rx = now.rx.checked_sub(before.0).unwrap_or(now.rx);
            let tx = now.tx.checked_sub(before.1).unwrap_or(now.tx);
            if state.mode == PeerMetrics::All {
                let labels = &state.peers[key];
                let wg = [state.ifname.as_str(), &labels.public_key, &labels.name];
                self.rx.with_label_values(&[&labels.name]).inc_by(rx);
                self.tx.with_label_values(&[&labels.name]).inc_by(tx);
                self.wg_received.with_label_values(&wg).inc_by(rx);
                self.wg_sent.with_label_values(&wg).inc_by(tx);
                let (labels, ifname) = (labels.clone(), state.ifname.clone());
                self.track(&mut state.published, &ifname, *key, labels);
            }
            next.insert(*key, now);
        }
        state.stats = next;
        Self::note_received(&mut state, device, SystemTime::now());
    }

    /// Publishes the gauges as of `now`: handshake ages and timestamps, and the age of the last read;
    /// removes the series of peers no longer configured (or renamed). Called at every render.
    pub fn publish(&self, now: SystemTime) {
        let mut state = self.lock();
        if let Some(at) = state.read_at {
            self.stats_age
                .with_label_values::<&str>(&[])
                .set(at.elapsed().as_secs_f64());
        }
        if state.mode == PeerMetrics::None {
            return;
        }
        // Series under labels that are no longer right (peer gone or renamed).
        let stale: Vec<KeyBytes> = state
            .published
            .iter()
            .filter(|(key, labels)| state.peers.get(*key) != Some(labels) || !state.stats.contains_key(*key))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some(labels) = state.published.remove(&key) {
                self.remove(&state.ifname, &labels);
            }
        }
        let ifname = state.ifname.clone();
        let mut published = std::mem::take(&mut state.published);
        for (key, stats) in &state.stats {
            let labels = &state.peers[key];
            let wg = [ifname.as_str(), &labels.public_key, &labels.name];
            let name = [labels.name.as_str()];
            match stats.last_handshake {
                Some(at) => {
                    let unix = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    let age = now.duration_since(at).unwrap_or_default();
                    self.age.with_label_values(&name).set(age.as_secs_f64());
                    self.handshake_time.with_label_values(&name).set(unix.as_secs_f64());
                    self.wg_handshake.with_label_values(&wg).set(unix.as_secs_f64());
                }
                None => {
                    let _ = self.age.remove_label_values(&name);
                    let _ = self.handshake_time.remove_label_values(&name);
                    self.wg_handshake.with_label_values(&wg).set(0.0);
                }
            }
            // Counters exist from the first read, also before any traffic.
            self.rx.with_label_values(&name);
            self.tx.with_label_values(&name);
            self.wg_received.with_label_values(&wg);
            self.wg_sent.with_label_values(&wg);
            self.track(&mut published, &ifname, *key, labels.clone());
        }
        state.published = published;
    }

    /// Records that `key`'s series are published under `labels`, removing those under other labels first
    /// (a rename).
    fn track(&self, published: &mut BTreeMap<KeyBytes, PeerLabels>, ifname: &str, key: KeyBytes, labels: PeerLabels) {
        if let Some(old) = published.insert(key, labels.clone()) {
            if old != labels {
                self.remove(ifname, &old);
            }
        }
    }

    /// Reads the device if the last read is older than [`MIN_READ_INTERVAL`] and no read runs, waiting
    /// at most [`READ_TIMEOUT`]; on failure or timeout the last read stays (and its age shows). Needs a
    /// multi-threaded tokio runtime (the read blocks a pool thread).
    /// `for_series`: the read is for the series (a scrape), so none is made with `daemon.peer_metrics =
    /// "none"`; `sdwanctl status` reads whatever the setting.
    pub async fn refresh(&self, for_series: bool) {
        let device = {
            let mut state = self.lock();
            let fresh = state.read_at.is_some_and(|at| at.elapsed() < MIN_READ_INTERVAL);
            let unwanted = for_series && state.mode == PeerMetrics::None;
            if unwanted || state.reading || fresh {
                return;
            }
            let Some(device) = state.device.clone() else { return };
            state.reading = true;
            device
        };
        let taken = Instant::now();
        let this = self.clone();
        // The read finishes (and clears `reading`) even when the scrape stops waiting for it.
        let read = tokio::task::spawn_blocking(move || {
            // Clears `reading` however the read ends (a panic in the WireGuard library included), so one
            // bad read cannot stop every later one.
            struct Done(PeerSeries);
            impl Drop for Done {
                fn drop(&mut self) {
                    if let Ok(mut state) = self.0.state.lock() {
                        state.reading = false;
                    }
                }
            }
            let done = Done(this);
            match device.read() {
                Ok(actual) => done.0.observe_read(&actual, taken),
                Err(e) => tracing::debug!(error = %e, "reading the device for a scrape failed; serving the last read"),
            }
        });
        if tokio::time::timeout(READ_TIMEOUT, read).await.is_err() {
            tracing::debug!(timeout = ?READ_TIMEOUT, "the device read for a scrape is slow; serving the last read");
        }
    }

    /// Removes every per-peer series (the mode turned them off).
    fn unpublish_all(&self, state: &mut State) {
        for labels in std::mem::take(&mut state.published).into_values() {
            self.remove(&state.ifname, &labels);
        }
    }

    fn remove(&self, ifname: &str, labels: &PeerLabels) {
        let name = [labels.name.as_str()];
        let wg = [ifname, &labels.public_key, &labels.name];
        for g in [&self.age, &self.handshake_time] {
            let _ = g.remove_label_values(&name);
        }
        for c in [&self.rx, &self.tx] {
            let _ = c.remove_label_values(&name);
        }
        let _ = self.wg_handshake.remove_label_values(&wg);
        for c in [&self.wg_received, &self.wg_sent] {
            let _ = c.remove_label_values(&wg);
        }
    }
}

/// Test fixture shared with the metrics tests: a desired state with one peer `b` (`fd00::2`) and a device
/// read where `b` handshook at `handshake` and moved `rx`/`tx` bytes; also `b`'s key.
#[cfg(test)]
pub(crate) fn one_peer(
    handshake: Option<SystemTime>,
    rx: u64,
    tx: u64,
) -> (Desired, ActualDevice, wireguard_control::Key) {
    use crate::mesh::{ActualPeer, PeerSpec};
    use std::collections::BTreeSet;
    use wireguard_control::Key;

    let key = Key::generate_private().get_public();
    let spec = PeerSpec {
        name: "b".into(),
        public_key: key.clone(),
        address: "fd00::2".parse().expect("constant address"),
        endpoint: None,
        allowed_ips: BTreeSet::new(),
        keepalive: None,
    };
    let mut desired = Desired::new(
        "wg0",
        &Key::generate_private(),
        1,
        1420,
        "fd00::/64".parse().expect("constant prefix"),
    );
    desired.set_peers(vec![(spec, BTreeSet::new())]);
    let peer = ActualPeer {
        public_key: key.clone(),
        endpoint: None,
        allowed_ips: BTreeSet::new(),
        keepalive: None,
        last_handshake: handshake,
        rx_bytes: rx,
        tx_bytes: tx,
    };
    let device = ActualDevice {
        private_key: None,
        listen_port: None,
        peers: BTreeMap::from([(key.0, peer)]),
    };
    (desired, device, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with the series, a desired state with peer `b` and a device where `b` handshook at
    /// `handshake`.
    fn scene(handshake: Option<SystemTime>) -> (Registry, PeerSeries, Desired, ActualDevice, String) {
        let registry = Registry::new();
        let series = PeerSeries::register(&registry);
        let (desired, device, key) = one_peer(handshake, 300, 700);
        (registry, series, desired, device, key.to_base64())
    }

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The value of the sample line starting with `series` (`name{labels}`).
    fn value(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len() + 1..].parse().unwrap()
    }

    #[test]
    fn the_wireguard_exporter_names_and_labels_are_exported() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (registry, series, desired, device, key) = scene(Some(at));
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        series.publish(at + Duration::from_secs(30));
        let text = render(&registry);
        let wg = format!("{{friendly_name=\"b\",interface=\"wg0\",public_key=\"{key}\"}}");
        assert_eq!(value(&text, &format!("wireguard_latest_handshake_seconds{wg}")), 1.8e9);
        assert_eq!(value(&text, &format!("wireguard_received_bytes_total{wg}")), 300.0);
        assert_eq!(value(&text, &format!("wireguard_sent_bytes_total{wg}")), 700.0);
        assert_eq!(
            value(&text, "sdwand_peer_last_handshake_timestamp_seconds{peer=\"b\"}"),
            1.8e9
        );
        assert_eq!(value(&text, "sdwand_peer_last_handshake_age_seconds{peer=\"b\"}"), 30.0);
        assert_eq!(value(&text, "sdwand_peer_transmit_bytes_total{peer=\"b\"}"), 700.0);
        assert_eq!(value(&text, "sdwand_peer_metrics_enabled"), 1.0);
        assert!(value(&text, "sdwand_peer_stats_age_seconds") < 5.0, "{text}");
    }

    #[test]
    fn the_handshake_age_is_computed_at_render_time_not_at_the_read() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (registry, series, desired, device, _) = scene(Some(at));
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        // One read, two scrapes 5 s apart: the age follows the clock.
        series.publish(at + Duration::from_secs(10));
        let first = value(&render(&registry), "sdwand_peer_last_handshake_age_seconds{peer=\"b\"}");
        series.publish(at + Duration::from_secs(15));
        let second = value(&render(&registry), "sdwand_peer_last_handshake_age_seconds{peer=\"b\"}");
        assert_eq!((first, second), (10.0, 15.0));
    }

    #[test]
    fn before_the_first_handshake_the_exporter_timestamp_is_zero_and_the_age_absent() {
        let (registry, series, desired, device, _) = scene(None);
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        series.publish(SystemTime::now());
        let text = render(&registry);
        assert!(
            text.contains("wireguard_latest_handshake_seconds{friendly_name=\"b\",interface=\"wg0\""),
            "{text}"
        );
        assert!(!text.contains("sdwand_peer_last_handshake_age_seconds{"), "{text}");
        assert!(
            !text.contains("sdwand_peer_last_handshake_timestamp_seconds{"),
            "{text}"
        );
        assert!(
            text.contains("sdwand_peer_receive_bytes_total{peer=\"b\"} 300"),
            "{text}"
        );
    }

    #[test]
    fn an_older_read_applied_late_is_ignored() {
        let (registry, series, desired, mut device, _) = scene(None);
        series.observe_desired(&desired);
        let early = Instant::now();
        let late = early + Duration::from_millis(1);
        device.peers.values_mut().next().unwrap().rx_bytes = 500;
        series.observe_read(&device, late);
        device.peers.values_mut().next().unwrap().rx_bytes = 400;
        series.observe_read(&device, early);
        series.publish(SystemTime::now());
        // Applying the older read would have looked like a device restart and added 400.
        assert_eq!(
            value(&render(&registry), "sdwand_peer_receive_bytes_total{peer=\"b\"}"),
            500.0
        );
    }

    #[test]
    fn peer_metrics_none_removes_every_per_peer_series_and_all_brings_them_back() {
        let (registry, series, desired, device, _) = scene(Some(SystemTime::now()));
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        series.publish(SystemTime::now());
        series.set_mode(PeerMetrics::None);
        series.observe_read(&device, Instant::now());
        series.publish(SystemTime::now());
        let text = render(&registry);
        for name in [
            "wireguard_",
            "sdwand_peer_last",
            "sdwand_peer_receive",
            "sdwand_peer_transmit",
        ] {
            assert!(!text.lines().any(|l| l.starts_with(name)), "{name} in\n{text}");
        }
        assert_eq!(value(&text, "sdwand_peer_metrics_enabled"), 0.0);
        series.set_mode(PeerMetrics::All);
        series.observe_read(&device, Instant::now());
        series.publish(SystemTime::now());
        let text = render(&registry);
        assert!(text.contains("wireguard_sent_bytes_total{"), "{text}");
    }

    #[test]
    fn a_renamed_peer_keeps_one_series_under_its_new_name() {
        let (registry, series, mut desired, device, _) = scene(Some(SystemTime::now()));
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        series.publish(SystemTime::now());
        desired.peers.values_mut().next().unwrap().name = "c".into();
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        series.publish(SystemTime::now());
        let text = render(&registry);
        assert!(!text.contains("peer=\"b\""), "{text}");
        assert!(!text.contains("friendly_name=\"b\""), "{text}");
        assert!(
            text.contains("sdwand_peer_last_handshake_age_seconds{peer=\"c\"}"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_a_device_a_refresh_keeps_the_last_read() {
        let (registry, series, desired, device, _) = scene(None);
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now());
        series.refresh(true).await;
        series.publish(SystemTime::now());
        assert_eq!(
            value(&render(&registry), "sdwand_peer_receive_bytes_total{peer=\"b\"}"),
            300.0
        );
    }

    #[test]
    fn a_peer_counts_as_received_from_when_a_read_shows_new_bytes() {
        let (_registry, series, desired, mut device, key) = scene(None);
        series.observe_desired(&desired);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // The first look cannot tell when the bytes arrived.
        series.observe_received(&device, t0);
        series.observe_read(&device, Instant::now());
        assert_eq!(series.live().1[&key].last_received, None);
        // The same counter again: nothing new.
        series.observe_received(&device, t0 + Duration::from_secs(10));
        assert_eq!(series.live().1[&key].last_received, None);
        device.peers.values_mut().next().unwrap().rx_bytes = 400;
        series.observe_received(&device, t0 + Duration::from_secs(20));
        let (read_at, live) = series.live();
        assert!(read_at.is_some());
        assert_eq!(live[&key].last_received, Some(t0 + Duration::from_secs(20)));
        assert_eq!(
            (live[&key].rx, live[&key].tx),
            (300, 700),
            "the counters are the scrape read's"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_keeps_the_last_one_and_lets_the_next_scrape_try_again() {
        let (registry, series, desired, device, _) = scene(None);
        series.observe_desired(&desired);
        series.observe_read(&device, Instant::now() - MIN_READ_INTERVAL * 2);
        // No such interface: the userspace socket is missing, the read fails at once.
        series.set_device(wg::Device::new("mxnone0", wg::BackendInUse::Userspace).unwrap());
        series.refresh(true).await;
        assert!(!series.lock().reading, "a failed read must not block the next one");
        series.publish(SystemTime::now());
        let text = render(&registry);
        assert_eq!(value(&text, "sdwand_peer_receive_bytes_total{peer=\"b\"}"), 300.0);
        assert!(value(&text, "sdwand_peer_stats_age_seconds") >= 2.0, "{text}");
    }
}
