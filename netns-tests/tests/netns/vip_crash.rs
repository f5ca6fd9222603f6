//! Only the holder's daemon crashes (SIGKILL; `wireguard-go`, the interface and its addresses stay): the next
//! candidate takes over and the observers' traffic follows it. The crashed daemon's restart adopts what it
//! left, drops the stale VIP address and causes no further failover.

use std::time::Duration;

use sdwan_lab::layout::VIP_ADDR;

use crate::common::{
    assert_answered_by, assert_sole_holder_for, failovers, next_candidate, settled, vip_lab, wait_believed,
    wait_holder, wait_role, OBSERVERS, VIP_PEERS,
};

#[test]
fn daemon_crash_fails_over_and_the_restart_does_not_flap() {
    let mut lab = vip_lab("vc");
    let old = settled(&lab, Duration::from_secs(10));
    let new = next_candidate(&[old]);
    let others: Vec<usize> = (1..=VIP_PEERS).filter(|&i| i != old).collect();

    lab.kill_sdwand(old).unwrap();
    assert!(
        lab.has_address(old, VIP_ADDR).unwrap(),
        "the VIP left p{old}'s interface although only its daemon died"
    );
    // The others take over; the observers route to the new holder although p{old} still has the address.
    wait_believed(&lab, new, Duration::from_secs(10));
    eprintln!("after the crash the VIP is on {:?}", lab.holders().unwrap());
    for observer in OBSERVERS {
        assert_answered_by(&lab, observer, new);
    }

    let before = failovers(&lab, others.clone());
    lab.start_sdwand(old).unwrap();
    lab.wait_ready(old, Duration::from_secs(10)).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.holders().unwrap_or_default() == [new]
    })
    .unwrap_or_else(|e| {
        panic!(
            "p{old} keeps the stale VIP address after its restart: {e}\n{}",
            lab.vip_view()
        )
    });
    wait_role(&lab, old, "standby", Duration::from_secs(10));
    wait_holder(&lab, new, Duration::from_secs(5));
    assert_sole_holder_for(&lab, new, Duration::from_secs(3));

    assert_eq!(
        failovers(&lab, others.clone()),
        before,
        "the restart caused a failover\n{}",
        lab.vip_view()
    );
    assert_eq!(
        lab.vip_failovers(old).unwrap(),
        0.0,
        "the restarted p{old} claimed\n{}",
        lab.vip_view()
    );
    for observer in OBSERVERS {
        assert_answered_by(&lab, observer, new);
    }
}
