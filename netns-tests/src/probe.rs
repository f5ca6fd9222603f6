//! The probe client: from an observer's namespace, send a sequenced request to the VIP's echo responder
//! (see [`crate::responder`]) every few milliseconds and record which node answered each one, and when.
//! That is how a test (or the bench, or the demo) sees an outage the way a client of the VIP would.
//!
//! The client runs on a dedicated thread that joins the observer's namespace ([`crate::netns`]); it is
//! bounded by its duration plus the answer timeout. [`Lab::start_probe`] returns a [`ProbeHandle`] to watch
//! progress while faults are injected; [`ProbeHandle::finish`] returns the [`ProbeReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{humanize, LabError, Result};
use crate::lab::Lab;
use crate::layout;
use crate::responder::{decode_reply, encode_request};

/// How to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Where the requests go; by default the lab VIP's responder, `[fd00:5d:f::1]:9099`.
    pub target: SocketAddr,
    /// Time between two requests (default 5 ms).
    pub interval: Duration,
    /// How long to send requests.
    pub duration: Duration,
    /// An answer later than this counts as lost (`late`); also how long the client waits after the last
    /// request (default 1 s).
    pub timeout: Duration,
}

impl ProbeOptions {
    /// Probing the lab's VIP every 5 ms for `duration`, answers within 1 s.
    pub fn new(duration: Duration) -> Self {
        ProbeOptions {
            target: SocketAddr::from((layout::VIP_ADDR, layout::RESPONDER_PORT)),
            interval: Duration::from_millis(5),
            duration,
            timeout: Duration::from_secs(1),
        }
    }
}

/// One request and its fate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Sequence number, from 0.
    pub seq: u64,
    /// When it was sent, after the start of the run.
    #[serde(rename = "sent_at_ms", with = "ms")]
    pub sent_at: Duration,
    /// The node that answered in time; `null` when lost.
    pub answered_by: Option<String>,
    /// Round-trip time of the answer.
    #[serde(rename = "rtt_ms", with = "opt_ms")]
    pub rtt: Option<Duration>,
}

/// Consecutive answers from one node (lost requests in between do not break a run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredRun {
    /// The node.
    pub node: String,
    /// First and last sequence number it answered in this run.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// How many it answered in this run.
    pub count: usize,
}

/// What a probe run saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The namespace it ran in.
    pub from: String,
    /// Where it sent requests.
    pub target: String,
    /// Time between requests.
    #[serde(rename = "interval_ms", with = "ms")]
    pub interval: Duration,
    /// Requests sent (send errors included).
    pub sent: usize,
    /// Requests answered in time.
    pub answered: usize,
    /// Requests not answered in time: `sent - answered`.
    pub lost: usize,
    /// Answers that came after the timeout (their requests count as lost).
    pub late: usize,
    /// Requests the kernel refused to send (e.g. no route to the VIP); counted as lost.
    pub send_errors: usize,
    /// Second answers to one request (two nodes answering the same request).
    pub duplicates: usize,
    /// The longest time between the send times of two consecutive answered requests; a loss at the start
    /// (end) of the run counts from its first lost request (to one interval after its last request). About
    /// one interval when nothing was lost.
    #[serde(rename = "longest_outage_ms", with = "ms")]
    pub longest_outage: Duration,
    /// Requests lost within that longest outage.
    pub longest_outage_lost: usize,
    /// When the longest outage started (send time of the last answered request before it).
    #[serde(rename = "longest_outage_at_ms", with = "ms")]
    pub longest_outage_at: Duration,
    /// Who answered, in order: runs of consecutive answers from one node.
    pub answered_by: Vec<AnsweredRun>,
    /// Every request, in sequence order.
    pub probes: Vec<Probe>,
}

impl ProbeReport {
    /// The summary of `probes` (sorted by `seq`). `late`, `send_errors` and `duplicates` are counted by the
    /// client and passed through.
    pub fn summarize(
        from: &str,
        target: SocketAddr,
        interval: Duration,
        probes: Vec<Probe>,
        late: usize,
        send_errors: usize,
        duplicates: usize,
    ) -> ProbeReport {
        let answered = probes.iter().filter(|p| p.answered_by.is_some()).count();
        let (mut longest, mut longest_lost, mut longest_at) = (Duration::ZERO, 0, Duration::ZERO);
        let mut prev_answer: Option<Duration> = None;
        let mut first_lost: Option<Duration> = None;
        let mut lost_run = 0;
        let mut consider = |from: Duration, to: Duration, lost: usize| {
            let gap = to.saturating_sub(from);
            if gap > longest {
                (longest, longest_lost, longest_at) = (gap, lost, from);
            }
        };
        for p in &probes {
            if p.answered_by.is_some() {
                if let Some(from) = prev_answer.or(first_lost) {
                    consider(from, p.sent_at, lost_run);
                }
                prev_answer = Some(p.sent_at);
                first_lost = None;
                lost_run = 0;
            } else {
                first_lost.get_or_insert(p.sent_at);
                lost_run += 1;
            }
        }
        if lost_run > 0 {
            let end = probes.last().map_or(Duration::ZERO, |p| p.sent_at + interval);
            let from = prev_answer.or(first_lost).unwrap_or_default();
            consider(from, end, lost_run);
        }
        let mut runs: Vec<AnsweredRun> = Vec::new();
        for p in &probes {
            let Some(node) = &p.answered_by else { continue };
            match runs.last_mut() {
                Some(run) if &run.node == node => {
                    run.last_seq = p.seq;
                    run.count += 1;
                }
                _ => runs.push(AnsweredRun {
                    node: node.clone(),
                    first_seq: p.seq,
                    last_seq: p.seq,
                    count: 1,
                }),
            }
        }
        ProbeReport {
            from: from.to_owned(),
            target: target.to_string(),
            interval,
            sent: probes.len(),
            answered,
            lost: probes.len() - answered,
            late,
            send_errors,
            duplicates,
            longest_outage: longest,
            longest_outage_lost: longest_lost,
            longest_outage_at: longest_at,
            answered_by: runs,
            probes,
        }
    }

    /// The node that answered last.
    pub fn last_answered_by(&self) -> Option<&str> {
        self.answered_by.last().map(|r| r.node.as_str())
    }

    /// The nodes that answered, in order of their runs (`["p1", "p2"]` for a clean failover).
    pub fn answer_sequence(&self) -> Vec<&str> {
        self.answered_by.iter().map(|r| r.node.as_str()).collect()
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent every {} from {} to {}: {} answered, {} lost ({} late, {} send errors, {} duplicates); \
             longest outage {} ({} lost) at {}; answered by ",
            self.sent,
            humanize(self.interval),
            self.from,
            self.target,
            self.answered,
            self.lost,
            self.late,
            self.send_errors,
            self.duplicates,
            humanize(self.longest_outage),
            self.longest_outage_lost,
            humanize(self.longest_outage_at),
        )?;
        if self.answered_by.is_empty() {
            return write!(f, "nobody");
        }
        let runs: Vec<String> = self
            .answered_by
            .iter()
            .map(|r| format!("{} (#{}..#{}, {})", r.node, r.first_seq, r.last_seq, r.count))
            .collect();
        write!(f, "{}", runs.join(", then "))
    }
}

/// What a running probe has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Requests sent.
    pub sent: usize,
    /// Answers received in time.
    pub answered: usize,
    /// The latest answer: sequence number and node.
    pub last_answer: Option<(u64, String)>,
    /// Answers per node.
    pub by_node: BTreeMap<String, usize>,
}

impl Progress {
    /// Answers from `node` so far.
    pub fn answers_from(&self, node: &str) -> usize {
        self.by_node.get(node).copied().unwrap_or(0)
    }
}

/// A probe running in the background. Dropping it stops the probe and discards the report.
#[derive(Debug)]
pub struct ProbeHandle {
    /// Set to stop sending early.
    stop: Arc<AtomicBool>,
    /// Shared with the probing thread.
    progress: Arc<Mutex<Progress>>,
    /// The probing thread; `None` once joined.
    thread: Option<JoinHandle<io::Result<ProbeReport>>>,
    /// The namespace, for messages.
    netns: String,
}

impl ProbeHandle {
    /// What it has seen so far.
    pub fn progress(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Stops sending now; [`ProbeHandle::finish`] still waits for answers to what was sent.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until the run is over (its duration, then the answer timeout) and returns its report.
    pub fn finish(mut self) -> Result<ProbeReport> {
        let thread = self.thread.take().expect("a probe is joined once");
        thread
            .join()
            .map_err(|_| LabError::Process(format!("the probe in {} panicked", self.netns)))?
            .map_err(|e| LabError::io(format!("probe in {}", self.netns), e))
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Lab {
    /// Starts probing from peer `i`'s namespace (see the module docs) and returns at once.
    pub fn start_probe(&self, i: usize, opts: ProbeOptions) -> Result<ProbeHandle> {
        let ns = self.netns(i)?;
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let (s, p, n) = (stop.clone(), progress.clone(), ns.clone());
        let thread = crate::netns::spawn_in(&ns, move || run(&n, opts, &s, &p))?;
        Ok(ProbeHandle {
            stop,
            progress,
            thread: Some(thread),
            netns: ns,
        })
    }

    /// Probes from peer `i`'s namespace for `opts.duration` and returns the report.
    pub fn probe(&self, i: usize, opts: ProbeOptions) -> Result<ProbeReport> {
        self.start_probe(i, opts)?.finish()
    }
}

/// The probing loop (on the thread inside the namespace). Bounded: it sends until `duration` has passed or
/// `stop` is set, then waits at most `timeout` for the last answers.
fn run(netns: &str, opts: ProbeOptions, stop: &AtomicBool, progress: &Mutex<Progress>) -> io::Result<ProbeReport> {
    let any: SocketAddr = if opts.target.is_ipv6() {
        "[::]:0".parse().expect("constant")
    } else {
        "0.0.0.0:0".parse().expect("constant")
    };
    let socket = UdpSocket::bind(any)?;
    socket.set_nonblocking(true)?;
    let interval = opts.interval.max(Duration::from_micros(100));
    let start = Instant::now();
    let end = start + opts.duration;
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut answers: Vec<Option<(String, Duration)>> = Vec::new();
    let (mut late, mut send_errors, mut duplicates) = (0, 0, 0);
    let mut buf = [0u8; 256];
    let mut next = start;
    let mut last_send = start;
    // Receives until `until`, recording answers.
    let mut receive =
        |until: Instant, sent_at: &[Instant], answers: &mut Vec<Option<(String, Duration)>>| -> io::Result<()> {
            loop {
                let now = Instant::now();
                if now >= until {
                    return Ok(());
                }
                if !readable(&socket, until - now)? {
                    return Ok(());
                }
                let n = match socket.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                    Err(e) => return Err(e),
                };
                let arrived = Instant::now();
                let Some((seq, node)) = decode_reply(&buf[..n]) else {
                    continue;
                };
                let Some(sent) = usize::try_from(seq).ok().and_then(|k| sent_at.get(k)) else {
                    continue;
                };
                let k = seq as usize;
                let rtt = arrived - *sent;
                if answers[k].is_some() {
                    duplicates += 1;
                } else if rtt > opts.timeout {
                    late += 1;
                } else {
                    if let Ok(mut p) = progress.lock() {
                        p.answered += 1;
                        *p.by_node.entry(node.clone()).or_default() += 1;
                        p.last_answer = Some((seq, node.clone()));
                    }
                    answers[k] = Some((node, rtt));
                }
            }
        };
    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::SeqCst) {
            break;
        }
        if now >= next {
            let seq = sent_at.len() as u64;
            sent_at.push(now);
            answers.push(None);
            last_send = now;
            if socket.send_to(&encode_request(seq), opts.target).is_err() {
                send_errors += 1;
            }
            if let Ok(mut p) = progress.lock() {
                p.sent += 1;
            }
            // No burst after a stall: the next request is one interval after this one at the earliest.
            next += interval;
            if next <= now {
                next = now + interval;
            }
        }
        receive(next.min(end), &sent_at, &mut answers)?;
    }
    let drain_until = last_send + opts.timeout;
    while Instant::now() < drain_until && answers.iter().any(Option::is_none) {
        receive(
            drain_until.min(Instant::now() + Duration::from_millis(50)),
            &sent_at,
            &mut answers,
        )?;
    }
    let probes = sent_at
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(k, (t, a))| Probe {
            seq: k as u64,
            sent_at: *t - start,
            rtt: a.as_ref().map(|(_, rtt)| *rtt),
            answered_by: a.map(|(node, _)| node),
        })
        .collect();
    Ok(ProbeReport::summarize(
        netns,
        opts.target,
        interval,
        probes,
        late,
        send_errors,
        duplicates,
    ))
}

/// Waits at most `timeout` until `socket` is readable, with `ppoll` (socket timeouts are rounded up to the
/// kernel's tick, several milliseconds: too coarse for a 5 ms schedule).
fn readable(socket: &UdpSocket, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    match rc {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Durations as milliseconds (floating point) in JSON.
mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as milliseconds in JSON.
mod opt_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|ms| Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn probes(pattern: &str) -> Vec<Probe> {
        // One character per request, 5 ms apart: '.' lost, a digit: answered by p<digit>.
        pattern
            .chars()
            .enumerate()
            .map(|(k, c)| Probe {
                seq: k as u64,
                sent_at: 5 * MS * k as u32,
                answered_by: c.to_digit(10).map(|d| format!("p{d}")),
                rtt: c.to_digit(10).map(|_| MS),
            })
            .collect()
    }

    fn report(pattern: &str) -> ProbeReport {
        let target = "[fd00:5d:f::1]:9099".parse().unwrap();
        ProbeReport::summarize("t-p4", target, 5 * MS, probes(pattern), 0, 0, 0)
    }

    #[test]
    fn a_clean_run_has_no_outage() {
        let r = report("1111");
        assert_eq!((r.sent, r.answered, r.lost), (4, 4, 0));
        assert_eq!(r.longest_outage, 5 * MS);
        assert_eq!(r.longest_outage_lost, 0);
        assert_eq!(r.answer_sequence(), ["p1"]);
    }

    #[test]
    fn a_failover_shows_its_gap_and_who_answered() {
        let r = report("111....2222");
        assert_eq!((r.answered, r.lost), (7, 4));
        // From the last answer by p1 (#2, 10 ms) to the first by p2 (#7, 35 ms).
        assert_eq!(r.longest_outage, 25 * MS);
        assert_eq!(r.longest_outage_lost, 4);
        assert_eq!(r.longest_outage_at, 10 * MS);
        assert_eq!(r.answer_sequence(), ["p1", "p2"]);
        assert_eq!(
            r.answered_by[1],
            AnsweredRun {
                node: "p2".into(),
                first_seq: 7,
                last_seq: 10,
                count: 4
            }
        );
        assert_eq!(r.last_answered_by(), Some("p2"));
    }

    #[test]
    fn losses_at_the_edges_count() {
        let r = report("..11");
        assert_eq!((r.longest_outage, r.longest_outage_lost), (10 * MS, 2));
        let r = report("11...");
        // From the last answer (5 ms) to one interval after the last request (20 + 5 ms).
        assert_eq!((r.longest_outage, r.longest_outage_lost), (20 * MS, 3));
        let r = report("...");
        assert_eq!((r.longest_outage, r.longest_outage_lost, r.answered), (15 * MS, 3, 0));
        assert!(r.answered_by.is_empty());
        assert!(r.to_string().ends_with("answered by nobody"), "{r}");
    }

    #[test]
    fn reports_round_trip_as_json() {
        let r = report("11.2");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["longest_outage_ms"], 10.0);
        assert_eq!(json["probes"][2]["answered_by"], serde_json::Value::Null);
        assert_eq!(json["probes"][3]["rtt_ms"], 1.0);
        let back: ProbeReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn probes_a_responder_on_loopback() {
        let dir = std::env::temp_dir().join(format!("sdwan-lab-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let d = dir.clone();
        let server = std::thread::spawn(move || crate::responder::serve(target, "p7", &d));
        let opts = ProbeOptions {
            target,
            interval: 5 * MS,
            duration: Duration::from_millis(300),
            timeout: Duration::from_millis(200),
        };
        let progress = Mutex::new(Progress::default());
        let report = run("host", opts, &AtomicBool::new(false), &progress).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        server.join().unwrap().unwrap();
        assert!(report.sent >= 30, "{report}");
        assert_eq!(report.last_answered_by(), Some("p7"), "{report}");
        assert!(report.answered >= report.sent - 2, "{report}");
        assert_eq!(progress.lock().unwrap().answers_from("p7"), report.answered);
    }
}
