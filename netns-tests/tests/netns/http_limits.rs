//! Outside input must not stall or starve the lab's HTTP servers (security review §9.C, findings H3 and M2):
//!
//! - R7: one peer token opens many concurrent watches; those beyond the per-token cap are refused with 429
//!   at once, while another peer's watch and an enrollment still answer at once.
//! - R8: slow clients (half a request line, or nothing, then silence) against the registry and against a
//!   daemon's metrics endpoint: a legitimate request to the registry is answered within a second while they
//!   stall, the daemon's open files stay bounded (a local user must not exhaust them), and both servers
//!   close the stalled connections after their header-read timeout.
//!
//! Counts are bounded and every connection is closed when its test ends.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sdwan_lab::flood::{open_fds, stall_tcp};
use sdwan_lab::layout::{REGISTRY_ADDR, REGISTRY_PORT};
use sdwan_lab::metrics::{http_request_in_netns, sum};
use sdwan_lab::ops::METRICS_ADDR;
use sdwan_lab::User;
use wireguard_control::Key;

use crate::common::lab;

/// Concurrent watches one peer token may hold (the registry's per-token cap).
const WATCHES_PER_TOKEN: usize = 4;
/// How many watches the test opens with one token.
const WATCHES: usize = 20;
/// How long the accepted watches may be held by the registry (they end on their own).
const WATCH_WAIT_MS: u64 = 5_000;
/// How fast another tenant's watch and an enrollment must be answered meanwhile.
const OTHERS_ANSWER_WITHIN: Duration = Duration::from_millis(100);

/// Half a request line and one header: what a slowloris client sends before it stalls.
const PARTIAL_REQUEST: &[u8] = b"GET /v1/networks/x/members HTTP/1.1\r\nHost: r\r\n";
/// Stalled connections with half a request, and as many silent ones, against the registry.
const REGISTRY_STALLED: usize = 150;
/// Stalled connections against one daemon's metrics endpoint.
const SDWAND_STALLED: usize = 150;
/// How many more files the daemon may hold while they stall (its connection cap plus slack).
const SDWAND_FD_SLACK: usize = 100;
/// Longest time a server may take to close a stalled connection: a header-read timeout of at most 30 s
/// (hyper's default), plus slack for connections that wait for a free slot under a connection cap.
const HEADER_TIMEOUT_BOUND: Duration = Duration::from_secs(40);
/// How fast a legitimate request must be answered.
const LEGIT_ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[test]
fn one_token_cannot_hold_more_than_a_few_watches() {
    let mut lab = lab("rw", 2);
    // p1's own daemon watches with the same token: stop it, so the test's watches are that token's only ones.
    lab.kill_sdwand(1).unwrap();
    let reg_ns = lab.layout().registry_netns();
    let addr = SocketAddr::from((REGISTRY_ADDR, REGISTRY_PORT));
    let network = lab.network_id().unwrap();
    let revision = lab.registry_members().unwrap().revision;
    let token = lab.identity(1).unwrap().peer_token;
    let path = format!("/v1/networks/{network}/watch?since={revision}&wait_ms={WATCH_WAIT_MS}");

    let (tx, rx) = mpsc::channel();
    for _ in 0..WATCHES {
        let (tx, ns, path, token) = (tx.clone(), reg_ns.clone(), path.clone(), token.clone());
        std::thread::spawn(move || {
            let answer = http_request_in_netns(&ns, addr, "GET", &path, Some(&token), None, Duration::from_secs(15));
            let _ = tx.send(answer.map(|a| a.status).map_err(|e| e.to_string()));
        });
    }
    drop(tx);
    // The ones beyond the cap are refused at once; the others are held.
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while statuses.len() < WATCHES - WATCHES_PER_TOKEN {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(s) => statuses.push(s),
            Err(_) => break,
        }
    }
    let refused = statuses.iter().filter(|s| **s == Ok(429)).count();
    assert_eq!(
        refused,
        WATCHES - WATCHES_PER_TOKEN,
        "{WATCHES} concurrent watches with one token: expected all but {WATCHES_PER_TOKEN} refused with 429 at \
         once, got {statuses:?}"
    );

    // Meanwhile another peer's watch and a new enrollment answer at once.
    let other = lab.identity(2).unwrap().peer_token;
    let start = Instant::now();
    let watch = http_request_in_netns(
        &reg_ns,
        addr,
        "GET",
        &format!("/v1/networks/{network}/watch?since=0&wait_ms=0"),
        Some(&other),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let watch_took = start.elapsed();
    assert_eq!(watch.status, 200, "{}", watch.body);
    assert!(
        watch_took <= OTHERS_ANSWER_WITHIN,
        "another peer's watch took {watch_took:?}"
    );
    let enroll = serde_json::json!({
        "name": "r7",
        "public_key": Key::generate_private().get_public().to_base64(),
        "endpoint": "192.0.2.250:51820",
        "lifecycle": "persistent",
        "roles": [],
    });
    let token = lab.enrollment_token().unwrap();
    let start = Instant::now();
    let answer = lab
        .registry_call("POST", "/v1/peers/enroll", Some(&token), Some(&enroll))
        .unwrap();
    let took = start.elapsed();
    eprintln!("with {WATCHES_PER_TOKEN} watches held by one token: another peer's watch {watch_took:?}, an enrollment {took:?}");
    assert!((200..300).contains(&answer.status), "enrollment: {answer:?}");
    assert!(took <= OTHERS_ANSWER_WITHIN, "an enrollment took {took:?}");

    // The watches that were let in see that enrollment.
    let rest: Vec<_> = rx.iter().take(WATCHES_PER_TOKEN).collect();
    assert_eq!(rest, vec![Ok(200); WATCHES_PER_TOKEN], "the accepted watches");
}

#[test]
fn slow_clients_cannot_starve_the_registry() {
    let lab = lab("rs", 2);
    let target = SocketAddr::from((REGISTRY_ADDR, REGISTRY_PORT));
    let ns = lab.netns(1).unwrap();
    let partial = stall_tcp(&ns, target, REGISTRY_STALLED, PARTIAL_REQUEST, User::Nobody).unwrap();
    let silent = stall_tcp(&ns, target, REGISTRY_STALLED, b"", User::Nobody).unwrap();

    let start = Instant::now();
    lab.registry_members()
        .unwrap_or_else(|e| panic!("the registry does not answer while clients stall: {e}"));
    let took = start.elapsed();
    assert!(
        took <= LEGIT_ANSWER_WITHIN,
        "a legitimate request took {took:?} while {} connections stalled",
        2 * REGISTRY_STALLED
    );

    for (what, stalled) in [("half a request", &partial), ("nothing", &silent)] {
        let closed = stalled.wait_all_closed(HEADER_TIMEOUT_BOUND);
        assert!(
            closed.is_ok(),
            "{:?} of {} connections to {target} that sent {what} are still open after {HEADER_TIMEOUT_BOUND:?}",
            closed.err(),
            stalled.len()
        );
    }
    lab.registry_members().unwrap();
}

#[test]
fn slow_clients_cannot_exhaust_a_daemons_files() {
    let lab = lab("ms", 2);
    let pid = lab.sdwand_pid(1).unwrap().expect("p1's sdwand runs");
    let base = open_fds(pid).unwrap();
    let errors = |lab: &sdwan_lab::Lab| sum(&lab.metrics(1).unwrap(), "sdwand_reconcile_errors_total", &[]);
    let errors_before = errors(&lab);
    let ns = lab.netns(1).unwrap();
    let target: SocketAddr = METRICS_ADDR.parse().unwrap();
    let stalled = stall_tcp(&ns, target, SDWAND_STALLED, PARTIAL_REQUEST, User::Nobody).unwrap();

    // An observation window (a resync interval of the lab): the daemon's open files stay bounded.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let now = open_fds(pid).unwrap();
        assert!(
            now <= base + SDWAND_FD_SLACK,
            "p1's sdwand holds {now} files ({base} before) with {SDWAND_STALLED} stalled connections to {target}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed = stalled.wait_all_closed(HEADER_TIMEOUT_BOUND);
    assert!(
        closed.is_ok(),
        "{:?} of {SDWAND_STALLED} stalled connections to p1's {target} are still open after {HEADER_TIMEOUT_BOUND:?}",
        closed.err()
    );
    drop(stalled);
    let start = Instant::now();
    assert_eq!(errors(&lab), errors_before, "p1's reconcile errors");
    let took = start.elapsed();
    assert!(took <= LEGIT_ANSWER_WITHIN, "a scrape took {took:?}");
}
