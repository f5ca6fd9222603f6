//! A quick measurement (not a pass/fail test, not the full benchmark): durable join handshakes per second
//! with 64 concurrent in-process clients, with group commit and with one commit per request.
//!
//! Run: `cargo test --release -p sdwand --test registry_throughput -- --ignored --nocapture`

mod registry_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use registry_support::{Enrolled, Registry};
use sdwan_registry::store::sqlite::SqliteOptions;
use serde_json::json;

const CLIENTS: usize = 64;
const JOINS: usize = 4000;

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(options: SqliteOptions) -> Figures {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir on disk");
    let r = Arc::new(Registry::in_dir(dir, options));
    let t = r.tenant("bench", 1).await;
    let server = r.enroll(&t.enrollment, "s0", &["server"]).await;
    let cluster = r.bootstrap(&server).await["cluster_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(r.report(&server, &cluster, "ready").await.0, StatusCode::OK);
    // Every join is a new agent's, so every handshake writes (membership, last seen) and commits.
    let mut agents: Vec<Enrolled> = Vec::with_capacity(JOINS);
    let names: Vec<String> = (0..JOINS).map(|i| format!("agent{i}")).collect();
    for chunk in names.chunks(256) {
        agents.extend(futures::future::join_all(chunk.iter().map(|n| r.enroll(&t.enrollment, n, &["agent"]))).await);
    }
    let agents = Arc::new(agents);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (r, agents, next) = (r.clone(), agents.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(agent) = agents.get(i) else { return latencies };
                    let t0 = Instant::now();
                    let (s, v) = r
                        .handshake(agent, json!({"phase": "join_request", "role": "agent"}))
                        .await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                    latencies.push(t0.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(JOINS);
    for c in clients {
        latencies.extend(c.await.expect("client"));
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        rate: JOINS as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture (release build)"]
async fn durable_handshakes_per_second_at_64_clients() {
    for (label, options) in [
        ("group commit", SqliteOptions::default()),
        ("one commit per request", SqliteOptions { max_batch: 1 }),
    ] {
        let f = measure(options).await;
        println!(
            "{label:>24}: {:>7.0} join handshakes/s, p50 {:>6.2} ms, p99 {:>6.2} ms ({JOINS} joins, {CLIENTS} clients)",
            f.rate,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3
        );
    }
}
