//! The `pods` benchmark: TCP throughput (`iperf3`), ping latency and the CPU they cost, between two nodes
//! of one lab, on the paths a workload can take:
//!
//! - **pod → pod**, IPv4 and IPv6: from a pod on p1 to a pod on p2, attached by the real CNI plugins from
//!   the configuration each daemon wrote (`sdwan-lab up --pods 1`): pod veth → bridge → forwarding →
//!   WireGuard (`wireguard-go`) → underlay, and the same backwards on p2;
//! - **node → node over the overlay**: p1's namespace to p2's `/128` (`fd00:5d::2`) and to its `/32`, the
//!   same WireGuard tunnel without the bridge and the forwarding;
//! - **node → node on the underlay**: p1 to p2's underlay address, no WireGuard at all.
//!
//! One lab (2 peers, a registry, pod pools of both families), one run: each path is pinged (`ping`, every
//! reply's time), then `iperf3` runs `--repeats` times per path, the paths interleaved so that a change of
//! the machine's load spreads over all of them. Around each `iperf3` client the bench reads the CPU time of
//! both `wireguard-go` processes (`/proc/PID/stat`, threads that exited included) and of the whole machine
//! (`/proc/stat`); CPU per GB is over the bytes the server received.
//!
//! Cleanup: the `iperf3` servers and clients are children of the bench (killed by PID when a run ends or
//! fails, and by the kernel if the bench dies: `PR_SET_PDEATHSIG`); the lab (pods with CNI `DEL`,
//! namespaces, daemons) is taken down by its guard, also on error.

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use sdwan_lab::{LabGuard, Layout, UpOptions};
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::report::Machine;
use crate::stats::Figures;

/// Options of `sdwand-bench pods`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds of each `iperf3` run (`-t`).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// `iperf3` runs per path.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Echo requests per path.
    #[arg(long, default_value_t = 200)]
    pub pings: u32,
    /// Interval between echo requests (humantime, at least 2ms).
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Print the report as JSON (with every run) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The target: pod-to-pod throughput at least this times the overlay's (/128 to /128).
const TARGET_RATIO: f64 = 0.9;
/// The TCP port of the `iperf3` servers.
const IPERF_PORT: u16 = 5201;
/// How long an `iperf3` server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `Lab::up` may take.
const UP_TIMEOUT: Duration = Duration::from_secs(60);

/// One way from p1's side to p2's side.
#[derive(Debug, Clone, Serialize)]
pub struct PathSpec {
    /// Short name for the table.
    pub name: &'static str,
    /// What it crosses.
    pub describe: &'static str,
    /// The namespace the client (and ping) runs in.
    pub client_netns: String,
    /// The namespace the server runs in.
    pub server_netns: String,
    /// The server's address.
    pub server_addr: IpAddr,
}

/// One `iperf3` run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct IperfRun {
    /// Receiver's throughput, Mbit/s.
    pub mbit_s: f64,
    /// Bytes the server received.
    pub bytes: u64,
    /// TCP retransmissions the sender counted.
    pub retransmits: u64,
    /// Wall time of the client run, seconds.
    pub wall_s: f64,
    /// CPU seconds of p1's `wireguard-go` during the run.
    pub wg_p1_cpu_s: f64,
    /// CPU seconds of p2's `wireguard-go` during the run.
    pub wg_p2_cpu_s: f64,
    /// Busy CPU seconds of the whole machine (`/proc/stat`: all but idle and iowait), other work included.
    pub machine_cpu_s: f64,
    /// Of those, softirq seconds (where the bridge, veth and forwarding work is done).
    pub softirq_cpu_s: f64,
}

/// A path's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// The path.
    pub path: PathSpec,
    /// Round-trip times of the replies, milliseconds.
    pub rtt_ms: Figures,
    /// Mean round-trip time, milliseconds.
    pub rtt_mean_ms: f64,
    /// Echo requests sent and replies received.
    pub pings: (u32, u32),
    /// Receiver throughput over the runs, Mbit/s.
    pub mbit_s: Figures,
    /// Both `wireguard-go` processes' CPU seconds per GB received (sums over the runs).
    pub wg_cpu_s_per_gb: f64,
    /// The machine's busy CPU seconds per GB received (sums over the runs; other sessions' work included).
    pub machine_cpu_s_per_gb: f64,
    /// Softirq CPU seconds per GB received.
    pub softirq_cpu_s_per_gb: f64,
    /// Every run.
    pub runs: Vec<IperfRun>,
}

/// The run's figures.
#[derive(Debug, Serialize)]
pub struct PodsReport {
    /// The command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// `/proc/loadavg` before the measurements and after them.
    pub loadavg: (String, String),
    /// MTUs: p1's WireGuard interface, p1's underlay link, p1's pod's `eth0`.
    pub mtu: Mtus,
    /// Seconds per `iperf3` run.
    pub seconds: u64,
    /// The paths, in the order of [`paths`].
    pub paths: Vec<PathReport>,
    /// Median throughput pod → pod (IPv4) ÷ node → node over the overlay /128.
    pub ratio_pod_v4_to_overlay: f64,
    /// Median throughput pod → pod (IPv6) ÷ node → node over the overlay /128.
    pub ratio_pod_v6_to_overlay: f64,
    /// Whether both ratios reach the target.
    pub target_met: bool,
}

/// The MTUs along the paths.
#[derive(Debug, Clone, Serialize)]
pub struct Mtus {
    /// p1's WireGuard interface.
    pub wireguard: Option<u32>,
    /// p1's underlay link.
    pub underlay: Option<u32>,
    /// p1's first pod's `eth0`.
    pub pod: Option<u32>,
}

impl PodsReport {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "pod and node paths between p1 and p2 ({} runs of {} s per path, iperf3 TCP, 1 stream)\n{}\n\
             load average before: {}; after: {}\nMTU: WireGuard {}, underlay {}, pod eth0 {}\n\n",
            self.paths.first().map_or(0, |p| p.runs.len()),
            self.seconds,
            self.machine.line(),
            self.loadavg.0,
            self.loadavg.1,
            opt(self.mtu.wireguard),
            opt(self.mtu.underlay),
            opt(self.mtu.pod),
        );
        out.push_str(&format!(
            "{:<22} {:>24} {:>8} {:>8} {:>8} {:>9} {:>10} {:>14} {:>10}\n",
            "path",
            "Mbit/s median (min–max)",
            "RTT p50",
            "p99",
            "mean",
            "lost",
            "wg CPU/GB",
            "machine CPU/GB",
            "softirq/GB"
        ));
        for p in &self.paths {
            let m = &p.mbit_s;
            out.push_str(&format!(
                "{:<22} {:>24} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>9.2}s {:>13.2}s {:>9.2}s\n",
                p.path.name,
                format!("{:.0} ({:.0}–{:.0})", m.median, m.min, m.max),
                p.rtt_ms.median,
                p.rtt_ms.p99,
                p.rtt_mean_ms,
                format!("{}/{}", p.pings.0 - p.pings.1.min(p.pings.0), p.pings.0),
                p.wg_cpu_s_per_gb,
                p.machine_cpu_s_per_gb,
                p.softirq_cpu_s_per_gb,
            ));
        }
        out.push_str(
            "\nRTT in ms; CPU in seconds per GB received: wg = both wireguard-go processes, machine = the whole \
             machine's busy time (other work included)\n",
        );
        out.push_str(&format!(
            "target: pod → pod ≥ {TARGET_RATIO} × overlay /128: IPv4 {:.3}, IPv6 {:.3}: {}\n",
            self.ratio_pod_v4_to_overlay,
            self.ratio_pod_v6_to_overlay,
            if self.target_met { "met" } else { "NOT met" }
        ));
        out
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// Runs the benchmark. `interrupted` is checked between runs and while one waits.
pub fn run(opts: &Options, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<PodsReport> {
    if opts.seconds == 0 || opts.seconds > 600 || opts.repeats == 0 || opts.pings == 0 {
        return Err(BenchError::Usage(
            "--seconds must be 1 to 600, --repeats and --pings at least 1".into(),
        ));
    }
    if opts.ping_interval < Duration::from_millis(2) {
        return Err(BenchError::Usage("--ping-interval must be at least 2ms".into()));
    }
    let name = format!("pb{}", std::process::id() % 10_000);
    eprintln!(
        "pods: building lab {name} (2 peers, 1 pod each; if the bench is killed, remove it with \
         `sdwan-lab down --name {name}`) …"
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let mut up = UpOptions::new(&name, 2);
    up.pods = 1;
    up.handshake_timeout = UP_TIMEOUT;
    up.cancel = Some(cancel.clone());
    let mut lab = LabGuard::up(up)?;
    let doc = lab.lab()?.status()?;
    let pod = |peer: &str| {
        doc.pods
            .iter()
            .find(|p| p.peer == peer)
            .cloned()
            .ok_or_else(|| BenchError::Usage(format!("the lab has no pod on {peer}")))
    };
    let (a, b) = (pod("p1")?, pod("p2")?);
    let l = lab.layout().clone();
    let addr = |s: Option<&String>, what: &str| -> Result<IpAddr> {
        s.and_then(|s| s.parse().ok())
            .ok_or_else(|| BenchError::Usage(format!("pod {} has no {what} address", b.name)))
    };
    let paths = paths(
        &l,
        (&a.netns, &b.netns),
        addr(b.ipv4.as_ref(), "IPv4")?,
        addr(b.ipv6.as_ref(), "IPv6")?,
        overlay_v4(&l.peer_netns(2), &l.wg_if(2))?,
    );
    let wg_pids = [lab.lab()?.wg_pid(1)?, lab.lab()?.wg_pid(2)?];
    let [Some(wg1), Some(wg2)] = wg_pids else {
        return Err(BenchError::Usage("a peer has no wireguard-go".into()));
    };
    let mtu = Mtus {
        wireguard: mtu_of(&l.peer_netns(1), &l.wg_if(1)),
        underlay: mtu_of(&l.peer_netns(1), &l.underlay_if(1)),
        pod: mtu_of(&a.netns, sdwan_lab::pods::POD_IF),
    };
    let load_before = loadavg();
    let stop = || {
        if interrupted() {
            cancel.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    };
    let mut pings = Vec::new();
    for p in &paths {
        if stop() {
            return Err(BenchError::Interrupted);
        }
        reachable(p)?;
        eprintln!("pods: ping {} ({} × {:?})", p.name, opts.pings, opts.ping_interval);
        pings.push(ping(p, opts.pings, opts.ping_interval)?);
    }
    let mut runs: Vec<Vec<IperfRun>> = vec![Vec::new(); paths.len()];
    for r in 1..=opts.repeats {
        for (k, p) in paths.iter().enumerate() {
            if stop() {
                return Err(BenchError::Interrupted);
            }
            let run = iperf(p, opts.seconds, (wg1, wg2), &stop)?;
            eprintln!(
                "pods: run {r}/{} {}: {:.0} Mbit/s, wireguard-go {:.2} + {:.2} CPU s, machine {:.2} CPU s",
                opts.repeats, p.name, run.mbit_s, run.wg_p1_cpu_s, run.wg_p2_cpu_s, run.machine_cpu_s
            );
            runs[k].push(run);
        }
    }
    let load_after = loadavg();
    let down = lab.down()?;
    for w in down.warnings {
        eprintln!("lab {name} down: {w}");
    }
    let reports: Vec<PathReport> = paths
        .into_iter()
        .zip(pings)
        .zip(runs)
        .map(|((path, (rtts, sent)), runs)| summarise(path, &rtts, sent, runs))
        .collect();
    let median = |name: &str| {
        reports
            .iter()
            .find(|p| p.path.name == name)
            .map_or(0.0, |p| p.mbit_s.median)
    };
    let overlay = median(OVERLAY_V6);
    let ratio = |name: &str| if overlay > 0.0 { median(name) / overlay } else { 0.0 };
    let (v4, v6) = (ratio(POD_V4), ratio(POD_V6));
    Ok(PodsReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::probe(),
        loadavg: (load_before, load_after),
        mtu,
        seconds: opts.seconds,
        paths: reports,
        ratio_pod_v4_to_overlay: v4,
        ratio_pod_v6_to_overlay: v6,
        target_met: v4 >= TARGET_RATIO && v6 >= TARGET_RATIO,
    })
}

const POD_V4: &str = "pod → pod IPv4";
const POD_V6: &str = "pod → pod IPv6";
const OVERLAY_V6: &str = "node → node /128";

/// The measured paths, from p1's side to p2's.
fn paths(l: &Layout, pods: (&str, &str), pod_v4: IpAddr, pod_v6: IpAddr, node_v4: IpAddr) -> Vec<PathSpec> {
    let (n1, n2) = (l.peer_netns(1), l.peer_netns(2));
    let path = |name, describe, client: &str, server: &str, addr| PathSpec {
        name,
        describe,
        client_netns: client.to_owned(),
        server_netns: server.to_owned(),
        server_addr: addr,
    };
    vec![
        path(
            POD_V4,
            "pod veth, bridge, forwarding, WireGuard (IPv4 in IPv4), and back",
            pods.0,
            pods.1,
            pod_v4,
        ),
        path(
            POD_V6,
            "pod veth, bridge, forwarding, WireGuard (IPv6 in IPv4), and back",
            pods.0,
            pods.1,
            pod_v6,
        ),
        path(
            OVERLAY_V6,
            "node to node over WireGuard, fd00:5d::1 → fd00:5d::2",
            &n1,
            &n2,
            IpAddr::V6(Layout::overlay_addr(2)),
        ),
        path(
            "node → node /32",
            "node to node over WireGuard, IPv4 overlay /32s",
            &n1,
            &n2,
            node_v4,
        ),
        path(
            "node → node underlay",
            "node to node on the underlay veth and bridge, no WireGuard",
            &n1,
            &n2,
            IpAddr::V4(Layout::underlay_addr(2)),
        ),
    ]
}

/// The IPv4 address on `iface` in `netns` (a peer's /32 from the network's IPv4 overlay prefix).
fn overlay_v4(netns: &str, iface: &str) -> Result<IpAddr> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "-4", "addr", "show", "dev", iface])
        .output()
        .map_err(|e| BenchError::io("running `ip addr show`", e))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0]["addr_info"][0]["local"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            BenchError::Usage(format!(
                "{iface} in {netns} has no IPv4 address (no /32 from the registry?)"
            ))
        })
}

/// The MTU of `iface` in `netns`, if it can be read.
fn mtu_of(netns: &str, iface: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["mtu"].as_u64().and_then(|m| u32::try_from(m).ok())
}

/// `/proc/loadavg`'s three averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Pings along `p`: every reply's round-trip time (ms) and the requests sent.
fn ping(p: &PathSpec, count: u32, interval: Duration) -> Result<(Vec<f64>, u32)> {
    let argv = sdwan_lab::ping::ping_argv(&p.server_addr.to_string(), count, interval);
    let out = sdwan_lab::cmd::output(&mut sdwan_lab::cmd::in_netns(&p.client_netns, &argv))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = sdwan_lab::ping::parse_summary(&stdout, count).ok_or_else(|| {
        BenchError::Usage(format!(
            "ping {} from {} printed no summary: {}{}",
            p.server_addr,
            p.client_netns,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let rtts: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split_once("time=")?.1.split_whitespace().next()?.parse().ok())
        .collect();
    if rtts.is_empty() {
        return Err(BenchError::Usage(format!(
            "ping {} from {}: no reply ({summary})",
            p.server_addr, p.client_netns
        )));
    }
    Ok((rtts, summary.transmitted))
}

/// A child process killed (by its PID) and reaped when dropped; it also dies with the bench.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts `argv` in `netns` with its stdout to `out` (or nowhere), dying with the bench.
fn start_in(netns: &str, argv: &[&str], out: Option<std::fs::File>) -> Result<Killed> {
    let mut cmd = sdwan_lab::cmd::in_netns(netns, argv);
    cmd.stdin(Stdio::null())
        .stdout(out.map_or_else(Stdio::null, Stdio::from))
        .stderr(Stdio::null());
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent; PDEATHSIG survives the
    // exec of `ip` and its exec of the program (neither is set-uid).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map(Killed)
        .map_err(|e| BenchError::io(format!("starting `{}` in {netns}", argv.join(" ")), e))
}

/// Whether the process `pid`'s namespace has a TCP socket listening on `port` (its `/proc/PID/net/tcp*`).
fn listening(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"]
        .iter()
        .any(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).is_ok_and(|t| listens_in(&t, port)))
}

/// Whether a `/proc/net/tcp` or `tcp6` table has a socket in state LISTEN (`0A`) on local port `port`.
fn listens_in(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 3 && cols[1].ends_with(&port) && cols[3] == "0A"
    })
}

/// Waits until one echo request along `p` is answered (a fresh IPv6 address may still be tentative),
/// trying at most 10 times with a 1 s wait each.
fn reachable(p: &PathSpec) -> Result<()> {
    for _ in 0..10 {
        let argv = ["ping", "-n", "-c", "1", "-W", "1", &p.server_addr.to_string()].map(str::to_owned);
        let ok = sdwan_lab::cmd::output(&mut sdwan_lab::cmd::in_netns(&p.client_netns, &argv))?
            .status
            .success();
        if ok {
            return Ok(());
        }
    }
    Err(BenchError::Usage(format!(
        "{}: {} does not answer pings from {} (10 tries)",
        p.name, p.server_addr, p.client_netns
    )))
}

/// One `iperf3` run along `p` with the CPU counters around it.
fn iperf(p: &PathSpec, seconds: u64, wg: (u32, u32), stop: &dyn Fn() -> bool) -> Result<IperfRun> {
    let port = IPERF_PORT.to_string();
    let addr = p.server_addr.to_string();
    let mut server = start_in(&p.server_netns, &["iperf3", "-s", "-1", "-B", &addr, "-p", &port], None)?;
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    while !listening(server.0.id(), IPERF_PORT) {
        if stop() {
            return Err(BenchError::Interrupted);
        }
        if Instant::now() > deadline || matches!(server.0.try_wait(), Ok(Some(_))) {
            return Err(BenchError::Usage(format!(
                "iperf3 server in {} did not listen on [{addr}]:{port} within {LISTEN_TIMEOUT:?}",
                p.server_netns
            )));
        }
        sleep(Duration::from_millis(10));
    }
    let out_file = tempfile::tempfile().map_err(|e| BenchError::io("creating a temporary file", e))?;
    let reader = out_file
        .try_clone()
        .map_err(|e| BenchError::io("cloning a temporary file", e))?;
    let secs = seconds.to_string();
    let (wg1, wg2, host) = (proc_cpu(wg.0), proc_cpu(wg.1), machine_cpu());
    let start = Instant::now();
    let mut client = start_in(
        &p.client_netns,
        &[
            "iperf3",
            "-c",
            &addr,
            "-p",
            &port,
            "-t",
            &secs,
            "-J",
            "--connect-timeout",
            "5000",
        ],
        Some(out_file),
    )?;
    let limit = Duration::from_secs(seconds + 20);
    let status = loop {
        if let Some(status) = client
            .0
            .try_wait()
            .map_err(|e| BenchError::io("waiting for iperf3", e))?
        {
            break status;
        }
        if stop() {
            return Err(BenchError::Interrupted);
        }
        if start.elapsed() > limit {
            return Err(BenchError::Usage(format!(
                "iperf3 {} did not finish within {limit:?}",
                p.name
            )));
        }
        sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed();
    let (wg1, wg2, host) = (proc_cpu(wg.0) - wg1, proc_cpu(wg.1) - wg2, machine_cpu().since(&host));
    drop(server);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::BufReader::new(seek_start(reader)?), &mut text)
        .map_err(|e| BenchError::io("reading iperf3's output", e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| BenchError::Usage(format!("iperf3 {} ({status}) printed no JSON ({e}): {text}", p.name)))?;
    if let Some(e) = v["error"].as_str() {
        return Err(BenchError::Usage(format!("iperf3 {}: {e}", p.name)));
    }
    let recv = &v["end"]["sum_received"];
    Ok(IperfRun {
        mbit_s: recv["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
        bytes: recv["bytes"].as_u64().unwrap_or(0),
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        wall_s: wall.as_secs_f64(),
        wg_p1_cpu_s: wg1,
        wg_p2_cpu_s: wg2,
        machine_cpu_s: host.busy,
        softirq_cpu_s: host.softirq,
    })
}

fn seek_start(mut f: std::fs::File) -> Result<std::fs::File> {
    std::io::Seek::rewind(&mut f).map_err(|e| BenchError::io("rewinding a temporary file", e))?;
    Ok(f)
}

/// User + system CPU seconds of process `pid` (its threads, those that exited included), 0 if unreadable.
fn proc_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_ticks(&s))
        .map_or(0.0, |t| t as f64 / clock_ticks())
}

/// utime + stime (fields 14 and 15, clock ticks) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses: fields are counted after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The machine's CPU counters from `/proc/stat`'s `cpu` line, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct HostCpu {
    /// All but idle and iowait.
    busy: f64,
    /// softirq.
    softirq: f64,
}

impl HostCpu {
    fn since(&self, before: &HostCpu) -> HostCpu {
        HostCpu {
            busy: self.busy - before.busy,
            softirq: self.softirq - before.softirq,
        }
    }
}

fn machine_cpu() -> HostCpu {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return HostCpu::default();
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let at = |k: usize| v.get(k).copied().unwrap_or(0.0) / clock_ticks();
    HostCpu {
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        softirq: at(6),
    }
}

/// A path's figures from its pings and runs.
fn summarise(path: PathSpec, rtts: &[f64], sent: u32, runs: Vec<IperfRun>) -> PathReport {
    let gb = runs.iter().map(|r| r.bytes as f64).sum::<f64>() / 1e9;
    let per_gb = |f: fn(&IperfRun) -> f64| {
        if gb > 0.0 {
            runs.iter().map(f).sum::<f64>() / gb
        } else {
            0.0
        }
    };
    PathReport {
        rtt_ms: Figures::of(rtts.iter().copied()),
        rtt_mean_ms: rtts.iter().sum::<f64>() / rtts.len().max(1) as f64,
        pings: (sent, u32::try_from(rtts.len()).unwrap_or(u32::MAX)),
        mbit_s: Figures::of(runs.iter().map(|r| r.mbit_s)),
        wg_cpu_s_per_gb: per_gb(|r| r.wg_p1_cpu_s + r.wg_p2_cpu_s),
        machine_cpu_s_per_gb: per_gb(|r| r.machine_cpu_s),
        softirq_cpu_s_per_gb: per_gb(|r| r.softirq_cpu_s),
        path,
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_14_and_15_whatever_the_command_name() {
        // tpgid (field 8) is -1 without a controlling terminal; the name holds a space and a ')'.
        let stat = "4242 (wireguard go) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    1500 250 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(1750));
        assert_eq!(stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert!(proc_cpu(std::process::id()) >= 0.0);
    }

    #[test]
    fn a_listening_socket_is_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
                     0: 0100007F:1451 00000000:0000 0A 00000000:00000000\n\
                     1: 0100007F:1452 0100007F:9C40 01 00000000:00000000\n";
        assert!(listens_in(table, 5201));
        assert!(!listens_in(table, 5202), "established, not listening");
        assert!(!listens_in(table, 81));
    }
}
