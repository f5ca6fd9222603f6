//! `sdwand-bench`: benchmarks of sdwand, reported as figures (a slow figure is reported, never a failure).
//!
//! # Layout
//!
//! - [`reconcile`]: the `reconcile` benchmark — sdwand's device reconciler against `wg setconf` / `wg set`.
//! - [`handshake`]: the `handshake` benchmark — durable k3s join handshakes per second and their latency
//!   against the registry's HTTP API (SQLite group commit and one commit per request; `--store etcd`:
//!   etcd through one and two replicas, and etcd's floor).
//! - [`etcd`]: the `handshake` benchmark's etcd parts: one handshake's etcd transaction, and etcd's own rate
//!   for bare transactions of that size (the store's floor).
//! - [`failover`]: the `failover` benchmark — VIP outage seen by a client on node death (also in quorum
//!   mode) and planned handover, a floating prefix's outage seen through it on its gateway's node death,
//!   and claim → last peer confirmed, on labs of real sdwand daemons (`sdwan_lab`).
//! - [`propagation`]: the `propagation` benchmark — a registry membership change → applied on the WireGuard
//!   devices of every daemon of a 50-peer lab (and, with `--pods`, a new node's pod shares → routed there;
//!   with `--registry-backend etcd --registry-replicas R`, the registry on etcd, changes through each replica).
//! - [`pods`]: the `pods` benchmark — throughput, latency and CPU pod to pod across nodes, against node to
//!   node over the overlay and on the underlay.
//! - [`wireguard_go`]: the `wireguard-go` the benchmarks drive, in a namespace of its own (a cleanup guard).
//! - [`workload`]: the peers a benchmark applies, as sdwand's desired state and as a `wg` config file.
//! - [`stats`]: samples, medians, CPU clocks.
//! - [`report`]: the run's figures, as a table or JSON.
//! - [`error`]: the error type.
//!
//! Run it as root, release build: `cargo run --release -p sdwand-bench -- reconcile` (or `-- failover`,
//! after `cargo build --release --workspace --bins`: the lab runs the `sdwand` next to the bench binary).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

mod error;
mod etcd;
mod failover;
mod handshake;
mod pods;
mod propagation;
mod reconcile;
mod report;
mod stats;
mod wireguard_go;
mod workload;

use error::BenchError;

/// Benchmarks of sdwand (run as root; build with --release).
#[derive(Debug, Parser)]
#[command(name = "sdwand-bench", version)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Apply 1k and 10k peers from empty and change one peer's allowed IPs on 10k, with sdwand's reconciler
    /// and with `wg setconf` / `wg set`, on a userspace WireGuard (wireguard-go) interface.
    Reconcile(reconcile::Options),
    /// VIP and floating-prefix failover on labs of real sdwand daemons: the outage a client probing the VIP
    /// every 5 ms sees when the holder's node dies (50 ms and 10 ms heartbeats, quorum mode) or its daemon
    /// gets SIGTERM, the outage of a site host behind a floating prefix when its holding gateway dies, and
    /// claim → last peer confirmed on a 50-peer lab.
    Failover(failover::Options),
    /// Durable k3s join handshakes against sdwan-registry's HTTP API served in process on 127.0.0.1, at 1,
    /// 16 and 64 concurrent clients, with group commit and with one commit per request (no root needed);
    /// with `--store etcd`, on a local etcd cluster through one and two replicas, and etcd's own rate for bare
    /// transactions of a handshake's size.
    Handshake(handshake::Options),
    /// Membership propagation on a lab of real sdwand daemons enrolled through sdwan-registry: a peer
    /// enrolled / removed over the registry's API → applied on every daemon's WireGuard device.
    Propagation(propagation::Options),
    /// Pod traffic on a 2-peer lab with pods attached by the real CNI plugins: iperf3 throughput, ping
    /// latency and CPU pod to pod (IPv4, IPv6), node to node over the overlay, and on the underlay.
    Pods(pods::Options),
}

/// Set by SIGINT/SIGTERM; the benchmarks stop between trials and clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    // Before any thread exists: wireguard-control must never start a wireguard-go of its own.
    std::env::set_var(sdwand::wg::IMPLICIT_SPAWN_VAR, sdwand::wg::IMPLICIT_SPAWN_BLOCKED);
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdwand-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), BenchError> {
    // SAFETY: geteuid has no preconditions.
    if !matches!(cli.bench, Bench::Handshake(_)) && unsafe { libc::geteuid() } != 0 {
        return Err(BenchError::NotRoot(std::env::args().collect::<Vec<_>>().join(" ")));
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let interrupted = || INTERRUPTED.load(Ordering::Relaxed);
    match cli.bench {
        Bench::Reconcile(opts) => {
            let report = reconcile::run(&opts, &interrupted)?;
            if opts.json {
                let json = serde_json::to_string_pretty(&report).expect("the report serialises");
                println!("{json}");
            } else {
                print!("{}", report.table());
            }
        }
        Bench::Failover(opts) => {
            let report = failover::run(&opts, &interrupted)?;
            let json = serde_json::to_string_pretty(&report).expect("the report serialises");
            if let Some(path) = &opts.json_file {
                std::fs::write(path, format!("{json}\n"))
                    .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
            }
            if opts.json {
                println!("{json}");
            } else {
                print!("{}", report.table());
            }
        }
        Bench::Handshake(opts) => {
            let report = handshake::run(&opts, &interrupted)?;
            if opts.json {
                let json = serde_json::to_string_pretty(&report).expect("the report serialises");
                println!("{json}");
            } else {
                print!("{}", report.table());
            }
        }
        Bench::Pods(opts) => {
            let report = pods::run(&opts, &interrupted)?;
            if opts.json {
                let json = serde_json::to_string_pretty(&report).expect("the report serialises");
                println!("{json}");
            } else {
                print!("{}", report.table());
            }
        }
        Bench::Propagation(opts) => {
            let report = propagation::run(&opts, &interrupted)?;
            if opts.json {
                let json = serde_json::to_string_pretty(&report).expect("the report serialises");
                println!("{json}");
            } else {
                print!("{}", report.table());
            }
        }
    }
    Ok(())
}
