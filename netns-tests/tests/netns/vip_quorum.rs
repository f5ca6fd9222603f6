//! Quorum mode (`docs/protocol.md` "Quorum mode") against a partition of the holder from the rest, with
//! quorum mode on and off. Who has the VIP address is recorded by `ip -ts monitor address` in every
//! candidate's namespace: each addition and removal with its kernel timestamp, finer than any sampling. With
//! quorum on, at no instant do two candidates have the address, and the majority side serves; with quorum
//! off, today's behaviour: both sides hold until the partition heals.

use std::process::Command;
use std::time::Duration;

use sdwan_lab::background::Background;
use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::{Cut, Lab, UpOptions};

use crate::common::{assert_answered_by, lab_with, unique_name, wait_holder, CANDIDATES, VIP_PEERS};

/// Marker address each monitor must report before the test trusts it to be listening.
fn marker(i: usize) -> String {
    format!("fd00:5d:ee::{i}/128")
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

/// Starts an address monitor in each candidate's namespace and waits until each one reported a marker
/// address added for the purpose (so no event after this returns is missed).
fn monitors(lab: &mut Lab) -> Vec<(usize, Background)> {
    let mut all = Vec::new();
    for &i in &CANDIDATES {
        let bg = lab
            .spawn_in(i, &["ip", "-ts", "-6", "monitor", "address"])
            .expect("ip monitor starts");
        all.push((i, bg));
    }
    for (i, bg) in &all {
        let i = *i;
        ip(lab, i, &["-6", "addr", "add", &marker(i), "dev", "lo"]);
        sdwan_lab::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            bg.stdout_so_far().contains(marker(i).as_str())
        })
        .unwrap_or_else(|e| panic!("p{i}'s address monitor reports nothing: {e}: {}", bg.stderr_so_far()));
        ip(lab, i, &["-6", "addr", "del", &marker(i), "dev", "lo"]);
    }
    all
}

/// The VIP address's additions and removals the monitors saw: `(timestamp, peer, added)`, in time order.
/// `ip -ts` stamps are `[YYYY-MM-DDTHH:MM:SS.ffffff]`, so they order as strings.
fn events(monitors: &[(usize, Background)]) -> Vec<(String, usize, bool)> {
    let needle = format!("inet6 {VIP_ADDR}/128");
    let mut all = Vec::new();
    for (i, bg) in monitors {
        for line in bg.stdout_so_far().lines().filter(|l| l.contains(&needle)) {
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
    let mons = monitors(&mut lab);
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
    let seen = events(&mons);
    assert!(
        seen.iter().any(|(_, i, added)| *i == 1 && !added),
        "p1's removal not seen: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, i, added)| *i == 2 && *added),
        "p2's addition not seen: {seen:?}"
    );
    assert_eq!(overlap(&initial, &seen), None, "two holders at once: {seen:?}");
}

#[test]
fn without_quorum_both_sides_of_a_partition_hold_until_it_heals() {
    let mut lab = partition_lab("qo", false);
    let mons = monitors(&mut lab);
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
    let seen = events(&mons);
    let Some((from, to, who)) = overlap(&initial, &seen) else {
        panic!("the monitors saw no overlap, yet both sides held: {seen:?}");
    };
    eprintln!("without quorum, {who:?} held the VIP together from {from} to {to}");
}
