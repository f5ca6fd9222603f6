//! The lab's virtual IP: its configuration (`[failover]` and `[[vip]]` in every peer's `sdwand.toml`), who
//! holds it, what each daemon says about it, and `sdwanctl`.
//!
//! A lab built with `vip_candidates = K` has one VIP, [`layout::VIP_ADDR`] (`fd00:5d:f::1`, outside the
//! overlay /64, so every non-holder needs the daemon's route for it), whose candidates are `p1..pK` in that
//! order. The *ground truth* of who holds it is which peers have the address on an interface
//! ([`Lab::holders`], read with `ip -6 addr` in each namespace); the daemons' own view is their metrics
//! (`sdwand_vip_role`, `sdwand_vip_holder`, …, read with the `vip_*` methods).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::cmd;
use crate::doc::VipDoc;
use crate::error::{LabError, Result};
use crate::lab::{Lab, UpOptions};
use crate::layout::{self, Layout};
use crate::metrics::{samples, sum};
/// A duration as the daemon's config writes it (kept at this path; it lives in [`crate::nodecfg::build`]).
pub use crate::nodecfg::build::humantime;
use crate::nodecfg::VipSection;

/// The shortest heartbeat interval the daemon accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Checks the VIP options against the peer count and the daemon's limits.
pub(crate) fn validate(opts: &UpOptions) -> Result<()> {
    let k = opts.vip_candidates;
    if k > opts.peers || k > layout::MAX_VIP_CANDIDATES {
        return Err(LabError::InvalidOption(format!(
            "{k} VIP candidates: at most one per peer ({}) and at most {}",
            opts.peers,
            layout::MAX_VIP_CANDIDATES
        )));
    }
    if k > 0 && opts.vip_interval < MIN_INTERVAL {
        return Err(LabError::InvalidOption(format!(
            "VIP heartbeat interval {:?} is below the daemon's minimum of 10ms",
            opts.vip_interval
        )));
    }
    if k > 0 && opts.vip_dead_after == 0 {
        return Err(LabError::InvalidOption("vip_dead_after must be at least 1".to_owned()));
    }
    if opts.quorum && (k == 0 && opts.floating_candidates == 0 || !opts.registry) {
        return Err(LabError::InvalidOption(
            "quorum mode needs a VIP (vip_candidates > 0) or a floating site, and the registry (it is turned on through it)"
                .to_owned(),
        ));
    }
    if opts.quorum && k > 0 && k.is_multiple_of(2) && opts.peers == k {
        return Err(LabError::InvalidOption(format!(
            "quorum mode with {k} candidates needs a witness: add a peer beyond the candidates"
        )));
    }
    Ok(())
}

/// The witness of the lab's VIP in quorum mode: the last peer when the candidates are even (an even number
/// of voters has no majority on either side of an even split), none otherwise.
pub fn quorum_witness(opts: &UpOptions) -> Option<usize> {
    witness_of(opts, opts.vip_candidates)
}

/// The witness of `k` candidates in quorum mode: the last peer when `k` is even and it is not one of them.
pub(crate) fn witness_of(opts: &UpOptions, k: usize) -> Option<usize> {
    (opts.quorum && k > 0 && k.is_multiple_of(2) && opts.peers > k).then_some(opts.peers)
}

impl Lab {
    /// Turns quorum mode on for the lab's VIP through the registry (`PUT /v1/vips/{id}/quorum`), with
    /// [`quorum_witness`] as witness.
    pub(crate) fn turn_quorum_on(&self, opts: &UpOptions) -> Result<()> {
        let vips: sdwand::vocab::wire::VipsResponse = self.registry_admin("GET", "/v1/vips", None)?;
        let Some(vip) = vips.vips.iter().find(|v| v.address == layout::VIP_ADDR) else {
            return Err(LabError::Process(format!(
                "the registry has no VIP {} to turn quorum mode on for",
                layout::VIP_ADDR
            )));
        };
        let witnesses: Vec<String> = quorum_witness(opts).map(Layout::peer_name).into_iter().collect();
        let body = serde_json::json!({ "enabled": true, "witnesses": witnesses });
        let path = format!("/v1/vips/{}/quorum", vip.vip_id);
        let _: sdwand::vocab::wire::VipView = self.registry_admin("PUT", &path, Some(&body))?;
        Ok(())
    }
}

/// One peer's view of a VIP, for messages and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Peer index.
    pub peer: usize,
    /// Whether the VIP is on one of its interfaces (`None`: could not be read).
    pub has_address: Option<bool>,
    /// Whether its `sdwand` runs.
    pub running: bool,
    /// Its role (`sdwand_vip_role`), when its metrics could be read.
    pub role: Option<String>,
    /// The holder it believes in (`sdwand_vip_holder`).
    pub believed_holder: Option<String>,
    /// Its epoch term (`sdwand_vip_epoch_term`).
    pub epoch_term: Option<u64>,
    /// Why the metrics could not be read.
    pub error: Option<String>,
}

/// Every peer's view of one VIP.
#[derive(Debug, Clone, PartialEq)]
pub struct VipView {
    /// The VIP.
    pub vip: Ipv6Addr,
    /// One entry per peer, in index order.
    pub nodes: Vec<NodeView>,
}

impl fmt::Display for VipView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "VIP {} as each peer sees it:", self.vip)?;
        for n in &self.nodes {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            write!(
                f,
                "  p{:<3} address: {:<4} sdwand: {:<7} role: {:<9} holder: {:<4} term: {}",
                n.peer,
                match n.has_address {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "?",
                },
                if n.running { "running" } else { "stopped" },
                opt(&n.role),
                opt(&n.believed_holder),
                n.epoch_term.map_or("-".to_owned(), |t| t.to_string()),
            )?;
            if let Some(e) = &n.error {
                write!(f, " ({e})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl Lab {
    /// The lab's VIPs: a registry lab's from its state (what the bootstrap and join flow makes, checked
    /// against the registry by `up`), a static lab's from p1's configuration (every peer carries the same
    /// list).
    pub fn vips(&self) -> Vec<VipSection> {
        if self.state.registry.is_some() {
            return self.state.vips.clone();
        }
        self.state
            .peers
            .first()
            .map(|p| p.config.vip.clone())
            .unwrap_or_default()
    }

    /// Indices of the candidates of [`layout::VIP_ADDR`], in promotion order (empty without a VIP).
    pub fn vip_candidates(&self) -> Vec<usize> {
        self.vips()
            .iter()
            .find(|v| v.address == layout::VIP_ADDR)
            .map(|v| v.candidates.iter().filter_map(|n| self.peer_index(n)).collect())
            .unwrap_or_default()
    }

    /// The index of the peer called `name` (`p3` -> 3).
    pub fn peer_index(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix('p')?.parse().ok()?;
        (name == Layout::peer_name(i) && self.peer(i).is_ok()).then_some(i)
    }

    /// Whether `addr` is on one of peer `i`'s interfaces (`ip -6 addr show to ADDR/128` in its namespace).
    pub fn has_address(&self, i: usize, addr: Ipv6Addr) -> Result<bool> {
        let ns = self.netns(i)?;
        let out = cmd::ip_in(&ns, &["-6", "-o", "addr", "show", "to", &format!("{addr}/128")])?;
        Ok(!out.trim().is_empty())
    }

    /// The peers that have `vip` on an interface, in index order: the ground truth of who holds it.
    pub fn holders_of(&self, vip: Ipv6Addr) -> Result<Vec<usize>> {
        let mut holders = Vec::new();
        for i in 1..=self.peer_count() {
            if self.has_address(i, vip)? {
                holders.push(i);
            }
        }
        Ok(holders)
    }

    /// [`Lab::holders_of`] the lab's VIP.
    pub fn holders(&self) -> Result<Vec<usize>> {
        self.holders_of(layout::VIP_ADDR)
    }

    /// Sample `name{vip="fd00:5d:f::1", labels…}` of peer `i`'s metrics (`None`: no such series).
    pub fn vip_metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        let vip = layout::VIP_ADDR.to_string();
        let mut all = vec![("vip", vip.as_str())];
        all.extend_from_slice(labels);
        self.metric(i, name, &all)
    }

    /// The label `label` of the first sample of `name{vip=…}` on peer `i` whose value is 1 (the "one-hot"
    /// gauges `sdwand_vip_role` and `sdwand_vip_holder`) for the lab's VIP.
    fn vip_one_hot(&self, i: usize, name: &str, label: &str) -> Result<Option<String>> {
        self.one_hot(i, &layout::VIP_ADDR.to_string(), name, label)
    }

    /// The label `label` of the first sample of `name{vip="VIP"}` on peer `i` whose value is 1. `vip` is
    /// the metrics' label of a VIP or a floating prefix (the prefix itself, e.g. `203.0.113.0/24`).
    pub(crate) fn one_hot(&self, i: usize, vip: &str, name: &str, label: &str) -> Result<Option<String>> {
        let text = self.metrics(i)?;
        Ok(samples(&text, name, &[("vip", vip)])
            .into_iter()
            .find(|(_, v)| *v == 1.0)
            .and_then(|(mut labels, _)| labels.remove(label)))
    }

    /// Peer `i`'s role for the VIP (`listening`, `standby`, `holding`, `draining`, `follower`).
    pub fn vip_role(&self, i: usize) -> Result<Option<String>> {
        self.vip_one_hot(i, "sdwand_vip_role", "role")
    }

    /// The holder (member name) peer `i` believes in.
    pub fn vip_believed_holder(&self, i: usize) -> Result<Option<String>> {
        self.vip_one_hot(i, "sdwand_vip_holder", "holder")
    }

    /// Peer `i`'s epoch term for the VIP. The gauge is a signed 64-bit integer holding the term's bits, so a
    /// term above `i64::MAX` (only a forged one can get there) shows as a negative value and is read back.
    pub fn vip_epoch_term(&self, i: usize) -> Result<Option<u64>> {
        Ok(self
            .vip_metric(i, "sdwand_vip_epoch_term", &[])?
            .map(|t| if t < 0.0 { t as i64 as u64 } else { t as u64 }))
    }

    /// Peer `i`'s failover counter per reason (`sdwand_vip_failovers_total`; counted by the claimant).
    pub fn vip_failovers_by_reason(&self, i: usize) -> Result<BTreeMap<String, f64>> {
        let vip = layout::VIP_ADDR.to_string();
        let text = self.metrics(i)?;
        Ok(samples(&text, "sdwand_vip_failovers_total", &[("vip", &vip)])
            .into_iter()
            .filter_map(|(mut labels, v)| Some((labels.remove("reason")?, v)))
            .collect())
    }

    /// Peer `i`'s failovers, all reasons together.
    pub fn vip_failovers(&self, i: usize) -> Result<f64> {
        let vip = layout::VIP_ADDR.to_string();
        Ok(sum(&self.metrics(i)?, "sdwand_vip_failovers_total", &[("vip", &vip)]))
    }

    /// The sum of [`Lab::vip_failovers`] over `peers`.
    pub fn vip_failovers_of(&self, peers: impl IntoIterator<Item = usize>) -> Result<f64> {
        peers.into_iter().map(|i| self.vip_failovers(i)).sum()
    }

    /// Peer `i`'s count of dropped failover datagrams with `reason` (`sdwand_vip_datagrams_rejected_total`).
    pub fn vip_rejected(&self, i: usize, reason: &str) -> Result<f64> {
        Ok(self
            .metric(i, "sdwand_vip_datagrams_rejected_total", &[("reason", reason)])?
            .unwrap_or(0.0))
    }

    /// Every peer's view of the VIP: address present, role, believed holder, term. Never fails; what cannot
    /// be read says so. A frozen daemon costs the metrics timeout (2 s).
    pub fn vip_view(&self) -> VipView {
        let nodes = (1..=self.peer_count())
            .map(|i| {
                let running = self.sdwand_pid(i).ok().flatten().is_some();
                let mut n = NodeView {
                    peer: i,
                    has_address: self.has_address(i, layout::VIP_ADDR).ok(),
                    running,
                    role: None,
                    believed_holder: None,
                    epoch_term: None,
                    error: None,
                };
                if running {
                    let read = || -> Result<(Option<String>, Option<String>, Option<u64>)> {
                        Ok((self.vip_role(i)?, self.vip_believed_holder(i)?, self.vip_epoch_term(i)?))
                    };
                    match read() {
                        Ok((role, holder, term)) => (n.role, n.believed_holder, n.epoch_term) = (role, holder, term),
                        Err(e) => n.error = Some(e.to_string()),
                    }
                }
                n
            })
            .collect();
        VipView {
            vip: layout::VIP_ADDR,
            nodes,
        }
    }

    /// Whether the VIP is settled: exactly one peer has the address, it says it is holding, and every
    /// peer whose `sdwand` runs names it as holder. Returns that peer.
    pub fn vip_settled(&self) -> Result<Option<usize>> {
        let holders = self.holders()?;
        let [h] = holders[..] else { return Ok(None) };
        if self.vip_role(h)?.as_deref() != Some("holding") {
            return Ok(None);
        }
        let name = Layout::peer_name(h);
        for i in 1..=self.peer_count() {
            if self.sdwand_pid(i)?.is_some() && self.vip_believed_holder(i)?.as_deref() != Some(name.as_str()) {
                return Ok(None);
            }
        }
        Ok(Some(h))
    }

    /// Waits, at most `timeout`, until [`Lab::vip_settled`]; returns the holder. On timeout the error shows
    /// every peer's view and the candidates' log tails.
    pub fn wait_vip_settled(&self, timeout: Duration) -> Result<usize> {
        let waited = crate::wait::wait_for(timeout, Duration::from_millis(50), || {
            if self.check_cancel().is_err() {
                return Some(None);
            }
            self.vip_settled().ok().flatten().map(Some)
        });
        match waited {
            Ok((Some(h), _)) => Ok(h),
            Ok((None, _)) => Err(LabError::Cancelled),
            Err(t) => {
                let tails: Vec<String> = self.vip_candidates().iter().map(|&i| self.log_tail(i, 20)).collect();
                Err(LabError::Timeout {
                    what: format!(
                        "lab {:?}: one holder of {} that every peer agrees on",
                        self.name(),
                        layout::VIP_ADDR
                    ),
                    waited: t.waited,
                    details: format!("{}{}", self.vip_view(), tails.join("\n")),
                })
            }
        }
    }

    /// The `vips` of the lab's document, holders read from the interfaces.
    pub(crate) fn vip_docs(&self) -> Vec<VipDoc> {
        self.vips()
            .into_iter()
            .map(|v| {
                let holders: Vec<String> = self
                    .holders_of(v.address)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Layout::peer_name)
                    .collect();
                VipDoc {
                    address: v.address.to_string(),
                    candidates: v.candidates,
                    holder: match &holders[..] {
                        [one] => Some(one.clone()),
                        _ => None,
                    },
                    holders,
                }
            })
            .collect()
    }

    /// Peer `i`'s control socket (what `sdwanctl --socket` talks to).
    pub fn control_socket(&self, i: usize) -> Result<PathBuf> {
        Ok(self.peer(i)?.config.daemon.control_socket.clone())
    }

    /// Runs `sdwanctl --socket <peer i's socket> ARGS…` and returns its output, whatever its exit status.
    pub fn sdwanctl<S: AsRef<str>>(&self, i: usize, args: &[S]) -> Result<Output> {
        let socket = self.control_socket(i)?;
        let mut command = Command::new(cmd::sdwanctl_bin()?);
        command.arg("--socket").arg(socket);
        command.args(args.iter().map(AsRef::as_ref));
        cmd::output(&mut command)
    }

    /// `sdwanctl --json vip list` on peer `i`: every VIP as its daemon sees it (candidates in rank order,
    /// holder, epoch).
    pub fn vip_list(&self, i: usize) -> Result<Vec<sdwand::control::NodeVip>> {
        let out = self.sdwanctl(i, &["--json", "vip", "list"])?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("sdwanctl (p{i}) --json vip list"),
                status: out.status,
                stderr: format!("{}{}", String::from_utf8_lossy(&out.stderr).trim(), stdout.trim()),
            });
        }
        serde_json::from_str(&stdout).map_err(|e| LabError::Format {
            context: format!("sdwanctl (p{i}) --json vip list"),
            message: format!("{e}: {}", stdout.trim()),
        })
    }

    /// The candidates of the lab's VIP as peer `i`'s daemon has them (names, in rank order; an address no
    /// member has is shown as the address).
    pub fn daemon_candidates(&self, i: usize) -> Result<Vec<String>> {
        Ok(self
            .vip_list(i)?
            .into_iter()
            .find(|v| v.vip == layout::VIP_ADDR)
            .map(|v| {
                v.candidates
                    .into_iter()
                    .map(|c| c.name.unwrap_or_else(|| c.address.to_string()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `sdwanctl vip move VIP [--to pN]` on peer `i` (the holder); a non-zero exit is an error with its
    /// output. Returns its stdout.
    pub fn vip_move(&self, i: usize, to: Option<usize>) -> Result<String> {
        let mut args = vec!["vip".to_owned(), "move".to_owned(), layout::VIP_ADDR.to_string()];
        if let Some(t) = to {
            self.peer(t)?;
            args.extend(["--to".to_owned(), Layout::peer_name(t)]);
        }
        let out = self.sdwanctl(i, &args)?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("sdwanctl (p{i}) {}", args.join(" ")),
                status: out.status,
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodecfg::build::failover_sections as sections;

    #[test]
    fn sections_follow_the_options() {
        let mut opts = UpOptions::new("t", 5);
        assert_eq!(sections(&opts.vip_params()), (None, Vec::new()));
        opts.vip_candidates = 3;
        opts.vip_interval = Duration::from_millis(20);
        let (failover, vips) = sections(&opts.vip_params());
        let failover = failover.unwrap();
        assert_eq!(
            (failover.port, failover.interval.as_str(), failover.dead_after),
            (51821, "20ms", 4)
        );
        assert_eq!(vips.len(), 1);
        assert_eq!(vips[0].address.to_string(), "fd00:5d:f::1");
        assert_eq!(vips[0].candidates, ["p1", "p2", "p3"]);
    }

    #[test]
    fn options_are_checked() {
        let mut opts = UpOptions::new("t", 2);
        assert!(validate(&opts).is_ok());
        opts.vip_candidates = 3;
        assert!(validate(&opts).is_err(), "more candidates than peers");
        opts.vip_candidates = 2;
        opts.vip_interval = Duration::from_millis(5);
        assert!(validate(&opts).is_err(), "interval below 10ms");
        opts.vip_interval = Duration::from_millis(10);
        assert!(validate(&opts).is_ok());
        opts.vip_dead_after = 0;
        assert!(validate(&opts).is_err());
    }
}
