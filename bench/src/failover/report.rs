//! What `sdwand-bench failover` reports: per case, the figures of each measured quantity (count, min,
//! median, p90, p99, max), the target next to the figure it concerns, notes on anything unusual, and
//! every trial's raw values (JSON only). Targets are reported, never asserted.

use serde::Serialize;

use crate::report::Machine;
use crate::stats::Figures;

/// A whole run.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// The command line that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Wall time of the whole run, seconds.
    pub took_s: f64,
    /// The cases, in the order they ran.
    pub cases: Vec<CaseReport>,
}

/// How a case's lab was built.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Peers in the lab.
    pub peers: usize,
    /// Candidates (p1..pK) of the VIP, or of the floating prefix in the floating case.
    pub candidates: usize,
    /// Whether quorum mode is on for the VIP.
    pub quorum: bool,
    /// What the probe asks, if the case probes.
    pub probed: Option<String>,
    /// The peer the probe runs from, if the case probes.
    pub observer: Option<usize>,
    /// `failover.interval`, ms.
    pub interval_ms: f64,
    /// `failover.dead_after`.
    pub dead_after: u32,
    /// How long `Lab::up` took, seconds.
    pub lab_up_s: f64,
}

/// One measured quantity of a case.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable key (JSON consumers, targets).
    pub key: &'static str,
    /// What it is, for the table.
    pub what: String,
    /// `ms` or `probes`.
    pub unit: &'static str,
    /// Its spread over the trials that produced it.
    pub figures: Figures,
}

/// Which figure of a row a target is about.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    /// The median.
    Median,
    /// The 99th percentile.
    P99,
    /// The largest value.
    Max,
}

impl Stat {
    fn of(self, f: &Figures) -> f64 {
        match self {
            Stat::Median => f.median,
            Stat::P99 => f.p99,
            Stat::Max => f.max,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stat::Median => "median",
            Stat::P99 => "p99",
            Stat::Max => "max",
        }
    }
}

/// A target from the issue: `stat` of row `row` at most `limit`.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The row it is about.
    pub row: &'static str,
    /// Which figure.
    pub stat: Stat,
    /// The limit, in the row's unit.
    pub limit: f64,
    /// The measured figure (`null` when the row has no samples).
    pub value: Option<f64>,
    /// Whether the figure is within the limit.
    pub met: Option<bool>,
}

/// One trial's raw values (what was not measured is `null`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrialRecord {
    /// From 1.
    pub trial: usize,
    /// The holder the fault hit (or the move started from).
    pub from: String,
    /// The holder afterwards.
    pub to: Option<String>,
    /// Longest gap between two answered probes that ends after the fault, ms.
    pub outage_ms: Option<f64>,
    /// Probes not answered in time.
    pub lost: Option<usize>,
    /// Of those, the ones sent between the old holder's last answer and the new holder's first.
    pub lost_at_switch: Option<usize>,
    /// Probes sent.
    pub sent: Option<usize>,
    /// Median round trip of the answered probes, ms.
    pub rtt_median_ms: Option<f64>,
    /// Round trip at the switch: the mean of the old holder's last answer's and the new holder's first, ms.
    pub rtt_switch_ms: Option<f64>,
    /// Duration of the fault call itself (`ip link set … down`, or SIGTERM until the daemon exited), ms.
    pub fault_call_ms: Option<f64>,
    /// From the fault (the bench's clock, just before the fault call) to the new holder's claim, ms.
    pub fault_to_claim_ms: Option<f64>,
    /// The claimant's own figure: from noticing the holder gone (or being handed the VIP) to its claim, ms.
    pub detection_to_claim_ms: Option<f64>,
    /// From the claim to the observer's WireGuard update that re-routed the VIP, ms.
    pub claim_to_reroute_ms: Option<f64>,
    /// From the claim to the median other peer's WireGuard re-route (each peer's log), ms.
    pub reroute_median_ms: Option<f64>,
    /// From the claim to the last other peer's WireGuard re-route, ms.
    pub reroute_last_ms: Option<f64>,
    /// From the claim to the last peer's acknowledgement (the claimant's log), ms.
    pub claim_to_confirmed_ms: Option<f64>,
    /// Handover: whether the old holder's entry precedes the new holder's in the observer's WireGuard
    /// update (sdwand orders peers by public key and replaces each one's allowed IPs, so the VIP has no
    /// owner between the two entries when this is true).
    pub old_key_first: Option<bool>,
    /// The claim's reason (`holder_dead`, `shutdown`, `manual`).
    pub reason: Option<String>,
    /// The claim's epoch (`term.rank`).
    pub epoch: Option<String>,
    /// Anything that was not a clean failover.
    pub anomalies: Vec<String>,
}

/// One case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// `--case` value.
    pub case: &'static str,
    /// What it measures.
    pub name: String,
    /// The lab.
    pub setup: Setup,
    /// Trials run.
    pub trials: usize,
    /// Wall time of the case (lab up and down included), seconds.
    pub took_s: f64,
    /// `/proc/loadavg` before and after the case.
    pub load: [String; 2],
    /// The figures.
    pub rows: Vec<Row>,
    /// The targets for this case.
    pub targets: Vec<Target>,
    /// Counts and anomalies worth a sentence.
    pub notes: Vec<String>,
    /// Raw values of every trial.
    pub records: Vec<TrialRecord>,
}

impl CaseReport {
    /// Adds row `key` with the values `pick` finds in the records.
    pub fn row(
        &mut self,
        key: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        pick: fn(&TrialRecord) -> Option<f64>,
    ) {
        let figures = Figures::of(self.records.iter().filter_map(pick));
        self.rows.push(Row {
            key,
            what: what.into(),
            unit,
            figures,
        });
    }

    /// Adds a target on row `row` (which must exist).
    pub fn target(&mut self, row: &'static str, stat: Stat, limit: f64) {
        let figures = self.rows.iter().find(|r| r.key == row).map(|r| r.figures);
        let value = figures.filter(|f| f.count > 0).map(|f| stat.of(&f));
        self.targets.push(Target {
            row,
            stat,
            limit,
            value,
            met: value.map(|v| v <= limit),
        });
    }
}

impl FailoverReport {
    /// The human-readable form.
    pub fn table(&self) -> String {
        let mut out = format!(
            "command: {}\nmachine: {}\nrun time: {:.0} s\n",
            self.command,
            self.machine.line(),
            self.took_s
        );
        for c in &self.cases {
            let s = &c.setup;
            out.push_str(&format!(
                "\n{} [{}]\n  {} peers, candidates p1..p{}{}, interval {} ms × dead_after {}{}; {} trials in {:.0} s \
                 (lab up {:.1} s); load average {} → {}\n",
                c.name,
                c.case,
                s.peers,
                s.candidates,
                if s.quorum { " (quorum mode)" } else { "" },
                s.interval_ms,
                s.dead_after,
                match (s.observer, &s.probed) {
                    (Some(o), Some(what)) => format!(", probe of {what} from p{o} every 5 ms"),
                    _ => String::new(),
                },
                c.trials,
                c.took_s,
                s.lab_up_s,
                c.load[0],
                c.load[1],
            ));
            out.push_str(&format!(
                "  {:<52}{:>6}{:>9}{:>9}{:>9}{:>9}{:>9}\n",
                "", "count", "min", "median", "p90", "p99", "max"
            ));
            for r in &c.rows {
                let f = &r.figures;
                let cells: String = if f.count == 0 {
                    format!("{:>9}", "—").repeat(5)
                } else {
                    [f.min, f.median, f.p90, f.p99, f.max]
                        .iter()
                        .map(|v| format!("{:>9}", cell(*v, r.unit)))
                        .collect()
                };
                out.push_str(&format!(
                    "  {:<52}{:>6}{cells}\n",
                    format!("{} ({})", r.what, r.unit),
                    f.count
                ));
            }
            for t in &c.targets {
                let unit = c.rows.iter().find(|r| r.key == t.row).map_or("", |r| r.unit);
                let verdict = match (t.value, t.met) {
                    (Some(v), Some(true)) => format!("{} {unit} — within target", cell(v, unit)),
                    (Some(v), _) => format!("{} {unit} — NOT within target", cell(v, unit)),
                    (None, _) => "no samples".to_owned(),
                };
                out.push_str(&format!(
                    "  target: {} of {} ≤ {} {unit}: {verdict}\n",
                    t.stat.name(),
                    t.row,
                    t.limit
                ));
            }
            for n in &c.notes {
                out.push_str(&format!("  note: {n}\n"));
            }
        }
        out
    }
}

/// The median of `values` (0 without any).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    Figures::of(values).median
}

/// A figure for the table: milliseconds with one decimal (three below 1 ms), counts as integers.
fn cell(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v.abs() < 1.0 => format!("{v:.3}"),
        "ms" => format!("{v:.1}"),
        _ => format!("{v}"),
    }
}
