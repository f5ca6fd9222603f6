//! The view rules, one test per finding of the review where there is one (E5a–E5e), and the effective
//! configuration a view makes.

use super::*;
use crate::vocab::wire::{CandidateView, EpochView, MoveRequestView, VipView};
use crate::vocab::{Lifecycle, PodPool};
use std::path::Path;

const K1: &str = "i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=";
const K2: &str = "adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=";
const K3: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn member(name: &str, addr: &str, key: &str) -> MemberView {
    MemberView {
        peer_id: format!("id-{name}"),
        name: name.into(),
        public_key: key.into(),
        endpoint: None,
        address: addr.parse().unwrap(),
        routed_prefixes: vec![],
        address_v4: None,
        prefixes: Vec::new(),
        lifecycle: Lifecycle::Persistent,
        roles: vec![],
        last_seen_ms: 0,
    }
}

fn vip(addr: &str, cluster: Option<&str>, candidates: &[&str]) -> VipView {
    VipView {
        vip_id: format!("v-{addr}"),
        address: addr.parse().unwrap(),
        cluster_id: cluster.map(str::to_owned),
        candidates: candidates
            .iter()
            .map(|n| CandidateView {
                peer_id: format!("id-{n}"),
                name: (*n).into(),
                address: "fd00:5d::99".parse().unwrap(),
            })
            .collect(),
        holder: None,
        epoch: None,
        confirmed_peers: None,
        move_request: None,
        quorum: None,
    }
}

fn view(members: Vec<MemberView>, vips: Vec<VipView>) -> MembersResponse {
    MembersResponse {
        network_id: "n1".into(),
        revision: 7,
        overlay_prefix: Some("fd00:5d::/32".parse().unwrap()),
        vip_pool: None,
        overlay_prefix_v4: None,
        pod_pools: Vec::new(),
        site_ranges: Vec::new(),
        members,
        vips,
        floating: Vec::new(),
    }
}

fn identity() -> Identity {
    Identity {
        peer_id: "id-a".into(),
        name: "a".into(),
        network_id: "n1".into(),
        address: "fd00:5d::1".parse().unwrap(),
        overlay_prefix: "fd00:5d::/32".parse().unwrap(),
        peer_token: "secret".into(),
        registry_url: "https://reg".into(),
    }
}

fn file(extra: &str) -> Config {
    let text = format!("[interface]\nname = \"sdw0\"\n[registry]\nurl = \"https://reg\"\n{extra}");
    crate::config::parse(Path::new("/etc/sdwand/sdwand.toml"), &text).unwrap()
}

#[test]
fn pins_refuse_a_rekeyed_address_and_keep_the_rest() {
    let mut pins = Pins::new();
    let first = view(
        vec![member("a", "fd00:5d::1", K1), member("b", "fd00:5d::2", K2)],
        vec![],
    );
    let (kept, refused) = refuse_rekeys(first, &pins);
    assert!(pins.refresh(&kept, &[], 100, 1000));
    assert_eq!((kept.members.len(), refused.len(), pins.len()), (2, 0, 2));
    let rekeyed = view(
        vec![
            member("a", "fd00:5d::1", K1),
            member("b2", "fd00:5d::2", K3),
            member("c", "fd00:5d::3", K3),
        ],
        vec![],
    );
    let (kept, refused) = refuse_rekeys(rekeyed, &pins);
    let names: Vec<&str> = kept.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(
        refused,
        [Refused {
            name: "b2".into(),
            address: "fd00:5d::2".parse().unwrap(),
            pinned: K2.into(),
            offered: K3.into(),
        }]
    );
    assert_eq!(pins.len(), 2, "refusing pins nothing");
    assert!(pins.refresh(&kept, &[], 200, 1000));
    assert_eq!(pins.key(&"fd00:5d::2".parse().unwrap()), Some(K2), "the pin is kept");
    assert_eq!(pins.len(), 3, "the new member is pinned");
}

/// A pinned network: a (this node, K1) and b (K2) established; the registry at 2001:db8::100.
fn pinned() -> Pins {
    let mut pins = Pins::new();
    pins.pin("fd00:5d::1".parse().unwrap(), K1);
    pins.pin("fd00:5d::2".parse().unwrap(), K2);
    pins
}

fn check(v: MembersResponse, pins: &Pins) -> Result<(MembersResponse, Vec<Problem>), Vec<Problem>> {
    let id = identity();
    validate(
        v,
        &Trust {
            identity: &id,
            own_key: K1,
            pins,
            registry: &["2001:db8::100".parse().unwrap()],
            local: &[],
        },
    )
}

fn base(extra_members: Vec<MemberView>, vips: Vec<VipView>) -> MembersResponse {
    let mut b = member("b", "fd00:5d::2", K2);
    b.endpoint = Some("[2001:db8::2]:51820".parse().unwrap());
    let mut members = vec![member("a", "fd00:5d::1", K1), b];
    members.extend(extra_members);
    view(members, vips)
}

fn routed(name: &str, addr: &str, prefixes: &[&str]) -> MemberView {
    let mut m = member(name, addr, K3);
    m.routed_prefixes = prefixes.iter().map(|p| p.parse().unwrap()).collect();
    m
}

fn rules(problems: &[Problem]) -> Vec<Rule> {
    problems.iter().map(|p| p.rule).collect()
}

#[test]
fn a_clean_view_passes_unchanged() {
    let mut v = base(
        vec![routed("x", "fd00:5d::3", &["fd00:77::/48"])],
        vec![vip("fd00:5d:f::1", Some("c1"), &["a", "b"])],
    );
    v.vips[0].epoch = Some(EpochView { term: 9, rank: 0 });
    let (kept, dropped) = check(v.clone(), &pinned()).unwrap();
    assert_eq!((kept, dropped), (v, vec![]));
}

#[test]
fn e5a_a_routed_prefix_on_a_pinned_members_address_refuses_the_view() {
    let v = base(vec![routed("x", "fd00:5d::3", &["fd00:5d::2/128"])], vec![]);
    let refused = check(v.clone(), &pinned()).unwrap_err();
    assert_eq!(rules(&refused), [Rule::Overlap]);
    assert!(refused[0].to_string().contains("member x (fd00:5d::3)"), "{refused:?}");
    assert!(refused[0].detail.contains("member b's address"), "{refused:?}");
    // The same overlap between two new members drops the one whose prefix covers the other.
    let mut pins = Pins::new();
    pins.pin("fd00:5d::1".parse().unwrap(), K1);
    let (kept, dropped) = check(v, &pins).unwrap();
    assert_eq!(rules(&dropped), [Rule::Overlap]);
    assert_eq!(
        kept.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn e5b_the_default_route_and_short_prefixes_are_never_taken() {
    let refused = check(base(vec![routed("x", "fd00:5d::3", &["::/0"])], vec![]), &pinned()).unwrap_err();
    assert!(
        rules(&refused).contains(&Rule::Overlap),
        "::/0 covers pinned members: {refused:?}"
    );
    let (kept, dropped) = check(base(vec![routed("x", "fd00:5d::3", &["3000::/8"])], vec![]), &pinned()).unwrap();
    assert_eq!(rules(&dropped), [Rule::ShortPrefix]);
    assert_eq!(kept.members.len(), 2);
    let (_, dropped) = check(base(vec![routed("x", "fd00:5d::3", &["ff02::/16"])], vec![]), &pinned()).unwrap();
    assert_eq!(rules(&dropped), [Rule::Special]);
    // An established member whose prefixes turn hostile refuses the view (it stays as it was).
    let mut b = member("b", "fd00:5d::2", K2);
    b.routed_prefixes = vec!["4000::/3".parse().unwrap()];
    let v = view(vec![member("a", "fd00:5d::1", K1), b], vec![]);
    assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::ShortPrefix]);
}

#[test]
fn e5c_a_vip_on_a_members_address_is_refused_or_dropped() {
    let v = base(vec![], vec![vip("fd00:5d::2", None, &["a"])]);
    let refused = check(v, &pinned()).unwrap_err();
    assert_eq!(rules(&refused), [Rule::Overlap]);
    assert!(refused[0].to_string().contains("VIP fd00:5d::2"), "{refused:?}");
    // On a new member's address, or inside a new member's routed prefix: the VIP goes.
    let v = base(
        vec![routed("x", "fd00:5d::3", &["fd00:77::/48"])],
        vec![
            vip("fd00:5d::3", None, &["a"]),
            vip("fd00:77::9", None, &["a"]),
            vip("fd00:5d:f::1", None, &["a"]),
        ],
    );
    let (kept, dropped) = check(v, &pinned()).unwrap();
    assert_eq!(rules(&dropped), [Rule::Overlap, Rule::OutsideOverlay, Rule::Overlap]);
    assert_eq!(kept.vips.len(), 1);
    assert_eq!(kept.vips[0].address.to_string(), "fd00:5d:f::1");
    // Inside an established member's routed prefix: refused.
    let mut b = member("b", "fd00:5d::2", K2);
    b.routed_prefixes = vec!["fd00:78::/48".parse().unwrap()];
    let v = view(
        vec![member("a", "fd00:5d::1", K1), b],
        vec![vip("fd00:78::1", None, &["a"])],
    );
    assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Overlap]);
}

#[test]
fn e5d_a_vip_or_prefix_on_the_underlay_is_dropped() {
    let v = base(
        vec![routed("x", "fd00:5d::3", &["2001:db8::/64"])],
        vec![
            vip("2001:db8::2", None, &["a"]),
            vip("2001:db8::100", None, &["a"]),
            vip("::1", None, &["a"]),
        ],
    );
    let (kept, dropped) = check(v, &pinned()).unwrap();
    assert!(kept.vips.is_empty() && kept.members.len() == 2, "{kept:?}");
    let found: Vec<(&str, Rule, bool, bool)> = dropped
        .iter()
        .map(|p| {
            (
                p.entry.as_str(),
                p.rule,
                p.detail.contains("member b's underlay endpoint"),
                p.detail.contains("the registry's address"),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("member x (fd00:5d::3)", Rule::Underlay, true, false),
            ("member x (fd00:5d::3)", Rule::Underlay, false, true),
            ("VIP 2001:db8::2", Rule::OutsideOverlay, false, false),
            ("VIP 2001:db8::2", Rule::Underlay, true, false),
            ("VIP 2001:db8::100", Rule::OutsideOverlay, false, false),
            ("VIP 2001:db8::100", Rule::Underlay, false, true),
            ("VIP ::1", Rule::Special, false, false),
        ]
    );
}

#[test]
fn e5e_a_member_outside_the_overlay_is_dropped_and_duplicates_too() {
    let v = base(
        vec![member("x", "fd00:99::5", K3), member("y", "fd00:5d::2", K3)],
        vec![],
    );
    let (kept, dropped) = check(v, &Pins::new()).unwrap();
    assert_eq!(rules(&dropped), [Rule::OutsideOverlay, Rule::Duplicate]);
    assert_eq!(
        kept.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn a_vip_outside_the_networks_pool_is_dropped_and_a_pool_outside_the_overlay_refuses_the_view() {
    let mut v = base(
        vec![],
        vec![vip("fd00:5d:f::1", None, &["a"]), vip("fd00:5d::77", None, &["a"])],
    );
    v.vip_pool = Some("fd00:5d:f::/64".parse().unwrap());
    let (kept, dropped) = check(v.clone(), &pinned()).unwrap();
    assert_eq!(rules(&dropped), [Rule::OutsidePool]);
    assert_eq!(dropped[0].entry, "VIP fd00:5d::77");
    assert_eq!(kept.vips.len(), 1);
    v.vip_pool = Some("fd00:77::/64".parse().unwrap());
    assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Network]);
}

#[test]
fn too_many_candidates_drop_the_vip_and_absurd_floors_are_removed() {
    let names: Vec<String> = (0..=MAX_CANDIDATES).map(|i| format!("n{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut v = base(
        vec![],
        vec![
            vip("fd00:5d:f::1", None, &all),
            vip("fd00:5d:f::2", None, &all[..MAX_CANDIDATES]),
            vip("fd00:5d:f::2", None, &["a"]),
        ],
    );
    v.vips[1].epoch = Some(EpochView {
        term: u64::MAX,
        rank: 0,
    });
    let (kept, dropped) = check(v, &pinned()).unwrap();
    assert_eq!(
        rules(&dropped),
        [Rule::TooManyCandidates, Rule::TermFloor, Rule::Duplicate]
    );
    assert_eq!(kept.vips.len(), 1, "33 candidates refused, never truncated");
    assert_eq!(kept.vips[0].candidates.len(), MAX_CANDIDATES);
    assert_eq!(kept.vips[0].epoch, None, "the floor is gone, the VIP stays");
}

#[test]
fn another_network_or_an_impersonation_of_this_node_refuses_the_view() {
    let mut v = base(vec![], vec![]);
    v.overlay_prefix = Some("fd00:6e::/48".parse().unwrap());
    assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Network]);
    let mut v = base(vec![], vec![]);
    v.network_id = "n2".into();
    assert_eq!(rules(&check(v, &pinned()).unwrap_err()), [Rule::Network]);
    let v = view(vec![member("evil", "fd00:5d::1", K3)], vec![]);
    assert_eq!(rules(&check(v, &Pins::new()).unwrap_err()), [Rule::SelfImpersonation]);
    let v = view(vec![member("evil", "fd00:5d::9", K1)], vec![]);
    assert_eq!(rules(&check(v, &Pins::new()).unwrap_err()), [Rule::SelfImpersonation]);
}

#[test]
fn effective_config_takes_identity_members_and_vips() {
    let f = file(
        "[k3s]\nrole = \"server\"\n[k3s.health]\nkind = \"tcp\"\ntarget = \"[::1]:6443\"\n\
             [[vip]]\naddress = \"fd00:9::1\"\ncandidates = [\"b\"]\n",
    );
    let v = view(
        vec![member("a", "fd00:5d::1", K1), member("b", "fd00:5d::2", K2)],
        vec![
            vip("fd00:5d:f::1", Some("c1"), &["a", "b"]),
            vip("fd00:5d:f::2", Some("c2"), &["b"]),
            vip("fd00:5d:f::3", None, &[]),
            vip("fd00:9::1", None, &["a"]),
        ],
    );
    let (cfg, notes) = effective_config(&f, &identity(), &v);
    assert_eq!(cfg.interface.address, identity().address);
    assert_eq!(cfg.interface.overlay_prefix, identity().overlay_prefix);
    assert_eq!(
        cfg.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(cfg.members[1].public_key, Key::from_base64(K2).unwrap());
    let vips: Vec<(String, Vec<String>, bool)> = cfg
        .vips
        .iter()
        .map(|v| (v.address.to_string(), v.candidates.clone(), v.health.is_some()))
        .collect();
    assert_eq!(
        vips,
        [
            ("fd00:9::1".into(), vec!["b".into()], false),
            ("fd00:5d:f::1".into(), vec!["a".into(), "b".into()], true),
            ("fd00:5d:f::2".into(), vec!["b".into()], false),
        ],
        "file VIP first and kept; k3s health only on this node's cluster VIP; no empty VIP"
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    cfg.check_identity(&Key::from_base64(K1).unwrap()).unwrap();
}

#[test]
fn invalid_keys_are_left_out_with_a_note() {
    let v = view(
        vec![member("a", "fd00:5d::1", K1), member("x", "fd00:5d::9", "nope")],
        vec![],
    );
    let (cfg, notes) = effective_config(&file(""), &identity(), &v);
    assert_eq!(cfg.members.len(), 1);
    assert!(notes[0].contains("fd00:5d::9"), "{notes:?}");
}

#[test]
fn a_registry_vip_in_quorum_mode_keeps_its_witnesses() {
    let mut q = vip("fd00:5d:f::1", None, &["a", "b"]);
    let witness = |n: &str| CandidateView {
        peer_id: format!("id-{n}"),
        name: n.into(),
        address: "fd00:5d::98".parse().unwrap(),
    };
    q.quorum = Some(crate::vocab::wire::QuorumView {
        witnesses: vec![witness("w"), witness("b")],
    });
    let v = view(
        vec![member("a", "fd00:5d::1", K1)],
        vec![q, vip("fd00:5d:f::2", None, &["a"])],
    );
    let (cfg, notes) = effective_config(&file(""), &identity(), &v);
    assert_eq!(cfg.vips[0].quorum.as_deref(), Some(&["w".to_owned()][..]));
    assert!(
        notes.iter().any(|n| n.contains("b listed as witness and as candidate")),
        "{notes:?}"
    );
    assert_eq!(cfg.vips[1].quorum, None);
}

#[test]
fn identity_must_match_the_file() {
    let mut f = file("");
    check_identity(&f, &identity()).unwrap();
    let reg = f.registry.as_mut().unwrap();
    reg.file_address = Some("fd00:5d::7".parse().unwrap());
    reg.urls = vec!["https://other".into()];
    let e = check_identity(&f, &identity()).unwrap_err().0;
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["interface.address", "registry.url"]);
    assert!(e[0].message.contains("fd00:5d::1"), "{e:?}");
}

#[test]
fn each_move_request_is_acted_on_once() {
    let mut v = view(vec![], vec![vip("fd00:5d:f::1", Some("c1"), &["a", "b"])]);
    v.vips[0].move_request = Some(MoveRequestView { to: "b".into(), seq: 1 });
    let held: Ipv6Addr = "fd00:5d:f::1".parse().unwrap();
    let mut seen = seen_moves(&v);
    assert!(
        new_moves(&v, &mut seen, &[held]).is_empty(),
        "a stored request was handled before"
    );
    v.vips[0].move_request = Some(MoveRequestView { to: "a".into(), seq: 2 });
    assert!(
        new_moves(&v, &mut seen, &[]).is_empty(),
        "not for a node that does not hold the VIP"
    );
    assert_eq!(
        new_moves(&v, &mut seen, &[held]),
        [(held, "a".to_owned())],
        "still pending"
    );
    assert!(new_moves(&v, &mut seen, &[held]).is_empty());
    let mut fresh = HashMap::new();
    assert_eq!(new_moves(&v, &mut fresh, &[held]).len(), 1);
}

/// A network with workload ranges: IPv4 overlay 203.0.113.0/24, pod pools 198.51.100.0/24 and
/// fd00:42::/48, site range 192.0.2.0/24 (b's underlay endpoint 192.0.2.10 is in it), VIP pool
/// fd00:5d:f::/64; a (this node) and b established, with their /32s and pod shares.
fn workload_view(extra: Vec<MemberView>) -> MembersResponse {
    let mut v = base(extra, vec![]);
    v.vip_pool = Some("fd00:5d:f::/64".parse().unwrap());
    v.overlay_prefix_v4 = Some("203.0.113.0/24".parse().unwrap());
    v.pod_pools = vec![
        PodPool {
            prefix: "198.51.100.0/24".parse().unwrap(),
            node_len: 28,
        },
        PodPool {
            prefix: "fd00:42::/48".parse().unwrap(),
            node_len: 64,
        },
    ];
    v.site_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    v.members[0].address_v4 = Some("203.0.113.1".parse().unwrap());
    v.members[0].prefixes = vec![pod("198.51.100.0/28"), pod("fd00:42::/64")];
    v.members[1].endpoint = Some("192.0.2.10:51820".parse().unwrap());
    v.members[1].address_v4 = Some("203.0.113.2".parse().unwrap());
    v.members[1].prefixes = vec![pod("198.51.100.16/28"), pod("fd00:42:0:1::/64")];
    v
}

fn pod(p: &str) -> RoutedPrefix {
    RoutedPrefix {
        prefix: p.parse().unwrap(),
        kind: PrefixKind::Pod,
    }
}

fn site(p: &str) -> RoutedPrefix {
    RoutedPrefix {
        prefix: p.parse().unwrap(),
        kind: PrefixKind::Site,
    }
}

/// New member x (fd00:5d::3) with the given /32 and prefixes.
fn x_with(v4: Option<&str>, prefixes: Vec<RoutedPrefix>) -> MemberView {
    let mut x = member("x", "fd00:5d::3", K3);
    x.address_v4 = v4.map(|a| a.parse().unwrap());
    x.prefixes = prefixes;
    x
}

/// Checks `v` with `local` as this host's addresses; the rules dropped and x's surviving prefixes.
fn check_x(v: MembersResponse, local: &[IpAddr]) -> (Vec<Rule>, Vec<String>, Option<std::net::Ipv4Addr>) {
    let id = identity();
    let trust = Trust {
        identity: &id,
        own_key: K1,
        pins: &pinned(),
        registry: &["2001:db8::100".parse().unwrap()],
        local,
    };
    let (kept, dropped) = validate(v, &trust).expect("workload problems never refuse a view");
    let x = kept.members.iter().find(|m| m.name == "x").expect("x stays a member");
    let prefixes = x.prefixes.iter().map(|p| p.prefix.to_string()).collect();
    (rules(&dropped), prefixes, x.address_v4)
}

#[test]
fn a_clean_workload_view_passes_unchanged() {
    let v = workload_view(vec![x_with(
        Some("203.0.113.3"),
        vec![pod("198.51.100.32/28"), site("192.0.2.128/26")],
    )]);
    let (kept, dropped) = check(v.clone(), &pinned()).unwrap();
    assert_eq!((kept, dropped), (v, vec![]));
}

#[test]
fn non_canonical_default_and_special_prefixes_are_dropped_from_their_member() {
    for (bad, rule) in [
        ("198.51.100.33/28", Rule::NotCanonical),
        ("0.0.0.0/0", Rule::ShortPrefix),
        ("::/0", Rule::ShortPrefix),
        ("127.0.0.0/8", Rule::Special),
        ("224.0.0.0/24", Rule::Special),
        ("169.254.1.0/24", Rule::Special),
        ("fe80::/64", Rule::Special),
        ("ff02::/16", Rule::Special),
    ] {
        let v = workload_view(vec![x_with(None, vec![site(bad), pod("198.51.100.32/28")])]);
        let (dropped, kept, _) = check_x(v, &[]);
        assert_eq!(dropped, [rule], "{bad}");
        assert_eq!(kept, ["198.51.100.32/28"], "{bad}: only the offending prefix goes");
    }
}

#[test]
fn pod_prefixes_outside_the_pools_and_site_prefixes_outside_the_ranges_are_dropped() {
    let v = workload_view(vec![x_with(
        None,
        vec![
            pod("10.42.0.0/24"),
            pod("fd00:43::/64"),
            site("198.51.100.64/28"),
            pod("192.0.2.128/26"),
        ],
    )]);
    let (dropped, kept, _) = check_x(v, &[]);
    assert_eq!(dropped, [Rule::OutsideRange; 4]);
    assert!(kept.is_empty());
}

#[test]
fn a_slash32_outside_the_ipv4_overlay_or_taken_is_dropped() {
    let (dropped, _, v4) = check_x(workload_view(vec![x_with(Some("192.0.2.200"), vec![])]), &[]);
    assert_eq!((dropped, v4), (vec![Rule::OutsideOverlay], None));
    let (dropped, _, v4) = check_x(workload_view(vec![x_with(Some("203.0.113.2"), vec![])]), &[]);
    assert_eq!((dropped, v4), (vec![Rule::Duplicate], None), "b's /32");
    let (dropped, _, v4) = check_x(workload_view(vec![x_with(Some("203.0.113.0"), vec![])]), &[]);
    assert_eq!((dropped, v4), (vec![Rule::OutsideOverlay], None), "the network address");
    let mut no_v4 = workload_view(vec![x_with(Some("203.0.113.3"), vec![])]);
    no_v4.overlay_prefix_v4 = None;
    no_v4.members[0].address_v4 = None;
    no_v4.members[1].address_v4 = None;
    let (dropped, _, v4) = check_x(no_v4, &[]);
    assert_eq!(
        (dropped, v4),
        (vec![Rule::OutsideOverlay], None),
        "no IPv4 overlay at all"
    );
}

#[test]
fn prefixes_overlapping_the_overlays_the_vip_pool_or_another_members_prefix_are_dropped() {
    let v = workload_view(vec![x_with(
        None,
        vec![
            site("192.0.2.128/26"),
            site("192.0.2.128/27"),  // inside x's own previous one
            pod("198.51.100.16/29"), // inside b's pod share
            pod("fd00:42::/56"),     // covers a's (this node's) share
        ],
    )]);
    let (dropped, kept, _) = check_x(v, &[]);
    assert_eq!(dropped, [Rule::Overlap; 3]);
    assert_eq!(kept, ["192.0.2.128/26"]);
    // The overlays and the VIP pool: the network's ranges are widened to hold them, so only the overlap
    // rule can catch them.
    let mut v = workload_view(vec![x_with(
        None,
        vec![site("fd00:5d:f::/64"), site("fd00:5d:1::/64"), site("203.0.113.128/25")],
    )]);
    v.site_ranges.extend([
        "fd00:5d::/32".parse::<IpNet>().unwrap(),
        "203.0.113.0/24".parse().unwrap(),
    ]);
    let (dropped, kept, _) = check_x(v, &[]);
    assert_eq!(dropped, [Rule::Overlap; 3]);
    assert!(kept.is_empty());
}

#[test]
fn an_established_members_prefix_wins_over_a_new_member_listed_before_it() {
    let mut v = workload_view(vec![]);
    let x = x_with(None, vec![pod("198.51.100.16/28")]);
    v.members.insert(0, x);
    let (dropped, kept, _) = check_x(v.clone(), &[]);
    assert_eq!((dropped, kept), (vec![Rule::Overlap], vec![]));
    let (kept_view, _) = check(v, &pinned()).unwrap();
    let b = kept_view.members.iter().find(|m| m.name == "b").unwrap();
    assert_eq!(b.prefixes, [pod("198.51.100.16/28"), pod("fd00:42:0:1::/64")]);
}

#[test]
fn no_prefix_captures_an_underlay_endpoint_the_registry_or_this_hosts_addresses() {
    let local: [IpAddr; 2] = ["192.0.2.50".parse().unwrap(), "198.51.100.1".parse().unwrap()];
    let v = workload_view(vec![x_with(
        None,
        vec![site("192.0.2.0/28"), site("192.0.2.48/28"), site("192.0.2.64/28")],
    )]);
    let (dropped, kept, _) = check_x(v, &local);
    assert_eq!(
        dropped,
        [Rule::Underlay, Rule::Underlay],
        "b's endpoint 192.0.2.10, this host's 192.0.2.50"
    );
    assert_eq!(kept, ["192.0.2.64/28"]);
    let mut v = workload_view(vec![x_with(None, vec![site("2001:db8::/112")])]);
    v.site_ranges.push("2001:db8::/32".parse().unwrap());
    let id = identity();
    let pins = pinned();
    let registry = Trust {
        identity: &id,
        own_key: K1,
        pins: &pins,
        registry: &["2001:db8::100".parse().unwrap()],
        local: &[],
    };
    let (_, dropped) = validate(v, &registry).unwrap();
    assert_eq!(rules(&dropped), [Rule::Underlay]);
    assert!(
        dropped[0].detail.contains("the registry's address 2001:db8::100"),
        "{dropped:?}"
    );
    // This node's own pod share holds its bridge's address (198.51.100.1): that is no capture.
    let trust = Trust {
        identity: &id,
        own_key: K1,
        pins: &pins,
        registry: &[],
        local: &local,
    };
    let v = workload_view(vec![]);
    let (kept, dropped) = validate(v.clone(), &trust).unwrap();
    assert_eq!((kept, dropped), (v, vec![]));
    // An IPv4 overlay prefix capturing the underlay is ignored, and with it every /32.
    let mut v = workload_view(vec![]);
    v.overlay_prefix_v4 = Some("192.0.2.0/24".parse().unwrap());
    let (kept, dropped) = validate(v, &trust).unwrap();
    assert_eq!(rules(&dropped)[0], Rule::Underlay);
    assert_eq!(kept.overlay_prefix_v4, None);
    assert!(kept.members.iter().all(|m| m.address_v4.is_none()));
}

#[test]
fn legacy_routed_prefixes_are_site_prefixes_once_and_the_effective_config_carries_the_workload() {
    let mut v = workload_view(vec![]);
    // A registry fills the legacy field with the IPv6 ones of `prefixes`; an older one only the legacy.
    v.members[1].routed_prefixes = vec!["fd00:42:0:1::/64".parse().unwrap(), "fd00:77::/48".parse().unwrap()];
    let (kept, dropped) = check(v.clone(), &pinned()).unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(kept, v, "an accepted view is stored as the registry sent it");
    let (cfg, _) = effective_config(&file(""), &identity(), &kept);
    assert_eq!(cfg.prefixes.overlay_prefix_v4, kept.overlay_prefix_v4);
    assert_eq!(cfg.prefixes.pod_pools, kept.pod_pools);
    let b = &cfg.members[1];
    assert_eq!(b.address_v4, Some("203.0.113.2".parse().unwrap()));
    assert!(b.routed_prefixes.is_empty());
    assert_eq!(
        b.workload,
        [pod("198.51.100.16/28"), pod("fd00:42:0:1::/64"), site("fd00:77::/48")]
    );
}

#[test]
fn a_dropped_prefix_leaves_its_legacy_copy_too() {
    // x's IPv6 pod share is outside the pools; the registry also lists it in the legacy field.
    let mut x = x_with(None, vec![pod("fd00:43::/64")]);
    x.routed_prefixes = vec!["fd00:43::/64".parse().unwrap()];
    let (kept, dropped) = check(workload_view(vec![x]), &pinned()).unwrap();
    assert_eq!(rules(&dropped), [Rule::OutsideRange]);
    let x = kept.members.iter().find(|m| m.name == "x").unwrap();
    assert!(x.prefixes.is_empty() && x.routed_prefixes.is_empty(), "{x:?}");
    let (cfg, _) = effective_config(&file(""), &identity(), &kept);
    assert!(cfg
        .members
        .iter()
        .all(|m| m.workload.iter().all(|p| p.prefix.to_string() != "fd00:43::/64")));
}

#[test]
fn this_nodes_own_slash32_on_its_interface_does_not_void_the_ipv4_overlay() {
    // From its second view on, this node's /32 (a's 203.0.113.1) is one of the host's addresses.
    let (rules_own, _, x_v4) = check_x(
        workload_view(vec![x_with(Some("203.0.113.3"), vec![])]),
        &["203.0.113.1".parse().unwrap()],
    );
    assert_eq!((rules_own, x_v4), (vec![], Some("203.0.113.3".parse().unwrap())));
    // Any other local address inside it still voids it.
    let (rules_other, _, x_v4) = check_x(
        workload_view(vec![x_with(Some("203.0.113.3"), vec![])]),
        &["203.0.113.9".parse().unwrap()],
    );
    assert!(rules_other.contains(&Rule::Underlay), "{rules_other:?}");
    assert_eq!(x_v4, None);
}

fn floating(prefix: &str, gateway: Option<&str>) -> crate::vocab::wire::FloatingView {
    crate::vocab::wire::FloatingView {
        floating_id: format!("f-{prefix}"),
        prefix: prefix.parse().unwrap(),
        gateway: gateway.map(|g| g.parse().unwrap()),
        candidates: vec![CandidateView {
            peer_id: "id-a".into(),
            name: "a".into(),
            address: "fd00:5d::1".parse().unwrap(),
        }],
        holder: None,
        epoch: None,
        move_request: None,
        quorum: None,
    }
}

#[test]
fn floating_prefixes_are_vetted_and_merged_after_the_files() {
    let mut v = view(vec![member("a", "fd00:5d::1", K1)], vec![]);
    v.floating = vec![
        floating("203.0.113.0/24", Some("203.0.113.1")),
        floating("203.0.113.128/25", None),
        floating("0.0.0.0/0", None),
        floating("fd00:5d:1::/48", None),
        floating("198.51.100.0/24", Some("192.0.2.1")),
        floating("2001:db8:5::/64", None),
    ];
    let id = identity();
    // This node's own address inside its LAN's prefix is expected, never a reason to drop it.
    let local = ["203.0.113.2".parse().unwrap()];
    let trust = Trust {
        identity: &id,
        own_key: K1,
        pins: &pinned(),
        registry: &[],
        local: &local,
    };
    let (kept, dropped) = validate(v, &trust).expect("floating problems never refuse a view");
    let prefixes: Vec<String> = kept.floating.iter().map(|f| f.prefix.to_string()).collect();
    assert_eq!(prefixes, ["203.0.113.0/24", "2001:db8:5::/64"], "{dropped:?}");
    assert_eq!(
        rules(&dropped),
        [Rule::Overlap, Rule::ShortPrefix, Rule::Overlap, Rule::OutsideRange]
    );

    let file = file(
        "[[floating]]\nprefix = \"2001:db8:5::/64\"\ngateway = \"2001:db8:5::1\"\ninterface = \"lan0\"\ncandidates = [\"b\"]\n",
    );
    let (cfg, notes) = effective_config(&file, &id, &kept);
    let merged: Vec<(String, Vec<String>, bool)> = cfg
        .floating
        .iter()
        .map(|f| (f.prefix.to_string(), f.candidates.clone(), f.gateway.is_some()))
        .collect();
    assert_eq!(
        merged,
        [
            ("2001:db8:5::/64".to_owned(), vec!["b".to_owned()], true),
            ("203.0.113.0/24".to_owned(), vec!["a".to_owned()], false),
        ],
        "the file's entry wins; the registry's has no gateway without the file's interface"
    );
    assert!(notes.iter().any(|n| n.contains("2001:db8:5::/64")), "{notes:?}");
}

#[test]
fn a_registry_floating_prefix_in_quorum_mode_keeps_its_witnesses_unless_the_file_has_it() {
    let mut v = view(vec![member("a", "fd00:5d::1", K1)], vec![]);
    let mut q = floating("203.0.113.0/24", None);
    q.quorum = Some(crate::vocab::wire::QuorumView {
        witnesses: vec![CandidateView {
            peer_id: "id-w".into(),
            name: "w".into(),
            address: "fd00:5d::98".parse().unwrap(),
        }],
    });
    v.floating = vec![q, floating("2001:db8:5::/64", None)];
    let (cfg, _) = effective_config(&file(""), &identity(), &v);
    let quorum: Vec<Option<Vec<String>>> = cfg.floating.iter().map(|f| f.quorum.clone()).collect();
    assert_eq!(quorum, [Some(vec!["w".to_owned()]), None]);

    // The file's entry wins whole: its quorum setting (off here) over the registry's.
    let file = file("[[floating]]\nprefix = \"203.0.113.0/24\"\ncandidates = [\"a\"]\n");
    let (cfg, _) = effective_config(&file, &identity(), &v);
    assert_eq!(cfg.floating[0].prefix.to_string(), "203.0.113.0/24");
    assert_eq!(cfg.floating[0].quorum, None);
}
