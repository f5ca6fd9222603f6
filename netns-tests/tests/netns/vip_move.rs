//! An operator moves the VIP with `sdwanctl vip move VIP --to NAME` on the holder: the named candidate holds
//! it and answers the observers' traffic.

use std::time::Duration;

use crate::common::{
    assert_answered_by, assert_sole_holder_for, failovers_for, settled, vip_lab, wait_holder, CANDIDATES, OBSERVERS,
};

#[test]
fn manual_move_puts_the_vip_on_the_named_node() {
    let lab = vip_lab("vm");
    let old = settled(&lab, Duration::from_secs(10));
    // The last candidate: not the one a failover would pick, so only the operator's choice puts it there.
    let target = *CANDIDATES.iter().rev().find(|&&c| c != old).expect("another candidate");

    let status = lab.sdwanctl(old, &["status"]).unwrap();
    assert!(
        status.status.success(),
        "sdwanctl status on p{old}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let out = lab
        .vip_move(old, Some(target))
        .unwrap_or_else(|e| panic!("vip move: {e}\n{}", lab.vip_view()));
    eprintln!("sdwanctl vip move: {}", out.trim());

    wait_holder(&lab, target, Duration::from_secs(10));
    assert_sole_holder_for(&lab, target, Duration::from_secs(1));
    assert_eq!(failovers_for(&lab, target, "manual"), 1.0, "{}", lab.vip_view());
    for observer in OBSERVERS {
        assert_answered_by(&lab, observer, target);
    }
}
