//! `down` removes a lab that was only partly built (no state file, a stale UAPI socket), is idempotent, and
//! never touches a process the lab did not start.

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use sdwan_lab::process::ProcId;
use sdwan_lab::{Lab, LabGuard, Layout};

use crate::common::{require_root, unique_name};

#[test]
fn down_removes_a_partial_lab_and_spares_strangers() {
    require_root();
    let name = unique_name("d");
    let layout = Layout::new(&name).unwrap();
    // Cleans up should an assertion fail half-way (down is what is under test, and it is idempotent).
    let _guard = LabGuard::for_name(&name);
    let (hub, p1) = (layout.hub_netns(), layout.peer_netns(1));
    for ns in [&hub, &p1] {
        sdwan_lab::cmd::ip(&["netns", "add", ns]).unwrap();
    }
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    let socket = format!("/var/run/wireguard/{}.sock", layout.wg_if(1));
    drop(UnixListener::bind(&socket).unwrap()); // stale: nothing listens
                                                // A process in the lab's namespace that the lab did not start.
    let mut stranger = Command::new("ip")
        .args(["netns", "exec", &p1, "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stranger_id = ProcId::of(stranger.id()).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        sdwan_lab::process::comm(stranger_id.pid).as_deref() == Some("sleep")
    })
    .unwrap();

    let report = Lab::down(&name).unwrap();
    let mut removed = report.namespaces.clone();
    removed.sort();
    let mut expected = vec![hub.clone(), p1.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(report.sockets.len(), 1, "{report:?}");
    assert!(!std::path::Path::new(&socket).exists());
    assert!(stranger_id.is_alive(), "down killed a process it did not start");
    assert!(
        report.warnings.iter().any(|w| w.contains(&stranger_id.pid.to_string())),
        "{report:?}"
    );
    let netns = sdwan_lab::cmd::netns_list().unwrap();
    assert!(!netns.contains(&hub) && !netns.contains(&p1), "{netns:?}");

    let again = Lab::down(&name).unwrap();
    assert!(again.removed_nothing(), "{again:?}");

    let _ = stranger.kill();
    let _ = stranger.wait();
}
