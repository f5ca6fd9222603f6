//! One trial of each failover case, on a running lab: wait until the VIP (or the floating prefix) is
//! settled, fault the holder (or move the VIP), measure, then bring the lab back to a settled state with
//! every node running.
//!
//! Client-side figures come from the lab's probe (an observer sends a request to the [`Service`] every 5 ms
//! and records the send time of each one and who answered it, on its own monotonic clock); daemon-side
//! figures come from the daemons' log lines (see [`super::log`]), whose wall-clock timestamps share the
//! bench's `SystemTime` clock. Every wait is bounded and stops at Ctrl-C.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use sdwan_lab::floating::{PREFIX, SITE_ADDR};
use sdwan_lab::layout::{RESPONDER_PORT, VIP_ADDR};
use sdwan_lab::probe::ProbeReport;
use sdwan_lab::{Lab, Layout, ProbeHandle, ProbeOptions};

use super::log::{self, ms_between, ADDRESS_ADDED, CLAIMED, CONFIRMED, DEVICE_CHANGED, GATEWAY_ADDED};
use super::report::TrialRecord;
use crate::error::{BenchError, Result};
use crate::stats::Figures;

/// The peer the probe runs from: a follower (it routes the VIP, never holds it).
pub const OBSERVER: usize = 4;

/// Answers from the holder before the fault, so the probe is known to work (100 ms at 5 ms).
const ANSWERS_BEFORE: usize = 20;
/// Answers from the new holder before the probe stops (it shows the new holder stays reachable).
const ANSWERS_AFTER: usize = 20;
/// Longest wait for the VIP to settle, for a node to come back, for the new holder to answer.
const WAIT: Duration = Duration::from_secs(20);
/// Quiet time after a trial's node came back, before the next trial (its start-up work settles).
const QUIET: Duration = Duration::from_millis(200);
/// A probe answer later than this counts as lost (round trips here are ~1 ms).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The name the site host's echo responder answers with.
pub const SITE_NODE: &str = "site";

/// What the observer probes, and who moves when the holder dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The lab's VIP, `[fd00:5d:f::1]:9099`: each candidate's echo responder answers, with its own name,
    /// while the VIP is on its interface.
    Vip,
    /// The floating site's host, `203.0.113.10:9099`: one echo responder in the site namespace (see
    /// [`start_site_responder`]) answers as [`SITE_NODE`], reached through whichever candidate holds the
    /// floating prefix `203.0.113.0/24`.
    Site,
}

impl Service {
    /// The label of its failover machine in sdwand's logs and metrics (`vip="…"`).
    pub fn label(self) -> String {
        match self {
            Service::Vip => VIP_ADDR.to_string(),
            Service::Site => PREFIX.to_owned(),
        }
    }

    /// Where the probe's requests go.
    pub fn target(self) -> SocketAddr {
        match self {
            Service::Vip => SocketAddr::from((VIP_ADDR, RESPONDER_PORT)),
            Service::Site => SocketAddr::from((SITE_ADDR, RESPONDER_PORT)),
        }
    }

    /// The claimant's log line for "the address is on my interface" (before it sends the claim).
    fn address_added(self) -> &'static str {
        match self {
            Service::Vip => ADDRESS_ADDED,
            Service::Site => GATEWAY_ADDED,
        }
    }
}

/// Starts the site host's echo responder: a thread of the bench in the site namespace, bound to
/// `203.0.113.10:9099`, answering as [`SITE_NODE`]. It ends on its own within a second of the lab's state
/// directory being removed (`down`, also when the bench fails), so join it only after the lab is down.
pub fn start_site_responder(lab: &Lab) -> Result<JoinHandle<io::Result<()>>> {
    let netns = lab.layout().site_netns(1);
    let dir = lab.layout().state_dir();
    let bind = Service::Site.target();
    Ok(sdwan_lab::netns::spawn_in(&netns, move || {
        sdwan_lab::responder::serve(bind, SITE_NODE, &dir)
    })?)
}

/// What a trial works on.
pub struct Ctx<'a> {
    /// The lab.
    pub lab: &'a mut Lab,
    /// Case name, for errors.
    pub case: &'static str,
    /// Set by Ctrl-C.
    pub cancel: &'a AtomicBool,
    /// The candidates of the service's VIP or floating prefix, in rank order.
    pub candidates: Vec<usize>,
    /// What the observer probes.
    pub service: Service,
}

impl Ctx<'_> {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(BenchError::Interrupted);
        }
        Ok(())
    }

    /// A trial failure, with every peer's view of the VIP (or the floating prefix).
    fn failed(&self, trial: usize, what: impl Into<String>) -> BenchError {
        BenchError::Trial {
            case: self.case.to_owned(),
            trial,
            detail: format!("{}\n{}", what.into(), self.view()),
        }
    }

    /// Every peer's view of the service's failover machine.
    fn view(&self) -> String {
        match self.service {
            Service::Vip => self.lab.vip_view().to_string(),
            Service::Site => {
                let lab = &*self.lab;
                let peers: Vec<String> = (1..=lab.peer_count())
                    .map(|i| {
                        format!(
                            "p{i}: running {}, role {:?}, believes {:?}",
                            lab.sdwand_pid(i).ok().flatten().is_some(),
                            lab.floating_role(i).ok().flatten(),
                            lab.floating_believed_holder(i).ok().flatten()
                        )
                    })
                    .collect();
                format!(
                    "floating {PREFIX}: gateway address served by {:?}; {}",
                    lab.gateway_holders(),
                    peers.join("; ")
                )
            }
        }
    }

    /// The holder, if the service's machine is settled now (see [`Lab::vip_settled`],
    /// [`Lab::floating_settled`]).
    fn settled(&self, lab: &Lab) -> Option<usize> {
        match self.service {
            Service::Vip => lab.vip_settled(),
            Service::Site => lab.floating_settled(),
        }
        .ok()
        .flatten()
    }

    /// Peer `i`'s role for the service's VIP or floating prefix.
    fn role(&self, lab: &Lab, i: usize) -> Option<String> {
        match self.service {
            Service::Vip => lab.vip_role(i),
            Service::Site => lab.floating_role(i),
        }
        .ok()
        .flatten()
    }

    /// Waits until the service's machine is settled; its holder.
    fn wait_settled(&self, trial: usize) -> Result<usize> {
        if self.service == Service::Vip {
            return Ok(self.lab.wait_vip_settled(WAIT)?);
        }
        match self.poll(Duration::from_millis(50), |lab| self.settled(lab))? {
            Some(h) => Ok(h),
            None => Err(self.failed(trial, format!("{PREFIX} did not settle on one holder within {WAIT:?}"))),
        }
    }

    /// Polls `f` every `step` until it returns `Some`, at most [`WAIT`]; `None` on timeout. Stops at Ctrl-C.
    fn poll<T>(&self, step: Duration, mut f: impl FnMut(&Lab) -> Option<T>) -> Result<Option<T>> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_cancel()?;
            if let Some(v) = f(self.lab) {
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(step);
        }
    }

    /// Byte offsets of the logs of the candidates and the observer (`all`: of every peer), to read only what
    /// a trial adds.
    fn log_offsets(&self, all: bool) -> Result<BTreeMap<usize, usize>> {
        let mut peers = self.candidates.clone();
        if all {
            peers = (1..=self.lab.peer_count()).collect();
        } else if self.lab.peer_count() >= OBSERVER {
            peers.push(OBSERVER);
        }
        peers
            .into_iter()
            .map(|i| Ok((i, self.lab.log_text(i)?.len())))
            .collect()
    }

    /// Peer `i`'s log since `offsets`.
    fn log_since(&self, i: usize, offsets: &BTreeMap<usize, usize>) -> Result<String> {
        Ok(self.lab.log_since(i, offsets.get(&i).copied().unwrap_or(0))?)
    }

    /// Starts the observer's probe and waits until the service has answered [`ANSWERS_BEFORE`] requests
    /// (the VIP: from `holder`).
    fn start_probe(&self, trial: usize, holder: usize) -> Result<ProbeHandle> {
        let opts = ProbeOptions {
            timeout: PROBE_TIMEOUT,
            target: self.service.target(),
            ..ProbeOptions::new(Duration::from_secs(120))
        };
        let probe = self.lab.start_probe(OBSERVER, opts)?;
        let name = self.answering(holder);
        let warm = self.poll(Duration::from_millis(5), |_| {
            (probe.progress().answers_from(&name) >= ANSWERS_BEFORE).then_some(())
        })?;
        if warm.is_none() {
            return Err(self.failed(
                trial,
                format!("{name} does not answer the probe: {:?}", probe.progress()),
            ));
        }
        Ok(probe)
    }

    /// The name that answers the probe while `holder` holds: the VIP's holder itself, or the site host.
    fn answering(&self, holder: usize) -> String {
        match self.service {
            Service::Vip => name(holder),
            Service::Site => SITE_NODE.to_owned(),
        }
    }

    /// Waits until the service answers again after the fault on `old`: the VIP from a node other than
    /// `old` ([`ANSWERS_AFTER`] answers), the site host with [`ANSWERS_AFTER`] more answers than the
    /// `answered` it had at the fault (an answer in flight at the fault is one at most). Stops the probe
    /// and returns its report and the node that answered.
    fn finish_probe(
        &self,
        trial: usize,
        probe: ProbeHandle,
        old: usize,
        answered: usize,
    ) -> Result<(ProbeReport, String)> {
        let old = name(old);
        let new = self.poll(Duration::from_millis(5), |_| {
            let p = probe.progress();
            match self.service {
                Service::Vip => p
                    .by_node
                    .iter()
                    .find(|(node, n)| **node != old && **n >= ANSWERS_AFTER)
                    .map(|(node, _)| node.clone()),
                Service::Site => (p.answered >= answered + ANSWERS_AFTER).then(|| SITE_NODE.to_owned()),
            }
        })?;
        probe.stop();
        let Some(new) = new else {
            let progress = probe.progress();
            let report = probe.finish()?;
            return Err(self.failed(
                trial,
                format!("no other node answers after the fault on {old}: {progress:?}; {report}"),
            ));
        };
        Ok((probe.finish()?, new))
    }

    /// Waits until the service's machine is settled on `holder` (who must still hold), `back` (the node a
    /// trial stopped, now running again) is a standby, and every pair of peers has a handshake. A move is
    /// an anomaly of the trial, not an error, also to `back` itself (in quorum mode a holder that loses its
    /// majority's votes, as on a starved machine, steps down, and the best-placed candidate claims).
    fn wait_back(&self, trial: usize, holder: usize, back: usize, rec: &mut TrialRecord) -> Result<()> {
        let state = self.poll(Duration::from_millis(50), |lab| {
            let settled = self.settled(lab)?;
            let back_ok = settled == back || self.role(lab, back).as_deref() == Some("standby");
            (back_ok && lab.missing_handshakes().is_empty()).then_some(settled)
        })?;
        let what = self.service.label();
        match state {
            None => Err(self.failed(
                trial,
                format!("p{back} did not come back as a standby with {what} settled within {WAIT:?}"),
            )),
            Some(h) => {
                if h != holder {
                    rec.anomalies
                        .push(format!("{what} moved from p{holder} to p{h} when p{back} came back"));
                }
                sleep(QUIET);
                Ok(())
            }
        }
    }

    /// Every candidate's claims since `offsets`, in time order, relative to `t0`: `p3 claimed 3.2 (manual)
    /// at +4.1 ms, p1 claimed 4.0 (holder_dead) at +21.7 ms`.
    fn claims_timeline(&self, offsets: &BTreeMap<usize, usize>, t0: SystemTime) -> Result<String> {
        let mut claims = Vec::new();
        for &c in &self.candidates {
            for e in self.claims(&self.log_since(c, offsets)?) {
                claims.push((e.at, c, e));
            }
        }
        claims.sort_by_key(|(at, c, _)| (*at, *c));
        let text: Vec<String> = claims
            .iter()
            .map(|(at, c, e)| {
                format!(
                    "p{c} claimed {} ({}) at {:+.1} ms",
                    e.field("epoch").unwrap_or("?"),
                    e.field("reason").unwrap_or("?"),
                    ms_between(t0, *at)
                )
            })
            .collect();
        Ok(if text.is_empty() {
            "no claims".to_owned()
        } else {
            text.join(", ")
        })
    }

    /// The claims of the service's machine in `log` (a lab may have a VIP and a floating prefix).
    fn claims(&self, log: &str) -> Vec<log::Event> {
        let label = self.service.label();
        log::events(log, CLAIMED)
            .into_iter()
            .filter(|e| e.field("vip") == Some(label.as_str()))
            .collect()
    }

    /// The claim by `holder` in this trial (its last one since `offsets`) and its instant; records its
    /// reason, epoch and timing from `fault_at`, and when the observer's WireGuard device was re-routed
    /// after it.
    fn claim_figures(
        &self,
        holder: usize,
        offsets: &BTreeMap<usize, usize>,
        fault_at: SystemTime,
        rec: &mut TrialRecord,
    ) -> Result<Option<(log::Event, SystemTime)>> {
        let claims = self.poll(Duration::from_millis(20), |_| {
            let text = self.log_since(holder, offsets).ok()?;
            let claims = self.claims(&text);
            (!claims.is_empty()).then_some(claims)
        })?;
        let Some(claims) = claims else {
            rec.anomalies.push(format!("no claim in p{holder}'s log"));
            return Ok(None);
        };
        if claims.len() > 1 {
            rec.anomalies.push(format!(
                "p{holder} claimed {} times: {}",
                claims.len(),
                self.claims_timeline(offsets, fault_at)?
            ));
        }
        let claim = claims.last().expect("not empty").clone();
        // The claim instant: the claimant logs `VIP address added` (a floating prefix: `floating gateway
        // address added`) before it sends the claim to the peers, and `claimed the VIP` only after all the
        // sends; fall back to the latter.
        let text = self.log_since(holder, offsets)?;
        let claim_at = log::events(&text, self.service.address_added())
            .into_iter()
            .map(|e| e.at)
            .rfind(|at| *at <= claim.at && ms_between(*at, claim.at) < 100.0)
            .unwrap_or(claim.at);
        rec.reason = claim.field("reason").map(str::to_owned);
        rec.epoch = claim.field("epoch").map(str::to_owned);
        rec.detection_to_claim_ms = claim.number("detection_to_claim_ms");
        rec.fault_to_claim_ms = Some(ms_between(fault_at, claim_at));
        if offsets.contains_key(&OBSERVER) {
            let text = self.log_since(OBSERVER, offsets)?;
            rec.claim_to_reroute_ms =
                log::first_since(&text, DEVICE_CHANGED, claim_at).map(|e| ms_between(claim_at, e.at));
        }
        Ok(Some((claim, claim_at)))
    }
}

/// `p3`.
fn name(i: usize) -> String {
    Layout::peer_name(i)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Node death of the service's holder: its underlay link goes down (then, for a floating candidate, its
/// site LAN link), then its `sdwand` and `wireguard-go` get SIGKILL (the steps of `Lab::kill_node`, called
/// one by one so the bench knows when the link went down). The node is revived afterwards and must come
/// back as a standby.
pub fn node_death(ctx: &mut Ctx<'_>, trial: usize) -> Result<TrialRecord> {
    let old = ctx.wait_settled(trial)?;
    let mut rec = TrialRecord {
        trial,
        from: name(old),
        ..TrialRecord::default()
    };
    let offsets = ctx.log_offsets(false)?;
    let probe = ctx.start_probe(trial, old)?;
    let at_fault = probe.progress();
    let fault_at = SystemTime::now();
    let t0 = Instant::now();
    ctx.lab.set_underlay(old, false)?;
    rec.fault_call_ms = Some(ms(t0.elapsed()));
    if ctx.service == Service::Site {
        ctx.lab.set_lan(old, false)?;
    }
    ctx.lab.stop_sdwand(old, libc::SIGKILL)?;
    ctx.lab.kill_wireguard_go(old)?;
    let (report, new) = ctx.finish_probe(trial, probe, old, at_fault.answered)?;
    probe_figures(&mut rec, &report, &ctx.answering(old), &new, at_fault.sent as u64);
    let holder = ctx.wait_settled(trial)?;
    match ctx.service {
        Service::Vip => check_holder(&mut rec, holder, &new),
        Service::Site => rec.to = Some(name(holder)),
    }
    ctx.claim_figures(holder, &offsets, fault_at, &mut rec)?;
    ctx.lab.revive_node(old, WAIT)?;
    ctx.wait_back(trial, holder, old, &mut rec)?;
    Ok(rec)
}

/// Planned handover: SIGTERM to the holder's `sdwand` (it hands the VIP over, then exits); the daemon is
/// started again afterwards and must come back as a standby.
pub fn handover(ctx: &mut Ctx<'_>, trial: usize) -> Result<TrialRecord> {
    let old = ctx.lab.wait_vip_settled(WAIT)?;
    let mut rec = TrialRecord {
        trial,
        from: name(old),
        ..TrialRecord::default()
    };
    let offsets = ctx.log_offsets(false)?;
    let probe = ctx.start_probe(trial, old)?;
    let at_fault = probe.progress();
    let fault_at = SystemTime::now();
    let t0 = Instant::now();
    let status = ctx.lab.stop_sdwand(old, libc::SIGTERM)?;
    rec.fault_call_ms = Some(ms(t0.elapsed()));
    if let Some(s) = status.filter(|s| !s.success()) {
        rec.anomalies
            .push(format!("p{old}'s sdwand exited with {s} on SIGTERM"));
    }
    let (report, new) = ctx.finish_probe(trial, probe, old, at_fault.answered)?;
    probe_figures(&mut rec, &report, &name(old), &new, at_fault.sent as u64);
    let holder = ctx.lab.wait_vip_settled(WAIT)?;
    check_holder(&mut rec, holder, &new);
    ctx.claim_figures(holder, &offsets, fault_at, &mut rec)?;
    rec.old_key_first = key_first(ctx.lab, old, holder);
    ctx.lab.start_sdwand(old)?;
    ctx.lab.wait_ready(old, WAIT)?;
    ctx.lab.wg_pid(old)?;
    ctx.wait_back(trial, holder, old, &mut rec)?;
    Ok(rec)
}

/// Manual move to the next candidate (in rank order, wrapping), `sdwanctl vip move VIP --to pN` on the
/// holder; reads the new holder's claim → last peer confirmed from its log.
pub fn confirm(ctx: &mut Ctx<'_>, trial: usize) -> Result<TrialRecord> {
    let old = ctx.lab.wait_vip_settled(WAIT)?;
    let k = ctx.candidates.iter().position(|&c| c == old).unwrap_or(0);
    let target = ctx.candidates[(k + 1) % ctx.candidates.len()];
    let mut rec = TrialRecord {
        trial,
        from: name(old),
        ..TrialRecord::default()
    };
    let term = ctx.lab.vip_epoch_term(old)?.unwrap_or(0);
    let offsets = ctx.log_offsets(true)?;
    let fault_at = SystemTime::now();
    ctx.lab.vip_move(old, Some(target))?;
    // Settled on a claim made after the move (the old state is settled too, until the move takes effect).
    let holder = ctx.poll(Duration::from_millis(20), |lab| {
        let h = lab.vip_settled().ok().flatten()?;
        (lab.vip_epoch_term(h).ok().flatten()? > term).then_some(h)
    })?;
    let Some(holder) = holder else {
        return Err(ctx.failed(trial, format!("no new claim settled within {WAIT:?} after the move")));
    };
    rec.to = Some(name(holder));
    if holder != target {
        rec.anomalies.push(format!(
            "moved to p{target}, but p{holder} holds it: {}",
            ctx.claims_timeline(&offsets, fault_at)?
        ));
    }
    let Some((claim, claim_at)) = ctx.claim_figures(holder, &offsets, fault_at, &mut rec)? else {
        return Ok(rec);
    };
    // When each other peer's WireGuard device was re-routed (it acknowledges the claim right after).
    let mut reroutes = Vec::new();
    for i in (1..=ctx.lab.peer_count()).filter(|&i| i != holder) {
        let text = ctx.log_since(i, &offsets)?;
        match log::first_since(&text, DEVICE_CHANGED, claim_at) {
            Some(e) => reroutes.push(ms_between(claim_at, e.at)),
            None => rec
                .anomalies
                .push(format!("p{i} logged no WireGuard change after the claim")),
        }
    }
    let spread = Figures::of(reroutes);
    if spread.count > 0 {
        (rec.reroute_median_ms, rec.reroute_last_ms) = (Some(spread.median), Some(spread.max));
    }
    let epoch = claim.field("epoch").map(str::to_owned);
    let confirmed = ctx.poll(Duration::from_millis(20), |_| {
        let text = ctx.log_since(holder, &offsets).ok()?;
        log::events(&text, CONFIRMED)
            .into_iter()
            .find(|e| e.field("epoch").map(str::to_owned) == epoch)
    })?;
    match confirmed {
        Some(c) => rec.claim_to_confirmed_ms = c.number("claim_to_confirmed_ms"),
        None => rec
            .anomalies
            .push(format!("p{holder}'s claim was not confirmed within {WAIT:?}")),
    }
    Ok(rec)
}

/// Whether peer `a`'s entry comes before peer `b`'s in a WireGuard update that changes both (sdwand
/// orders a request's peers by raw public key); `None` if a key cannot be read.
fn key_first(lab: &Lab, a: usize, b: usize) -> Option<bool> {
    let key = |i: usize| wireguard_control::Key::from_base64(&lab.peer(i).ok()?.public_key).ok();
    Some(key(a)?.0 < key(b)?.0)
}

/// Records an anomaly if the settled holder is not the node that answered the probe.
fn check_holder(rec: &mut TrialRecord, holder: usize, answered: &str) {
    rec.to = Some(answered.to_owned());
    if name(holder) != answered {
        rec.anomalies
            .push(format!("{answered} answered the probe, but p{holder} holds the VIP"));
    }
}

/// Outage and losses from the probe's report: the longest gap between two answered requests that ends
/// after the fault (`fault_seq`: the first request sent after it; a gap before the fault, such as a slow
/// first answer, is no part of the failover and shows as an anomaly), the lost requests, and how many of
/// them were sent at the switch: between `old`'s last answer and `new`'s first or, when one node answers
/// throughout (`old == new`, the site host), around the first request lost from `fault_seq` on.
fn probe_figures(rec: &mut TrialRecord, report: &ProbeReport, old: &str, new: &str, fault_seq: u64) {
    rec.outage_ms = Some(ms(outage_after(report, fault_seq).unwrap_or(report.longest_outage)));
    rec.lost = Some(report.lost);
    rec.sent = Some(report.sent);
    let sequence = report.answer_sequence();
    let expected: &[&str] = if old == new { &[old] } else { &[old, new] };
    if sequence != expected {
        rec.anomalies.push(format!(
            "answered by {} (not {})",
            sequence.join(" → "),
            expected.join(" then ")
        ));
    }
    if let Some((a, b)) = switch(report, old, new, fault_seq) {
        rec.lost_at_switch = Some(
            report.probes[(a as usize + 1)..b as usize]
                .iter()
                .filter(|p| p.answered_by.is_none())
                .count(),
        );
        // The round trips right at the switch: the old holder's last answer and the new holder's first.
        let rtt = |seq: u64| report.probes[seq as usize].rtt.map(ms);
        if let (Some(x), Some(y)) = (rtt(a), rtt(b)) {
            rec.rtt_switch_ms = Some((x + y) / 2.0);
        }
        let elsewhere = report.lost - rec.lost_at_switch.unwrap_or(0);
        if elsewhere > 0 {
            rec.anomalies.push(format!(
                "{elsewhere} probes lost away from the switch; longest gap {:.1} ms at {:.0} ms",
                ms(report.longest_outage),
                ms(report.longest_outage_at),
            ));
        }
    }
    let mut rtts: Vec<Duration> = report.probes.iter().filter_map(|p| p.rtt).collect();
    rtts.sort_unstable();
    rec.rtt_median_ms = rtts.get(rtts.len() / 2).map(|d| ms(*d));
    for (n, what) in [
        (report.late, "late answers"),
        (report.duplicates, "duplicate answers"),
        (report.send_errors, "send errors"),
    ] {
        if n > 0 {
            rec.anomalies.push(format!("{n} {what}"));
        }
    }
}

/// The longest gap between the send times of two consecutive answered requests, the later one sent at or
/// after `fault_seq`.
fn outage_after(report: &ProbeReport, fault_seq: u64) -> Option<Duration> {
    let answered: Vec<&sdwan_lab::probe::Probe> = report.probes.iter().filter(|p| p.answered_by.is_some()).collect();
    answered
        .windows(2)
        .filter(|w| w[1].seq >= fault_seq)
        .map(|w| w[1].sent_at.saturating_sub(w[0].sent_at))
        .max()
}

/// The last answered request before the switch and the first after it (see [`probe_figures`]).
fn switch(report: &ProbeReport, old: &str, new: &str, fault_seq: u64) -> Option<(u64, u64)> {
    let answered = |p: &&sdwan_lab::probe::Probe, node: &str| p.answered_by.as_deref() == Some(node);
    let a = if old == new {
        let first_lost = report
            .probes
            .iter()
            .find(|p| p.seq >= fault_seq && p.answered_by.is_none())?
            .seq;
        report
            .probes
            .iter()
            .rev()
            .find(|p| p.seq < first_lost && answered(p, old))?
            .seq
    } else {
        report.probes.iter().rev().find(|p| answered(p, old))?.seq
    };
    let b = report.probes.iter().find(|p| p.seq > a && answered(p, new))?.seq;
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use sdwan_lab::probe::Probe;

    use super::*;

    fn report(pattern: &str) -> ProbeReport {
        let probes = pattern
            .chars()
            .enumerate()
            .map(|(k, c)| Probe {
                seq: k as u64,
                sent_at: Duration::from_millis(5 * k as u64),
                answered_by: c.to_digit(10).map(|d| format!("p{d}")),
                rtt: c.to_digit(10).map(|_| Duration::from_millis(1)),
            })
            .collect();
        let target = "[fd00:5d:f::1]:9099".parse().unwrap();
        ProbeReport::summarize("t-p4", target, Duration::from_millis(5), probes, 0, 0, 0)
    }

    #[test]
    fn a_clean_failover() {
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("111....2222"), "p1", "p2", 0);
        assert_eq!(rec.outage_ms, Some(25.0));
        assert_eq!((rec.lost, rec.lost_at_switch, rec.sent), (Some(4), Some(4), Some(11)));
        assert!(rec.anomalies.is_empty(), "{:?}", rec.anomalies);
    }

    #[test]
    fn a_handover_without_loss() {
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("11112222"), "p1", "p2", 0);
        assert_eq!(
            (rec.outage_ms, rec.lost, rec.lost_at_switch),
            (Some(5.0), Some(0), Some(0))
        );
        assert!(rec.anomalies.is_empty());
    }

    #[test]
    fn one_server_behind_two_gateways() {
        // The site host answers as one node before and after the switch; the fault came before seq 4.
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("11.1....111"), "p1", "p1", 4);
        assert_eq!(rec.outage_ms, Some(25.0));
        assert_eq!((rec.lost, rec.lost_at_switch), (Some(5), Some(4)));
        assert_eq!(
            rec.anomalies,
            ["1 probes lost away from the switch; longest gap 25.0 ms at 15 ms"]
        );
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("1111....111"), "p1", "p1", 4);
        assert_eq!(rec.lost_at_switch, Some(4));
        assert!(rec.anomalies.is_empty(), "{:?}", rec.anomalies);
    }

    #[test]
    fn a_gap_before_the_fault_is_no_outage() {
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("1......11..222"), "p1", "p2", 9);
        assert_eq!(rec.outage_ms, Some(15.0));
        assert_eq!((rec.lost, rec.lost_at_switch), (Some(8), Some(2)));
        assert_eq!(
            rec.anomalies,
            ["6 probes lost away from the switch; longest gap 35.0 ms at 0 ms"]
        );
    }

    #[test]
    fn flapping_and_unrelated_gaps_are_anomalies() {
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("1.......1.22"), "p1", "p2", 0);
        assert_eq!(rec.lost_at_switch, Some(1));
        assert_eq!(rec.outage_ms, Some(40.0));
        assert_eq!(rec.rtt_median_ms, Some(1.0));
        assert_eq!(
            rec.anomalies,
            ["7 probes lost away from the switch; longest gap 40.0 ms at 0 ms"]
        );
        let mut rec = TrialRecord::default();
        probe_figures(&mut rec, &report("11..22.1.22"), "p1", "p2", 0);
        assert_eq!(rec.anomalies[0], "answered by p1 → p2 → p1 → p2 (not p1 then p2)");
    }
}
