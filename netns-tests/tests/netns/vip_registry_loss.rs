//! The registry never decides who holds the VIP (README "VIP failover", `docs/protocol.md` "The registry
//! never decides"): the four cases where VIP managers that lean on a store went wrong. The registry down
//! everywhere, down for the holder only, or silently stalled (its watch stream open and mute) changes
//! nothing: the holder keeps the VIP, nobody else takes it, and no failover is counted. The holder
//! hard-killed while the registry is down fails over as it would with the registry up.
//!
//! Each case runs until the holder's daemon has noticed the loss (`sdwand_registry_up` 0: its requests were
//! refused or timed out), and a while beyond, sampling the VIP's addresses throughout.

use std::time::{Duration, Instant};

use sdwan_lab::Lab;

use crate::common::{assert_answered_by, failovers, failovers_for, vip_lab, wait_holder, VIP_PEERS};

/// The longest a daemon may take to notice the registry is gone: a watch that hangs is given up after its
/// wait (25 s) and slack, and every other request after its timeout.
const NOTICE: Duration = Duration::from_secs(45);
/// How long the VIP is watched after the holder noticed (more than one resync period and one report
/// period of the lab's daemons, 2 s each).
const BEYOND: Duration = Duration::from_secs(5);

/// `sdwand_registry_up` of peer `i` (`None` while its metrics do not answer).
fn registry_up(lab: &Lab, i: usize) -> Option<f64> {
    let text = lab.metrics(i).ok()?;
    sdwan_lab::metrics::sample(&text, "sdwand_registry_up", &[])
}

/// Asserts that `holder` alone has the VIP, sampled every 50 ms, until its daemon reports the registry
/// down and for [`BEYOND`] after that, and that no failover was counted meanwhile. Panics when the daemon
/// has not noticed within [`NOTICE`] (the fault did not bite).
fn holds_through(lab: &Lab, holder: usize, what: &str) {
    let peers = 1..=VIP_PEERS;
    let before = failovers(lab, peers.clone());
    let start = Instant::now();
    let mut noticed: Option<Instant> = None;
    loop {
        let holders = lab.holders().expect("ip -6 addr");
        assert_eq!(
            holders,
            [holder],
            "{what}: after {:?} the VIP is on {holders:?}, not on p{holder} alone\n{}",
            start.elapsed(),
            lab.vip_view()
        );
        match noticed {
            Some(at) if at.elapsed() >= BEYOND => break,
            Some(_) => {}
            None if registry_up(lab, holder) == Some(0.0) => {
                eprintln!(
                    "{what}: p{holder} noticed the registry down after {:?}",
                    start.elapsed()
                );
                noticed = Some(Instant::now());
            }
            None => assert!(
                start.elapsed() < NOTICE,
                "{what}: p{holder}'s sdwand_registry_up is {:?} after {NOTICE:?}: the fault did not bite\n{}",
                registry_up(lab, holder),
                lab.log_tail(holder, 20)
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        failovers(lab, peers),
        before,
        "{what}: a failover was counted\n{}",
        lab.vip_view()
    );
    for observer in [4, 5] {
        assert_answered_by(lab, observer, holder);
    }
}

#[test]
fn registry_down_everywhere_then_the_holder_killed() {
    let mut lab = vip_lab("rl");
    wait_holder(&lab, 1, Duration::from_secs(10));
    lab.kill_registry().expect("SIGKILL the registry");
    holds_through(&lab, 1, "registry down everywhere");

    // The holder's node dies while the registry is still down: the protocol alone moves the VIP.
    lab.kill_node(1).expect("kill p1's node");
    let took = wait_holder(&lab, 2, Duration::from_secs(10));
    eprintln!("p2 holds the VIP {took:?} after p1's node died, the registry down");
    assert_eq!(failovers_for(&lab, 2, "holder_dead"), 1.0, "{}", lab.vip_view());
    for observer in [4, 5] {
        assert_answered_by(&lab, observer, 2);
    }
}

#[test]
fn registry_down_for_the_holder_only() {
    let lab = vip_lab("rh");
    wait_holder(&lab, 1, Duration::from_secs(10));
    lab.cut_registry(1).expect("cut p1 off from the registry");
    holds_through(&lab, 1, "registry cut off from the holder");
    assert!(
        lab.registry_cut_dropped().expect("nft counters") > 0,
        "the cut dropped nothing"
    );
    for i in 2..=VIP_PEERS {
        assert_eq!(registry_up(&lab, i), Some(1.0), "p{i} lost the registry too");
    }
    lab.restore_registry(1).expect("restore p1's path to the registry");
    sdwan_lab::wait_until(NOTICE, Duration::from_millis(100), || registry_up(&lab, 1) == Some(1.0))
        .unwrap_or_else(|e| panic!("p1 does not reach the registry again: {e}\n{}", lab.log_tail(1, 20)));
    assert_eq!(lab.holders().unwrap(), [1], "{}", lab.vip_view());
}

#[test]
fn registry_stalled_with_its_watch_open() {
    let lab = vip_lab("rs");
    wait_holder(&lab, 1, Duration::from_secs(10));
    lab.freeze_registry().expect("SIGSTOP the registry");
    // SIGSTOP takes effect asynchronously.
    sdwan_lab::wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
        lab.registry_frozen().unwrap_or(false)
    })
    .expect("the registry stops on SIGSTOP");
    holds_through(&lab, 1, "registry stalled");
    lab.thaw_registry().expect("SIGCONT the registry");
    sdwan_lab::wait_until(NOTICE, Duration::from_millis(100), || registry_up(&lab, 1) == Some(1.0))
        .unwrap_or_else(|e| panic!("p1 does not reach the registry again: {e}\n{}", lab.log_tail(1, 20)));
    assert_eq!(lab.holders().unwrap(), [1], "{}", lab.vip_view());
}
