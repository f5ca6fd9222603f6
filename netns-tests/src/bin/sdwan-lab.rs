//! `sdwan-lab`: build, inspect and remove network-namespace labs of `sdwand` peers, or run the quick-start
//! demo. `up` and `status` print one JSON document on stdout (see `sdwan_lab::LabDoc`); everything else a
//! human reads goes to stderr, except the demo's report.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sdwan_lab::lab::ago;
use sdwan_lab::{Lab, LabDoc, LabError, LabGuard, Layout, UpOptions};

#[derive(Debug, Parser)]
#[command(
    name = "sdwan-lab",
    version,
    about = "Network-namespace lab of sdwand peers (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a lab and wait until every pair of peers has a WireGuard handshake; print its JSON document.
    Up {
        /// Lab name: 1-6 characters of [a-z0-9]; prefixes every namespace and interface.
        #[arg(long)]
        name: String,
        /// Number of peers (1-200).
        #[arg(long)]
        peers: usize,
        /// Candidates of the lab's virtual IP (accepted; VIPs come in a later version).
        #[arg(long, default_value_t = 0)]
        vip_candidates: usize,
        /// Seconds to wait for all handshakes.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print a lab's JSON document, with its PIDs re-read (a dead process is null).
    Status {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
    /// Remove a lab: processes, namespaces, sockets, state. Succeeds when there is nothing to remove.
    Down {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
    /// List the labs on this machine.
    List,
    /// Quick start: build a 3-peer lab "demo", show the mesh, ping every peer from every other, remove it.
    Demo,
}

/// Set by SIGINT / SIGTERM; the lab's bounded waits check it.
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(flag) = CANCEL.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// Installs the Ctrl-C / SIGTERM handler and returns the flag it sets.
fn cancel_flag() -> Arc<AtomicBool> {
    let flag = CANCEL.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only does an atomic load and an atomic store, which are async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
    flag
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            name,
            peers,
            vip_candidates,
            timeout,
        } => up(&name, peers, vip_candidates, timeout),
        Command::Status { name } => Lab::load(&name)
            .and_then(|mut lab| lab.status())
            .map(|doc| print_doc(&doc)),
        Command::Down { name } => down(&name),
        Command::List => Lab::list().map(|names| names.iter().for_each(|n| println!("{n}"))),
        Command::Demo => return demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(LabError::Cancelled) => {
            eprintln!("sdwan-lab: cancelled");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("sdwan-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_doc(doc: &LabDoc) {
    println!(
        "{}",
        serde_json::to_string_pretty(doc).expect("a LabDoc always serializes")
    );
}

fn up(name: &str, peers: usize, vip_candidates: usize, timeout: u64) -> sdwan_lab::Result<()> {
    if vip_candidates > 0 {
        eprintln!("sdwan-lab: note: --vip-candidates is accepted but VIPs are not implemented yet; \"vips\" is empty");
    }
    let mut opts = UpOptions::new(name, peers);
    opts.handshake_timeout = Duration::from_secs(timeout);
    opts.cancel = Some(cancel_flag());
    let mut lab = Lab::up(opts)?;
    let doc = lab.status()?;
    print_doc(&doc);
    eprintln!("sdwan-lab: lab {name:?} is up; remove it with `sdwan-lab down --name {name}`");
    Ok(())
}

fn down(name: &str) -> sdwan_lab::Result<()> {
    let report = Lab::down(name)?;
    for w in &report.warnings {
        eprintln!("sdwan-lab: warning: {w}");
    }
    if report.removed_nothing() {
        eprintln!("sdwan-lab: nothing to remove for lab {name:?}");
    } else {
        eprintln!(
            "sdwan-lab: removed lab {name:?}: {} processes stopped, {} namespaces, {} stale sockets",
            report.stopped.len(),
            report.namespaces.len(),
            report.sockets.len()
        );
    }
    Ok(())
}

/// The quick start. The lab is removed on every path: success, failure, Ctrl-C, panic (by the guard).
fn demo() -> ExitCode {
    const NAME: &str = "demo";
    let cancel = cancel_flag();
    let mut opts = UpOptions::new(NAME, 3);
    opts.cancel = Some(cancel.clone());
    eprintln!("sdwan-lab demo: building 3 peers in namespaces {NAME}-p1..{NAME}-p3 and waiting for handshakes…");
    let lab = match LabGuard::up(opts) {
        Ok(lab) => lab,
        Err(LabError::Cancelled) => {
            eprintln!("sdwan-lab demo: cancelled");
            return ExitCode::from(130);
        }
        Err(e) => {
            eprintln!("sdwan-lab demo: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = demo_run(lab, &cancel);
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(LabError::Cancelled) => {
            eprintln!("sdwan-lab demo: cancelled; lab removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("sdwan-lab demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Shows the mesh and pings every pair; `Ok(false)` if a ping lost packets. Takes the lab down at the end.
fn demo_run(mut lab: LabGuard, cancel: &AtomicBool) -> sdwan_lab::Result<bool> {
    let doc = lab.status()?;
    print_doc(&doc);
    println!();
    println!(
        "{:<5} {:<11} {:<12} {:<13} {:<8} {:<13} latest handshake",
        "peer", "netns", "underlay", "overlay", "sdwand", "wireguard-go"
    );
    for p in &doc.peers {
        let i: usize = p.name[1..].parse().expect("peer names are pN");
        let handshakes = match lab.device(i) {
            Ok(dev) => doc
                .peers
                .iter()
                .filter(|q| q.name != p.name)
                .map(|q| {
                    let key = &lab
                        .peer(q.name[1..].parse().expect("pN"))
                        .expect("listed peer")
                        .public_key;
                    let t = dev
                        .peers
                        .iter()
                        .find(|x| &x.config.public_key.to_base64() == key)
                        .and_then(|x| x.stats.last_handshake_time);
                    format!("{}: {}", q.name, ago(t))
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("({e})"),
        };
        let pid = |p: Option<u32>| p.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "{:<5} {:<11} {:<12} {:<13} {:<8} {:<13} {handshakes}",
            p.name,
            p.netns,
            p.underlay_addr,
            p.overlay_addr,
            pid(p.sdwand_pid),
            pid(p.wg_pid)
        );
    }
    println!();
    println!("pings over the overlay (3 each):");
    let mut all_ok = true;
    for i in 1..=lab.peer_count() {
        for j in (1..=lab.peer_count()).filter(|j| *j != i) {
            if cancel.load(Ordering::SeqCst) {
                return Err(LabError::Cancelled);
            }
            let to = IpAddr::V6(Layout::overlay_addr(j));
            let line = match lab.ping(i, to, 3, Duration::from_millis(200)) {
                Ok(s) => {
                    all_ok &= s.lost() == 0;
                    format!("{} {s}", if s.lost() == 0 { "ok  " } else { "FAIL" })
                }
                Err(e) => {
                    all_ok = false;
                    format!("FAIL {e}")
                }
            };
            println!("  p{i} -> p{j} ({to}): {line}");
        }
    }
    if cancel.load(Ordering::SeqCst) {
        return Err(LabError::Cancelled);
    }
    lab.down()?;
    println!();
    println!(
        "{}; lab removed",
        if all_ok {
            "all peers reach each other"
        } else {
            "some pings FAILED"
        }
    );
    Ok(all_ok)
}
