//! The view rules, one test per finding of the review where there is one (E5a–E5e), and the effective
//! configuration a view makes.

use super::*;
use crate::vocab::wire::{CandidateView, EpochView, MoveRequestView, VipView};
use crate::vocab::Lifecycle;
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
            registry: Some("2001:db8::100".parse().unwrap()),
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
fn identity_must_match_the_file() {
    let mut f = file("");
    check_identity(&f, &identity()).unwrap();
    let reg = f.registry.as_mut().unwrap();
    reg.file_address = Some("fd00:5d::7".parse().unwrap());
    reg.url = "https://other".into();
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
