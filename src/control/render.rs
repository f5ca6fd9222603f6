//! The text `sdwanctl` prints for the daemon's answers. Pure: every function returns a `String` (ending in
//! a newline) and prints nothing.

use std::fmt::Write;
use std::net::Ipv6Addr;
use std::time::Duration;

use super::{
    DaemonStatus, EndpointView, K3sHandshake, K3sView, NamedAddr, NodeCandidate, NodePeer, NodeVip, RegistryView,
    SocketView,
};

/// `sdwanctl status`: the daemon, a peer table and a one-line summary per VIP.
pub fn status(s: &DaemonStatus) -> String {
    let address = if s.address.is_unspecified() {
        "not assigned yet (it comes from the enrollment)".to_owned()
    } else {
        s.address.to_string()
    };
    let mut out = format!(
        "sdwand {}\ninterface  {}\naddress    {}\nbackend    {}\nready      {}\n",
        s.version,
        s.interface,
        address,
        s.backend,
        yes_no(s.ready)
    );
    if let Some(registry) = &s.registry {
        let _ = writeln!(out, "registry   {}", registry_line(registry));
    }
    if let Some(k3s) = &s.k3s {
        out += &k3s_lines(k3s);
    }
    if let Some(socket) = &s.failover_socket {
        let _ = writeln!(out, "failover   {}", failover_socket(socket, s.vips.is_empty()));
    }
    if let Some(metrics) = &s.metrics {
        let _ = writeln!(out, "metrics    {}", endpoint(metrics));
    }
    if let Some(metrics) = &s.metrics_overlay {
        let _ = writeln!(out, "metrics    {} (overlay)", endpoint(metrics));
    }
    if let Some(workload) = s.workload.as_ref().filter(|w| !w.prefixes.is_empty()) {
        let prefixes: Vec<String> = workload
            .prefixes
            .iter()
            .map(|p| format!("{} ({})", p.prefix, p.kind))
            .collect();
        let _ = writeln!(out, "prefixes   {}, mtu {}", prefixes.join(", "), workload.mtu);
    }
    out.push('\n');
    if s.peers.is_empty() {
        out.push_str("no peers\n");
    } else {
        let rows: Vec<_> = s.peers.iter().map(peer_row).collect();
        out += &table(
            &["PEER", "ADDRESS", "ENDPOINT", "HANDSHAKE", "RECEIVED", "RX", "TX"],
            &rows,
            "",
        );
    }
    out.push('\n');
    if s.vips.is_empty() {
        out.push_str("no VIPs\n");
    } else {
        let rows: Vec<_> = s
            .vips
            .iter()
            .map(|v| {
                vec![
                    v.target(),
                    v.role.clone(),
                    yes_no(v.healthy).to_owned(),
                    v.holder
                        .as_ref()
                        .map_or_else(|| "none known".to_owned(), NamedAddr::to_string),
                    v.epoch.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                    if v.single_candidate { "single candidate" } else { "" }.to_owned(),
                ]
            })
            .collect();
        out += &table(&["VIP", "ROLE", "HEALTHY", "HOLDER", "EPOCH", ""], &rows, "");
    }
    out
}

/// The failover socket's line of [`status`].
fn failover_socket(s: &SocketView, no_vips: bool) -> String {
    match (s.bound, &s.error) {
        (true, _) => format!("{} bound", s.address),
        (false, _) if no_vips => "unused (no VIPs)".to_owned(),
        (false, Some(e)) => format!("{} NOT BOUND, this node claims no VIP: {e}", s.address),
        (false, None) => format!("{} not bound yet, this node claims no VIP", s.address),
    }
}

/// The registry's line of [`status`]: its state, then the problem and its fix while calls fail.
fn registry_line(r: &RegistryView) -> String {
    let state = match (r.enrolled, r.up) {
        (false, _) => "ENROLLING",
        (true, true) => "up",
        (true, false) => "DOWN",
    };
    match &r.problem {
        Some(problem) => format!("{} {state}: {problem}", r.url),
        None => format!("{} {state}", r.url),
    }
}

/// The k3s lines of [`status`]: the role and the handshake (with the cluster once accepted, the
/// registry's code and the problem otherwise), then the drop-in.
fn k3s_lines(k: &K3sView) -> String {
    let how = if k.bootstrap { "bootstrap" } else { "join" };
    let mut out = format!("k3s        {} ({how}), handshake ", k.role);
    match k.handshake {
        K3sHandshake::Accepted => {
            let _ = write!(
                out,
                "accepted: cluster {} ({}) {}",
                k.cluster_name.as_deref().unwrap_or("?"),
                k.cluster_id.as_deref().unwrap_or("?"),
                k.cluster_state.as_deref().unwrap_or("?")
            );
        }
        K3sHandshake::Refused => {
            let _ = write!(out, "REFUSED ({})", k.refused_code.as_deref().unwrap_or("no code"));
        }
        K3sHandshake::Pending => out.push_str("pending"),
    }
    match &k.problem {
        Some(problem) => {
            let _ = writeln!(out, ": {problem}");
        }
        None => out.push('\n'),
    }
    let _ = write!(out, "drop-in    {}", k.drop_in);
    match (&k.drop_in_sha256, k.written_at_unix) {
        (Some(hash), Some(at)) => {
            let at = std::time::UNIX_EPOCH + Duration::from_secs(at);
            let _ = writeln!(out, " sha256:{hash} written {}", humantime::format_rfc3339_seconds(at));
        }
        (Some(hash), None) => {
            let _ = writeln!(out, " sha256:{hash}");
        }
        (None, _) => out.push_str(" not written yet\n"),
    }
    out
}

/// The metrics endpoint's line of [`status`].
fn endpoint(m: &EndpointView) -> String {
    match (m.serving, &m.error) {
        (true, _) => format!("{} serving", m.listen),
        (false, Some(e)) => format!("{} NOT SERVING (retrying): {e}", m.listen),
        (false, None) => format!("{} not serving yet", m.listen),
    }
}

/// `sdwanctl vip list`: each VIP in detail, with its candidates.
pub fn vips(vips: &[NodeVip]) -> String {
    if vips.is_empty() {
        return "no VIPs configured\n".to_owned();
    }
    let blocks: Vec<_> = vips.iter().map(vip).collect();
    blocks.join("\n")
}

/// `sdwanctl vip move`: what was started.
pub fn moved(vip: Ipv6Addr, to: &NamedAddr) -> String {
    format!("handover of {vip} to {to} started; follow it with `sdwanctl vip list`\n")
}

/// One VIP of [`vips`].
fn vip(v: &NodeVip) -> String {
    let mut out = match v.prefix {
        Some(p) => format!("floating prefix {p} (key {})\n", v.vip),
        None => format!("VIP {}\n", v.vip),
    };
    let holder = v
        .holder
        .as_ref()
        .map_or_else(|| "none known".to_owned(), NamedAddr::to_string);
    let _ = writeln!(out, "  holder     {holder}");
    if let Some(epoch) = v.epoch {
        let _ = writeln!(out, "  epoch      {epoch}");
    }
    let health = if v.healthy { "healthy" } else { "unhealthy" };
    let _ = writeln!(out, "  this node  {}, {health}", v.role);
    if let Some(c) = v.confirmed {
        let _ = writeln!(out, "  confirmed  {}/{} peers", c.acked, c.peers);
    }
    if let Some(r) = &v.routed_to {
        let _ = writeln!(out, "  routed to  {r}");
    }
    // Only candidates exchange heartbeats: a follower knows the candidates' order, not their liveness.
    let follower = v.role == "follower";
    let header: &[&str] = if follower {
        &["RANK", "NAME", "ADDRESS"]
    } else {
        &[
            "RANK",
            "NAME",
            "ADDRESS",
            "STATE",
            "LIVE",
            "HEALTHY",
            "LAST HEARD",
            "RTT",
        ]
    };
    let rows: Vec<_> = v
        .candidates
        .iter()
        .map(|c| {
            let mut row = candidate_row(c);
            row.truncate(header.len());
            row
        })
        .collect();
    out += &table(header, &rows, "  ");
    if v.single_candidate {
        out.push_str("  warning: fewer than two candidates; nobody can take this VIP over if its holder fails\n");
    }
    out
}

fn peer_row(p: &NodePeer) -> Vec<String> {
    vec![
        p.name.clone(),
        p.address.to_string(),
        p.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
        p.last_handshake_secs_ago
            .map_or_else(|| "never".to_owned(), |s| format!("{} ago", seconds(s))),
        match (p.last_received_secs_ago, p.rx_bytes) {
            (Some(s), _) => format!("{} ago", seconds(s)),
            (None, 0) => "never".to_owned(),
            // Bytes, but none new since sdwand started.
            (None, _) => "-".to_owned(),
        },
        bytes(p.rx_bytes),
        bytes(p.tx_bytes),
    ]
}

fn candidate_row(c: &NodeCandidate) -> Vec<String> {
    let name = c.name.clone().unwrap_or_else(|| "-".to_owned());
    vec![
        c.rank.to_string(),
        if c.me { format!("{name} (me)") } else { name },
        c.address.to_string(),
        // A candidate not heard within its dead time is dead, whatever it last said it was.
        if c.live {
            c.state.clone().unwrap_or_else(|| "-".to_owned())
        } else if c.state.is_some() {
            "dead".to_owned()
        } else {
            "-".to_owned()
        },
        yes_no(c.live).to_owned(),
        yes_no(c.healthy).to_owned(),
        c.last_heard_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{} ago", duration(ms))),
        c.rtt_us.map_or_else(|| "-".to_owned(), rtt),
    ]
}

/// Left-aligned columns two spaces apart, each line prefixed with `indent`, trailing blanks trimmed.
fn table(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = indent.to_owned();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `850ms`, `4.2s`, `3m 5s`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => seconds(ms / 1000),
    }
}

/// `5s`, `1m 5s`, `2h 3m 1s`.
fn seconds(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

/// `850µs`, `12.3ms`.
fn rtt(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else {
        format!("{:.1}ms", us as f64 / 1000.0)
    }
}

/// `512 B`, `1.5 KiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::tests::{daemon_status, k3s_view, vip_views};

    #[test]
    fn status_shows_the_k3s_handshake_and_drop_in() {
        let mut s = daemon_status();
        s.k3s = Some(k3s_view());
        let text = status(&s);
        assert!(
            text.contains(
                "ready      yes\n\
                 k3s        server (bootstrap), handshake accepted: cluster prod (9b164fe3) active\n\
                 drop-in    /etc/rancher/k3s/config.yaml.d/50-sdwand.yaml sha256:0123456789ab written \
                 2026-11-30T00:53:20Z\n\
                 failover   "
            ),
            "{text}"
        );
        s.k3s = Some(K3sView {
            role: "agent".into(),
            bootstrap: false,
            handshake: K3sHandshake::Refused,
            refused_code: Some("409 cluster_error".into()),
            problem: Some("cluster \"c9\" is in error state".into()),
            cluster_id: None,
            cluster_name: None,
            cluster_state: None,
            drop_in_sha256: None,
            written_at_unix: None,
            ..k3s_view()
        });
        let text = status(&s);
        assert!(
            text.contains(
                "k3s        agent (join), handshake REFUSED (409 cluster_error): cluster \"c9\" is in error state\n\
                 drop-in    /etc/rancher/k3s/config.yaml.d/50-sdwand.yaml not written yet\n"
            ),
            "{text}"
        );
        s.k3s = Some(K3sView {
            handshake: K3sHandshake::Pending,
            refused_code: None,
            problem: Some("registry unreachable".into()),
            ..s.k3s.unwrap()
        });
        assert!(
            status(&s).contains("k3s        agent (join), handshake pending: registry unreachable\n"),
            "{}",
            status(&s)
        );
        s.k3s = None;
        assert!(!status(&s).contains("k3s"));
    }

    #[test]
    fn vip_list_fixture() {
        let expected = "\
VIP fd00:5d::100
  holder     a (fd00:5d::1)
  epoch      3.0
  this node  holding, healthy
  confirmed  1/2 peers
  routed to  a (fd00:5d::1)
  RANK  NAME    ADDRESS     STATE    LIVE  HEALTHY  LAST HEARD  RTT
  0     a (me)  fd00:5d::1  holding  yes   yes      -           -
  1     b       fd00:5d::2  standby  yes   yes      120ms ago   1.2ms
  2     -       fd00:5d::9  -        no    no       -           -

VIP fd00:5d::200
  holder     none known
  this node  listening, unhealthy
  RANK  NAME    ADDRESS     STATE  LIVE  HEALTHY  LAST HEARD  RTT
  0     a (me)  fd00:5d::1  -      yes   no       -           -
  warning: fewer than two candidates; nobody can take this VIP over if its holder fails
";
        assert_eq!(vips(&vip_views()), expected);
        assert_eq!(vips(&[]), "no VIPs configured\n");
        let mut follower = vip_views();
        follower[0].role = "follower".into();
        let text = vips(&follower[..1]);
        assert!(
            text.contains("  RANK  NAME    ADDRESS\n  0     a (me)  fd00:5d::1\n"),
            "{text}"
        );
    }

    #[test]
    fn status_fixture() {
        let expected = "\
sdwand 0.1.0
interface  sdwan0
address    fd00:5d::1
backend    kernel
ready      yes
failover   [fd00:5d::1]:851 bound
metrics    127.0.0.1:9581 serving

PEER  ADDRESS     ENDPOINT             HANDSHAKE  RECEIVED  RX       TX
b     fd00:5d::2  192.0.2.2:51820      1m 5s ago  12s ago   1.5 MiB  300 B
c     fd00:5d::3  [2001:db8::3]:51820  never      never     0 B      0 B

VIP           ROLE       HEALTHY  HOLDER          EPOCH
fd00:5d::100  holding    yes      a (fd00:5d::1)  3.0
fd00:5d::200  listening  no       none known      -      single candidate
";
        assert_eq!(status(&daemon_status()), expected);
    }

    #[test]
    fn a_candidate_not_heard_within_its_dead_time_shows_as_dead() {
        let mut views = vip_views();
        views[0].candidates[1].live = false;
        let text = vips(&views[..1]);
        assert!(
            text.contains("  1     b       fd00:5d::2  dead     no    yes      120ms ago   1.2ms\n"),
            "{text}"
        );
    }

    #[test]
    fn status_shows_the_nodes_workload_prefixes_and_mtu() {
        let mut s = daemon_status();
        assert!(!status(&s).contains("prefixes"));
        s.workload = Some(crate::control::WorkloadView {
            mtu: 1380,
            prefixes: vec![
                crate::vocab::RoutedPrefix {
                    prefix: "198.51.100.16/28".parse().unwrap(),
                    kind: crate::vocab::PrefixKind::Pod,
                },
                crate::vocab::RoutedPrefix {
                    prefix: "203.0.113.0/24".parse().unwrap(),
                    kind: crate::vocab::PrefixKind::Site,
                },
            ],
        });
        let text = status(&s);
        assert!(
            text.contains("prefixes   198.51.100.16/28 (pod), 203.0.113.0/24 (site), mtu 1380\n"),
            "{text}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(r#""workload":{"mtu":1380,"prefixes":[{"prefix":"198.51.100.16/28","kind":"pod"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DaemonStatus>(&json).unwrap(), s);
    }

    #[test]
    fn status_while_enrolling_says_why_and_what_to_do() {
        let mut s = daemon_status();
        s.address = Ipv6Addr::UNSPECIFIED;
        s.ready = false;
        s.peers.clear();
        s.vips.clear();
        s.registry = Some(RegistryView {
            url: "https://r:7443".into(),
            enrolled: false,
            up: false,
            problem: Some("enrollment refused (401 unauthorized): fix: a new token".into()),
        });
        let text = status(&s);
        assert!(
            text.contains("address    not assigned yet (it comes from the enrollment)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "registry   https://r:7443 ENROLLING: enrollment refused (401 unauthorized): fix: a new token\n"
            ),
            "{text}"
        );
        s.registry = Some(RegistryView {
            url: "https://r:7443".into(),
            enrolled: true,
            up: true,
            problem: None,
        });
        assert!(status(&s).contains("registry   https://r:7443 up\n"));
    }

    #[test]
    fn status_says_when_the_failover_socket_or_the_metrics_endpoint_is_down() {
        let mut s = daemon_status();
        s.failover_socket = Some(SocketView {
            address: "[fd00:5d::1]:851".parse().unwrap(),
            bound: false,
            error: Some("Address in use".into()),
        });
        s.metrics = Some(EndpointView {
            listen: "127.0.0.1:9581".parse().unwrap(),
            serving: false,
            error: Some(
                "binding the metrics endpoint 127.0.0.1:9581: Address in use (change daemon.metrics_listen)".into(),
            ),
        });
        let text = status(&s);
        assert!(
            text.contains("\nfailover   [fd00:5d::1]:851 NOT BOUND, this node claims no VIP: Address in use\n"),
            "{text}"
        );
        assert!(
            text.contains("\nmetrics    127.0.0.1:9581 NOT SERVING (retrying): binding the metrics endpoint 127.0.0.1:9581: Address in use (change daemon.metrics_listen)\n"),
            "{text}"
        );
        s.vips.clear();
        assert!(status(&s).contains("\nfailover   unused (no VIPs)\n"));
        // An older daemon's answer has neither: no line.
        s.failover_socket = None;
        s.metrics = None;
        assert!(!status(&s).contains("failover"));
        let json = serde_json::to_string(&daemon_status()).unwrap();
        assert!(
            json.contains(r#""failover_socket":{"address":"[fd00:5d::1]:851","bound":true,"error":null}"#),
            "{json}"
        );
    }

    #[test]
    fn units() {
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(4_250), "4.2s");
        assert_eq!(duration(3_600_000), "1h");
        assert_eq!(seconds(5), "5s");
        assert_eq!(seconds(0), "0s");
        assert_eq!(rtt(850), "850µs");
        assert_eq!(rtt(12_345), "12.3ms");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn moved_names_the_successor() {
        let to = NamedAddr {
            address: "fd00:5d::2".parse().unwrap(),
            name: Some("b".to_owned()),
        };
        assert_eq!(
            moved("fd00:5d::100".parse().unwrap(), &to),
            "handover of fd00:5d::100 to b (fd00:5d::2) started; follow it with `sdwanctl vip list`\n"
        );
    }

    #[test]
    fn status_shows_the_overlay_endpoint_and_peers_with_bytes_but_nothing_new() {
        let mut s = daemon_status();
        s.metrics_overlay = Some(EndpointView {
            listen: "[fd00:5d::1]:9581".parse().unwrap(),
            serving: true,
            error: None,
        });
        s.peers[0].last_received_secs_ago = None;
        let text = status(&s);
        assert!(
            text.contains("\nmetrics    [fd00:5d::1]:9581 serving (overlay)\n"),
            "{text}"
        );
        assert!(
            text.contains("\nb     fd00:5d::2  192.0.2.2:51820      1m 5s ago  -         1.5 MiB  300 B\n"),
            "{text}"
        );
    }
}
