//! What a benchmark run reports: the machine, each case's figures, and how they print (table or JSON).
//!
//! Targets are shown next to the figures they concern; the bench never fails because of a figure.

use std::process::Command;

use serde::Serialize;

use crate::stats::{fmt_ms, Samples, Summary};

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// The cases, in the order they ran.
    pub cases: Vec<Case>,
}

impl Report {
    /// A report of `cases` run on this machine by this process's command line.
    pub fn new(cases: Vec<Case>) -> Self {
        Report {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: Machine::probe(),
            cases,
        }
    }

    /// The human-readable form.
    pub fn table(&self) -> String {
        let mut out = format!("command: {}\nmachine: {}\n", self.command, self.machine.line());
        for c in &self.cases {
            out.push_str(&format!("\n{} ({} trials per side)\n", c.name, c.sdwand.trials));
            out.push_str("                                  median (min–max)\n");
            out.push_str(&format!("  {:<32}{}\n", "sdwand", c.sdwand.cell()));
            out.push_str(&format!("  {:<32}{}\n", c.wg_command, c.wg.cell()));
            out.push_str(&format!("  {:<32}{:.3}\n", "ratio sdwand / wg (medians)", c.ratio));
            if let Some(t) = &c.target {
                let verdict = if c.within_target == Some(true) {
                    "within"
                } else {
                    "NOT within"
                };
                out.push_str(&format!("  {:<32}{} — {verdict} target\n", "target", t.describe()));
            }
            out.push_str("  CPU medians:\n");
            let cpu = [
                ("sdwand thread", &c.cpu.sdwand_client),
                ("wireguard-go, sdwand trials", &c.cpu.sdwand_wireguard_go),
                ("wg process", &c.cpu.wg_client),
                ("wireguard-go, wg trials", &c.cpu.wg_wireguard_go),
            ];
            for (what, s) in cpu {
                out.push_str(&format!("    {:<30}{}\n", what, fmt_ms(s.median_ms)));
            }
            if !c.breakdown.is_empty() {
                out.push_str(&format!(
                    "  breakdown ({} trials each):\n",
                    c.breakdown[0].summary.trials
                ));
                for p in &c.breakdown {
                    out.push_str(&format!("    {:<62}{}\n", p.what, p.summary.cell()));
                }
            }
        }
        out
    }
}

/// The machine a run happened on.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// CPUs available to the bench.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// `wireguard-go` package version (`dpkg-query`), if known.
    pub wireguard_go: String,
    /// `wg --version`.
    pub wg: String,
}

impl Machine {
    /// This machine.
    pub fn probe() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            wireguard_go: stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Version}", "wireguard-go"])),
            wg: stdout_of(Command::new("wg").arg("--version")),
        }
    }

    /// One line for the table.
    pub fn line(&self) -> String {
        format!(
            "{} CPUs ({}), Linux {}, wireguard-go {}, {}",
            self.cpus, self.cpu, self.kernel, self.wireguard_go, self.wg
        )
    }
}

fn stdout_of(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// A speed target, reported next to the figure (never asserted).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// sdwand's median at most this times `wg`'s.
    Ratio(f64),
    /// sdwand's median at most this many milliseconds.
    SdwandMs(f64),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Ratio(r) => format!("sdwand ≤ {r:.2} × wg"),
            Target::SdwandMs(ms) => format!("sdwand ≤ {ms} ms"),
        }
    }

    fn met(&self, sdwand_ms: f64, ratio: f64) -> bool {
        match *self {
            Target::Ratio(r) => ratio <= r,
            Target::SdwandMs(ms) => sdwand_ms <= ms,
        }
    }
}

/// Median CPU times of one case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cpu {
    /// The bench thread during sdwand's `update()`.
    pub sdwand_client: Summary,
    /// `wireguard-go` during sdwand's trials.
    pub sdwand_wireguard_go: Summary,
    /// The `wg` process.
    pub wg_client: Summary,
    /// `wireguard-go` during `wg`'s trials.
    pub wg_wireguard_go: Summary,
}

/// One part of a breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    /// What was timed.
    pub what: String,
    /// Its figures.
    pub summary: Summary,
}

impl Part {
    /// A part named `what` with `samples`.
    pub fn new(what: String, samples: &Samples) -> Self {
        Part {
            what,
            summary: samples.summary(),
        }
    }
}

/// One case: sdwand against `wg`.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// What it does.
    pub name: String,
    /// Peers on the interface.
    pub peers: usize,
    /// The `wg` command it compares with.
    pub wg_command: String,
    /// sdwand's wall times.
    pub sdwand: Summary,
    /// `wg`'s wall times (process spawn to exit).
    pub wg: Summary,
    /// sdwand's median over `wg`'s.
    pub ratio: f64,
    /// The target, if the issue set one.
    pub target: Option<Target>,
    /// Whether the medians are within it.
    pub within_target: Option<bool>,
    /// CPU medians.
    pub cpu: Cpu,
    /// Where sdwand's time goes.
    pub breakdown: Vec<Part>,
}

impl Case {
    /// A case from both sides' wall times; CPU figures and breakdown are filled in by the caller.
    pub fn new(
        name: String,
        peers: usize,
        wg_command: &str,
        sdwand: &Samples,
        wg: &Samples,
        target: Option<Target>,
    ) -> Self {
        let (sdwand, wg) = (sdwand.summary(), wg.summary());
        let ratio = if wg.median_ms > 0.0 {
            sdwand.median_ms / wg.median_ms
        } else {
            f64::NAN
        };
        Case {
            name,
            peers,
            wg_command: wg_command.to_owned(),
            sdwand,
            wg,
            ratio,
            within_target: target.map(|t| t.met(sdwand.median_ms, ratio)),
            target,
            cpu: Cpu::default(),
            breakdown: Vec::new(),
        }
    }
}
