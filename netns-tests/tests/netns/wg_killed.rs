//! When `wireguard-go` dies, the daemon starts a new one and configures it again: peers, address, route,
//! and traffic flows again.

use std::time::Duration;

use crate::common::{allowed, assert_ping, entry, lab, overlay, wait_reachable, POLL};

#[test]
fn killed_wireguard_go_is_replaced_and_reconfigured() {
    let mut lab = lab("wk", 3);
    let old = lab.kill_wireguard_go(1).unwrap();

    let (new, took) = sdwan_lab::wait_for(Duration::from_secs(10), POLL, || {
        lab.wg_pid(1).ok().flatten().filter(|p| *p != old)
    })
    .unwrap_or_else(|e| panic!("no new wireguard-go for p1: {e}\n{}", lab.log_tail(1, 20)));
    eprintln!("wireguard-go {old} replaced by {new} after {took:?}");
    assert_eq!(sdwan_lab::process::comm(new).as_deref(), Some("wireguard-go"));

    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        let Ok(dev) = lab.device(1) else { return false };
        [2, 3].iter().all(|&j| {
            entry(&lab, &dev, j).is_some_and(|p| {
                p.config.endpoint == Some((sdwan_lab::Layout::underlay_addr(j), 51820).into())
                    && allowed(p) == [format!("{}/128", overlay(j))]
            })
        })
    })
    .unwrap_or_else(|e| panic!("p1's peers are not configured again: {e}\n{}", lab.log_tail(1, 20)));

    let wg = lab.wg_if(1).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
        let addr = lab
            .exec_ok(1, &["ip", "-6", "addr", "show", "dev", &wg])
            .unwrap_or_default();
        let route = lab
            .exec_ok(1, &["ip", "-6", "route", "show", "dev", &wg])
            .unwrap_or_default();
        addr.contains("fd00:5d::1/128") && route.contains(lab.overlay_prefix())
    })
    .unwrap_or_else(|e| panic!("p1's address or route is missing: {e}\n{}", lab.log_tail(1, 20)));

    wait_reachable(&lab, 1, overlay(2), Duration::from_secs(15));
    assert_ping(&lab, 1, overlay(2), 3);
    assert_ping(&lab, 1, overlay(3), 3);
    assert_eq!(lab.wg_pid(1).unwrap(), Some(new), "wireguard-go restarted again");
}
