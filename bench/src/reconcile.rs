//! The `reconcile` benchmark: sdwand's device reconciler against `wg setconf` / `wg set`, on one
//! `wireguard-go` interface, in the same run.
//!
//! Cases:
//! - **apply N peers from empty** (N = 1k and 10k): a fresh `wireguard-go` (no key, no port, no peers), then
//!   either a new [`DeviceReconciler`]'s `update()` (read the empty device, plan, apply in one UAPI request,
//!   update its cache) or one `wg setconf IFACE FILE` process, timed from spawn to exit.
//! - **change one peer's allowed IPs on an N-peer interface**: after sdwand applied N peers (its cache is
//!   warm), the daemon's VIP-move path: `Desired::route_vip` routes a fresh VIP /128 to one peer (and the
//!   previous trial's VIP nowhere), then `update_peers()` plans only the peers it returned against the cache
//!   and sends one small request; against one `wg set IFACE peer KEY allowed-ips NEW` process on another
//!   peer. The breakdown times the full diff (`plan_device` over all N peers), which this path skips.
//!
//! sdwand and `wg` alternate which goes first in each round. After every trial the device is read back and
//! checked, so a trial that did nothing is an error, not a fast figure. Device resets, checks and file
//! writes are never inside a timed window.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sdwand::mesh::{plan_device, Desired, KeyBytes};
use sdwand::reconcile::{DeviceOutcome, DeviceReconciler};
use sdwand::wg::{BackendInUse, Device};

use crate::error::{BenchError, Result};
use crate::report::{Case, Cpu, Part, Report, Target};
use crate::stats::{children_cpu, thread_cpu, Samples};
use crate::wireguard_go::{describe, WireguardGo};
use crate::workload::{host, verify, verify_peer, verify_peer_set, Workload};

/// Options of `sdwand-bench reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Peers in the small from-empty case (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub small_peers: usize,
    /// Timed trials of the small from-empty case, per side.
    #[arg(long, default_value_t = 15)]
    pub small_trials: usize,
    /// Peers in the large from-empty case and on the interface of the one-peer change (at least 2).
    #[arg(long, default_value_t = 10_000)]
    pub large_peers: usize,
    /// Timed trials of the large from-empty case, per side.
    #[arg(long, default_value_t = 7)]
    pub large_trials: usize,
    /// Timed trials of the one-peer change, per side.
    #[arg(long, default_value_t = 101)]
    pub change_trials: usize,
    /// Untimed rounds before each case's timed trials.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Extra sdwand-only trials of each from-empty case timing read, plan, apply and cache update
    /// separately (0 skips them).
    #[arg(long, default_value_t = 3)]
    pub phase_trials: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Ratio target of the large from-empty case: sdwand's median at most this times `wg setconf`'s.
const FROM_EMPTY_TARGET: f64 = 0.8;

/// Target of the one-peer change: sdwand's median, diff included (issue 9).
const ONE_PEER_TARGET_MS: f64 = 0.5;

/// Prefix of the allowed IPs sdwand moves its peer to in the one-peer change (one new /128 per trial).
const SDWAND_MOVES: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0);

/// Prefix of the allowed IPs `wg set` moves its peer to.
const WG_MOVES: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 0);

/// Runs every case. `interrupted` is polled between trials.
pub fn run(opts: &Options, interrupted: &dyn Fn() -> bool) -> Result<Report> {
    if opts.large_peers < 2 {
        return Err(BenchError::Usage(
            "--large-peers must be at least 2 (sdwand and wg each change their own peer)".into(),
        ));
    }
    let pid = std::process::id();
    let iface = format!("sdwb{}", pid % 10_000);
    let netns = format!("sdwbench-{pid}");
    let dir = tempfile::Builder::new()
        .prefix("sdwand-bench-")
        .tempdir()
        .map_err(|e| BenchError::io("creating a temporary directory", e))?;
    let n_max = opts.small_peers.max(opts.large_peers);
    eprintln!("generating {n_max} peer keys …");
    let workload = Workload::generate(n_max);
    eprintln!("starting wireguard-go for {iface} in namespace {netns} …");
    let wireguard_go = WireguardGo::start(&netns, &iface, &dir.path().join("wireguard-go.log"))?;
    let device = Device::new(&iface, BackendInUse::Userspace)?;
    let mut bench = Bench {
        wireguard_go,
        device,
        workload,
        dir: dir.path(),
        iface: &iface,
        interrupted,
    };
    let mut cases = Vec::new();
    if opts.small_peers > 0 && opts.small_trials > 0 {
        cases.push(bench.apply_from_empty(opts.small_peers, opts.small_trials, opts, None)?);
    }
    cases.push(bench.apply_from_empty(
        opts.large_peers,
        opts.large_trials,
        opts,
        Some(Target::Ratio(FROM_EMPTY_TARGET)),
    )?);
    cases.push(bench.one_peer_change(opts.large_peers, opts.change_trials, opts.warmup)?);
    Ok(Report::new(cases))
}

/// Which side a trial measures.
#[derive(Debug, Clone, Copy)]
enum Side {
    Sdwand,
    Wg,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Sdwand => "sdwand",
            Side::Wg => "wg",
        }
    }

    /// Round `t`'s order: sdwand first in even rounds, `wg` first in odd ones.
    fn order(t: usize) -> [Side; 2] {
        if t % 2 == 1 {
            [Side::Wg, Side::Sdwand]
        } else {
            [Side::Sdwand, Side::Wg]
        }
    }
}

/// One timed trial.
#[derive(Debug, Clone, Copy)]
struct Measure {
    /// Wall time.
    wall: Duration,
    /// CPU time of the client: the bench thread running sdwand, or the `wg` process.
    client_cpu: Duration,
    /// CPU time `wireguard-go` used during the trial.
    server_cpu: Duration,
}

/// The measurements of one side of a case.
#[derive(Debug, Default)]
struct Series {
    wall: Samples,
    client_cpu: Samples,
    server_cpu: Samples,
}

impl Series {
    fn push(&mut self, m: Measure) {
        self.wall.push(m.wall);
        self.client_cpu.push(m.client_cpu);
        self.server_cpu.push(m.server_cpu);
    }
}

struct Bench<'a> {
    wireguard_go: WireguardGo,
    device: Device,
    workload: Workload,
    /// Where the `wg` config files go.
    dir: &'a Path,
    iface: &'a str,
    interrupted: &'a dyn Fn() -> bool,
}

impl Bench<'_> {
    fn check_interrupt(&self) -> Result<()> {
        if (self.interrupted)() {
            return Err(BenchError::Interrupted);
        }
        Ok(())
    }

    fn apply_from_empty(&mut self, n: usize, trials: usize, opts: &Options, target: Option<Target>) -> Result<Case> {
        let name = format!("apply {n} peers from empty");
        let desired = self.workload.desired(self.iface, n);
        let conf = self.dir.join(format!("peers-{n}.conf"));
        std::fs::write(&conf, self.workload.wg_config(n))
            .map_err(|e| BenchError::io(format!("writing {}", conf.display()), e))?;
        let conf = conf.to_string_lossy().into_owned();
        let (mut sdwand, mut wg) = (Series::default(), Series::default());
        for t in 0..opts.warmup + trials {
            self.check_interrupt()?;
            for side in Side::order(t) {
                self.wireguard_go.restart()?;
                let m = match side {
                    Side::Sdwand => self.sdwand_update(&mut DeviceReconciler::new(self.device.clone()), &desired)?,
                    Side::Wg => self.wg(&["setconf", self.iface, &conf])?,
                };
                self.check_device(&name, side, |actual| verify(actual, &desired))?;
                if t >= opts.warmup {
                    match side {
                        Side::Sdwand => sdwand.push(m),
                        Side::Wg => wg.push(m),
                    }
                }
                progress(&name, t, opts.warmup, side, m);
            }
        }
        let breakdown = self.phases(&name, &desired, opts.phase_trials)?;
        let mut case = Case::new(name, n, "wg setconf", &sdwand.wall, &wg.wall, target);
        case.cpu = cpu(&sdwand, &wg);
        case.breakdown = breakdown;
        Ok(case)
    }

    fn one_peer_change(&mut self, n: usize, trials: usize, warmup: usize) -> Result<Case> {
        let name = format!("change one peer's allowed IPs on {n} peers");
        self.wireguard_go.restart()?;
        let mut desired = self.workload.desired(self.iface, n);
        let mut reconciler = DeviceReconciler::new(self.device.clone());
        eprintln!("{name}: applying {n} peers with sdwand (cache warm-up) …");
        reconciler.update(&desired, SystemTime::now())?;
        self.check_device(&name, Side::Sdwand, |actual| verify(actual, &desired))?;
        let (moved_by_sdwand, moved_by_wg) = (self.workload.peers[0].key.clone(), self.workload.peers[1].key.clone());
        let wg_key = moved_by_wg.to_base64();
        let (mut sdwand, mut wg, mut diff) = (Series::default(), Series::default(), Samples::default());
        let mut prev_vip = None;
        for t in 0..warmup + trials {
            self.check_interrupt()?;
            for side in Side::order(t) {
                let m = match side {
                    Side::Sdwand => {
                        // The daemon's VIP move: a fresh VIP routed to the peer (the previous trial's VIP
                        // routed nowhere), then only the changed peers planned against the cache.
                        let ip = host(SDWAND_MOVES, t as u64 + 1);
                        let mut changed = BTreeSet::new();
                        if let Some(prev) = prev_vip.replace(v6(ip)) {
                            changed.extend(desired.route_vip(prev, None));
                        }
                        changed.extend(desired.route_vip(v6(ip), Some(moved_by_sdwand.0)));
                        let m = self.sdwand_update_peers(&mut reconciler, &desired, &changed)?;
                        let want = BTreeSet::from([ip, self.workload.peers[0].allowed]);
                        self.check_device(&name, side, |actual| {
                            verify_peer_set(actual, n, &moved_by_sdwand, &want)
                        })?;
                        // The diff alone, also right after a full device read: against the cache that now
                        // matches, it walks all N peers and plans nothing.
                        let snapshot = reconciler
                            .snapshot()
                            .expect("the cache is warm after a successful update");
                        let now = SystemTime::now();
                        let t0 = Instant::now();
                        let plan = plan_device(&desired, snapshot, now);
                        let elapsed = t0.elapsed();
                        if !plan.is_empty() {
                            return Err(self.verify_error(&name, side, format!("the cache still differs: {plan:?}")));
                        }
                        if t >= warmup {
                            diff.push(elapsed);
                        }
                        m
                    }
                    Side::Wg => {
                        let ip = host(WG_MOVES, t as u64 + 1);
                        let m = self.wg(&["set", self.iface, "peer", &wg_key, "allowed-ips", &ip.to_string()])?;
                        self.check_device(&name, side, |actual| verify_peer(actual, n, &moved_by_wg, ip))?;
                        m
                    }
                };
                if t >= warmup {
                    match side {
                        Side::Sdwand => sdwand.push(m),
                        Side::Wg => wg.push(m),
                    }
                }
                if t % 25 == 0 || t + 1 == warmup + trials {
                    progress(&name, t, warmup, side, m);
                }
            }
        }
        let target = Some(Target::SdwandMs(ONE_PEER_TARGET_MS));
        let mut case = Case::new(name, n, "wg set … allowed-ips", &sdwand.wall, &wg.wall, target);
        case.cpu = cpu(&sdwand, &wg);
        case.breakdown = vec![Part::new(
            format!("sdwand: plan_device over {n} peers (not on this path)"),
            &diff,
        )];
        Ok(case)
    }

    /// One timed `update_peers()` over the peers `changed` (warm cache): the path of the daemon's VIP move.
    fn sdwand_update_peers(
        &self,
        reconciler: &mut DeviceReconciler,
        desired: &Desired,
        changed: &BTreeSet<KeyBytes>,
    ) -> Result<Measure> {
        let now = SystemTime::now();
        let (server0, client0) = (self.wireguard_go.cpu_time(), thread_cpu());
        let t0 = Instant::now();
        let outcome = reconciler.update_peers(desired, changed, now)?;
        let wall = t0.elapsed();
        let m = Measure {
            wall,
            client_cpu: thread_cpu().saturating_sub(client0),
            server_cpu: self.wireguard_go.cpu_time().saturating_sub(server0),
        };
        let expected = DeviceOutcome {
            updated: 1,
            ..DeviceOutcome::default()
        };
        if outcome != expected {
            let detail = format!("update_peers() did {outcome:?}, want {expected:?}");
            return Err(self.verify_error("sdwand update_peers", Side::Sdwand, detail));
        }
        Ok(m)
    }

    /// One timed `update()`; checks it changed what a from-empty apply or a one-peer change must change.
    fn sdwand_update(&self, reconciler: &mut DeviceReconciler, desired: &Desired) -> Result<Measure> {
        let warm = reconciler.snapshot().is_some();
        let now = SystemTime::now();
        let (server0, client0) = (self.wireguard_go.cpu_time(), thread_cpu());
        let t0 = Instant::now();
        let outcome = reconciler.update(desired, now)?;
        let wall = t0.elapsed();
        let m = Measure {
            wall,
            client_cpu: thread_cpu().saturating_sub(client0),
            server_cpu: self.wireguard_go.cpu_time().saturating_sub(server0),
        };
        let expected = if warm {
            DeviceOutcome {
                updated: 1,
                ..DeviceOutcome::default()
            }
        } else {
            DeviceOutcome {
                added: desired.peers.len(),
                interface_set: true,
                ..DeviceOutcome::default()
            }
        };
        if outcome != expected {
            let detail = format!("update() did {outcome:?}, want {expected:?}");
            return Err(self.verify_error("sdwand update", Side::Sdwand, detail));
        }
        Ok(m)
    }

    /// One timed `wg` process, from spawn to exit.
    fn wg(&self, args: &[&str]) -> Result<Measure> {
        let mut cmd = Command::new("wg");
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        let (server0, client0) = (self.wireguard_go.cpu_time(), children_cpu());
        let t0 = Instant::now();
        let status = cmd.status();
        let wall = t0.elapsed();
        let m = Measure {
            wall,
            client_cpu: children_cpu().saturating_sub(client0),
            server_cpu: self.wireguard_go.cpu_time().saturating_sub(server0),
        };
        let status = status.map_err(|e| BenchError::io(format!("running `{}`", describe(&cmd)), e))?;
        if !status.success() {
            return Err(BenchError::Command {
                command: describe(&cmd),
                status,
            });
        }
        Ok(m)
    }

    /// sdwand-only trials of `update()`'s steps, timed one by one: read the (empty) device, plan, apply,
    /// update the cache.
    fn phases(&mut self, case: &str, desired: &Desired, trials: usize) -> Result<Vec<Part>> {
        let names = [
            "sdwand: Device::read (empty device)",
            "sdwand: plan_device",
            "sdwand: Device::apply (build request, send, wait for errno)",
            "sdwand: … of which client CPU",
            "sdwand: … of which wireguard-go CPU",
            "sdwand: DevicePlan::apply_to (cache update)",
        ];
        let mut samples: [Samples; 6] = Default::default();
        for _ in 0..trials {
            self.check_interrupt()?;
            self.wireguard_go.restart()?;
            let now = SystemTime::now();
            let t0 = Instant::now();
            let mut actual = self.device.read()?;
            let t1 = Instant::now();
            let plan = plan_device(desired, &actual, now);
            let t2 = Instant::now();
            let (server0, client0) = (self.wireguard_go.cpu_time(), thread_cpu());
            let t3 = Instant::now();
            self.device.apply(&plan)?;
            let t4 = Instant::now();
            let (client, server) = (thread_cpu().saturating_sub(client0), self.wireguard_go.cpu_time());
            let t5 = Instant::now();
            plan.apply_to(&mut actual);
            let t6 = Instant::now();
            for (s, d) in samples.iter_mut().zip([
                t1 - t0,
                t2 - t1,
                t4 - t3,
                client,
                server.saturating_sub(server0),
                t6 - t5,
            ]) {
                s.push(d);
            }
            self.check_device(case, Side::Sdwand, |a| verify(a, desired))?;
        }
        if trials == 0 {
            return Ok(Vec::new());
        }
        Ok(names
            .iter()
            .zip(&samples)
            .map(|(n, s)| Part::new(n.to_string(), s))
            .collect())
    }

    /// Reads the device back and applies `check` to it.
    fn check_device(
        &self,
        case: &str,
        side: Side,
        check: impl FnOnce(&sdwand::mesh::ActualDevice) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let actual = self.device.read()?;
        check(&actual).map_err(|detail| self.verify_error(case, side, detail))
    }

    fn verify_error(&self, case: &str, side: Side, detail: String) -> BenchError {
        BenchError::Verify {
            case: case.to_owned(),
            side: side.name(),
            detail,
        }
    }
}

fn cpu(sdwand: &Series, wg: &Series) -> Cpu {
    Cpu {
        sdwand_client: sdwand.client_cpu.summary(),
        sdwand_wireguard_go: sdwand.server_cpu.summary(),
        wg_client: wg.client_cpu.summary(),
        wg_wireguard_go: wg.server_cpu.summary(),
    }
}

fn progress(case: &str, t: usize, warmup: usize, side: Side, m: Measure) {
    let round = if t < warmup {
        "warm-up".to_owned()
    } else {
        format!("trial {}", t - warmup + 1)
    };
    eprintln!(
        "{case}: {round} {:>6}: {:.3} ms (client CPU {:.3} ms, wireguard-go CPU {:.3} ms)",
        side.name(),
        m.wall.as_secs_f64() * 1e3,
        m.client_cpu.as_secs_f64() * 1e3,
        m.server_cpu.as_secs_f64() * 1e3
    );
}

/// The address of a /128 of the workload.
fn v6(net: ipnet::IpNet) -> std::net::Ipv6Addr {
    match net.addr() {
        std::net::IpAddr::V6(a) => a,
        std::net::IpAddr::V4(_) => unreachable!("the workload is IPv6"),
    }
}
