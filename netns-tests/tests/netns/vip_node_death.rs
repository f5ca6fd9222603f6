//! The holder's node dies (underlay down, `sdwand` and `wireguard-go` SIGKILLed): the next candidate takes
//! the VIP and answers the observers' traffic; when the dead node comes back it has no VIP address and does
//! not take the VIP back (no preemption).

use std::time::Duration;

use sdwan_lab::layout::VIP_ADDR;
use sdwan_lab::ProbeOptions;

use crate::common::{
    assert_answered_by, assert_sole_holder_for, failovers_for, name, next_candidate, settled, vip_lab, wait_holder,
    wait_role, POLL,
};

#[test]
fn vip_moves_off_a_dead_node_and_stays_when_it_returns() {
    let mut lab = vip_lab("vn");
    let old = settled(&lab, Duration::from_secs(10));
    let new = next_candidate(&[old]);
    let doc = lab.status().unwrap();
    assert_eq!(doc.vips.len(), 1, "{doc:?}");
    assert_eq!(doc.vips[0].address, VIP_ADDR.to_string());
    assert_eq!(doc.vips[0].candidates, ["p1", "p2", "p3"]);
    assert_eq!(doc.vips[0].holder, Some(name(old)));
    assert_answered_by(&lab, 4, old);

    let probe = lab.start_probe(4, ProbeOptions::new(Duration::from_secs(20))).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        probe.progress().answers_from(&name(old)) >= 20
    })
    .unwrap_or_else(|e| panic!("{} does not answer the probe: {e}: {:?}", name(old), probe.progress()));
    lab.kill_node(old).unwrap();
    let took = wait_holder(&lab, new, Duration::from_secs(10));
    eprintln!("p{new} holds the VIP {took:?} after p{old}'s node died");
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        probe.progress().answers_from(&name(new)) >= 50
    })
    .unwrap_or_else(|e| panic!("{} does not answer the probe: {e}: {:?}", name(new), probe.progress()));
    probe.stop();
    let report = probe.finish().unwrap();
    eprintln!("node death seen from p4: {report}");
    assert_eq!(report.answer_sequence(), [name(old), name(new)], "{report}");
    assert_eq!(lab.holders().unwrap(), [new]);
    assert!(failovers_for(&lab, new, "holder_dead") >= 1.0, "{}", lab.vip_view());
    assert_eq!(lab.status().unwrap().vips[0].holder, Some(name(new)));

    lab.revive_node(old, Duration::from_secs(10)).unwrap();
    assert!(
        !lab.has_address(old, VIP_ADDR).unwrap(),
        "p{old} has the VIP again as soon as it is back"
    );
    wait_role(&lab, old, "standby", Duration::from_secs(10));
    assert_sole_holder_for(&lab, new, Duration::from_secs(3));
    wait_holder(&lab, new, Duration::from_secs(5));
    assert_eq!(
        lab.vip_failovers(old).unwrap(),
        0.0,
        "the returning node claimed\n{}",
        lab.vip_view()
    );
    for observer in [4, 5] {
        assert_answered_by(&lab, observer, new);
    }
}
