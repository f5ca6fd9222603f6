//! The `failover` benchmark: how long clients of the VIP lose it when its holder dies or hands over, and how
//! soon every peer routes it to a new claimant, on labs of real `sdwand` daemons (see `sdwan_lab`).
//!
//! Cases (each run on a lab of its own, built for it and removed afterwards):
//! - **node-death** (interval 50 ms, dead_after 4) and **node-death-10ms** (interval 10 ms): 5 peers,
//!   candidates p1..p3, an observer (p4) probing `[VIP]:9099` every 5 ms; per trial the holder's node dies
//!   (underlay down, `sdwand` and `wireguard-go` SIGKILLed), the outage the observer sees is recorded, and
//!   the node is revived and must come back as a standby.
//! - **node-death-quorum**: the same with quorum mode on for the VIP (a registry lab: quorum mode is turned
//!   on through the registry; three candidates are three voters, no witness).
//! - **node-death-floating**: the same on the floating prefix of an HA branch site (a registry lab with
//!   `--floating-candidates 2`: gateways p1 and p2); the observer probes the site host `203.0.113.10:9099`
//!   (an echo responder the bench runs in the site namespace) through whichever gateway holds the prefix,
//!   and the dead holder's site LAN link goes down too.
//! - **handover**: the same lab; per trial SIGTERM to the holder's `sdwand` (a planned stop hands the VIP
//!   over before letting go); the daemon is started again between trials.
//! - **confirm**: a 50-peer lab; per trial `sdwanctl vip move --to` the next candidate, and the new holder's
//!   "claim → last peer acknowledged" from its log line (exact, per trial).
//!
//! Layout: [`trials`] (one trial of each case), [`log`] (sdwand's log lines), [`report`] (figures, table,
//! JSON), [`neigh`] (room in the host's ARP table for large labs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use sdwan_lab::{LabGuard, UpOptions};

use crate::error::{BenchError, Result};
use crate::report::Machine;

mod log;
pub(crate) mod neigh;
mod report;
mod trials;

pub use report::FailoverReport;
use report::{CaseReport, Setup, Stat, TrialRecord};
use trials::{Ctx, Service, OBSERVER};

/// The cases, in the order a full run takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaseId {
    /// Node death with the default timers (interval 50 ms, dead_after 4).
    NodeDeath,
    /// Node death with a 10 ms interval (dead_after 4).
    #[value(name = "node-death-10ms")]
    NodeDeath10ms,
    /// Node death with quorum mode on for the VIP (default timers).
    NodeDeathQuorum,
    /// Node death of the gateway holding a floating prefix, probed through it to a site host (default
    /// timers).
    NodeDeathFloating,
    /// Planned handover: SIGTERM to the holder's sdwand.
    Handover,
    /// Claim → last peer confirmed on a large lab (manual moves).
    Confirm,
}

impl CaseId {
    const ALL: [CaseId; 6] = [
        CaseId::NodeDeath,
        CaseId::NodeDeath10ms,
        CaseId::NodeDeathQuorum,
        CaseId::NodeDeathFloating,
        CaseId::Handover,
        CaseId::Confirm,
    ];

    fn key(self) -> &'static str {
        match self {
            CaseId::NodeDeath => "node-death",
            CaseId::NodeDeath10ms => "node-death-10ms",
            CaseId::NodeDeathQuorum => "node-death-quorum",
            CaseId::NodeDeathFloating => "node-death-floating",
            CaseId::Handover => "handover",
            CaseId::Confirm => "confirm",
        }
    }

    /// One letter of the lab name.
    fn letter(self) -> char {
        match self {
            CaseId::NodeDeath => 'n',
            CaseId::NodeDeath10ms => 't',
            CaseId::NodeDeathQuorum => 'q',
            CaseId::NodeDeathFloating => 'f',
            CaseId::Handover => 'h',
            CaseId::Confirm => 'c',
        }
    }

    /// What the observer probes.
    fn service(self) -> Service {
        match self {
            CaseId::NodeDeathFloating => Service::Site,
            _ => Service::Vip,
        }
    }

    /// Candidates of the VIP (or, for the floating case, of the floating prefix).
    fn candidates(self) -> usize {
        match self {
            CaseId::NodeDeathFloating => FLOATING_CANDIDATES,
            _ => CANDIDATES,
        }
    }

    /// Whether the case's lab has a registry: quorum mode is turned on through it, and a floating site
    /// needs the IPv4 overlay addresses it assigns. The other labs use static candidates, as in the
    /// figures recorded before (failover does not involve the registry).
    fn registry(self) -> bool {
        matches!(self, CaseId::NodeDeathQuorum | CaseId::NodeDeathFloating)
    }

    fn interval(self) -> Duration {
        match self {
            CaseId::NodeDeath10ms => Duration::from_millis(10),
            _ => Duration::from_millis(50),
        }
    }
}

/// Options of `sdwand-bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Run only this case (repeat for several, run in the order given; default: all).
    #[arg(long, value_enum)]
    pub case: Vec<CaseId>,
    /// Trials per case.
    #[arg(long, default_value_t = 30)]
    pub trials: usize,
    /// `failover.dead_after` of the labs (the cases use 4).
    #[arg(long, default_value_t = 4)]
    pub dead_after: u32,
    /// Peers of the confirm case's lab (3 to 200).
    #[arg(long, default_value_t = 50)]
    pub confirm_peers: usize,
    /// Print the report as JSON (with every trial's raw values) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file (the table still goes to stdout).
    #[arg(long, value_name = "PATH")]
    pub json_file: Option<std::path::PathBuf>,
}

/// Peers of the probed cases' labs: candidates p1..p3, observer p4, one more follower p5.
const PEERS: usize = 5;
/// VIP candidates of every lab with a VIP.
const CANDIDATES: usize = 3;
/// Floating-prefix candidates (the site's gateways) of the floating case's lab, which has no VIP.
const FLOATING_CANDIDATES: usize = 2;
/// How long `Lab::up` may wait for all handshakes (a 50-peer lab took 8 s on an idle 2-core VM).
const UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Targets from the issue (reported, never asserted).
const NODE_DEATH_P99_MS: f64 = 250.0;
const NODE_DEATH_10MS_MEDIAN_MS: f64 = 40.0;
const QUORUM_P99_MS: f64 = 400.0;
const FLOATING_P99_MS: f64 = 250.0;
/// Tailscale's subnet-router failover (about 15 s; issue 11), the floating case's comparison.
const TAILSCALE_SUBNET_FAILOVER_MS: f64 = 15_000.0;
const CONFIRM_MEDIAN_MS: f64 = 10.0;

/// Runs the chosen cases. `interrupted` is watched on a thread of its own and cancels the lab's waits.
pub fn run(opts: &Options, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<FailoverReport> {
    if opts.trials == 0 || opts.dead_after == 0 {
        return Err(BenchError::Usage("--trials and --dead-after must be at least 1".into()));
    }
    if !(CANDIDATES..=sdwan_lab::layout::MAX_PEERS).contains(&opts.confirm_peers) {
        return Err(BenchError::Usage(format!(
            "--confirm-peers must be {CANDIDATES} to {}",
            sdwan_lab::layout::MAX_PEERS
        )));
    }
    let start = Instant::now();
    let cancel = Arc::new(AtomicBool::new(false));
    let done = AtomicBool::new(false);
    let cases = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if interrupted() {
                    cancel.store(true, Ordering::SeqCst);
                    return;
                }
                sleep(Duration::from_millis(20));
            }
        });
        let _stop_watching = SetOnDrop(&done);
        let which: Vec<CaseId> = if opts.case.is_empty() {
            CaseId::ALL.to_vec()
        } else {
            opts.case.clone()
        };
        which
            .into_iter()
            .map(|c| run_case(c, opts, &cancel))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(FailoverReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::probe(),
        took_s: start.elapsed().as_secs_f64(),
        cases,
    })
}

/// Sets its flag when dropped (also on an early return or a panic).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Builds the case's lab, runs its trials, takes the lab down, and summarises.
fn run_case(id: CaseId, opts: &Options, cancel: &Arc<AtomicBool>) -> Result<CaseReport> {
    let start = Instant::now();
    let load_before = loadavg();
    let peers = if id == CaseId::Confirm {
        opts.confirm_peers
    } else {
        PEERS
    };
    let trials = opts.trials;
    // Declared before the lab, so the limits are restored after the lab is gone.
    let _neigh = neigh::NeighLimits::ensure(peers)?;
    let name = lab_name(id);
    eprintln!(
        "{}: building lab {name} ({peers} peers; if the bench is killed, remove it with `sdwan-lab down --name {name}`) …",
        id.key()
    );
    let mut up = UpOptions::new(&name, peers);
    up.registry = id.registry();
    up.quorum = id == CaseId::NodeDeathQuorum;
    if id.service() == Service::Site {
        up.floating_candidates = FLOATING_CANDIDATES;
    } else {
        up.vip_candidates = CANDIDATES;
    }
    up.vip_interval = id.interval();
    up.vip_dead_after = opts.dead_after;
    up.handshake_timeout = UP_TIMEOUT;
    up.cancel = Some(cancel.clone());
    let t0 = Instant::now();
    let mut lab = LabGuard::up(up)?;
    let lab_up = t0.elapsed();
    eprintln!("{}: lab up in {:.1} s", id.key(), lab_up.as_secs_f64());
    let site_responder = match id.service() {
        Service::Site => Some(trials::start_site_responder(&lab)?),
        Service::Vip => None,
    };
    let mut records = Vec::with_capacity(trials);
    {
        let mut ctx = Ctx {
            lab: &mut lab,
            case: id.key(),
            cancel,
            candidates: (1..=id.candidates()).collect(),
            service: id.service(),
        };
        for t in 1..=trials {
            if cancel.load(Ordering::SeqCst) {
                return Err(BenchError::Interrupted);
            }
            let rec = match id {
                CaseId::NodeDeath | CaseId::NodeDeath10ms | CaseId::NodeDeathQuorum | CaseId::NodeDeathFloating => {
                    trials::node_death(&mut ctx, t)?
                }
                CaseId::Handover => trials::handover(&mut ctx, t)?,
                CaseId::Confirm => trials::confirm(&mut ctx, t)?,
            };
            eprintln!("{}: trial {t}/{trials}: {}", id.key(), progress_line(&rec));
            records.push(rec);
        }
    }
    let down = lab.down()?;
    for w in down.warnings {
        eprintln!("lab {name} down: {w}");
    }
    // It ends within a second of the lab's state directory going away.
    if let Some(responder) = site_responder {
        match responder.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{}: the site host's responder failed: {e}", id.key()),
            Err(_) => eprintln!("{}: the site host's responder panicked", id.key()),
        }
    }
    let setup = Setup {
        peers,
        candidates: id.candidates(),
        quorum: id == CaseId::NodeDeathQuorum,
        probed: (id != CaseId::Confirm).then(|| match id.service() {
            Service::Vip => format!("the VIP {}", Service::Vip.target()),
            Service::Site => format!(
                "the site host {} through the floating prefix {}",
                Service::Site.target(),
                Service::Site.label()
            ),
        }),
        observer: (id != CaseId::Confirm).then_some(OBSERVER),
        interval_ms: id.interval().as_secs_f64() * 1e3,
        dead_after: opts.dead_after,
        lab_up_s: lab_up.as_secs_f64(),
    };
    let mut case = CaseReport {
        case: id.key(),
        name: String::new(),
        setup,
        trials: records.len(),
        took_s: start.elapsed().as_secs_f64(),
        load: [load_before, loadavg()],
        rows: Vec::new(),
        targets: Vec::new(),
        notes: Vec::new(),
        records,
    };
    summarise(id, &mut case);
    Ok(case)
}

/// Rows, targets and notes of a case from its records.
fn summarise(id: CaseId, c: &mut CaseReport) {
    let obs = format!("p{OBSERVER}");
    match id {
        CaseId::NodeDeath | CaseId::NodeDeath10ms | CaseId::NodeDeathQuorum | CaseId::NodeDeathFloating => {
            let ms = id.interval().as_millis();
            let what = match id {
                CaseId::NodeDeathQuorum => "VIP holder's node death, quorum mode",
                CaseId::NodeDeathFloating => "floating prefix: holding gateway's node death",
                _ => "node death",
            };
            c.name = format!("{what}, interval {ms} ms × dead_after {}", c.setup.dead_after);
            c.row("outage_ms", format!("outage seen by {obs}"), "ms", |r| r.outage_ms);
            c.row("lost", "lost probes", "probes", |r| r.lost.map(|n| n as f64));
            c.row(
                "fault_to_claim_ms",
                "link down → claim (new holder's log)",
                "ms",
                |r| r.fault_to_claim_ms,
            );
            c.row(
                "claim_to_reroute_ms",
                format!("claim → {obs}'s WireGuard re-routed"),
                "ms",
                |r| r.claim_to_reroute_ms,
            );
            c.row(
                "fault_call_ms",
                "`ip link set down` call (fault-time bracket)",
                "ms",
                |r| r.fault_call_ms,
            );
            match id {
                CaseId::NodeDeath10ms => c.target("outage_ms", Stat::Median, NODE_DEATH_10MS_MEDIAN_MS),
                CaseId::NodeDeathQuorum => c.target("outage_ms", Stat::P99, QUORUM_P99_MS),
                CaseId::NodeDeathFloating => {
                    c.target("outage_ms", Stat::P99, FLOATING_P99_MS);
                    if let Some(p99) = c.targets.last().and_then(|t| t.value).filter(|v| *v > 0.0) {
                        c.notes.push(format!(
                            "Tailscale's subnet-router failover takes about {:.0} s: this p99 is {:.0}× shorter",
                            TAILSCALE_SUBNET_FAILOVER_MS / 1e3,
                            TAILSCALE_SUBNET_FAILOVER_MS / p99
                        ));
                    }
                }
                _ => c.target("outage_ms", Stat::P99, NODE_DEATH_P99_MS),
            }
            // The holder heartbeats every interval / 2, so its last heartbeat before the link went down
            // is at most that old.
            let detect = id.interval() * c.setup.dead_after;
            c.notes.push(format!(
                "detection alone: the holder is dead {} ms after it was last heard; it heartbeats every {} ms, \
                 so that is {}–{} ms after the link went down",
                detect.as_millis(),
                (id.interval() / 2).as_millis(),
                (detect - id.interval() / 2).as_millis(),
                detect.as_millis()
            ));
        }
        CaseId::Handover => {
            c.name = "planned handover (SIGTERM to the holder's sdwand)".to_owned();
            c.row("outage_ms", format!("outage seen by {obs}"), "ms", |r| r.outage_ms);
            c.row("lost", "lost probes", "probes", |r| r.lost.map(|n| n as f64));
            c.row("lost_at_switch", "… of which sent at the switch", "probes", |r| {
                r.lost_at_switch.map(|n| n as f64)
            });
            c.row("fault_to_claim_ms", "SIGTERM → claim (new holder's log)", "ms", |r| {
                r.fault_to_claim_ms
            });
            c.row(
                "claim_to_reroute_ms",
                format!("claim → {obs}'s WireGuard re-routed"),
                "ms",
                |r| r.claim_to_reroute_ms,
            );
            c.row("fault_call_ms", "SIGTERM → old daemon exited", "ms", |r| {
                r.fault_call_ms
            });
            c.row("rtt_median_ms", "probe round trip (each trial's median)", "ms", |r| {
                r.rtt_median_ms
            });
            c.row("rtt_switch_ms", "probe round trip at the switch", "ms", |r| {
                r.rtt_switch_ms
            });
            c.target("lost", Stat::Max, 0.0);
            let mut by_lost = std::collections::BTreeMap::<usize, usize>::new();
            for r in &c.records {
                *by_lost.entry(r.lost.unwrap_or(0)).or_default() += 1;
            }
            let spread: Vec<String> = by_lost.iter().map(|(lost, n)| format!("{lost} lost in {n}")).collect();
            c.notes.push(format!("trials by lost probes: {}", spread.join(", ")));
            handover_notes(c);
        }
        CaseId::Confirm => {
            c.name = format!(
                "claim → last peer confirmed, {} peers (sdwanctl vip move --to)",
                c.setup.peers
            );
            c.row(
                "claim_to_confirmed_ms",
                "claim → last peer acknowledged (holder's log)",
                "ms",
                |r| r.claim_to_confirmed_ms,
            );
            c.row(
                "reroute_median_ms",
                "claim → median peer's WireGuard re-routed",
                "ms",
                |r| r.reroute_median_ms,
            );
            c.row(
                "reroute_last_ms",
                "claim → last peer's WireGuard re-routed",
                "ms",
                |r| r.reroute_last_ms,
            );
            c.row("fault_to_claim_ms", "`sdwanctl vip move` start → claim", "ms", |r| {
                r.fault_to_claim_ms
            });
            c.target("claim_to_confirmed_ms", Stat::Median, CONFIRM_MEDIAN_MS);
            let elsewhere = c
                .records
                .iter()
                .filter(|r| r.to.as_deref() != Some(&*expected_target(r)))
                .count();
            if elsewhere > 0 {
                c.notes.push(format!(
                    "{elsewhere} of {} moves ended on another candidate than the one asked for (see the anomalies)",
                    c.records.len()
                ));
            }
        }
    }
    let with_anomalies: Vec<&TrialRecord> = c.records.iter().filter(|r| !r.anomalies.is_empty()).collect();
    for r in &with_anomalies {
        c.notes.push(format!("trial {}: {}", r.trial, r.anomalies.join("; ")));
    }
    if with_anomalies.is_empty() {
        c.notes.push("no anomalies".to_owned());
    }
}

/// Where the handover's lost probes come from. A request sent to the old holder just before the observer
/// re-routes the VIP gets its reply after the re-route, and the observer's WireGuard drops it (its source,
/// the VIP, is now in the new holder's allowed IPs only): a window of one round trip, so about RTT / 5 ms
/// of the trials lose one probe. The observer's re-route itself takes time too (its sdwand and
/// `wireguard-go` run the UAPI update while replies wait); if that whole time is part of the window, the
/// expectation is (RTT + claim → re-route) / 5 ms. Both expectations, the observed count, and the re-route
/// times of the trials with and without a loss.
fn handover_notes(c: &mut CaseReport) {
    let interval = 5.0;
    let (mut rtt_only, mut at_switch, mut with_reroute, mut observed, mut n) = (0.0, 0.0, 0.0, 0, 0);
    let (mut lossy, mut clean) = (Vec::new(), Vec::new());
    for r in &c.records {
        let (Some(rtt), Some(reroute), Some(lost)) = (r.rtt_median_ms, r.claim_to_reroute_ms, r.lost_at_switch) else {
            continue;
        };
        n += 1;
        rtt_only += rtt / interval;
        at_switch += r.rtt_switch_ms.unwrap_or(rtt) / interval;
        with_reroute += (rtt + reroute) / interval;
        observed += lost;
        if lost > 0 {
            lossy.push(reroute)
        } else {
            clean.push(reroute)
        }
    }
    let with_loss = lossy.len();
    c.notes.push(format!(
        "trials losing a probe at the switch: {with_loss} of {} ({:.0} %); probes lost at the switch: {observed}; \
         expected from replies in flight (RTT / 5 ms per trial): {rtt_only:.1} with each trial's median RTT, \
         {at_switch:.1} with the RTT at the switch, {with_reroute:.1} if the observer's claim → re-route time \
         added to the window (over {n} trials)",
        c.records.len(),
        100.0 * with_loss as f64 / c.records.len().max(1) as f64,
    ));
    c.notes.push(format!(
        "claim → p{OBSERVER} re-routed: median {:.2} ms in the trials that lost a probe, {:.2} ms in those that did not",
        report::median(lossy),
        report::median(clean)
    ));
    // sdwand replaces each changed peer's allowed IPs in key order: with the old holder first, the VIP has
    // no owner on the observer until the new holder's entry is applied.
    let split = |first: bool| {
        let trials: Vec<&TrialRecord> = c.records.iter().filter(|r| r.old_key_first == Some(first)).collect();
        let lost: usize = trials.iter().map(|r| r.lost_at_switch.unwrap_or(0)).sum();
        (trials.len(), lost)
    };
    let ((n_first, lost_first), (n_second, lost_second)) = (split(true), split(false));
    c.notes.push(format!(
        "probes lost at the switch when the old holder's key sorts first in p{OBSERVER}'s update (VIP briefly \
         unowned): {lost_first} in {n_first} trials; when the new holder's sorts first: {lost_second} in {n_second} trials"
    ));
}

/// The candidate a confirm trial moved the VIP to (the next one after `from`, wrapping).
fn expected_target(r: &TrialRecord) -> String {
    let from: usize = r.from.trim_start_matches('p').parse().unwrap_or(0);
    format!("p{}", from % CANDIDATES + 1)
}

/// One line of progress for stderr.
fn progress_line(r: &TrialRecord) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let mut s = format!("{} → {}", r.from, r.to.as_deref().unwrap_or("?"));
    if let Some(o) = r.outage_ms {
        s.push_str(&format!(", outage {}, {} lost", f(Some(o)), r.lost.unwrap_or(0)));
    }
    if r.claim_to_confirmed_ms.is_some() {
        s.push_str(&format!(", claim → confirmed {}", f(r.claim_to_confirmed_ms)));
    }
    s.push_str(&format!(
        ", fault → claim {}, claim → re-routed {}",
        f(r.fault_to_claim_ms),
        f(r.claim_to_reroute_ms)
    ));
    if !r.anomalies.is_empty() {
        s.push_str(&format!(" [{}]", r.anomalies.join("; ")));
    }
    s
}

/// A lab name of this process and case: `fb`, the case's letter, three base-36 digits of the PID.
fn lab_name(id: CaseId) -> String {
    let mut pid = std::process::id();
    let mut s = format!("fb{}", id.letter());
    for _ in 0..3 {
        s.push(char::from_digit(pid % 36, 36).expect("digit"));
        pid /= 36;
    }
    s
}

/// The three load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
