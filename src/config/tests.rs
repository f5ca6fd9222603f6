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
fn unknown_key_is_refused_with_its_line() {
    let e = errors(&minimal("[daemon]\nresync = \"1s\"\n"));
    assert_eq!(e[0].line, 6, "{:?}", e);
    assert!(e[0].message.contains("resync"), "{:?}", e);
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
