//! Removing a member on reload removes exactly that peer: the others keep their entries and sessions.

use std::time::Duration;

use sdwan_lab::Reload;

use crate::common::{allowed, assert_ping, entry, overlay, static_lab, POLL};

#[test]
fn removing_a_member_leaves_the_others_untouched() {
    let mut lab = static_lab("rm", 3);
    assert_ping(&lab, 1, overlay(2), 3);
    let dev = lab.device(1).unwrap();
    let before = entry(&lab, &dev, 2).expect("p2 on p1").clone();
    assert!(entry(&lab, &dev, 3).is_some());

    lab.rewrite_config(1, |c| c.members.retain(|m| m.name != "p3")).unwrap();
    assert_eq!(lab.reload(1, Duration::from_secs(5)).unwrap(), Reload::Applied);
    sdwan_lab::wait_until(Duration::from_secs(5), POLL, || {
        lab.device(1).map(|d| entry(&lab, &d, 3).is_none()).unwrap_or(false)
    })
    .unwrap_or_else(|e| panic!("p3 is still a peer of p1: {e}"));

    let dev = lab.device(1).unwrap();
    let after = entry(&lab, &dev, 2).expect("p2 still on p1");
    assert_eq!(after.config.endpoint, before.config.endpoint);
    assert_eq!(allowed(after), allowed(&before));
    assert_eq!(
        after.config.persistent_keepalive_interval,
        before.config.persistent_keepalive_interval
    );
    // A removed-and-re-added peer starts over: no handshake, zero counters, then a new handshake (keepalive).
    // The lab is seconds old, far from WireGuard's 2-minute rekey, so an unchanged session keeps its time.
    assert!(
        before.stats.last_handshake_time.is_some(),
        "no handshake with p2 before the reload"
    );
    assert_eq!(
        after.stats.last_handshake_time, before.stats.last_handshake_time,
        "p2's session on p1 was reset by the reload"
    );
    assert!(
        after.stats.rx_bytes >= before.stats.rx_bytes,
        "p2's counters were reset"
    );
    assert_eq!(dev.peers.len(), 1, "p1 has peers other than p2");

    assert_ping(&lab, 1, overlay(2), 3);
    let to_p3 = lab.ping(1, overlay(3), 1, Duration::from_millis(200)).unwrap();
    assert_eq!(to_p3.received, 0, "p1 still reaches the removed p3");
}
