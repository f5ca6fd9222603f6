//! Restarting the VIP holder's daemon (SIGTERM, then a start with the same configuration) while it is the
//! only live candidate, with a health check that needs three passes to rise from a fresh start (issue 13;
//! the operator walkthrough lost 37 probes, a 608 ms gap, here). The restarted daemon adopts the address,
//! is assumed healthy, keeps the address through listening and claims at its end (reason `restart`): an
//! observer probing the VIP every 5 ms loses nothing, and the same node answers throughout.

use std::time::Duration;

use sdwan_lab::nodecfg::HealthSection;
use sdwan_lab::{ProbeOptions, Reload};

use crate::common::{failovers_for, name, settled, vip_lab, wait_holder, wait_role, CANDIDATES, OBSERVERS, POLL};

#[test]
fn restarting_the_sole_live_holder_loses_no_probe() {
    let mut lab = vip_lab("fl");
    let holder = settled(&lab, Duration::from_secs(10));
    for i in CANDIDATES.into_iter().filter(|&i| i != holder) {
        lab.stop_sdwand(i, libc::SIGTERM).unwrap();
    }
    // The holder keeps its data plane across a restart, and its VIP gets a health check that takes three
    // passes 500 ms apart to rise from a fresh start (longer than the 400 ms of listening): it checks the
    // daemon's own metrics endpoint, which is up whenever the daemon is.
    let metrics = lab.config(holder).unwrap().daemon.metrics_listen;
    lab.rewrite_config(holder, |c| {
        c.daemon.teardown_on_exit = false;
        c.k3s.as_mut().expect("a candidate is a k3s server").health = Some(HealthSection::tcp(metrics, "500ms", 3, 3));
    })
    .unwrap();
    assert_eq!(lab.reload(holder, Duration::from_secs(5)).unwrap(), Reload::Applied);
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.vip_metric(holder, "sdwand_vip_healthy", &[]).ok().flatten() == Some(1.0)
    })
    .unwrap_or_else(|e| panic!("p{holder}'s health check does not rise: {e}\n{}", lab.vip_view()));
    wait_holder(&lab, holder, Duration::from_secs(10));

    let probe = lab
        .start_probe(OBSERVERS[0], ProbeOptions::new(Duration::from_secs(20)))
        .unwrap();
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        probe.progress().answers_from(&name(holder)) >= 100
    })
    .unwrap_or_else(|e| {
        panic!(
            "{} does not answer the probe: {e}: {:?}",
            name(holder),
            probe.progress()
        )
    });
    let status = lab.restart_sdwand(holder).unwrap().expect("started by this lab");
    assert!(status.success(), "p{holder}'s sdwand exited with {status} on SIGTERM");
    lab.wait_ready(holder, Duration::from_secs(10)).unwrap();
    wait_role(&lab, holder, "holding", Duration::from_secs(5));
    // Past listening and past the health check's rise, plus margin.
    let answered = probe.progress().answers_from(&name(holder));
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        probe.progress().answers_from(&name(holder)) >= answered + 400
    })
    .unwrap_or_else(|e| panic!("{} stopped answering: {e}: {:?}", name(holder), probe.progress()));
    probe.stop();
    let report = probe.finish().unwrap();
    eprintln!(
        "restart of the sole holder: {} of {} requests lost; {report}",
        report.lost, report.sent
    );

    assert_eq!(report.lost, 0, "requests lost across the restart: {report}");
    assert_eq!(report.answer_sequence(), [name(holder)], "{report}");
    assert_eq!(
        failovers_for(&lab, holder, "restart"),
        1.0,
        "the restarted daemon claims once, for `restart`\n{}",
        lab.vip_view()
    );
    assert_eq!(lab.holders().unwrap(), [holder]);
}
