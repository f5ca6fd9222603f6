//! The failover transport going down and coming back (review H5): a deaf node never claims, a deaf
//! holder steps down after a dead time, and a node whose transport returns listens afresh.

use super::super::*;
use super::cluster::{ms, timers, Cluster};

fn transport(c: &mut Cluster, i: usize, up: bool) {
    c.cut[i] = !up;
    c.with(i, |m, now| m.handle_local(now, LocalEvent::Transport(up)));
}

#[test]
fn a_node_that_never_bound_its_socket_never_claims() {
    let mut c = Cluster::new(2, 1, timers());
    transport(&mut c, 0, false);
    let now = c.now;
    assert!(!c.m(0).status(now).transport_up);
    c.run(ms(3_000));
    assert_eq!(c.claims_since(ms(0)), vec![(1, ClaimReason::Initial)]);
    assert_eq!(c.m(0).role(), PeerState::Standby);
    assert!(!c.nodes[0].has_addr);
    // Rank 1 dies: the deaf rank 0 still does not claim.
    c.kill(1);
    c.run(ms(3_000));
    assert_eq!(c.claims().len(), 1);
    // The socket binds: rank 0 listens for the full listen time, then claims.
    let t = c.elapsed();
    transport(&mut c, 0, true);
    assert_eq!(c.m(0).role(), PeerState::Listening);
    c.run(ms(1_000));
    let claims: Vec<_> = c.claims().into_iter().filter(|r| r.0 >= t).collect();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].1, 0);
    assert!(
        claims[0].0 >= t + timers().listen(),
        "claimed {:?} after the socket bound",
        claims[0].0 - t
    );
    let now = c.now;
    assert!(c.m(0).status(now).transport_up);
}

#[test]
fn a_deaf_holder_removes_the_address_after_a_dead_time() {
    let mut c = Cluster::booted(2, 1, timers());
    let dead = timers().dead_time(timers().interval);
    let t = c.elapsed();
    transport(&mut c, 0, false);
    c.run(dead - ms(5));
    assert!(c.nodes[0].has_addr, "a blip shorter than the dead time changes nothing");
    assert_eq!(c.m(0).role(), PeerState::Holding);
    c.run(ms(10));
    assert!(!c.nodes[0].has_addr);
    assert_eq!(c.m(0).role(), PeerState::Standby);
    c.run(ms(500));
    assert_eq!(c.claims_since(t), vec![(1, ClaimReason::HolderDead)]);
    // Back: it listens, learns the new claim and stays standby.
    transport(&mut c, 0, true);
    c.run(ms(3_000));
    assert_eq!(c.claims_since(t).len(), 1);
    c.assert_converged(1);
}

#[test]
fn a_short_blip_keeps_the_holder() {
    let mut c = Cluster::booted(2, 1, timers());
    let t = c.elapsed();
    transport(&mut c, 0, false);
    c.run(ms(60));
    transport(&mut c, 0, true);
    c.run(ms(3_000));
    assert!(c.claims_since(t).is_empty());
    c.assert_converged(0);
}
