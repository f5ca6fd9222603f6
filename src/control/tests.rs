use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::socket::{answer, Limits};
use super::*;
use crate::vip::{CandidateStatus, Claim, PeerState};

fn addr(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn names(a: Ipv6Addr) -> Option<String> {
    ["a", "b", "c"]
        .into_iter()
        .zip(1u16..)
        .find(|&(_, i)| a == Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, i))
        .map(|(n, _)| n.to_owned())
}

fn by_name(name: &str) -> Option<Ipv6Addr> {
    (1u16..=3)
        .map(|i| Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, i))
        .find(|&a| names(a).as_deref() == Some(name))
}

fn candidate(address: &str, rank: usize) -> CandidateStatus {
    CandidateStatus {
        address: addr(address),
        rank,
        me: rank == 0,
        live: rank == 0,
        healthy: false,
        state: None,
        last_heard_ms: None,
        rtt_us: None,
    }
}

/// Two VIPs: one held here with three candidates (one unnamed and dead), one still listening alone.
pub(super) fn vip_statuses() -> Vec<VipStatus> {
    let a = addr("fd00:5d::1");
    let mut held = vec![
        candidate("fd00:5d::1", 0),
        candidate("fd00:5d::2", 1),
        candidate("fd00:5d::9", 2),
    ];
    held[0].healthy = true;
    held[0].state = Some(PeerState::Holding);
    held[1] = CandidateStatus {
        live: true,
        healthy: true,
        state: Some(PeerState::Standby),
        last_heard_ms: Some(120),
        rtt_us: Some(1234),
        ..held[1].clone()
    };
    vec![
        VipStatus {
            vip: addr("fd00:5d::100"),
            role: PeerState::Holding,
            healthy: true,
            claim: Some(Claim {
                epoch: Epoch { term: 3, rank: 0 },
                holder: a,
            }),
            routed_to: Some(a),
            candidates: held,
            confirmed: Some((1, 2)),
            transport_up: true,
        },
        VipStatus {
            vip: addr("fd00:5d::200"),
            role: PeerState::Listening,
            healthy: false,
            claim: None,
            routed_to: None,
            candidates: vec![candidate("fd00:5d::1", 0)],
            confirmed: None,
            transport_up: true,
        },
    ]
}

pub(super) fn vip_views() -> Vec<NodeVip> {
    vip_statuses()
        .iter()
        .map(|s| NodeVip::from_status(s, None, &names))
        .collect()
}

pub(super) fn daemon_status() -> DaemonStatus {
    DaemonStatus {
        version: "0.1.0".to_owned(),
        interface: "sdwan0".to_owned(),
        address: addr("fd00:5d::1"),
        backend: "kernel".to_owned(),
        ready: true,
        failover_socket: Some(SocketView {
            address: "[fd00:5d::1]:851".parse().unwrap(),
            bound: true,
            error: None,
        }),
        metrics: Some(EndpointView {
            listen: "127.0.0.1:9581".parse().unwrap(),
            serving: true,
            error: None,
        }),
        metrics_overlay: None,
        registry: None,
        workload: None,
        k3s: None,
        peers: vec![
            NodePeer {
                name: "b".to_owned(),
                public_key: "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=".to_owned(),
                address: addr("fd00:5d::2"),
                endpoint: Some("192.0.2.2:51820".parse().unwrap()),
                last_handshake_secs_ago: Some(65),
                last_received_secs_ago: Some(12),
                rx_bytes: 1536 * 1024,
                tx_bytes: 300,
            },
            NodePeer {
                name: "c".to_owned(),
                public_key: "i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=".to_owned(),
                address: addr("fd00:5d::3"),
                endpoint: Some("[2001:db8::3]:51820".parse().unwrap()),
                last_handshake_secs_ago: None,
                last_received_secs_ago: None,
                rx_bytes: 0,
                tx_bytes: 0,
            },
        ],
        vips: vip_views(),
    }
}

/// A daemon loop that answers from the fixtures and moves VIPs to whoever is asked (or `b`).
fn fake_daemon() -> mpsc::Sender<Incoming> {
    let (tx, mut rx) = mpsc::channel::<Incoming>(8);
    tokio::spawn(async move {
        while let Some((request, reply)) = rx.recv().await {
            let response = match request {
                Request::Status => Response::Status(Box::new(daemon_status())),
                Request::VipList => Response::Vips(vip_views()),
                Request::VipMove { vip, to } => match to.as_deref().map(|to| resolve_peer(to, by_name)) {
                    Some(Err(refused)) => refused,
                    Some(Ok(to)) => Response::Moved {
                        vip,
                        to: NamedAddr::new(to, &names),
                    },
                    None => Response::Moved {
                        vip,
                        to: NamedAddr::new(addr("fd00:5d::2"), &names),
                    },
                },
            };
            let _ = reply.send(response);
        }
    });
    tx
}

/// A bound and served socket in a fresh directory (kept alive by the returned guard).
async fn served(requests: mpsc::Sender<Incoming>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/sdwand.sock");
    let listener = bind(&path).await.unwrap();
    tokio::spawn(serve(listener, requests));
    (dir, path)
}

/// Sends raw bytes and reads the daemon's answer line (empty when it closes without one).
async fn raw(path: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(path).await.unwrap();
    // The daemon may stop reading (and close) before all of an oversized request is written.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    // Closing with part of a request unread resets the connection after the answer: read only the line.
    let mut out = String::new();
    BufReader::new(stream).read_line(&mut out).await.unwrap();
    out
}

fn error_code(line: &str) -> String {
    match serde_json::from_str::<Response>(line).unwrap() {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn requests_have_the_documented_wire_shape() {
    let cases = [
        (Request::Status, r#"{"cmd":"status"}"#),
        (Request::VipList, r#"{"cmd":"vip_list"}"#),
        (
            Request::VipMove {
                vip: addr("fd00:5d::100"),
                to: Some("b".to_owned()),
            },
            r#"{"cmd":"vip_move","vip":"fd00:5d::100","to":"b"}"#,
        ),
        (
            Request::VipMove {
                vip: addr("fd00:5d::100"),
                to: None,
            },
            r#"{"cmd":"vip_move","vip":"fd00:5d::100"}"#,
        ),
    ];
    for (request, json) in cases {
        assert_eq!(serde_json::to_string(&request).unwrap(), json);
        assert_eq!(serde_json::from_str::<Request>(json).unwrap(), request);
    }
}

/// The k3s section of an accepted bootstrap handshake whose drop-in is written.
pub(super) fn k3s_view() -> K3sView {
    K3sView {
        role: "server".to_owned(),
        bootstrap: true,
        handshake: K3sHandshake::Accepted,
        refused_code: None,
        problem: None,
        cluster_id: Some("9b164fe3".to_owned()),
        cluster_name: Some("prod".to_owned()),
        cluster_state: Some("active".to_owned()),
        drop_in: "/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml".to_owned(),
        drop_in_sha256: Some("0123456789ab".to_owned()),
        written_at_unix: Some(1_796_000_000),
    }
}

#[test]
fn the_k3s_section_has_the_documented_json_shape() {
    let mut s = daemon_status();
    s.k3s = Some(k3s_view());
    let json = serde_json::to_value(Response::Status(Box::new(s))).unwrap();
    assert_eq!(
        json["data"]["k3s"],
        serde_json::json!({
            "role": "server", "bootstrap": true, "handshake": "accepted", "refused_code": null, "problem": null,
            "cluster_id": "9b164fe3", "cluster_name": "prod", "cluster_state": "active",
            "drop_in": "/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml", "drop_in_sha256": "0123456789ab",
            "written_at_unix": 1_796_000_000u64
        })
    );
    // Without `[k3s]` (and from daemons that predate it) there is no section.
    let without = serde_json::to_value(Response::Status(Box::new(daemon_status()))).unwrap();
    assert!(without["data"].get("k3s").is_none(), "{without}");
    let mut old = without.clone();
    old["data"].as_object_mut().unwrap().remove("k3s");
    assert!(matches!(serde_json::from_value::<Response>(old).unwrap(), Response::Status(s) if s.k3s.is_none()));
}

#[test]
fn responses_round_trip_through_json() {
    let with_k3s = DaemonStatus {
        k3s: Some(k3s_view()),
        ..daemon_status()
    };
    let responses = [
        Response::Status(Box::new(daemon_status())),
        Response::Status(Box::new(with_k3s)),
        Response::Vips(vip_views()),
        Response::Moved {
            vip: addr("fd00:5d::100"),
            to: NamedAddr::new(addr("fd00:5d::2"), &names),
        },
        Response::error(code::NOT_HOLDER, "no"),
    ];
    for response in responses {
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), response, "{json}");
    }
    assert_eq!(
        serde_json::to_string(&Response::error(code::BAD_REQUEST, "x")).unwrap(),
        r#"{"type":"error","data":{"code":"bad_request","message":"x"}}"#
    );
}

#[test]
fn views_name_addresses_and_flag_single_candidates() {
    let [held, alone] = <[NodeVip; 2]>::try_from(vip_views()).unwrap();
    assert_eq!(held.role, "holding");
    assert_eq!(held.holder.as_ref().unwrap().to_string(), "a (fd00:5d::1)");
    assert_eq!(held.epoch.unwrap().to_string(), "3.0");
    assert_eq!(held.confirmed, Some(ConfirmedView { acked: 1, peers: 2 }));
    assert_eq!(held.candidates[1].name.as_deref(), Some("b"));
    assert_eq!(held.candidates[1].state.as_deref(), Some("standby"));
    assert_eq!(held.candidates[2].name, None);
    assert!(!held.single_candidate);
    assert!(alone.single_candidate);
    assert_eq!((alone.holder, alone.epoch, alone.routed_to), (None, None, None));
}

#[test]
fn move_refusals_and_targets_have_codes() {
    let vip = addr("fd00:5d::100");
    let b = addr("fd00:5d::2");
    let cases = [
        (MoveError::NotHolder(Some(b)), code::NOT_HOLDER),
        (MoveError::InProgress(b), code::MOVE_IN_PROGRESS),
        (MoveError::NotCandidate(b), code::NOT_CANDIDATE),
        (MoveError::SelfTarget(b), code::SELF_TARGET),
        (MoveError::NotReady(b), code::NOT_READY),
        (MoveError::NoSuccessor, code::NO_SUCCESSOR),
    ];
    for (e, expected) in cases {
        let Response::Error { code, message } = Response::move_refused(vip, &e, &names) else {
            panic!("not an error")
        };
        assert_eq!(code, expected);
        assert!(message.starts_with("cannot move fd00:5d::100: "), "{message}");
    }
    let Response::Error { message, .. } = Response::move_refused(vip, &MoveError::NotHolder(Some(b)), &names) else {
        panic!("not an error")
    };
    assert_eq!(
        message,
        "cannot move fd00:5d::100: this node does not hold it; b (fd00:5d::2) does: run this on b, or use \
         `sdwanctl registry move`"
    );
    assert_eq!(resolve_peer("b", by_name), Ok(b));
    assert_eq!(resolve_peer("fd00:5d::77", by_name), Ok(addr("fd00:5d::77")));
    let Err(Response::Error { code, .. }) = resolve_peer("zz", by_name) else {
        panic!("resolved an unknown name")
    };
    assert_eq!(code, code::UNKNOWN_PEER);
}

#[tokio::test]
async fn each_request_round_trips_through_serve() {
    let (_dir, path) = served(fake_daemon()).await;
    assert_eq!(
        call(&path, &Request::Status).await.unwrap(),
        Response::Status(Box::new(daemon_status()))
    );
    assert_eq!(
        call(&path, &Request::VipList).await.unwrap(),
        Response::Vips(vip_views())
    );
    let vip = addr("fd00:5d::100");
    for (to, expected) in [(Some("c"), "c (fd00:5d::3)"), (None, "b (fd00:5d::2)")] {
        let request = Request::VipMove {
            vip,
            to: to.map(str::to_owned),
        };
        let Response::Moved { vip: moved, to } = call(&path, &request).await.unwrap() else {
            panic!("not moved")
        };
        assert_eq!((moved, to.to_string().as_str()), (vip, expected));
    }
    let request = Request::VipMove {
        vip,
        to: Some("nobody".to_owned()),
    };
    let Response::Error { code, .. } = call(&path, &request).await.unwrap() else {
        panic!("moved to nobody")
    };
    assert_eq!(code, code::UNKNOWN_PEER);
}

#[tokio::test]
async fn malformed_lines_are_bad_requests() {
    let (_dir, path) = served(fake_daemon()).await;
    for line in [
        &b"hello\n"[..],
        b"{\"cmd\":\"reboot\"}\n",
        b"{\"cmd\":\"vip_move\",\"vip\":\"10.0.0.1\"}\n",
        b"{\"cmd\":\"status\"} trailing\n",
        b"\n",
        b"\xff\xfe\0\n",
    ] {
        let answer = raw(&path, line).await;
        assert!(answer.ends_with('\n'), "{answer:?}");
        assert_eq!(error_code(&answer), code::BAD_REQUEST, "{line:?}");
    }
    // The daemon keeps serving.
    assert!(matches!(call(&path, &Request::Status).await, Ok(Response::Status(_))));
}

#[tokio::test]
async fn oversized_line_is_refused() {
    let (_dir, path) = served(fake_daemon()).await;
    let mut line = br#"{"cmd":"status","pad":""#.to_vec();
    line.resize(MAX_REQUEST + 100, b'x');
    line.extend_from_slice(b"\"}\n");
    let answer = raw(&path, &line).await;
    assert_eq!(error_code(&answer), code::BAD_REQUEST);
    assert!(answer.contains("longer than 65536 bytes"), "{answer}");
}

#[tokio::test]
async fn last_line_without_newline_and_silent_probes_are_fine() {
    let (_dir, path) = served(fake_daemon()).await;
    let answer = raw(&path, br#"{"cmd":"vip_list"}"#).await;
    assert!(
        matches!(serde_json::from_str(&answer), Ok(Response::Vips(_))),
        "{answer}"
    );
    assert_eq!(raw(&path, b"").await, "");
}

#[tokio::test]
async fn a_stopped_daemon_loop_answers_shutting_down() {
    let (closed, _) = mpsc::channel::<Incoming>(1);
    let (_dir, path) = served(closed).await;
    assert_eq!(
        error_code(&raw(&path, b"{\"cmd\":\"status\"}\n").await),
        code::SHUTTING_DOWN
    );

    let (dropping, mut rx) = mpsc::channel::<Incoming>(1);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (_dir, path) = served(dropping).await;
    let Response::Error { code, message } = call(&path, &Request::Status).await.unwrap() else {
        panic!("answered")
    };
    assert_eq!(
        (code.as_str(), message.as_str()),
        (code::SHUTTING_DOWN, "sdwand is shutting down")
    );
}

#[tokio::test]
async fn slow_clients_and_a_busy_daemon_time_out() {
    let limits = Limits {
        read: Duration::from_millis(50),
        answer: Duration::from_millis(50),
    };
    let (_writer, silent) = tokio::io::duplex(64);
    let (tx, _rx) = mpsc::channel::<Incoming>(1);
    let refused = answer(silent, &tx, limits).await.unwrap();
    assert_eq!(error_code(&serde_json::to_string(&refused).unwrap()), code::BAD_REQUEST);

    // Nobody receives: the request is queued, never answered.
    let busy = answer(&b"{\"cmd\":\"status\"}\n"[..], &tx, limits).await.unwrap();
    assert_eq!(error_code(&serde_json::to_string(&busy).unwrap()), code::DAEMON_BUSY);
    // The queue is full now: the request is not even taken.
    let busy = answer(&b"{\"cmd\":\"status\"}\n"[..], &tx, limits).await.unwrap();
    assert_eq!(error_code(&serde_json::to_string(&busy).unwrap()), code::DAEMON_BUSY);
}

#[tokio::test]
async fn socket_is_private_and_its_directory_created() {
    let (dir, path) = served(fake_daemon()).await;
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(dir.path().join("run").is_dir());
    // Nothing but the socket is left in the directory.
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("run")).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[tokio::test]
async fn second_bind_on_a_live_socket_fails() {
    let (_dir, path) = served(fake_daemon()).await;
    let e = bind(&path).await.unwrap_err();
    assert!(matches!(e, ControlError::AlreadyRunning { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("already listening on {}", path.display())),
        "{e}"
    );
    // The first daemon still answers.
    assert!(matches!(call(&path, &Request::Status).await, Ok(Response::Status(_))));
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sdwand.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let e = call(&path, &Request::Status).await.unwrap_err();
    assert!(matches!(e, ControlError::Stale { .. }), "{e:?}");
    tokio::spawn(serve(bind(&path).await.unwrap(), fake_daemon()));
    assert!(matches!(call(&path, &Request::Status).await, Ok(Response::Status(_))));
}

#[tokio::test]
async fn other_files_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sdwand.sock");
    std::fs::write(&path, "keep me").unwrap();
    let e = bind(&path).await.unwrap_err();
    assert!(matches!(e, ControlError::NotASocket { .. }), "{e:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[tokio::test]
async fn a_missing_socket_asks_whether_sdwand_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sdwand.sock");
    let e = call(&path, &Request::Status).await.unwrap_err();
    assert!(matches!(e, ControlError::NotRunning { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "is sdwand running? (socket {} not found; see daemon.control_socket, or pass --socket)",
            path.display()
        )
    );
}
