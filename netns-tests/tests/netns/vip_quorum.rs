//! Quorum mode (`docs/protocol.md` "Quorum mode") against a partition of the holder from the rest, with
//! quorum mode on and off, for the VIP and for a floating prefix's gateway address. Who has the address is
//! recorded by `ip -ts monitor address` in every candidate's namespace: each addition and removal with its
//! kernel timestamp, finer than any sampling. With quorum on, at no instant do two candidates have the
//! address, and the majority side serves; with quorum off, today's behaviour: both sides hold until the
//! partition heals.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use sdwan_lab::background::Background;
use sdwan_lab::floating::{GATEWAY, SITE_ADDR};
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::{Cut, Lab, UpOptions};

use crate::common::{
    assert_answered_by, lab_with, unique_name, wait_holder, wait_sole_gateway, CANDIDATES, POLL, VIP_PEERS,
};

/// Marker address each IPv6 monitor must report before the test trusts it to be listening.
fn marker(i: usize) -> String {
    format!("fd00:5d:ee::{i}/128")
}

/// Marker address of an IPv4 monitor (an underlay address no peer has).
fn marker_v4(i: usize) -> String {
    format!("192.0.2.{}/32", 250 + i)
}

/// `ip` in peer `i`'s namespace; panics on failure.
fn ip(lab: &Lab, i: usize, args: &[&str]) {
    let ns = lab.netns(i).expect("namespace");
    let out = Command::new("ip")
        .arg("-n")
        .arg(&ns)
        .args(args)
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts an address monitor of `family` (`-4`, `-6`; one line per event, lifetimes included) in the
/// namespace of each of `peers` and waits until
/// each one reported the marker address `marker(i)` added for the purpose (so no event after this returns
/// is missed).
fn monitors(lab: &mut Lab, peers: &[usize], family: &str, marker: fn(usize) -> String) -> Vec<(usize, Background)> {
    let mut all = Vec::new();
    for &i in peers {
        let bg = lab
            .spawn_in(i, &["ip", "-o", "-ts", family, "monitor", "address"])
            .expect("ip monitor starts");
        all.push((i, bg));
    }
    // A monitor that has not subscribed yet misses the marker: add it again, at most five times.
    for (i, bg) in &all {
        let i = *i;
        let seen = (0..5).any(|_| {
            ip(lab, i, &[family, "addr", "add", &marker(i), "dev", "lo"]);
            let seen = sdwan_lab::wait_until(Duration::from_secs(1), Duration::from_millis(10), || {
                bg.stdout_so_far().contains(marker(i).as_str())
            });
            ip(lab, i, &[family, "addr", "del", &marker(i), "dev", "lo"]);
            seen.is_ok()
        });
        assert!(seen, "p{i}'s address monitor reports nothing: {}", bg.stderr_so_far());
    }
    all
}

/// The additions and removals of the address the monitors print as `needle` (`inet6 fd00:5d:f::1/128`):
/// `(timestamp, peer, added)`, in time order. `ip -ts` stamps are `[YYYY-MM-DDTHH:MM:SS.ffffff]`, so they
/// order as strings.
fn events(monitors: &[(usize, Background)], needle: &str) -> Vec<(String, usize, bool)> {
    let mut all = Vec::new();
    for (i, bg) in monitors {
        for line in bg.stdout_so_far().lines().filter(|l| l.contains(needle)) {
            let Some(ts) = line
                .strip_prefix('[')
                .and_then(|l| l.split_once(']'))
                .map(|(t, _)| t.to_owned())
            else {
                panic!("p{i}: an address event without a timestamp: {line:?}");
            };
            all.push((ts, *i, !line.contains("Deleted")));
        }
    }
    all.sort();
    all
}

/// The VIP's events (see [`events`]).
fn vip_events(monitors: &[(usize, Background)]) -> Vec<(String, usize, bool)> {
    events(monitors, &format!("inet6 {VIP_ADDR}/128"))
}

/// The longest stretch, as `(from, to, holders)`, during which more than one candidate had the address,
/// replaying `events` from `initial` holders; `None` when there was none.
fn overlap(initial: &[usize], events: &[(String, usize, bool)]) -> Option<(String, String, Vec<usize>)> {
    let mut holders: Vec<usize> = initial.to_vec();
    let mut since: Option<(String, Vec<usize>)> = None;
    let mut first: Option<(String, String, Vec<usize>)> = None;
    for (ts, i, added) in events {
        if *added {
            if !holders.contains(i) {
                holders.push(*i);
            }
        } else {
            holders.retain(|h| h != i);
        }
        match (&since, holders.len() > 1) {
            (None, true) => since = Some((ts.clone(), holders.clone())),
            (Some((from, who)), false) => {
                first.get_or_insert((from.clone(), ts.clone(), who.clone()));
                since = None;
            }
            _ => {}
        }
    }
    first.or(since.map(|(from, who)| (from, "(still)".to_owned(), who)))
}

/// The monitors saw p1 remove the address and p2 add it, and at no instant two candidates with it.
fn assert_handed_over_alone(initial: &[usize], seen: &[(String, usize, bool)]) {
    assert!(
        seen.iter().any(|(_, i, added)| *i == 1 && !added),
        "p1's removal not seen: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, i, added)| *i == 2 && *added),
        "p2's addition not seen: {seen:?}"
    );
    assert_eq!(overlap(initial, seen), None, "two holders at once: {seen:?}");
}

/// A 5-peer lab, candidates p1..p3 (three voters), quorum mode as given, settled on p1.
fn partition_lab(prefix: &str, quorum: bool) -> crate::common::TestLab {
    let mut opts = UpOptions::new(&unique_name(prefix), VIP_PEERS);
    opts.vip_candidates = CANDIDATES.len();
    opts.quorum = quorum;
    let lab = lab_with(opts);
    wait_holder(&lab, 1, Duration::from_secs(15));
    lab
}

/// Waits until p2 has the address and says it is holding.
fn wait_p2_holds(lab: &Lab) {
    sdwan_lab::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        lab.holders().map(|h| h.contains(&2)).unwrap_or(false)
            && lab.vip_role(2).ok().flatten().as_deref() == Some("holding")
    })
    .unwrap_or_else(|e| panic!("p2 does not take the VIP: {e}\n{}", lab.vip_view()));
}

#[test]
fn quorum_mode_never_has_two_holders_across_a_partition() {
    let mut lab = partition_lab("qp", true);
    let mons = monitors(&mut lab, &CANDIDATES, "-6", marker);
    let initial = lab.holders().expect("holders");
    assert_eq!(initial, [1], "{}", lab.vip_view());

    lab.partition(&[1], &[2, 3, 4, 5], Cut::Both).expect("partition p1 off");
    wait_p2_holds(&lab);
    sdwan_lab::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        lab.holders().map(|h| h == [2]).unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("the minority's p1 keeps the address: {e}\n{}", lab.vip_view()));
    for observer in [4, 5] {
        assert_answered_by(&lab, observer, 2);
    }

    lab.heal_partitions().expect("heal");
    wait_holder(&lab, 2, Duration::from_secs(10));
    assert_handed_over_alone(&initial, &vip_events(&mons));
}

#[test]
fn without_quorum_both_sides_of_a_partition_hold_until_it_heals() {
    let mut lab = partition_lab("qo", false);
    let mons = monitors(&mut lab, &CANDIDATES, "-6", marker);
    let initial = lab.holders().expect("holders");
    assert_eq!(initial, [1], "{}", lab.vip_view());

    lab.partition(&[1], &[2, 3, 4, 5], Cut::Both).expect("partition p1 off");
    wait_p2_holds(&lab);
    assert_eq!(lab.holders().expect("holders"), [1, 2], "{}", lab.vip_view());

    lab.heal_partitions().expect("heal");
    sdwan_lab::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        lab.holders().map(|h| h.len() == 1).unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("the partition healed, two holders remain: {e}\n{}", lab.vip_view()));
    let seen = vip_events(&mons);
    let Some((from, to, who)) = overlap(&initial, &seen) else {
        panic!("the monitors saw no overlap, yet both sides held: {seen:?}");
    };
    eprintln!("without quorum, {who:?} held the VIP together from {from} to {to}");
}

/// The kernel lifetime backstop: the quorum-mode holder p1's daemon is frozen (SIGSTOP). Its address has
/// a kernel lifetime it can no longer renew, so it leaves p1's interface by itself within that lifetime
/// (and the kernel's second of lateness), while the majority elects p2. The daemon is thawed whatever
/// happens; it then finds its lease gone and stays off.
#[test]
fn a_frozen_quorum_holder_loses_the_address_within_its_lifetime() {
    let lab = partition_lab("qz", true);
    let opts = UpOptions::new("unused", VIP_PEERS);
    let lifetime = sdwand::vip::Timers {
        interval: opts.vip_interval,
        dead_after: opts.vip_dead_after,
        preempt: None,
    }
    .address_lifetime();
    // The kernel checks lifetimes in whole seconds, late by up to about a second; the rest is polling.
    let deadline = lifetime + Duration::from_secs(2);
    // Quorum mode is turned on through the registry once the candidates joined: the address p1 added
    // before that is permanent until its first renewal gives it the lifetime.
    let ns = lab.netns(1).expect("p1's namespace");
    let vip = format!("{VIP_ADDR}/128");
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        sdwan_lab::cmd::ip_in(&ns, &["-6", "-o", "addr", "show", "to", &vip])
            .is_ok_and(|line| line.contains("valid_lft") && !line.contains("valid_lft forever"))
    })
    .unwrap_or_else(|e| panic!("p1's VIP never gets a finite lifetime: {e}\n{}", lab.vip_view()));

    lab.freeze_sdwand(1).expect("SIGSTOP p1's sdwand");
    let frozen = std::time::Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sdwan_lab::wait_until(deadline, Duration::from_millis(20), || {
            lab.holders().is_ok_and(|h| !h.contains(&1))
        })
        .unwrap_or_else(|e| {
            panic!(
                "the frozen p1 keeps the VIP address past {deadline:?}: {e}\n{}",
                lab.vip_view()
            )
        });
        let gone = frozen.elapsed();
        eprintln!("the frozen holder's address left after {gone:?} (lifetime {lifetime:?})");
        wait_p2_holds(&lab);
    }));
    lab.thaw_sdwand(1).expect("SIGCONT p1's sdwand");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    wait_holder(&lab, 2, Duration::from_secs(10));
}

/// The quorum-mode holder's address, deleted by someone, is put back by the daemon's kernel pass with
/// what is left of its lifetime, never without one: added "forever", it would outlive a holder frozen
/// before its next renewal. Three deletions, each put back within 5 s; p1's address monitor must report
/// the VIP added, never with `valid_lft forever`.
#[test]
fn a_quorum_holders_address_put_back_keeps_a_lifetime() {
    let mut lab = partition_lab("ql", true);
    let ns = lab.netns(1).expect("p1's namespace");
    let vip = format!("{VIP_ADDR}/128");
    let finite = |line: &str| line.contains("valid_lft") && !line.contains("valid_lft forever");
    // Quorum mode is turned on once the candidates joined: wait for the first renewal's lifetime.
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        sdwan_lab::cmd::ip_in(&ns, &["-6", "-o", "addr", "show", "to", &vip]).is_ok_and(|line| finite(&line))
    })
    .unwrap_or_else(|e| panic!("p1's VIP never gets a finite lifetime: {e}\n{}", lab.vip_view()));
    let mons = monitors(&mut lab, &[1], "-6", marker);
    let wg = lab.wg_if(1).expect("p1's interface");
    for round in 1..=3 {
        ip(&lab, 1, &["-6", "addr", "del", &vip, "dev", &wg]);
        sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
            sdwan_lab::cmd::ip_in(&ns, &["-6", "-o", "addr", "show", "to", &vip]).is_ok_and(|line| !line.is_empty())
        })
        .unwrap_or_else(|e| panic!("round {round}: p1's VIP did not come back: {e}\n{}", lab.vip_view()));
    }
    let out = mons[0].1.stdout_so_far();
    let added: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(&format!("inet6 {vip}")) && !l.contains("Deleted"))
        .collect();
    assert!(!added.is_empty(), "the monitor saw the VIP added no time: {out}");
    let forever: Vec<&&str> = added.iter().filter(|l| !finite(l)).collect();
    assert!(forever.is_empty(), "the VIP came back without a lifetime: {forever:#?}");
}

/// A floating site behind the gateways p1 and p2 with the witness p4 (`--floating-candidates 2 --quorum`,
/// four peers, observer p3), settled on p1; p1 is then cut off from everyone. At no instant do both
/// gateways have the gateway address; p1 removes it, p2 takes it and serves the site to the observer.
#[test]
fn a_floating_prefix_in_quorum_mode_never_has_two_gateways_across_a_partition() {
    let mut opts = UpOptions::new(&unique_name("qf"), 4);
    opts.floating_candidates = 2;
    opts.quorum = true;
    let mut lab = lab_with(opts);
    assert_eq!(lab.wait_floating_settled(Duration::from_secs(10)).unwrap(), 1);
    let mons = monitors(&mut lab, &[1, 2], "-4", marker_v4);
    let initial = lab.gateway_holders().expect("holders");
    assert_eq!(initial, [1]);

    lab.partition(&[1], &[2, 3, 4], Cut::Both).expect("partition p1 off");
    wait_sole_gateway(&lab, 2, "p2 alone does not serve the site");
    let site = IpAddr::V4(SITE_ADDR);
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.ping(3, site, 1, Duration::from_millis(200))
            .is_ok_and(|s| s.lost() == 0)
    })
    .unwrap_or_else(|e| panic!("the observer p3 cannot reach the site host through p2: {e}"));

    lab.heal_partitions().expect("heal");
    assert_eq!(lab.wait_floating_settled(Duration::from_secs(10)).unwrap(), 2);
    assert_handed_over_alone(&initial, &events(&mons, &format!("inet {GATEWAY}/24")));
}
