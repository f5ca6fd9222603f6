//! A broken configuration is refused with its file and line, on reload and by `sdwand check-config`, and the
//! running daemon and its data plane stay exactly as they were.

use std::process::Command;
use std::time::Duration;

use sdwan_lab::nodecfg::line_of;
use sdwan_lab::{Lab, Reload};

use crate::common::{allowed, assert_ping, overlay, static_lab, POLL};

/// What a reload must not change: peers (key, endpoint, allowed IPs) and the interface's addresses and routes.
fn snapshot(lab: &Lab) -> (Vec<String>, String, String) {
    let dev = lab.device(1).unwrap();
    let mut peers: Vec<String> = dev
        .peers
        .iter()
        .map(|p| {
            format!(
                "{} {:?} {:?}",
                p.config.public_key.to_base64(),
                p.config.endpoint,
                allowed(p)
            )
        })
        .collect();
    peers.sort();
    let wg = lab.wg_if(1).unwrap();
    let addrs = lab
        .exec_ok(1, &["ip", "-6", "addr", "show", "dev", &wg, "scope", "global"])
        .unwrap();
    let routes = lab.exec_ok(1, &["ip", "-6", "route", "show", "dev", &wg]).unwrap();
    (peers, addrs, routes)
}

/// p1's current config with `from` replaced by `to` on the first line containing it; and that line.
fn broken(lab: &Lab, from: &str, to: &str) -> (String, usize) {
    let good = lab.config(1).unwrap().render().unwrap();
    let line = line_of(&good, from).unwrap_or_else(|| panic!("{from:?} not in the config"));
    (good.replacen(from, to, 1), line)
}

#[test]
fn broken_config_is_refused_with_file_and_line() {
    let lab = static_lab("bc", 2);
    let before = snapshot(&lab);
    let pid = lab.sdwand_pid(1).unwrap().expect("running");
    let path = lab.config_path(1);

    // An invalid public key for member p2.
    let p2_key = lab.peer(2).unwrap().public_key.clone();
    let (text, line) = broken(&lab, &p2_key, "not-a-key");
    lab.write_raw_config(1, &text).unwrap();
    let offset = lab.log_text(1).unwrap().len();
    assert_eq!(lab.reload(1, Duration::from_secs(5)).unwrap(), Reload::Rejected);
    let location = format!("{}:{line}", path.display());
    sdwan_lab::wait_until(Duration::from_secs(2), POLL, || {
        lab.log_since(1, offset).unwrap().contains(&location)
    })
    .unwrap_or_else(|e| {
        panic!(
            "the log does not name {location}: {e}\n{}",
            lab.log_since(1, offset).unwrap()
        )
    });

    assert_eq!(
        lab.sdwand_pid(1).unwrap(),
        Some(pid),
        "sdwand did not survive the bad reload"
    );
    assert_eq!(snapshot(&lab), before, "the data plane changed on a refused reload");
    assert_ping(&lab, 1, overlay(2), 3);

    // check-config names file and line too, for the bad key and for a bad address.
    let bin = sdwan_lab::cmd::sdwand_bin().unwrap();
    let (bad_addr, addr_line) = broken(&lab, "address = \"fd00:5d::1\"", "address = \"fd00:5d::zz\"");
    for (text, line) in [(text, line), (bad_addr, addr_line)] {
        lab.write_raw_config(1, &text).unwrap();
        let out = Command::new(&bin).arg("check-config").arg(&path).output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "check-config accepted:\n{text}");
        let location = format!("{}:{line}", path.display());
        assert!(all.contains(&location), "check-config does not name {location}: {all}");
    }
}
