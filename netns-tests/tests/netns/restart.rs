//! Restarting `sdwand` with `teardown_on_exit = false` leaves the data plane alone: a continuous ping across
//! both restarts loses nothing, and the new daemon adopts the running `wireguard-go`.

use std::time::Duration;

use sdwan_lab::Reload;

use crate::common::{lab, overlay, POLL};

/// Echo requests every 50 ms for 15 s: long enough to span both restarts with margin.
const COUNT: u32 = 300;

#[test]
fn restarts_lose_no_packet_and_adopt_wireguard_go() {
    let mut lab = lab("r", 2);
    for i in [1, 2] {
        lab.rewrite_config(i, |c| c.daemon.teardown_on_exit = false).unwrap();
        assert_eq!(lab.reload(i, Duration::from_secs(5)).unwrap(), Reload::Applied, "p{i}");
    }
    let wg_before = [
        lab.wg_pid(1).unwrap().expect("p1 wg"),
        lab.wg_pid(2).unwrap().expect("p2 wg"),
    ];

    let argv = [
        "ping",
        "-n",
        "-i",
        "0.05",
        "-W",
        "1",
        "-c",
        &COUNT.to_string(),
        &overlay(2).to_string(),
    ];
    let mut ping = lab.spawn_in(1, &argv).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(15), POLL, || {
        ping.stdout_so_far().matches("bytes from").count() >= 10
    })
    .unwrap_or_else(|e| panic!("the ping does not get going: {e}\n{}", ping.stdout_so_far()));

    for i in [2, 1] {
        let old = lab.sdwand_pid(i).unwrap().expect("running");
        let status = lab.restart_sdwand(i).unwrap().expect("started by this lab");
        assert!(status.success(), "p{i}'s sdwand exited with {status} on SIGTERM");
        lab.wait_ready(i, Duration::from_secs(10)).unwrap();
        assert_ne!(lab.sdwand_pid(i).unwrap(), Some(old));
        assert_eq!(
            lab.wg_pid(i).unwrap(),
            Some(wg_before[i - 1]),
            "p{i}'s wireguard-go was replaced"
        );
    }
    assert!(
        ping.is_running(),
        "the ping ended before both restarts were done: raise COUNT"
    );

    let done = ping.wait(Duration::from_secs(30)).unwrap();
    let stats =
        sdwan_lab::ping::parse_summary(&done.stdout, COUNT).unwrap_or_else(|| panic!("no summary: {}", done.stdout));
    assert_eq!(
        stats.lost(),
        0,
        "packets lost across the restarts: {stats}\n{}",
        done.stdout
    );
    for i in [1, 2] {
        assert_eq!(
            lab.wg_pid(i).unwrap(),
            Some(wg_before[i - 1]),
            "p{i}'s wireguard-go changed"
        );
    }
}
