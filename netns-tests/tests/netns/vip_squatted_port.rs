//! P7 (security review §9.A, findings H5 and M12): something holds a candidate's failover address before its
//! daemon starts (`IPV6_FREEBIND` binds it before the address even exists). The daemon cannot bind, so it
//! hears no heartbeat and no claim: it must say so (the bind error in its log, `sdwand_vip_socket_bound 0`)
//! and never claim the VIP, which would put it on two nodes. Once the address is free it binds on its next
//! pass and becomes a standby.
//!
//! The squatter runs as root: with a privileged failover port (M12) only root could squat it, and what is
//! under test is the deaf daemon's behaviour, not who made it deaf.

use std::time::Duration;

use crate::common::{assert_sole_holder_for, next_candidate, settled, vip_lab, wait_holder, wait_role, POLL};

/// The gauge that says whether the failover socket is bound (1) or not (0).
const SOCKET_BOUND: &str = "sdwand_vip_socket_bound";

/// What the daemon's log says when the failover address is taken (each must appear).
const BIND_ERROR: [&str; 2] = ["failover socket", "Address already in use"];

/// How long the deaf node is watched for a claim: many times the lab's dead time (4 × 50 ms) and its
/// listen time (2 dead times), after which an unbound candidate claims today.
const NO_CLAIM_WINDOW: Duration = Duration::from_secs(3);

#[test]
fn a_node_that_cannot_bind_its_failover_port_never_claims() {
    let mut lab = vip_lab("sq");
    let holder = settled(&lab, Duration::from_secs(10));
    let deaf = next_candidate(&[holder]);
    lab.stop_sdwand(deaf, libc::SIGTERM).unwrap();
    let addr = lab.failover_addr(deaf).unwrap();
    let squatter = lab.squat_udp(deaf, addr).unwrap();

    let offset = lab.log_text(deaf).unwrap().len();
    lab.start_sdwand(deaf).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.log_since(deaf, offset)
            .is_ok_and(|log| BIND_ERROR.iter().all(|needle| log.contains(needle)))
    })
    .unwrap_or_else(|e| {
        panic!(
            "p{deaf}'s log does not report that {addr} is taken ({BIND_ERROR:?}): {e}\n{}",
            lab.log_since(deaf, offset).unwrap_or_default()
        )
    });
    assert_sole_holder_for(&lab, holder, NO_CLAIM_WINDOW);
    assert_ne!(
        lab.vip_role(deaf).unwrap().as_deref(),
        Some("holding"),
        "{}",
        lab.vip_view()
    );
    assert_eq!(
        lab.metric(deaf, SOCKET_BOUND, &[]).unwrap(),
        Some(0.0),
        "p{deaf} should say its failover socket is not bound\n{}",
        lab.metrics(deaf).unwrap_or_default()
    );

    // Freed: the daemon binds on its next pass and joins as a standby; the holder keeps the VIP.
    squatter.release();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        lab.metric(deaf, SOCKET_BOUND, &[]).ok().flatten() == Some(1.0)
    })
    .unwrap_or_else(|e| {
        panic!(
            "p{deaf} did not bind {addr} once it was free: {e}\n{}",
            lab.log_tail(deaf, 20)
        )
    });
    wait_role(&lab, deaf, "standby", Duration::from_secs(10));
    wait_holder(&lab, holder, Duration::from_secs(5));
    assert_sole_holder_for(&lab, holder, Duration::from_millis(500));
}
