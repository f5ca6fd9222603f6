//! The `propagation` benchmark: how long a membership change takes to reach every daemon's WireGuard device.
//!
//! A lab of `--peers` real `sdwand` daemons enrolled through the lab's `sdwan-registry` (no VIP, no k3s).
//! Each trial makes two membership changes over the registry's HTTP API, from inside its namespace:
//!
//! - **enroll**: `POST /v1/peers/enroll` of a new peer (a fresh WireGuard key, an endpoint on the lab's
//!   underlay; no daemon behind it: what is measured is the others' view), then
//! - **remove**: `DELETE /v1/peers/{id}` of that peer with the admin token,
//!
//! and measures, for each, the time from just before the request is sent to the moment the last of the
//! peers' devices shows the new state (the key present, then gone), read over each device's UAPI socket.
//! Devices are polled by [`POLLERS`] threads, each sweeping the devices it has not yet seen change; a
//! device's time is when the sweep saw it, so every figure is late by at most one sweep ([`Resolution`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use sdwan_lab::{Lab, LabGuard, UpOptions};
use serde::Serialize;
use wireguard_control::Key;

use crate::error::{BenchError, Result};
use crate::failover::neigh::NeighLimits;
use crate::report::Machine;
use crate::stats::{fmt_ms, Figures};

/// Options of `sdwand-bench propagation`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Peers of the lab (2 to 199; one underlay address stays free for the synthetic peer's endpoint).
    #[arg(long, default_value_t = 50)]
    pub peers: usize,
    /// Trials (each one enrollment and one removal).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Print the report as JSON (with every trial's values) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Threads polling the devices.
const POLLERS: usize = 5;
/// Longest a change may take to reach every device before the trial fails.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long `Lab::up` may take (peers enroll one after the other).
const UP_TIMEOUT: Duration = Duration::from_secs(180);
/// The target for the median, reported, never asserted.
const TARGET_MS: f64 = 1000.0;

/// The run's figures.
#[derive(Debug, Serialize)]
pub struct PropagationReport {
    /// The command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Daemons in the lab.
    pub peers: usize,
    /// Trials run.
    pub trials: usize,
    /// How long the lab took to come up, seconds.
    pub lab_up_s: f64,
    /// Enrollment → on every device, milliseconds.
    pub enroll: Figures,
    /// Removal → gone from every device, milliseconds.
    pub remove: Figures,
    /// How late a device's time can be: the longest sweep over the devices seen in the run, milliseconds.
    pub resolution_ms: f64,
    /// Every trial's enrollment figure, milliseconds, in order.
    pub enroll_ms: Vec<f64>,
    /// Every trial's removal figure, milliseconds, in order.
    pub remove_ms: Vec<f64>,
}

impl PropagationReport {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "membership propagation to {} sdwand daemons ({} trials; lab up in {:.1} s)\n{}\n\n",
            self.peers,
            self.trials,
            self.lab_up_s,
            self.machine.line()
        );
        out.push_str(&format!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "change → applied on every device", "min", "median", "p90", "p99", "max"
        ));
        for (what, f) in [
            ("enroll (POST /v1/peers/enroll)", &self.enroll),
            ("remove (DELETE /v1/peers/{id})", &self.remove),
        ] {
            out.push_str(&format!(
                "{what:<34} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                fmt_ms(f.min),
                fmt_ms(f.median),
                fmt_ms(f.p90),
                fmt_ms(f.p99),
                fmt_ms(f.max)
            ));
        }
        let verdict = |f: &Figures| if f.median <= TARGET_MS { "met" } else { "missed" };
        out.push_str(&format!(
            "\ntarget: median ≤ {} on all peers: enroll {}, remove {}; device reads late by ≤ {} (one sweep)\n",
            fmt_ms(TARGET_MS),
            verdict(&self.enroll),
            verdict(&self.remove),
            fmt_ms(self.resolution_ms)
        ));
        out
    }
}

/// Runs the benchmark. `interrupted` is checked between trials and during the waits.
pub fn run(opts: &Options, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<PropagationReport> {
    if !(2..sdwan_lab::layout::MAX_PEERS).contains(&opts.peers) || opts.trials == 0 {
        return Err(BenchError::Usage(format!(
            "--peers must be 2 to {} and --trials at least 1",
            sdwan_lab::layout::MAX_PEERS - 1
        )));
    }
    // Declared before the lab, so the limits are restored after the lab is gone.
    let _neigh = NeighLimits::ensure(opts.peers + 1)?;
    let name = format!("pg{}", std::process::id() % 10_000);
    eprintln!(
        "propagation: building lab {name} ({} peers with a registry; if the bench is killed, remove it with \
         `sdwan-lab down --name {name}`) …",
        opts.peers
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let mut up = UpOptions::new(&name, opts.peers);
    up.handshake_timeout = UP_TIMEOUT;
    up.cancel = Some(cancel.clone());
    // Nobody is reaped during the run.
    up.ephemeral_ttl = Duration::from_secs(3600);
    let t0 = Instant::now();
    let mut lab = LabGuard::up(up)?;
    let lab_up = t0.elapsed();
    eprintln!("propagation: lab up in {:.1} s", lab_up.as_secs_f64());
    let (mut enroll_ms, mut remove_ms) = (Vec::new(), Vec::new());
    let mut resolution = Duration::ZERO;
    for t in 1..=opts.trials {
        if interrupted() {
            cancel.store(true, Ordering::SeqCst);
            return Err(BenchError::Interrupted);
        }
        let lab: &Lab = lab.lab()?;
        let enrolled = trial_enroll(lab, t, interrupted)?;
        resolution = resolution.max(enrolled.sweep);
        let (removed, sweep) = trial_remove(lab, t, &enrolled, interrupted)?;
        resolution = resolution.max(sweep);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "propagation: trial {t}/{}: enroll {}, remove {}",
            opts.trials,
            fmt_ms(ms(enrolled.took)),
            fmt_ms(ms(removed))
        );
        enroll_ms.push(ms(enrolled.took));
        remove_ms.push(ms(removed));
    }
    let down = lab.down()?;
    for w in down.warnings {
        eprintln!("lab {name} down: {w}");
    }
    Ok(PropagationReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::probe(),
        peers: opts.peers,
        trials: opts.trials,
        lab_up_s: lab_up.as_secs_f64(),
        enroll: Figures::of(enroll_ms.iter().copied()),
        remove: Figures::of(remove_ms.iter().copied()),
        resolution_ms: resolution.as_secs_f64() * 1e3,
        enroll_ms,
        remove_ms,
    })
}

/// The peer a trial enrolled, and how long that took to reach every device.
struct Enrolled {
    /// Its public key, base64.
    key: String,
    /// Its id in the registry.
    peer_id: String,
    /// Enrollment request → on every device.
    took: Duration,
    /// The longest sweep of the wait.
    sweep: Duration,
}

/// Enrolls a new peer over the registry's API and waits until it is on every device.
fn trial_enroll(lab: &Lab, t: usize, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<Enrolled> {
    let key = Key::generate_private().get_public().to_base64();
    let endpoint = format!("{}:51820", sdwan_lab::Layout::underlay_addr(lab.peer_count() + 1));
    let body = serde_json::json!({
        "name": format!("bench-{t}"),
        "public_key": key,
        "endpoint": endpoint,
        "lifecycle": "persistent",
    });
    let token = lab.enrollment_token()?;
    let start = Instant::now();
    let answer = lab.registry_call("POST", "/v1/peers/enroll", Some(&token), Some(&body))?;
    if answer.status != 201 && answer.status != 200 {
        return Err(trial_error(
            t,
            format!("enrollment answered {}: {}", answer.status, answer.body.trim()),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&answer.body).map_err(|e| {
        trial_error(
            t,
            format!("enrollment answer is not JSON ({e}): {}", answer.body.trim()),
        )
    })?;
    let peer_id = v["peer_id"]
        .as_str()
        .ok_or_else(|| trial_error(t, format!("no peer_id in {}", answer.body.trim())))?
        .to_owned();
    let (took, sweep) = wait_all(lab, &key, true, start, interrupted).map_err(|e| trial_error(t, e))?;
    Ok(Enrolled {
        key,
        peer_id,
        took,
        sweep,
    })
}

/// Removes the trial's peer; returns the time until it is gone from every device, and the longest sweep.
fn trial_remove(
    lab: &Lab,
    t: usize,
    peer: &Enrolled,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<(Duration, Duration)> {
    let (key, peer_id) = (&peer.key, &peer.peer_id);
    let admin = lab.admin_token()?;
    let start = Instant::now();
    let answer = lab.registry_call("DELETE", &format!("/v1/peers/{peer_id}"), Some(&admin), None)?;
    if answer.status != 204 {
        return Err(trial_error(
            t,
            format!("removal answered {}: {}", answer.status, answer.body.trim()),
        ));
    }
    wait_all(lab, key, false, start, interrupted).map_err(|e| trial_error(t, e))
}

fn trial_error(trial: usize, message: String) -> BenchError {
    BenchError::Trial {
        case: "propagation".to_owned(),
        trial,
        detail: message,
    }
}

/// Waits until `key` is (`present`) or is not on every peer's device; returns the time from `start` to the
/// last device seen changed, and the longest sweep of any poller.
fn wait_all(
    lab: &Lab,
    key: &str,
    present: bool,
    start: Instant,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> std::result::Result<(Duration, Duration), String> {
    let peers: Vec<usize> = (1..=lab.peer_count()).collect();
    let chunks: Vec<Vec<usize>> = peers
        .chunks(peers.len().div_ceil(POLLERS))
        .map(<[usize]>::to_vec)
        .collect();
    let results: Vec<std::result::Result<(Duration, Duration), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|mine| s.spawn(move || poll_devices(lab, &mine, key, present, start, interrupted)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a poller panicked".to_owned())))
            .collect()
    });
    let mut last = Duration::ZERO;
    let mut sweep = Duration::ZERO;
    for r in results {
        let (l, s) = r?;
        last = last.max(l);
        sweep = sweep.max(s);
    }
    Ok((last, sweep))
}

/// One poller: sweeps `mine` until every device shows the state, at most [`DEADLINE`] after `start`.
fn poll_devices(
    lab: &Lab,
    mine: &[usize],
    key: &str,
    present: bool,
    start: Instant,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> std::result::Result<(Duration, Duration), String> {
    let mut left: Vec<usize> = mine.to_vec();
    let mut last = Duration::ZERO;
    let mut longest = Duration::ZERO;
    while !left.is_empty() {
        if start.elapsed() > DEADLINE || interrupted() {
            return Err(format!(
                "peers {left:?} did not {} the new peer within {DEADLINE:?}",
                if present { "get" } else { "drop" }
            ));
        }
        let sweep = Instant::now();
        let mut still = Vec::with_capacity(left.len());
        for &i in &left {
            let has = lab
                .device(i)
                .map(|d| d.peers.iter().any(|p| p.config.public_key.to_base64() == key))
                .map_err(|e| format!("p{i}: {e}"))?;
            if has == present {
                last = last.max(start.elapsed());
            } else {
                still.push(i);
            }
        }
        longest = longest.max(sweep.elapsed());
        left = still;
        if !left.is_empty() {
            sleep(Duration::from_millis(2));
        }
    }
    Ok((last, longest))
}
