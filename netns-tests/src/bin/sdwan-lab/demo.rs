//! `sdwan-lab demo`, the quick start: a lab called `demo`, its mesh (a table of handshakes and pings between
//! every pair of peers), then, with VIP candidates, a live failover: a client in the last peer's namespace
//! probes the VIP every 5 ms while the holder's node is killed, and the demo prints the outage the client saw
//! and the new holder. Up to 16 peers, each also runs a pod (attached by the real CNI plugins from the
//! configuration its daemon wrote), and the demo pings p1's pod to every other pod, IPv4 and IPv6. The lab is removed on every path: success, failure, Ctrl-C, panic (by the guard).

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdwan_lab::error::humanize;
use sdwan_lab::lab::ago;
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::{LabError, LabGuard, Layout, ProbeOptions, UpOptions};

const NAME: &str = "demo";

/// Runs the demo; the exit code says whether everything it showed worked.
pub fn run(peers: usize, vip_candidates: usize, cancel: Arc<AtomicBool>) -> ExitCode {
    let mut opts = UpOptions::new(NAME, peers);
    opts.cancel = Some(cancel.clone());
    opts.vip_candidates = vip_candidates;
    if peers <= sdwan_lab::pods::MAX_POD_PEERS {
        opts.pods = 1;
    }
    let vip = if vip_candidates > 0 {
        format!(", VIP {VIP_ADDR} with candidates p1..p{vip_candidates}")
    } else {
        String::new()
    };
    eprintln!(
        "sdwan-lab demo: building {peers} peers in namespaces {NAME}-p1..{NAME}-p{peers}{vip}, waiting for handshakes…"
    );
    let lab = match LabGuard::up(opts) {
        Ok(lab) => lab,
        Err(LabError::Cancelled) => {
            eprintln!("sdwan-lab demo: cancelled");
            return ExitCode::from(130);
        }
        Err(e) => {
            eprintln!("sdwan-lab demo: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match show(lab, &cancel) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(LabError::Cancelled) => {
            eprintln!("sdwan-lab demo: cancelled; lab removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("sdwan-lab demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the demo shows; `Ok(false)` if something failed. Takes the lab down at the end.
fn show(mut lab: LabGuard, cancel: &AtomicBool) -> sdwan_lab::Result<bool> {
    let doc = lab.status()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("a LabDoc always serializes")
    );
    println!();
    table(&lab)?;
    let mut all_ok = pings(&lab, cancel)?;
    all_ok &= pod_pings(&doc.pods, cancel)?;
    if !lab.vips().is_empty() {
        all_ok &= failover(&mut lab, cancel)?;
    }
    check(cancel)?;
    lab.down()?;
    println!();
    println!(
        "{}; lab removed",
        if all_ok {
            "everything worked"
        } else {
            "something FAILED (see above)"
        }
    );
    Ok(all_ok)
}

fn check(cancel: &AtomicBool) -> sdwan_lab::Result<()> {
    if cancel.load(Ordering::SeqCst) {
        Err(LabError::Cancelled)
    } else {
        Ok(())
    }
}

/// One line per peer: namespace, addresses, PIDs, and how long ago it shook hands with every other peer.
fn table(lab: &LabGuard) -> sdwan_lab::Result<()> {
    println!(
        "{:<5} {:<11} {:<12} {:<13} {:<8} {:<13} latest handshake",
        "peer", "netns", "underlay", "overlay", "sdwand", "wireguard-go"
    );
    let n = lab.peer_count();
    for i in 1..=n {
        let handshakes = match lab.device(i) {
            Ok(dev) => (1..=n)
                .filter(|j| *j != i)
                .map(|j| {
                    let key = &lab.peer(j).expect("listed peer").public_key;
                    let t = dev
                        .peers
                        .iter()
                        .find(|x| &x.config.public_key.to_base64() == key)
                        .and_then(|x| x.stats.last_handshake_time);
                    format!("p{j}: {}", ago(t))
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("({e})"),
        };
        let pid = |p: Option<u32>| p.map_or("-".to_owned(), |p| p.to_string());
        let wg = sdwand::wg::uapi::server_pid(&lab.wg_if(i)?).ok().flatten();
        println!(
            "{:<5} {:<11} {:<12} {:<13} {:<8} {:<13} {handshakes}",
            Layout::peer_name(i),
            lab.netns(i)?,
            Layout::underlay_addr(i),
            Layout::overlay_addr(i),
            pid(lab.sdwand_pid(i)?),
            pid(wg)
        );
    }
    Ok(())
}

/// Pings every peer's /128 from every other (3 each, one thread per source peer); whether all came back.
fn pings(lab: &LabGuard, cancel: &AtomicBool) -> sdwan_lab::Result<bool> {
    println!();
    println!("pings over the overlay (3 each):");
    let n = lab.peer_count();
    let lab: &sdwan_lab::Lab = lab;
    let lines: Vec<(bool, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (1..=n)
            .map(|i| {
                s.spawn(move || {
                    (1..=n)
                        .filter(|j| *j != i)
                        .map(|j| {
                            if cancel.load(Ordering::SeqCst) {
                                return (false, format!("  p{i} -> p{j}: cancelled"));
                            }
                            let to = IpAddr::V6(Layout::overlay_addr(j));
                            let (ok, line) = match lab.ping(i, to, 3, Duration::from_millis(100)) {
                                Ok(s) => (
                                    s.lost() == 0,
                                    format!("{} {s}", if s.lost() == 0 { "ok  " } else { "FAIL" }),
                                ),
                                Err(e) => (false, format!("FAIL {e}")),
                            };
                            (ok, format!("  p{i} -> p{j} ({to}): {line}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    check(cancel)?;
    for (_, line) in &lines {
        println!("{line}");
    }
    let ok = lines.iter().all(|(ok, _)| *ok);
    println!(
        "{}",
        if ok {
            "all peers reach each other"
        } else {
            "some pings FAILED"
        }
    );
    Ok(ok)
}

/// Pings every other pod from the first one (3 each, IPv4 and IPv6): pod traffic between nodes over the
/// overlay, with the pods' own addresses. Whether all came back (true without pods).
fn pod_pings(pods: &[sdwan_lab::PodState], cancel: &AtomicBool) -> sdwan_lab::Result<bool> {
    let Some((from, others)) = pods.split_first() else {
        return Ok(true);
    };
    println!();
    println!("pod to pod across nodes (3 each, from {} on {}):", from.name, from.peer);
    let mut ok = true;
    for to in others {
        for addr in [&to.ipv4, &to.ipv6].into_iter().flatten() {
            check(cancel)?;
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &from.netns,
                    "ping",
                    "-c",
                    "3",
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    addr,
                ])
                .output()
                .map_err(|e| LabError::io("cannot run ping", e))?;
            let good = out.status.success();
            ok &= good;
            let summary = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.contains("packets transmitted"))
                .unwrap_or("no answer")
                .to_owned();
            println!(
                "  {} -> {} on {} ({addr}): {} {summary}",
                from.name,
                to.name,
                to.peer,
                if good { "ok  " } else { "FAIL" }
            );
        }
    }
    Ok(ok)
}

/// The live failover: probe the VIP from the last peer, kill the holder's node, report what the client saw.
fn failover(lab: &mut LabGuard, cancel: &AtomicBool) -> sdwan_lab::Result<bool> {
    let candidates = lab.vip_candidates();
    println!();
    let observer = lab.peer_count();
    if candidates.len() < 2 || candidates.contains(&observer) {
        println!("(a failover needs 2 candidates and a peer that is not one: try --peers 5 --vip-candidates 3)");
        return Ok(true);
    }
    let holder = lab.wait_vip_settled(Duration::from_secs(10))?;
    let (h, o) = (Layout::peer_name(holder), Layout::peer_name(observer));
    println!(
        "VIP failover: {VIP_ADDR} has candidates {}; {h} holds it.",
        candidates
            .iter()
            .map(|&c| Layout::peer_name(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{}", lab.vip_view());
    println!("{o} sends a request to [{VIP_ADDR}]:9099 every 5 ms; the echo responder of whichever node holds the VIP answers.");
    let probe_start = Instant::now();
    let probe = lab.start_probe(observer, ProbeOptions::new(Duration::from_secs(30)))?;
    let waited = sdwan_lab::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        probe.progress().answers_from(&h) >= 100 || cancel.load(Ordering::SeqCst)
    });
    check(cancel)?;
    if waited.is_err() {
        println!("FAIL: {h} did not answer the probe: {:?}", probe.progress());
        return Ok(false);
    }
    println!("killing node {h}: underlay link down, its sdwand and wireguard-go SIGKILLed…");
    let killed_at = probe_start.elapsed();
    lab.kill_node(holder)?;
    // Done when another node has answered for a while (or the probe gives up).
    let moved = sdwan_lab::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        let p = probe.progress();
        let other: usize = p.by_node.iter().filter(|(n, _)| **n != h).map(|(_, c)| c).sum();
        other >= 200 || cancel.load(Ordering::SeqCst)
    });
    probe.stop();
    let report = probe.finish()?;
    check(cancel)?;
    let new_holder = lab.wait_vip_settled(Duration::from_secs(10));
    println!();
    println!("what the client in {o} saw: {report}");
    println!();
    println!(
        "outage: {} ({} requests lost of {}); answered by {}",
        humanize(report.longest_outage),
        report.lost,
        report.sent,
        report.answer_sequence().join(" then ")
    );
    // The first request answered by another node, measured from the kill (the probe's clock started with it).
    let first_other = report
        .probes
        .iter()
        .find(|p| p.sent_at > killed_at && p.answered_by.as_deref().is_some_and(|n| n != h));
    if let Some(p) = first_other {
        println!(
            "the first request {} answered was sent {} after the kill",
            p.answered_by.as_deref().unwrap_or("?"),
            humanize(p.sent_at.saturating_sub(killed_at))
        );
    }
    println!("{}", lab.vip_view());
    match new_holder {
        Ok(n) if moved.is_ok() && report.last_answered_by() == Some(Layout::peer_name(n).as_str()) => {
            println!(
                "new holder: {} (the VIP is on its interface, every live peer routes to it)",
                Layout::peer_name(n)
            );
            Ok(true)
        }
        Ok(n) => {
            println!(
                "FAIL: {} holds the VIP but the client's last answer came from {:?}",
                Layout::peer_name(n),
                report.last_answered_by()
            );
            Ok(false)
        }
        Err(e) => {
            println!("FAIL: no new holder: {e}");
            Ok(false)
        }
    }
}
