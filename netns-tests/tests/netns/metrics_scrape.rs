//! The metrics answer at scrape time (issue 13, item 5): with the periodic resync pushed out to an hour,
//! the per-peer series still show the handshakes the lab's mesh made after the daemon's only resync (so
//! the device is read when Prometheus scrapes, not at the resync), under sdwand's and the WireGuard
//! exporters' names; the node names itself in `sdwand_node_info`; and `daemon.metrics_overlay_port` serves
//! the endpoint on the overlay address, where another member reaches it.

use std::net::SocketAddr;
use std::time::Duration;

use sdwan_lab::metrics::{http_get_in_netns, sample};
use sdwan_lab::UpOptions;

use crate::common::{lab_with, name, overlay, unique_name, POLL};

/// The overlay metrics port the test sets.
const OVERLAY_PORT: u16 = 9582;

#[test]
fn scrapes_read_the_device_and_the_overlay_endpoint_serves_members() {
    let mut opts = UpOptions::new(&unique_name("mx"), 2);
    // The first resync runs at start, before the mesh's handshakes; the next one an hour later.
    opts.resync_interval = "1h".to_owned();
    let mut lab = lab_with(opts);
    let p2 = name(2);

    let text = lab.metrics(1).unwrap();
    let handshake = sample(&text, "wireguard_latest_handshake_seconds", &[("friendly_name", &p2)]);
    assert!(
        handshake.is_some_and(|t| t > 0.0),
        "p1's first scrape after the mesh came up shows no handshake with {p2}:\n{text}"
    );
    assert!(
        sample(&text, "sdwand_peer_last_handshake_timestamp_seconds", &[("peer", &p2)]).is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sdwand_node_info",
            &[("name", &name(1)), ("interface", &lab.wg_if(1).unwrap())]
        ),
        Some(1.0),
        "{text}"
    );
    // The age is computed at each scrape: it grows between two scrapes of the same handshake.
    let age = |text: &str| sample(text, "sdwand_peer_last_handshake_age_seconds", &[("peer", &p2)]);
    let first = age(&text).unwrap_or_else(|| panic!("no handshake age for {p2}:\n{text}"));
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        lab.metrics(1).is_ok_and(|t| age(&t).is_some_and(|a| a > first))
    })
    .unwrap_or_else(|e| panic!("the handshake age stays at {first}: {e}"));

    // The overlay endpoint: set on p1, restart, scrape from p2 over the overlay.
    let path = lab.config_path(1);
    let current = std::fs::read_to_string(&path).unwrap();
    assert!(current.contains("[daemon]\n"), "{current}");
    let edited = current.replacen(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_overlay_port = {OVERLAY_PORT}\n"),
        1,
    );
    lab.write_raw_config(1, &edited).unwrap();
    lab.restart_sdwand(1).unwrap();
    lab.wait_ready(1, Duration::from_secs(30)).unwrap();
    let addr = SocketAddr::new(overlay(1), OVERLAY_PORT);
    let ns2 = lab.netns(2).unwrap();
    let mut answer = String::new();
    sdwan_lab::wait_until(Duration::from_secs(15), POLL, || {
        match http_get_in_netns(&ns2, addr, "/metrics", Duration::from_secs(2)) {
            Ok(text) => {
                answer = text;
                true
            }
            Err(_) => false,
        }
    })
    .unwrap_or_else(|e| panic!("p2 cannot scrape p1 at {addr}: {e}\n{}", lab.log_tail(1, 30)));
    assert_eq!(
        sample(&answer, "sdwand_node_info", &[("name", &name(1))]),
        Some(1.0),
        "{answer}"
    );
}
