use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv6Net;
use wireguard_control::Key;

use super::*;

const K1: &str = "i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=";
const K2: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";

fn minimal(members: &str) -> String {
    format!("[interface]\nname = \"sdwan0\"\naddress = \"fd00:5d::1\"\noverlay_prefix = \"fd00:5d::/64\"\n{members}")
}

fn errors(text: &str) -> Vec<ConfigError> {
    parse(Path::new("/etc/sdwand/t.toml"), text).unwrap_err().0
}

#[test]
fn example_config_parses() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sdwand.example.toml"));
    let cfg = load(path).unwrap();
    assert_eq!(cfg.interface.name, "sdwan0");
    assert_eq!(cfg.members.len(), 2);
    assert_eq!(
        cfg.members[1].routed_prefixes,
        vec!["fd00:5e:2::/48".parse::<Ipv6Net>().unwrap()]
    );
    assert_eq!(cfg.daemon.control_socket, PathBuf::from("/run/sdwand/sdwand.sock"));
    assert_eq!(cfg.vips.len(), 1);
    // The commented-out k3s example is valid too.
    let text = std::fs::read_to_string(path).unwrap();
    let (head, example) = text.split_once("# [[vip]]\n").unwrap();
    let example: String = example
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    let cfg = parse(path, &format!("{head}[[vip]]\n{example}")).unwrap();
    assert!(
        matches!(
            &cfg.vips[1].health.as_ref().unwrap().check,
            HealthCheck::Https {
                client_key: Some(_),
                ..
            }
        ),
        "{:?}",
        cfg.vips[1]
    );
}

#[test]
fn registry_example_config_parses() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/sdwand-registry.example.toml"
    ));
    let cfg = load(path).unwrap();
    let registry = cfg.registry.expect("[registry]");
    assert_eq!(registry.url(), "https://registry.example.net:7443");
    assert_eq!(registry.name.as_deref(), Some("node-a"));
    let k3s = cfg.k3s.expect("[k3s]");
    assert!(!k3s.bootstrap);
    assert!(k3s.health.is_some());
    assert!(cfg.members.is_empty());
}

#[test]
fn defaults_fill_optional_keys() {
    let cfg = parse(Path::new("t.toml"), &minimal("")).unwrap();
    assert_eq!(cfg.interface.listen_port, 51820);
    assert_eq!(cfg.interface.mtu, 1420);
    assert_eq!(cfg.interface.persistent_keepalive, Some(25));
    assert_eq!(
        cfg.interface.private_key_file,
        PathBuf::from("/var/lib/sdwand/private.key")
    );
    assert_eq!(cfg.backend.kind, BackendKind::Auto);
    assert_eq!(cfg.daemon.resync_interval, Duration::from_secs(10));
    assert!(!cfg.daemon.teardown_on_exit);
}

#[test]
fn syntax_error_names_file_and_line() {
    let e = errors("[interface]\nname = \"x\"\naddress = fd00::1\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 3);
    assert!(e[0].to_string().starts_with("/etc/sdwand/t.toml:3"), "{}", e[0]);
}

#[test]
fn peer_metrics_defaults_to_all_and_takes_none() {
    let path = Path::new("/etc/sdwand/t.toml");
    assert_eq!(parse(path, &minimal("")).unwrap().daemon.peer_metrics, PeerMetrics::All);
    let cfg = parse(path, &minimal("[daemon]\npeer_metrics = \"none\"\n")).unwrap();
    assert_eq!(cfg.daemon.peer_metrics, PeerMetrics::None);
    let e = errors(&minimal("[daemon]\npeer_metrics = \"some\"\n"));
    assert_eq!((e[0].key.as_str(), e[0].line), ("daemon.peer_metrics", 6), "{e:?}");
    assert!(e[0].to_string().contains("\"all\" or \"none\""), "{}", e[0]);
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let e = errors(&minimal("[daemon]\nresync = \"1s\"\n"));
    assert_eq!(e[0].line, 6, "{:?}", e);
    assert!(e[0].message.contains("resync"), "{:?}", e);
}

/// What serde refuses names the section-qualified key, says what to do, and points at documentation an
/// installed system has (never a path of the source tree).
#[test]
fn serde_errors_name_the_qualified_key_and_an_installed_reference() {
    let e = errors(&minimal("[daemon]\nresync_interval = 10\n"));
    assert_eq!((e[0].line, e[0].key.as_str()), (6, "daemon.resync_interval"), "{e:?}");
    assert!(
        e[0].to_string().ends_with(
            "t.toml:6: daemon.resync_interval: invalid type: integer `10`, expected a string (fix: a duration is a \
             quoted string with its unit, e.g. resync_interval = \"10s\" (ms, s, m, h))"
        ),
        "{}",
        e[0]
    );

    let e = errors(&reg("enrolment_token_file = \"/etc/sdwand/token\"\n"));
    assert_eq!(e[0].key, "registry.enrolment_token_file", "{e:?}");
    assert!(
        e[0].hint.starts_with(
            "did you mean `enrollment_token_file`? (see /usr/share/doc/sdwand/examples/sdwand-registry.example.toml"
        ),
        "{}",
        e[0].hint
    );

    let e = errors(&minimal(
        "[[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"a\"]\n[vip.health]\nkind = \"tcp\"\ninterval = 2\n",
    ));
    assert_eq!((e[0].line, e[0].key.as_str()), (10, "vip[0].health.interval"), "{e:?}");
    assert!(e[0].hint.contains("interval = \"1s\""), "{}", e[0].hint);

    let e = errors(&minimal("[k3]\nrole = \"server\"\n"));
    assert_eq!(e[0].key, "k3", "{e:?}");
    assert!(e[0].hint.starts_with("did you mean `k3s`?"), "{}", e[0].hint);

    let e = errors(&minimal("[interface]\nmtu = 1400\n"));
    assert!(!e[0].hint.contains("config/"), "a source-tree path in {e:?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "[interface]\nname = \"this-name-is-far-too-long\"\naddress = \"fd00:99::1\"\n\
                overlay_prefix = \"fd00:5d::/64\"\nmtu = 100\n[backend]\nkind = \"magic\"\n";
    let e = errors(text);
    let keys: Vec<_> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("interface.name", 2),
            ("interface.address", 3),
            ("interface.mtu", 5),
            ("backend.kind", 7)
        ]
    );
    assert!(e.iter().all(|e| !e.hint.is_empty()));
}

#[test]
fn address_checks() {
    let e = errors("[interface]\nname = \"a\"\naddress = \"fd00:5d::1/128\"\noverlay_prefix = \"fd00:5d::1/64\"\n");
    assert!(e[0].message.contains("prefix length"), "{:?}", e);
    assert!(e[1].message.contains("host bits"), "{:?}", e);
}

#[test]
fn member_problems() {
    let members = format!(
        "[[members]]\nname = \"b\"\npublic_key = \"{K1}\"\naddress = \"fd00:5d::2\"\nendpoint = \"192.0.2.2\"\n\
         [[members]]\nname = \"b\"\npublic_key = \"{K1}\"\naddress = \"fd00:5d::2\"\n\
         [[members]]\nname = \"c\"\npublic_key = \"nope\"\naddress = \"fd00:77::3\"\nrouted_prefixes = [\"fd00:5d::/120\"]\n"
    );
    let e = errors(&minimal(&members));
    let got: Vec<_> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        vec![
            ("members[0].endpoint", 9),
            ("members[1].name", 11),
            ("members[1].public_key", 12),
            ("members[1].address", 13),
            ("members[2].public_key", 16),
            ("members[2].address", 17),
            ("members[2].routed_prefixes[0]", 18),
        ]
    );
}

#[test]
fn identity_is_checked_against_own_key() {
    let members = format!(
        "[[members]]\nname = \"a\"\npublic_key = \"{K1}\"\naddress = \"fd00:5d::1\"\n\
         [[members]]\nname = \"b\"\npublic_key = \"{K2}\"\naddress = \"fd00:5d::2\"\n"
    );
    let cfg = parse(Path::new("t.toml"), &minimal(&members)).unwrap();
    let k1 = Key::from_base64(K1).unwrap();
    let k2 = Key::from_base64(K2).unwrap();
    cfg.check_identity(&k1).unwrap();
    let e = cfg.check_identity(&k2).unwrap_err().0;
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].line, e[1].line), (5, 9));
}

const K3: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// `minimal` with members a (this node, fd00:5d::1), b (fd00:5d::2, routes fd00:5e::/48) and c: 17 lines.
fn three(rest: &str) -> String {
    minimal(&format!(
        "[[members]]\nname = \"a\"\npublic_key = \"{K1}\"\naddress = \"fd00:5d::1\"\n\
         [[members]]\nname = \"b\"\npublic_key = \"{K2}\"\naddress = \"fd00:5d::2\"\nrouted_prefixes = [\"fd00:5e::/48\"]\n\
         [[members]]\nname = \"c\"\npublic_key = \"{K3}\"\naddress = \"fd00:5d::3\"\n{rest}"
    ))
}

fn keys_and_lines(e: &[ConfigError]) -> Vec<(&str, usize)> {
    e.iter().map(|e| (e.key.as_str(), e.line)).collect()
}

#[test]
fn failover_defaults() {
    let cfg = parse(Path::new("t.toml"), &minimal("")).unwrap();
    assert_eq!(cfg.daemon.control_socket, PathBuf::from("/run/sdwand/sdwand.sock"));
    assert_eq!(
        cfg.failover,
        FailoverConfig {
            port: DEFAULT_FAILOVER_PORT,
            interval: Duration::from_millis(50),
            dead_after: 4,
            preempt: false,
            preempt_delay: Duration::from_secs(5),
        }
    );
    assert_eq!(cfg.failover.timers().preempt, None);
    assert!(cfg.vips.is_empty());
}

#[test]
fn vip_with_health_check() {
    let text = three(
        "[failover]\ninterval = \"100ms\"\npreempt = true\npreempt_delay = \"0s\"\n\
         [[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"b\", \"a\"]\n\
         [vip.health]\nkind = \"https\"\nurl = \"https://[::1]:6443/readyz\"\nca_file = \"/etc/ca.crt\"\n\
         client_cert = \"/etc/c.crt\"\nclient_key = \"/etc/c.key\"\ninterval = \"200ms\"\n\
         [[vip]]\naddress = \"fd00:5d:f::2\"\ncandidates = [\"c\"]\n[vip.health]\nkind = \"tcp\"\ntarget = \"[::1]:22\"\n",
    );
    let cfg = parse(Path::new("t.toml"), &text).unwrap();
    let timers = cfg.failover.timers();
    assert_eq!(timers.interval, Duration::from_millis(100));
    assert_eq!(timers.preempt, Some(Duration::ZERO));
    assert_eq!(cfg.vips.len(), 2);
    let v = &cfg.vips[0];
    assert_eq!((v.address, v.line), ("fd00:5d:f::1".parse().unwrap(), 22));
    assert_eq!(v.candidates, ["b", "a"]);
    assert_eq!(cfg.member_address("b"), Some("fd00:5d::2".parse().unwrap()));
    assert_eq!(cfg.member_address("z"), None);
    let h = v.health.as_ref().unwrap();
    assert_eq!(
        (h.interval, h.timeout, h.rise, h.fall),
        (Duration::from_millis(200), Duration::from_millis(100), 2, 3)
    );
    assert_eq!(
        h.check,
        HealthCheck::Https {
            url: "https://[::1]:6443/readyz".into(),
            ca_file: Some("/etc/ca.crt".into()),
            client_cert: Some("/etc/c.crt".into()),
            client_key: Some("/etc/c.key".into()),
        }
    );
    let h = cfg.vips[1].health.as_ref().unwrap();
    assert_eq!(h.timeout, Duration::from_millis(500));
    assert_eq!(
        h.check,
        HealthCheck::Tcp {
            target: "[::1]:22".parse().unwrap()
        }
    );
}

#[test]
fn failover_problems() {
    let text = "[interface]\nname = \"a\"\naddress = \"fd00:5d::1\"\noverlay_prefix = \"fd00:5d::/64\"\n\
                [daemon]\ncontrol_socket = \"sdwand.sock\"\n\
                [failover]\nport = 51820\ninterval = \"5ms\"\ndead_after = 1\npreempt_delay = \"2h\"\n";
    let e = errors(text);
    assert_eq!(
        keys_and_lines(&e),
        vec![
            ("daemon.control_socket", 6),
            ("failover.port", 8),
            ("failover.interval", 9),
            ("failover.dead_after", 10),
            ("failover.preempt_delay", 11),
        ]
    );
    assert!(e[2].message.contains("10ms..=10s"), "{}", e[2]);
    assert!(e.iter().all(|e| !e.hint.is_empty()));
    // An unset failover.port clashes with a listen_port set to its default.
    let e = errors(
        "[interface]\nname = \"a\"\naddress = \"fd00:5d::1\"\noverlay_prefix = \"fd00:5d::/64\"\nlisten_port = 851\n",
    );
    assert_eq!(keys_and_lines(&e), vec![("interface.listen_port", 5)]);
    let e = errors(&minimal("[failover]\nheartbeat = \"1s\"\n"));
    assert_eq!(e[0].line, 6, "{e:?}");
}

#[test]
fn vip_address_and_candidate_problems() {
    let many: Vec<String> = (0..33).map(|i| format!("\"n{i}\"")).collect();
    let text = three(&format!(
        "[[vip]]\naddress = \"fd00:5d::2\"\ncandidates = []\n\
         [[vip]]\naddress = \"fd00:5e::7\"\ncandidates = [\"a\", \"x\", \"a\"]\n\
         [[vip]]\naddress = \"fd00:5d:f::1/128\"\ncandidates = [{}]\n\
         [[vip]]\naddress = \"fd00:5d:f::9\"\ncandidates = [\"c\"]\n\
         [[vip]]\naddress = \"fd00:5d:f::9\"\ncandidates = [\"c\"]\n\
         [[vip]]\naddress = \"fd00:5d::1\"\ncandidates = [\"c\"]\n",
        many.join(", ")
    ));
    let e = errors(&text);
    assert_eq!(
        keys_and_lines(&e),
        vec![
            ("vip[0].address", 19),
            ("vip[0].candidates", 20),
            ("vip[1].address", 22),
            ("vip[1].candidates[1]", 23),
            ("vip[1].candidates[2]", 23),
            ("vip[2].address", 25),
            ("vip[2].candidates", 26),
            ("vip[4].address", 31),
            ("vip[5].address", 34),
        ]
    );
    let messages: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert!(messages[0].contains("members[1] (\"b\")"), "{messages:?}");
    assert!(
        messages[2].contains("inside routed prefix fd00:5e::/48"),
        "{messages:?}"
    );
    assert!(messages[3].contains("\"x\" is not the name"), "{messages:?}");
    assert!(messages[4].contains("also candidates[0]"), "{messages:?}");
    assert!(messages[6].contains("has 33 names"), "{messages:?}");
    assert!(messages[7].contains("vip[3]"), "{messages:?}");
    assert!(messages[8].contains("this node's interface.address"), "{messages:?}");
}

/// A `[vip.health]` body, the (key, line) of every problem it raises, and part of the first message.
type HealthCase<'a> = (&'a str, &'a [(&'a str, usize)], &'a str);

#[test]
fn health_problems() {
    let vip =
        |health: &str| format!("[[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"a\"]\n[vip.health]\n{health}");
    let cases: &[HealthCase] = &[
        (
            "kind = \"icmp\"\n",
            &[("vip[0].health.kind", 22)],
            "not a health check kind",
        ),
        ("kind = \"tcp\"\n", &[("vip[0].health", 21)], "needs target"),
        (
            "kind = \"tcp\"\ntarget = \"localhost:80\"\nurl = \"http://x/\"\n",
            &[("vip[0].health.target", 23), ("vip[0].health.url", 24)],
            "not an address:port",
        ),
        (
            "kind = \"http\"\nurl = \"https://[::1]/\"\n",
            &[("vip[0].health.url", 23)],
            "not an http:// URL",
        ),
        (
            "kind = \"https\"\nurl = \"[::1]:6443/readyz\"\n",
            &[("vip[0].health.url", 23)],
            "no scheme",
        ),
        (
            "kind = \"http\"\nurl = \"http://[::1/\"\n",
            &[("vip[0].health.url", 23)],
            "not a valid URL",
        ),
        (
            "kind = \"http\"\nurl = \"http://h/#x\"\n",
            &[("vip[0].health.url", 23)],
            "fragment",
        ),
        (
            "kind = \"http\"\nurl = \"http://h/\"\nca_file = \"/ca\"\n",
            &[("vip[0].health.ca_file", 24)],
            "not used by kind = \"http\"",
        ),
        (
            "kind = \"https\"\nurl = \"https://h/\"\nca_file = \"ca.pem\"\nclient_key = \"/k\"\n",
            &[("vip[0].health.ca_file", 24), ("vip[0].health.client_key", 25)],
            "not an absolute path",
        ),
        (
            "kind = \"tcp\"\ntarget = \"[::1]:1\"\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            &[("vip[0].health.timeout", 25)],
            "not shorter than interval 1s",
        ),
        (
            "kind = \"tcp\"\ntarget = \"[::1]:1\"\ninterval = \"50ms\"\nrise = 0\nfall = 11\n",
            &[
                ("vip[0].health.interval", 24),
                ("vip[0].health.rise", 25),
                ("vip[0].health.fall", 26),
            ],
            "out of range 100ms..=1h",
        ),
    ];
    for (health, want, first_message) in cases {
        let e = errors(&three(&vip(health)));
        assert_eq!(keys_and_lines(&e), *want, "{health}");
        assert!(e[0].message.contains(first_message), "{health}: {}", e[0]);
    }
}

#[test]
fn reload_classifies_failover_settings() {
    let base = "[[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"a\", \"b\"]\n";
    let parse_three = |rest: &str| {
        parse(Path::new("t.toml"), &three(rest))
            .unwrap()
            .restart_only_settings()
    };
    let before = parse_three(base);
    // VIPs, candidates, timers and health checks reload.
    let reloadable = parse_three(&format!(
        "[failover]\ninterval = \"1s\"\npreempt = true\n{base}[vip.health]\nkind = \"tcp\"\ntarget = \"[::1]:1\"\n\
         [[vip]]\naddress = \"fd00:5d:f::2\"\ncandidates = [\"c\"]\n"
    ));
    assert_eq!(before, reloadable);
    // The heartbeat port and the control socket do not.
    let changed = |rest: &str| -> Vec<&'static str> {
        let after = parse_three(rest);
        before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0)
            .collect()
    };
    assert_eq!(changed(&format!("[failover]\nport = 5000\n{base}")), ["failover.port"]);
    assert_eq!(
        changed(&format!("[daemon]\ncontrol_socket = \"/run/x.sock\"\n{base}")),
        ["daemon.control_socket"]
    );
    assert_eq!(
        changed(&format!("[daemon]\nmetrics_overlay_port = 9581\n{base}")),
        ["daemon.metrics_overlay_port"]
    );
    // The per-peer series switch reloads.
    assert!(changed(&format!("[daemon]\npeer_metrics = \"none\"\n{base}")).is_empty());
}

#[test]
fn metrics_overlay_port_is_off_by_default_and_a_port_when_set() {
    let path = Path::new("/etc/sdwand/t.toml");
    assert_eq!(parse(path, &minimal("")).unwrap().daemon.metrics_overlay_port, None);
    let cfg = parse(path, &minimal("[daemon]\nmetrics_overlay_port = 9581\n")).unwrap();
    assert_eq!(cfg.daemon.metrics_overlay_port, Some(9581));
    let e = errors(&minimal("[daemon]\nmetrics_overlay_port = 0\n"));
    assert_eq!(
        (e[0].key.as_str(), e[0].line),
        ("daemon.metrics_overlay_port", 6),
        "{e:?}"
    );
}

const REG_IFACE: &str = "[interface]\nname = \"sdw0\"\n";

fn reg(extra: &str) -> String {
    format!("{REG_IFACE}[registry]\nurl = \"https://reg.example:7443/\"\n{extra}")
}

#[test]
fn registry_config_defaults_and_identity_from_enrollment() {
    let text = format!(
        "{}[[vip]]\naddress = \"fd00:9::1\"\ncandidates = [\"node-2\", \"node-3\"]\n",
        reg("name = \"node-1\"\n")
    );
    let cfg = parse(Path::new("t.toml"), &text).unwrap();
    let r = cfg.registry.as_ref().unwrap();
    assert_eq!(r.url(), "https://reg.example:7443");
    assert_eq!(r.name.as_deref(), Some("node-1"));
    assert_eq!(r.lifecycle, crate::vocab::Lifecycle::Persistent);
    assert_eq!(r.report_interval, Duration::from_secs(5));
    assert_eq!((r.file_address, r.file_overlay_prefix), (None, None));
    assert_eq!(r.line, 3);
    assert!(cfg.interface.address.is_unspecified());
    assert!(cfg.members.is_empty());
    // Candidates name registry peers: not checked against [[members]].
    assert_eq!(cfg.vips[0].candidates, ["node-2", "node-3"]);
    assert!(cfg.k3s.is_none());
}

#[test]
fn registry_replicas_are_listed_in_order() {
    let text = format!("{REG_IFACE}[registry]\nurls = [\"https://r1.example:7443/\", \"https://r2.example:7443\"]\n");
    let cfg = parse(Path::new("t.toml"), &text).unwrap();
    let r = cfg.registry.as_ref().unwrap();
    assert_eq!(r.urls, ["https://r1.example:7443", "https://r2.example:7443"]);
    assert_eq!(r.url(), "https://r1.example:7443");
    assert_eq!(r.line_of("registry.url"), 4);
}

#[test]
fn without_registry_the_address_is_required() {
    let e = errors("[interface]\nname = \"sdw0\"\n");
    let keys: Vec<_> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["interface.address", "interface.overlay_prefix"]);
    assert!(e[0].hint.contains("[registry]"), "{e:?}");
}

#[test]
fn registry_problems() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[interface]\nname = \"sdw0\"\n[registry]\ninsecure = true\n",
            "registry.url",
            "missing",
        ),
        (
            "[interface]\nname = \"sdw0\"\n[registry]\nurl = \"http://reg:80\"\n",
            "registry.url",
            "insecure",
        ),
        (
            "[interface]\nname = \"sdw0\"\n[registry]\nurl = \"ftp://reg\"\n",
            "registry.url",
            "scheme",
        ),
        (
            "[interface]\nname = \"sdw0\"\n[registry]\nurls = []\n",
            "registry.urls",
            "empty",
        ),
        (
            "[interface]\nname = \"sdw0\"\n[registry]\nurls = [\"https://a:1\", \"https://a:1/\"]\n",
            "registry.urls",
            "twice",
        ),
        (
            "[interface]\nname = \"sdw0\"\n[registry]\nurls = [\"https://a:1\", \"http://b:1\"]\n",
            "registry.urls",
            "insecure",
        ),
        (&reg("urls = [\"https://b:1\"]\n"), "registry.url", "together"),
        (&reg("lifecycle = \"forever\"\n"), "registry.lifecycle", "lifecycle"),
        (
            &reg("enrollment_token_file = \"token\"\n"),
            "registry.enrollment_token_file",
            "absolute",
        ),
        (&reg("name = \"no spaces\"\n"), "registry.name", "peer name"),
        (
            &reg("report_interval = \"10ms\"\n"),
            "registry.report_interval",
            "range",
        ),
        (
            &reg("endpoint = \"198.51.100.1\"\n"),
            "registry.endpoint",
            "address:port",
        ),
    ];
    for (text, key, fragment) in cases {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{text}: {e:?}");
        assert_eq!(e[0].key, *key, "{text}: {e:?}");
        assert!(e[0].message.contains(fragment), "{text}: {e:?}");
        assert!(!e[0].hint.is_empty());
    }
    let ok = parse(
        Path::new("t.toml"),
        "[interface]\nname = \"sdw0\"\n[registry]\nurl = \"http://10.0.0.1:7080\"\ninsecure = true\n",
    )
    .unwrap();
    assert!(ok.registry.unwrap().insecure);
}

#[test]
fn registry_refuses_static_members() {
    let text = format!(
        "{}[[members]]\nname = \"b\"\npublic_key = \"{K1}\"\naddress = \"fd00:5d::2\"\n",
        reg("")
    );
    let e = errors(&text);
    assert_eq!((e[0].key.as_str(), e[0].line), ("members", 5), "{e:?}");
}

#[test]
fn registry_keeps_a_given_address_for_the_identity_check() {
    let text = "[interface]\nname = \"sdw0\"\naddress = \"fd00:5d::7\"\noverlay_prefix = \"fd00:5d::/48\"\n\
                [registry]\nurl = \"https://reg\"\n";
    let cfg = parse(Path::new("t.toml"), text).unwrap();
    let r = cfg.registry.unwrap();
    assert_eq!(r.file_address, Some("fd00:5d::7".parse().unwrap()));
    assert_eq!(r.file_overlay_prefix, Some("fd00:5d::/48".parse().unwrap()));
    // Messages raised after parsing (the identity check) point at the key's own line, not at [registry].
    assert_eq!(r.line_of("interface.address"), 3);
    assert_eq!(r.line_of("interface.overlay_prefix"), 4);
    assert_eq!(r.line_of("registry.url"), 6);
    assert_eq!(
        r.line_of("registry.ca_file"),
        5,
        "a key the file does not set: the table's line"
    );
}

#[test]
fn k3s_section() {
    let text = reg("[k3s]\nrole = \"server\"\nbootstrap = true\ncluster_name = \"prod\"\n\
         [k3s.health]\nkind = \"tcp\"\ntarget = \"[::1]:6443\"\n");
    let k = parse(Path::new("t.toml"), &text).unwrap().k3s.unwrap();
    assert_eq!(k.role, crate::vocab::Role::Server);
    assert!(k.bootstrap);
    assert_eq!(k.cluster_name.as_deref(), Some("prod"));
    assert_eq!(k.config_path, PathBuf::from(DEFAULT_K3S_CONFIG_PATH));
    assert!(matches!(k.health.unwrap().check, HealthCheck::Tcp { .. }));
    let agent = parse(
        Path::new("t.toml"),
        &reg("[k3s]\nrole = \"agent\"\ntarget_cluster_id = \"  \"\n"),
    )
    .unwrap();
    assert_eq!(
        agent.k3s.unwrap().target_cluster_id,
        None,
        "blank = most recent cluster"
    );
}

#[test]
fn k3s_pod_network_defaults_to_flannel_and_sdwan_takes_its_keys() {
    let k = parse(Path::new("t.toml"), &reg("[k3s]\nrole = \"agent\"\n"))
        .unwrap()
        .k3s
        .unwrap();
    assert_eq!(k.pod_network, PodNetworkKind::Flannel);
    assert_eq!(k.cni_conf_dir, PathBuf::from(DEFAULT_CNI_CONF_DIR));
    assert_eq!((k.cni_ipam_data_dir, k.service_cidrs), (None, vec![]));
    let text = reg("[k3s]\nrole = \"server\"\nbootstrap = true\npod_network = \"sdwan\"\n\
         cni_conf_dir = \"/run/lab/p1/net.d\"\ncni_ipam_data_dir = \"/run/lab/p1/ipam\"\n\
         service_cidrs = [\"fd00:43::/112\", \"203.0.113.0/24\"]\n");
    let k = parse(Path::new("t.toml"), &text).unwrap().k3s.unwrap();
    assert_eq!(k.pod_network, PodNetworkKind::Sdwan);
    assert_eq!(k.cni_conf_dir, PathBuf::from("/run/lab/p1/net.d"));
    assert_eq!(k.cni_ipam_data_dir, Some(PathBuf::from("/run/lab/p1/ipam")));
    let cidrs: Vec<String> = k.service_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        cidrs,
        ["203.0.113.0/24", "fd00:43::/112"],
        "IPv4 first, as k3s wants the primary family"
    );
    let mut other = k.clone();
    other.cni_conf_dir = PathBuf::from("/elsewhere");
    assert!(k.same_handshake(&other), "a pod setting does not re-run the join");
    other.target_cluster_id = Some("c2".into());
    assert!(!k.same_handshake(&other));
}

#[test]
fn k3s_pod_network_problems() {
    let server = "[k3s]\nrole = \"server\"\n";
    let cases: &[(String, &str, usize)] = &[
        (
            reg(&format!("{server}pod_network = \"calico\"\n")),
            "k3s.pod_network",
            7,
        ),
        (reg(&format!("{server}cni_conf_dir = \"/x\"\n")), "k3s.cni_conf_dir", 7),
        (
            reg(&format!(
                "{server}pod_network = \"sdwan\"\ncni_ipam_data_dir = \"rel/dir\"\n"
            )),
            "k3s.cni_ipam_data_dir",
            8,
        ),
        (
            reg(&format!("{server}service_cidrs = [\"203.0.113.0/24\"]\n")),
            "k3s.service_cidrs[0]",
            7,
        ),
        (
            reg("[k3s]\nrole = \"agent\"\npod_network = \"sdwan\"\nservice_cidrs = [\"203.0.113.0/24\"]\n"),
            "k3s.service_cidrs[0]",
            8,
        ),
        (
            reg(&format!(
                "{server}pod_network = \"sdwan\"\nservice_cidrs = [\"203.0.113.1/24\"]\n"
            )),
            "k3s.service_cidrs[0]",
            8,
        ),
        (
            reg(&format!(
                "{server}pod_network = \"sdwan\"\nservice_cidrs = [\"203.0.113.0/25\", \"203.0.113.128/25\"]\n"
            )),
            "k3s.service_cidrs[1]",
            8,
        ),
    ];
    for (text, key, line) in cases {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{text}: {e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), (*key, *line), "{text}: {e:?}");
        assert!(!e[0].hint.is_empty(), "{e:?}");
    }
    let host_bits = errors(&reg(&format!(
        "{server}pod_network = \"sdwan\"\nservice_cidrs = [\"203.0.113.1/24\"]\n"
    )));
    assert!(
        host_bits[0].message.contains("did you mean 203.0.113.0/24?"),
        "{host_bits:?}"
    );
}

#[test]
fn k3s_problems() {
    let cases: &[(String, &str, usize)] = &[
        (format!("{}[k3s]\nrole = \"agent\"\n", minimal("")), "k3s", 5),
        (reg("[k3s]\nbootstrap = true\n"), "k3s.role", 5),
        (reg("[k3s]\nrole = \"agent\"\nbootstrap = true\n"), "k3s.bootstrap", 7),
        (
            reg("[k3s]\nrole = \"server\"\nbootstrap = true\ntarget_cluster_id = \"c1\"\n"),
            "k3s.target_cluster_id",
            8,
        ),
        (
            reg("[k3s]\nrole = \"server\"\ncluster_name = \"x\"\n"),
            "k3s.cluster_name",
            7,
        ),
        (reg("[k3s]\nrole = \"master\"\n"), "k3s.role", 6),
        (
            reg("[k3s]\nrole = \"server\"\n[k3s.health]\nkind = \"tcp\"\n"),
            "k3s.health",
            7,
        ),
    ];
    for (text, key, line) in cases {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{text}: {e:?}");
        assert_eq!((e[0].key.as_str(), e[0].line), (*key, *line), "{text}: {e:?}");
    }
}

#[test]
fn a_registry_change_on_reload_names_each_key_without_debug_dumps() {
    let before = parse(Path::new("t.toml"), &reg("name = \"a\"\n")).unwrap();
    let after = parse(
        Path::new("t.toml"),
        "[interface]\nname = \"sdw0\"\naddress = \"fd00:5d::9\"\n[registry]\nurl = \"https://reg.example:7443/\"\n\
         name = \"b\"\nreport_interval = \"9s\"\n",
    )
    .unwrap();
    let changed: Vec<String> = before
        .restart_only_settings()
        .into_iter()
        .zip(after.restart_only_settings())
        .filter(|(b, a)| b != a)
        .map(|((key, b), (_, a))| format!("{key} ({b} -> {a})"))
        .collect();
    // interface.address is checked against the identity instead; report_interval reloads.
    assert_eq!(changed, ["registry.name (a -> b)"]);
    let without = parse(Path::new("t.toml"), &three("")).unwrap().restart_only_settings();
    let with = before.restart_only_settings();
    let registry_rows: Vec<_> = without
        .iter()
        .zip(&with)
        .filter(|(w, r)| w != r)
        .map(|(w, r)| (w.0, w.1.as_str(), r.1.as_str()))
        .collect();
    assert!(
        registry_rows.contains(&("registry.url", "not set", "https://reg.example:7443")),
        "{registry_rows:?}"
    );
    assert!(
        with.iter().all(|(_, v)| !v.contains("Some(") && !v.contains('{')),
        "{with:?}"
    );
}

#[test]
fn vip_quorum_and_witnesses() {
    let text = three(
        "[[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"a\", \"b\"]\nquorum = true\nwitnesses = [\"c\"]\n\
         [[vip]]\naddress = \"fd00:5d:f::2\"\ncandidates = [\"a\"]\nquorum = true\n\
         [[vip]]\naddress = \"fd00:5d:f::3\"\ncandidates = [\"a\"]\nquorum = false\n",
    );
    let cfg = parse(Path::new("t.toml"), &text).unwrap();
    let quorum: Vec<Option<Vec<String>>> = cfg.vips.iter().map(|v| v.quorum.clone()).collect();
    assert_eq!(quorum, [Some(vec!["c".to_owned()]), Some(vec![]), None]);
    let e = errors(&three(
        "[[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"a\", \"b\"]\nwitnesses = [\"c\"]\n\
         [[vip]]\naddress = \"fd00:5d:f::2\"\ncandidates = [\"a\", \"b\"]\nquorum = true\n\
         witnesses = [\"b\", \"c\", \"c\", \"x\"]\n",
    ));
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "vip[0].witnesses",
            "vip[1].witnesses[0]",
            "vip[1].witnesses[2]",
            "vip[1].witnesses[3]"
        ],
        "{e:?}"
    );
    let messages: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert!(messages[0].contains("quorum mode is off"), "{messages:?}");
    assert!(messages[1].contains("is a candidate"), "{messages:?}");
    assert!(messages[2].contains("also witnesses[1]"), "{messages:?}");
    assert!(messages[3].contains("not the name"), "{messages:?}");
}

#[test]
fn floating_quorum_and_witnesses_are_checked_like_a_vips() {
    let text = three(
        "[[floating]]\nprefix = \"203.0.113.0/24\"\ncandidates = [\"a\", \"b\"]\nquorum = true\nwitnesses = [\"c\"]\n\
         [[floating]]\nprefix = \"2001:db8:5::/64\"\ncandidates = [\"a\"]\n",
    );
    let cfg = parse(Path::new("t.toml"), &text).unwrap();
    let quorum: Vec<Option<Vec<String>>> = cfg.floating.iter().map(|f| f.quorum.clone()).collect();
    assert_eq!(quorum, [Some(vec!["c".to_owned()]), None]);
    let e = errors(&three(
        "[[floating]]\nprefix = \"203.0.113.0/24\"\ncandidates = [\"a\", \"b\"]\nwitnesses = [\"c\"]\n\
         [[floating]]\nprefix = \"2001:db8:5::/64\"\ncandidates = [\"a\", \"b\"]\nquorum = true\n\
         witnesses = [\"b\", \"x\"]\n",
    ));
    // Each on the line of its `witnesses`: the first entry's, and five lines below it for the second's.
    let base = e.first().map_or(0, |e| e.line);
    assert!(base > 0, "{e:?}");
    assert_eq!(
        keys_and_lines(&e),
        [
            ("floating[0].witnesses", base),
            ("floating[1].witnesses[0]", base + 5),
            ("floating[1].witnesses[1]", base + 5)
        ],
        "{e:?}"
    );
    assert!(e[0].message.contains("quorum mode is off"), "{e:?}");
    assert!(e[0].hint.contains("[[floating]]"), "{e:?}");
    assert!(e[1].message.contains("is a candidate of this floating prefix"), "{e:?}");
    assert!(e[2].message.contains("not the name"), "{e:?}");
}

#[test]
fn floating_prefix_with_gateway_interface_and_health() {
    let text = three(
        "[[floating]]\nprefix = \"203.0.113.0/24\"\ngateway = \"203.0.113.1\"\ninterface = \"lan0\"\n\
         candidates = [\"a\", \"b\"]\n[floating.health]\nkind = \"tcp\"\ntarget = \"203.0.113.254:80\"\n\
         [[floating]]\nprefix = \"2001:db8:5::/64\"\ncandidates = [\"c\"]\n",
    );
    let cfg = parse(Path::new("t.toml"), &text).unwrap();
    assert_eq!(cfg.floating.len(), 2);
    let f = &cfg.floating[0];
    assert_eq!(f.prefix, "203.0.113.0/24".parse::<ipnet::IpNet>().unwrap());
    assert_eq!(f.key(), "::ffff:203.0.113.0".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(f.candidates, ["a", "b"]);
    assert_eq!(
        f.gateway_net(),
        Some(("203.0.113.1/24".parse().unwrap(), "lan0")),
        "the gateway goes on the interface with the prefix's length"
    );
    assert!(matches!(f.health.as_ref().unwrap().check, HealthCheck::Tcp { .. }));
    assert_eq!(
        (cfg.floating[1].gateway_net(), cfg.floating[1].health.as_ref()),
        (None, None)
    );
}

#[test]
fn floating_prefix_problems_name_the_entry_and_line() {
    let text = three(
        "[[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"a\"]\n\
         [[floating]]\nprefix = \"0.0.0.0/0\"\ncandidates = [\"a\"]\n\
         [[floating]]\nprefix = \"203.0.113.1/24\"\ncandidates = [\"a\"]\n\
         [[floating]]\nprefix = \"fd00:5d::/48\"\ncandidates = [\"a\"]\n\
         [[floating]]\nprefix = \"fd00:5e:0:1::/64\"\ncandidates = [\"a\"]\n\
         [[floating]]\nprefix = \"198.51.100.0/24\"\ngateway = \"192.0.2.1\"\ninterface = \"lan0\"\ncandidates = [\"a\"]\n\
         [[floating]]\nprefix = \"198.51.100.128/25\"\ngateway = \"198.51.100.129\"\ncandidates = [\"zz\"]\n\
         [[floating]]\nprefix = \"fd00:5d:f::/64\"\ncandidates = [\"a\"]\n",
    );
    let e = errors(&text);
    assert_eq!(
        keys_and_lines(&e),
        vec![
            ("floating[0].prefix", 22),
            ("floating[1].prefix", 25),
            ("floating[2].prefix", 28),
            ("floating[3].prefix", 31),
            ("floating[4].gateway", 35),
            ("floating[5].prefix", 39),
            ("floating[5].gateway", 40),
            ("floating[5].candidates[0]", 41),
            ("floating[6].prefix", 43),
        ]
    );
    let messages: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert!(messages[0].contains("shorter than /8"), "{messages:?}");
    assert!(messages[1].contains("host bits"), "{messages:?}");
    assert!(messages[2].contains("interface.overlay_prefix"), "{messages:?}");
    assert!(messages[3].contains("routed prefix of members[1]"), "{messages:?}");
    assert!(messages[4].contains("outside the prefix"), "{messages:?}");
    assert!(messages[5].contains("floating[4].prefix"), "{messages:?}");
    assert!(messages[6].contains("without interface"), "{messages:?}");
    assert!(messages[8].contains("overlaps"), "{messages:?}");
}
