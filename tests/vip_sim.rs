//! Deterministic simulation of the VIP failover protocol.
//!
//! Each seed builds a cluster of 2–5 candidates and 0–6 followers, each running a [`sdwand::vip::Machine`]
//! over a simulated network (per-link loss, delay, jitter, duplication, symmetric and one-way partitions)
//! with a fake clock that jumps from event to event, and drives it through crashes, restarts, node deaths,
//! freezes, planned stops, operator moves, health flaps and replayed datagrams. Every datagram goes
//! through the wire codec. The seed also picks the schedule class (see `vip_sim/schedule.rs`) and with it
//! the invariants checked; `docs/protocol.md` lists them and derives the convergence bound.
//!
//! Environment:
//! - `VIP_SIM_SEED=<n>`: run only seed `n`, with a trace of every event on stderr.
//! - `VIP_SIM_SCHEDULES=<n>`: run `n` seeds in all (default 10,000).
//! - `VIP_SIM_FIRST_SEED=<n>`: start at seed `n` (default 0), to explore seeds CI does not run.

#[path = "vip_sim/model.rs"]
mod model;
#[path = "vip_sim/schedule.rs"]
mod schedule;
#[path = "vip_sim/world.rs"]
mod world;

use std::panic;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use schedule::{Class, Outcome};

const DEFAULT_SCHEDULES: u64 = 10_000;

fn env(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// One seed, with panics turned into failures so the seed is always reported.
fn run_one(seed: u64, trace: bool, quorum: bool) -> Result<Outcome, String> {
    match panic::catch_unwind(|| schedule::run(seed, trace, quorum)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        )),
    }
}

/// Runs every seed of `class` among the configured ones on all cores (every seed, as a chaos schedule
/// in quorum mode, when `class` is `None`); fails listing the failing seeds.
fn run_class(class: Option<Class>) {
    let quorum = class.is_none();
    let name = class.map_or("Quorum".to_owned(), |c| format!("{c:?}"));
    let filter = if quorum { "quorum" } else { "" };
    if let Some(seed) = env("VIP_SIM_SEED") {
        if class.is_none_or(|c| Class::of(seed) == c) {
            match run_one(seed, true, quorum) {
                Ok(o) => eprintln!("seed {seed}: ok {o:?}"),
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        return;
    }
    let first = env("VIP_SIM_FIRST_SEED").unwrap_or(0);
    let count = env("VIP_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
    let seeds: Vec<u64> = (first..first + count)
        .filter(|&s| class.is_none_or(|c| Class::of(s) == c))
        .collect();
    let next = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let prev_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(k) else { break };
                match run_one(seed, false, quorum) {
                    Ok(o) => outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o),
                    Err(e) => failures.lock().unwrap_or_else(|e| e.into_inner()).push((seed, e)),
                }
            });
        }
    });
    panic::set_hook(prev_hook);
    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    let conv: Vec<u64> = outcomes.iter().filter_map(|o| o.converged_after).collect();
    let closest = outcomes
        .iter()
        .filter_map(|o| Some((o.converged_after? as f64 / o.bound.max(1) as f64, o)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!(
        "vip_sim {name}: {} schedules in {:.1} s; claims {}, datagrams {}, rejected {}, moves {}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        outcomes.iter().map(|o| o.claims).sum::<usize>(),
        outcomes.iter().map(|o| o.delivered).sum::<u64>(),
        outcomes.iter().map(|o| o.rejected).sum::<u64>(),
        outcomes.iter().map(|o| o.moves).sum::<u64>(),
    );
    if let Some((_, o)) = closest {
        eprintln!(
            "  convergence after the faults: mean {} ms, worst {} ms; closest to its bound: seed {} converged \
             after {} ms of {} ms",
            conv.iter().sum::<u64>() / conv.len().max(1) as u64 / 1000,
            conv.iter().max().copied().unwrap_or(0) / 1000,
            o.seed,
            o.converged_after.unwrap_or(0) / 1000,
            o.bound / 1000,
        );
    }
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    for (seed, e) in &failures {
        eprintln!(
            "FAILED seed {seed}: {e}\n  re-run: VIP_SIM_SEED={seed} cargo test --test vip_sim {filter} -- --nocapture"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} {name} schedules failed (see above)",
        failures.len(),
        seeds.len()
    );
}

#[test]
fn chaos_converges_within_bound() {
    run_class(Some(Class::Chaos));
}

#[test]
fn no_failover_under_moderate_loss() {
    run_class(Some(Class::Steady));
}

#[test]
fn returning_rank0_and_preemption() {
    run_class(Some(Class::Return));
}

#[test]
fn restarting_the_holder_never_flaps() {
    run_class(Some(Class::Restart));
}

#[test]
fn candidates_cut_off_from_each_other_never_duel() {
    run_class(Some(Class::Split));
}

#[test]
fn quorum_never_two_running_holders() {
    run_class(None);
}
