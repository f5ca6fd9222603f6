//! The holder's daemon freezes for 2 s (SIGSTOP, then SIGCONT): the next candidate takes over meanwhile, and
//! once the frozen one runs again there is exactly one holder, the new one.

use std::time::{Duration, Instant};

use crate::common::{
    assert_answered_by, assert_sole_holder_for, next_candidate, settled, vip_lab, wait_holder, wait_role, OBSERVERS,
};

/// How long the holder's daemon stays frozen (ten times its dead time).
const FREEZE: Duration = Duration::from_secs(2);

#[test]
fn frozen_holder_steps_down_when_it_thaws() {
    let lab = vip_lab("vf");
    let old = settled(&lab, Duration::from_secs(10));
    let new = next_candidate(&[old]);
    let term = lab.vip_epoch_term(new).unwrap().expect("an epoch term");

    lab.freeze_sdwand(old).unwrap();
    let frozen = Instant::now();
    // The frozen daemon's metrics cannot be read: watch the successor alone.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_role(&lab, new, "holding", FREEZE);
    }));
    // The fault lasts FREEZE whatever happened; thaw before any assertion can fail.
    std::thread::sleep(FREEZE.saturating_sub(frozen.elapsed()));
    lab.thaw_sdwand(old).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }

    wait_holder(&lab, new, Duration::from_secs(10));
    wait_role(&lab, old, "standby", Duration::from_secs(5));
    assert_sole_holder_for(&lab, new, Duration::from_secs(2));
    let after = lab.vip_epoch_term(new).unwrap().expect("an epoch term");
    assert!(
        after > term,
        "the takeover did not raise the epoch term ({term} -> {after})"
    );
    for i in 1..=lab.peer_count() {
        assert_eq!(lab.vip_epoch_term(i).unwrap(), Some(after), "p{i}\n{}", lab.vip_view());
    }
    for observer in OBSERVERS {
        assert_answered_by(&lab, observer, new);
    }
}
