//! 10 % random loss on every underlay link (in and out of every peer, so about 19 % between two peers) for
//! 60 s causes no failover: the failover counters of every peer stay where they were and the holder keeps the
//! VIP throughout.

use std::time::Duration;

use crate::common::{assert_answered_by, assert_sole_holder_for, failovers, settled, vip_lab, VIP_PEERS};

/// Loss on each underlay link, per direction.
const LOSS_PERCENT: u8 = 10;
/// How long the loss lasts.
const LOSS_FOR: Duration = Duration::from_secs(60);

#[test]
fn ten_percent_loss_for_a_minute_causes_no_failover() {
    let lab = vip_lab("vl");
    let holder = settled(&lab, Duration::from_secs(10));
    let before = failovers(&lab, 1..=VIP_PEERS);

    lab.add_loss(LOSS_PERCENT).unwrap();
    let watched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_sole_holder_for(&lab, holder, LOSS_FOR);
    }));
    let dropped = lab.loss_dropped().unwrap();
    lab.remove_loss().unwrap();
    if let Err(panic) = watched {
        std::panic::resume_unwind(panic);
    }
    eprintln!("{LOSS_PERCENT} % loss for {LOSS_FOR:?}: {dropped} underlay packets dropped");
    assert!(dropped > 0, "the loss rules dropped nothing");

    assert_eq!(
        failovers(&lab, 1..=VIP_PEERS),
        before,
        "failovers under {LOSS_PERCENT} % loss\n{}",
        lab.vip_view()
    );
    assert_eq!(lab.vip_settled().unwrap(), Some(holder), "{}", lab.vip_view());
    assert_answered_by(&lab, 4, holder);
}
