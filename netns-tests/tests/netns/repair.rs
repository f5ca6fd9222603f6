//! The daemon repairs its route and address as soon as netlink says they are gone. The periodic resync is
//! set to a minute, so a repair within seconds can only come from the event path.

use std::time::Duration;

use sdwan_lab::UpOptions;

use crate::common::{assert_ping, lab_with, overlay, unique_name, POLL};

/// Far below the one-minute resync.
const REPAIR_DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn deleted_route_and_address_come_back() {
    let mut opts = UpOptions::new(&unique_name("rt"), 2);
    opts.resync_interval = "60s".to_owned();
    let lab = lab_with(opts);
    let wg = lab.wg_if(1).unwrap();
    let prefix = lab.overlay_prefix();

    let route = |lab: &sdwan_lab::Lab| {
        lab.exec_ok(1, &["ip", "-6", "route", "show", prefix, "dev", &wg])
            .unwrap()
    };
    assert!(route(&lab).contains(prefix), "no overlay route at start");
    lab.exec_ok(1, &["ip", "-6", "route", "del", prefix, "dev", &wg])
        .unwrap();
    let took = sdwan_lab::wait_until(REPAIR_DEADLINE, POLL, || route(&lab).contains(prefix))
        .unwrap_or_else(|e| panic!("the overlay route did not come back: {e}\n{}", lab.log_tail(1, 20)));
    eprintln!("route restored after {took:?}");

    let addr = |lab: &sdwan_lab::Lab| lab.exec_ok(1, &["ip", "-6", "addr", "show", "dev", &wg]).unwrap();
    assert!(addr(&lab).contains("fd00:5d::1/128"), "no /128 at start");
    lab.exec_ok(1, &["ip", "-6", "addr", "del", "fd00:5d::1/128", "dev", &wg])
        .unwrap();
    let took = sdwan_lab::wait_until(REPAIR_DEADLINE, POLL, || addr(&lab).contains("fd00:5d::1/128"))
        .unwrap_or_else(|e| panic!("the /128 did not come back: {e}\n{}", lab.log_tail(1, 20)));
    eprintln!("address restored after {took:?}");

    assert!(
        route(&lab).contains(prefix),
        "the route is gone after the address repair"
    );
    assert_ping(&lab, 1, overlay(2), 3);
}
