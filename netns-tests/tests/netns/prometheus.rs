//! A real Prometheus server (Debian's `prometheus`) scrapes every peer of a VIP lab with the shipped rules
//! (`config/prometheus/sdwan-rules.yml`). The holder's node dies: through Prometheus's HTTP API, the
//! recording rule `sdwan:vip_holder` ("who holds the VIP") follows the move to the next candidate and the
//! `SdwanVipFailover` alert fires for it with reason `holder_dead`.
//!
//! Prometheus runs in the observer p5's namespace and scrapes each peer's metrics endpoint on its underlay
//! address (the lab's daemons listen on every address of their namespace), every second.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::metrics::http_request_in_netns;
use sdwan_lab::Layout;
use serde_json::Value;

use crate::common::{next_candidate, settled, vip_lab, wait_holder, VIP_PEERS};

/// Where Prometheus listens, inside p5's namespace.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// The peer whose namespace runs Prometheus (an observer, never a candidate).
const OBSERVER: usize = 5;

#[test]
fn prometheus_sees_the_holder_move_and_the_failover_alert_fire() {
    let prometheus = sdwan_lab::cmd::which("prometheus")
        .expect("Debian's `prometheus` is not installed: run scripts/install-deps (as root)");
    let mut lab = vip_lab("pm");
    let old = settled(&lab, Duration::from_secs(10));
    let new = next_candidate(&[old]);

    let dir = lab.layout().state_dir().join("prometheus");
    fs::create_dir_all(&dir).expect("prometheus dir");
    let config = dir.join("prometheus.yml");
    fs::write(&config, prometheus_config()).expect("prometheus.yml");
    let argv = [
        prometheus.display().to_string(),
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={PROMETHEUS}"),
        "--log.level=warn".to_owned(),
    ];
    let _server = lab.spawn_in(OBSERVER, &argv).expect("start prometheus");
    let ns = lab.netns(OBSERVER).expect("observer netns");

    // Every peer is scraped and the rules are loaded before the move.
    let up = poll(&ns, "every target up", Duration::from_secs(60), |api| {
        let up = api.query("sum(up{job=\"sdwand\"})")?;
        (value_of(up.first()?) == VIP_PEERS as f64).then_some(())
    });
    up.unwrap_or_else(|e| panic!("{e}"));
    let holders = poll(&ns, "the holder in sdwan:vip_holder", Duration::from_secs(30), |api| {
        let series = api.query("sdwan:vip_holder")?;
        (instances(&series) == [instance(old)]).then_some(series)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(holders[0]["metric"]["vip"], VIP_ADDR.to_string(), "{holders:?}");
    let quiet = Api(&ns)
        .query("ALERTS{alertname=\"SdwanVipFailover\"}")
        .expect("query ALERTS");
    assert!(quiet.is_empty(), "a failover alert before any failover: {quiet:?}");

    lab.kill_node(old).expect("kill the holder's node");
    let took = wait_holder(&lab, new, Duration::from_secs(10));
    eprintln!("p{new} holds the VIP {took:?} after p{old}'s node died");

    // The dead node's series go stale with its failed scrape; the new holder's appears.
    poll(&ns, "the move in sdwan:vip_holder", Duration::from_secs(30), |api| {
        let series = api.query("sdwan:vip_holder")?;
        (instances(&series) == [instance(new)]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let alert = poll(&ns, "SdwanVipFailover firing", Duration::from_secs(30), |api| {
        let alerts = api.get("/api/v1/alerts")?;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "SdwanVipFailover" && a["state"] == "firing")
            .cloned()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("alert: {alert}");
    assert_eq!(alert["labels"]["instance"], instance(new), "{alert}");
    assert_eq!(alert["labels"]["reason"], "holder_dead", "{alert}");
    assert_eq!(alert["labels"]["vip"], VIP_ADDR.to_string(), "{alert}");
    assert_eq!(alert["labels"]["severity"], "info", "{alert}");
}

/// Scrapes every peer each second on its underlay address and loads the shipped rules.
fn prometheus_config() -> String {
    let rules: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "config",
        "prometheus",
        "sdwan-rules.yml",
    ]
    .iter()
    .collect();
    let rules = rules.canonicalize().expect("the shipped rules file");
    let mut targets = String::new();
    for i in 1..=VIP_PEERS {
        write!(targets, "\"{}\", ", instance(i)).expect("string");
    }
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: sdwand\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.trim_end_matches(", ")
    )
}

/// Peer `i`'s scrape target, as Prometheus labels it (`instance`).
fn instance(i: usize) -> String {
    format!("{}:9581", Layout::underlay_addr(i))
}

/// The `instance` labels of a query result, sorted.
fn instances(series: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = series
        .iter()
        .filter_map(|s| s["metric"]["instance"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// The value of one instant-vector sample.
fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Prometheus's HTTP API, reached from inside `.0` (a namespace).
struct Api<'a>(&'a str);

impl Api<'_> {
    /// `GET path`: the JSON answer of a 200 with status `success`.
    fn get(&self, path: &str) -> Option<Value> {
        let addr: SocketAddr = PROMETHEUS.parse().expect("constant address");
        let answer = http_request_in_netns(self.0, addr, "GET", path, None, None, Duration::from_secs(2)).ok()?;
        let json: Value = serde_json::from_str(&answer.body).ok()?;
        (answer.status == 200 && json["status"] == "success").then_some(json)
    }

    /// An instant query: the result's series.
    fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let mut path = String::from("/api/v1/query?query=");
        for b in expr.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                path.push(b as char);
            } else {
                write!(path, "%{b:02X}").expect("string");
            }
        }
        Some(self.get(&path)?["data"]["result"].as_array()?.clone())
    }
}

/// Asks `check` every 250 ms, at most `timeout`, until it answers; the error names `what`.
fn poll<T>(ns: &str, what: &str, timeout: Duration, mut check: impl FnMut(&Api) -> Option<T>) -> Result<T, String> {
    let api = Api(ns);
    let mut found = None;
    sdwan_lab::wait_until(timeout, Duration::from_millis(250), || {
        found = check(&api);
        found.is_some()
    })
    .map_err(|e| format!("Prometheus never showed {what}: {e}"))?;
    Ok(found.expect("set when the wait succeeded"))
}
