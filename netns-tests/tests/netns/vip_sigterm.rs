//! A planned stop (SIGTERM to the holder's daemon) hands the VIP to the next candidate before the old holder
//! lets go (make-before-break): an observer probing the VIP every 5 ms loses at most one request.

use std::time::Duration;

use sdwan_lab::ProbeOptions;

use crate::common::{assert_answered_by, failovers_for, name, next_candidate, settled, vip_lab, wait_holder, POLL};

/// Requests an observer may lose across the handover.
const MAX_LOST: usize = 1;

#[test]
fn planned_stop_hands_over_without_an_outage() {
    let mut lab = vip_lab("vt");
    let old = settled(&lab, Duration::from_secs(10));
    let new = next_candidate(&[old]);

    let probe = lab.start_probe(4, ProbeOptions::new(Duration::from_secs(15))).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        probe.progress().answers_from(&name(old)) >= 100
    })
    .unwrap_or_else(|e| panic!("{} does not answer the probe: {e}: {:?}", name(old), probe.progress()));
    let status = lab
        .stop_sdwand(old, libc::SIGTERM)
        .unwrap()
        .expect("started by this lab");
    assert!(status.success(), "p{old}'s sdwand exited with {status} on SIGTERM");
    wait_holder(&lab, new, Duration::from_secs(10));
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        probe.progress().answers_from(&name(new)) >= 100
    })
    .unwrap_or_else(|e| panic!("{} does not answer the probe: {e}: {:?}", name(new), probe.progress()));
    probe.stop();
    let report = probe.finish().unwrap();
    eprintln!(
        "planned stop: {} of {} requests lost; {report}",
        report.lost, report.sent
    );

    assert_eq!(report.answer_sequence(), [name(old), name(new)], "{report}");
    assert!(
        report.lost <= MAX_LOST,
        "{} requests lost across a planned stop: {report}",
        report.lost
    );
    assert!(failovers_for(&lab, new, "shutdown") >= 1.0, "{}", lab.vip_view());
    assert_eq!(lab.holders().unwrap(), [new]);
    assert_answered_by(&lab, 5, new);
}
