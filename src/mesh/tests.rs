use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::Path;

use super::*;
use crate::config;

fn key(n: u8) -> Key {
    let mut k = Key::generate_private();
    k.0[0] = n;
    k
}

fn cfg(members: &[(&str, &Key, &str, Option<&str>)]) -> Config {
    let mut text =
        String::from("[interface]\nname = \"wg0\"\naddress = \"fd00:5d::1\"\noverlay_prefix = \"fd00:5d::/64\"\n");
    for (name, k, addr, endpoint) in members {
        text += &format!(
            "[[members]]\nname = \"{name}\"\npublic_key = \"{}\"\naddress = \"{addr}\"\n",
            k.get_public().to_base64()
        );
        if let Some(e) = endpoint {
            text += &format!("endpoint = \"{e}\"\n");
        }
    }
    config::parse(Path::new("t.toml"), &text).unwrap()
}

fn desired(config: &Config, own: &Key) -> Desired {
    Desired::from_config(config, own)
}

/// The device after `plan` was applied to an empty device: the state the reconciler would cache.
fn applied(plan: &DevicePlan) -> ActualDevice {
    let mut cache = ActualDevice::default();
    plan.apply_to(&mut cache);
    cache
}

#[test]
fn empty_device_gets_everything_and_self_is_skipped() {
    let (me, b, c) = (key(1), key(2), key(3));
    let config = cfg(&[
        ("me", &me, "fd00:5d::1", None),
        ("b", &b, "fd00:5d::2", Some("192.0.2.2:51820")),
        ("c", &c, "fd00:5d::3", None),
    ]);
    let d = desired(&config, &me);
    let plan = plan_device(&d, &ActualDevice::default(), SystemTime::now());
    assert_eq!(plan.private_key, Some(me.clone()));
    assert_eq!(plan.listen_port, Some(51820));
    let names: Vec<_> = plan.add.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"b") && names.contains(&"c"));
    let b_spec = plan.add.iter().find(|p| p.name == "b").unwrap();
    assert_eq!(b_spec.allowed_ips, BTreeSet::from(["fd00:5d::2/128".parse().unwrap()]));
    assert_eq!(b_spec.keepalive, Some(25));
    assert!(plan.update.is_empty() && plan.remove.is_empty());
    // Once applied, the same desired state plans nothing: a restart adopts without touching anything.
    assert!(plan_device(&d, &applied(&plan), SystemTime::now()).is_empty());
}

#[test]
fn removing_a_member_removes_only_that_peer() {
    let (me, b, c) = (key(1), key(2), key(3));
    let before = desired(
        &cfg(&[("b", &b, "fd00:5d::2", None), ("c", &c, "fd00:5d::3", None)]),
        &me,
    );
    let device = applied(&plan_device(&before, &ActualDevice::default(), SystemTime::now()));
    let after = desired(&cfg(&[("b", &b, "fd00:5d::2", None)]), &me);
    let plan = plan_device(&after, &device, SystemTime::now());
    assert_eq!(plan.remove, vec![c.get_public()]);
    assert!(plan.add.is_empty() && plan.update.is_empty() && plan.private_key.is_none() && plan.listen_port.is_none());
}

#[test]
fn allowed_ips_of_other_owners_survive_a_resync() {
    let (me, b) = (key(1), key(2));
    let config = cfg(&[("b", &b, "fd00:5d::2", None)]);
    let mut d = Desired::from_config(&config, &me);
    let membership = d.membership().clone();
    let mut device = applied(&plan_device(&d, &ActualDevice::default(), SystemTime::now()));
    // Another owner's prefix is present on the device (e.g. a VIP routed to b): only the membership
    // claims composed alone would strip it, the composed set keeps it.
    let vip: IpNet = "fd00:5d::100/128".parse().unwrap();
    device.peers.get_mut(&b.get_public().0).unwrap().allowed_ips.insert(vip);
    let mut composed = membership;
    composed.get_mut(&b.get_public().0).unwrap().insert(vip);
    d.set_membership(composed);
    assert!(plan_device(&d, &device, SystemTime::now()).is_empty());
    // Without the claim, the prefix is removed by replacing b's set with the claimed one.
    d.set_membership(BTreeMap::from([(
        b.get_public().0,
        BTreeSet::from(["fd00:5d::2/128".parse().unwrap()]),
    )]));
    let plan = plan_device(&d, &device, SystemTime::now());
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].allowed_ips.as_ref().unwrap().len(), 1);
}

#[test]
fn endpoint_is_not_overwritten_while_the_handshake_is_fresh() {
    let (me, b) = (key(1), key(2));
    let d = desired(&cfg(&[("b", &b, "fd00:5d::2", Some("192.0.2.2:51820"))]), &me);
    let now = SystemTime::now();
    let mut device = applied(&plan_device(&d, &ActualDevice::default(), now));
    let peer = device.peers.get_mut(&b.get_public().0).unwrap();
    peer.endpoint = Some("198.51.100.7:40000".parse().unwrap());
    peer.last_handshake = Some(now - Duration::from_secs(30));
    assert!(
        plan_device(&d, &device, now).is_empty(),
        "roamed peer with a live session is left alone"
    );
    device.peers.get_mut(&b.get_public().0).unwrap().last_handshake = Some(now - Duration::from_secs(600));
    let plan = plan_device(&d, &device, now);
    assert_eq!(plan.update[0].endpoint, Some("192.0.2.2:51820".parse().unwrap()));
    assert_eq!(plan.update[0].allowed_ips, None);
}

#[test]
fn keepalive_change_and_peer_key_swap() {
    let (me, b, b2) = (key(1), key(2), key(4));
    let mut config = cfg(&[("b", &b, "fd00:5d::2", None)]);
    let device = applied(&plan_device(
        &desired(&config, &me),
        &ActualDevice::default(),
        SystemTime::now(),
    ));
    config.interface.persistent_keepalive = None;
    let plan = plan_device(&desired(&config, &me), &device, SystemTime::now());
    assert_eq!(plan.update[0].keepalive, Some(0));
    config.members[0].public_key = b2.get_public();
    let plan = plan_device(&desired(&config, &me), &device, SystemTime::now());
    assert_eq!((plan.add.len(), plan.remove.len()), (1, 1));
}

#[test]
fn net_plan_touches_only_owned_state() {
    let me = key(1);
    let d = desired(&cfg(&[]), &me);
    let actual = ActualNet {
        up: false,
        mtu: 1500,
        addresses: BTreeSet::from([
            "fd00:5d::9/128".parse().unwrap(), // stale own address: removed
            "2001:db8::1/64".parse().unwrap(), // someone else's: kept
            "fd00:5d::77/64".parse().unwrap(), // not a /128: kept
        ]),
        addresses_v4: BTreeSet::new(),
        owned_routes: BTreeSet::from(["fd00:5e::/48".parse().unwrap()]),
    };
    let plan = plan_net(&d, &actual);
    assert!(plan.set_up);
    assert_eq!(plan.mtu, Some(1420));
    assert_eq!(plan.add_addresses, vec!["fd00:5d::1/128".parse().unwrap()]);
    assert_eq!(plan.del_addresses, vec!["fd00:5d::9/128".parse().unwrap()]);
    assert_eq!(plan.add_routes, vec!["fd00:5d::/64".parse().unwrap()]);
    assert_eq!(plan.del_routes, vec!["fd00:5e::/48".parse().unwrap()]);
    let settled = ActualNet {
        up: true,
        mtu: 1420,
        addresses: d.addresses.clone(),
        addresses_v4: BTreeSet::new(),
        owned_routes: d.routes.clone(),
    };
    assert!(plan_net(&d, &settled).is_empty());
}

#[test]
fn merge_join_finds_adds_removes_and_updates_interleaved() {
    let me = key(1);
    let keys: Vec<Key> = (10..20).map(key).collect();
    let member = |i: usize| (format!("m{i}"), &keys[i], format!("fd00:5d::{:x}", i + 16));
    let build = |idx: &[usize]| {
        let owned: Vec<(String, &Key, String)> = idx.iter().map(|&i| member(i)).collect();
        let refs: Vec<(&str, &Key, &str, Option<&str>)> = owned
            .iter()
            .map(|(n, k, a)| (n.as_str(), *k, a.as_str(), None))
            .collect();
        desired(&cfg(&refs), &me)
    };
    let device = applied(&plan_device(
        &build(&[0, 2, 4, 6, 8]),
        &ActualDevice::default(),
        SystemTime::now(),
    ));
    let mut target = build(&[1, 2, 3, 6, 9]);
    let six = keys[6].get_public().0;
    target.peers.get_mut(&six).unwrap().keepalive = None;
    let plan = plan_device(&target, &device, SystemTime::now());
    let mut added: Vec<_> = plan.add.iter().map(|p| p.public_key.clone()).collect();
    let mut removed = plan.remove.clone();
    let by_bytes = |a: &Key, b: &Key| a.0.cmp(&b.0);
    added.sort_by(by_bytes);
    removed.sort_by(by_bytes);
    let mut want_added: Vec<_> = [1, 3, 9].iter().map(|&i| keys[i].get_public()).collect();
    let mut want_removed: Vec<_> = [0, 4, 8].iter().map(|&i| keys[i].get_public()).collect();
    want_added.sort_by(by_bytes);
    want_removed.sort_by(by_bytes);
    assert_eq!(added, want_added);
    assert_eq!(removed, want_removed);
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].public_key, keys[6].get_public());
    let mut after = device.clone();
    plan.apply_to(&mut after);
    assert!(plan_device(&target, &after, SystemTime::now()).is_empty());
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0xf, 0, 0, 0, 0, 1);
const VIP2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5d, 0xf, 0, 0, 0, 0, 2);

/// Three members: this node (key 1) and peers b (key 2) and c (key 3), with a VIP configured.
fn three() -> (Config, Key, KeyBytes, KeyBytes) {
    let (me, b, c) = (key(1), key(2), key(3));
    let mut config = cfg(&[
        ("me", &me, "fd00:5d::1", None),
        ("b", &b, "fd00:5d::2", None),
        ("c", &c, "fd00:5d::3", None),
    ]);
    config.vips = config::parse(
        Path::new("t.toml"),
        "[interface]\nname = \"wg0\"\naddress = \"fd00:5d::1\"\noverlay_prefix = \"fd00:5d::/64\"\n\
         [[members]]\nname = \"me\"\npublic_key = \"i7haAoabzhwqFq5Q37vHCZVfGkUtdnswOMC9lla8ZVo=\"\naddress = \"fd00:5d::1\"\n\
         [[vip]]\naddress = \"fd00:5d:f::1\"\ncandidates = [\"me\"]\n",
    )
    .unwrap()
    .vips;
    (config, me, b.get_public().0, c.get_public().0)
}

#[test]
fn route_vip_changes_only_the_old_and_the_new_peer() {
    let (config, me, b, c) = three();
    let mut d = Desired::from_config(&config, &me);
    assert_eq!(d.route_vip(VIP, Some(b)), BTreeSet::from([b]));
    assert_eq!(
        d.peers[&b].allowed_ips,
        BTreeSet::from([net("fd00:5d::2/128"), net("fd00:5d:f::1/128")])
    );
    assert_eq!(d.vip_route(VIP), Some(b));
    // The same route again changes nothing.
    assert!(d.route_vip(VIP, Some(b)).is_empty());
    // A move touches exactly the two peers.
    assert_eq!(d.route_vip(VIP, Some(c)), BTreeSet::from([b, c]));
    assert_eq!(d.peers[&b].allowed_ips, BTreeSet::from([net("fd00:5d::2/128")]));
    assert_eq!(
        d.peers[&c].allowed_ips,
        BTreeSet::from([net("fd00:5d::3/128"), net("fd00:5d:f::1/128")])
    );
    // Routed through no peer (this node took it): only the old peer changes.
    assert_eq!(d.route_vip(VIP, None), BTreeSet::from([c]));
    assert_eq!(d.peers[&c].allowed_ips, BTreeSet::from([net("fd00:5d::3/128")]));
    assert_eq!(d.vip_route(VIP), None);
    // A key that is not a peer is remembered but changes no peer.
    assert!(d.route_vip(VIP, Some([9; 32])).is_empty());
}

#[test]
fn allowed_ips_are_the_union_of_the_owners() {
    let (config, me, b, _) = three();
    let mut d = Desired::from_config(&config, &me);
    d.route_vip(VIP, Some(b));
    d.route_vip(VIP2, Some(b));
    // The membership claims the VIP's /128 too: the union holds it once; dropping one owner's claim
    // keeps the other's.
    let mut membership = d.membership().clone();
    membership.get_mut(&b).unwrap().insert(net("fd00:5d:f::1/128"));
    assert!(d.set_membership(membership).is_empty(), "the union did not change");
    assert_eq!(
        d.route_vip(VIP, None),
        BTreeSet::new(),
        "the membership still claims it"
    );
    assert!(d.peers[&b].allowed_ips.contains(&net("fd00:5d:f::1/128")));
    assert_eq!(d.route_vip(VIP2, None), BTreeSet::from([b]));
    assert_eq!(
        d.peers[&b].allowed_ips,
        BTreeSet::from([net("fd00:5d::2/128"), net("fd00:5d:f::1/128")])
    );
}

#[test]
fn a_resync_or_reload_never_strips_a_vip_route_or_a_held_vip() {
    let (config, me, b, c) = three();
    let mut d = Desired::from_config(&config, &me);
    d.route_vip(VIP, Some(b));
    assert!(d.hold_vip(VIP2, true));
    assert!(!d.hold_vip(VIP2, true), "already held");
    // The same configuration again (a periodic resync, a registry view that changed nothing) changes no
    // peer and keeps the route.
    assert!(d.set_config(&config, &me).is_empty());
    assert_eq!(d.vip_route(VIP), Some(b));
    assert!(d.peers[&b].allowed_ips.contains(&net("fd00:5d:f::1/128")));
    // VIP2 is not configured: a reload drops it from the addresses; a configured held VIP stays.
    assert!(!d.holds(VIP2));
    d.hold_vip(VIP, true);
    let mut fewer = config.clone();
    fewer.members.retain(|m| m.name != "c");
    assert_eq!(d.set_config(&fewer, &me), BTreeSet::from([c]));
    assert!(d.holds(VIP));
    assert!(d.peers[&b].allowed_ips.contains(&net("fd00:5d:f::1/128")));
    // The membership owner replaced alone never strips it either.
    let membership = d.membership().clone();
    assert!(d.set_membership(membership).is_empty());
    assert!(d.peers[&b].allowed_ips.contains(&net("fd00:5d:f::1/128")));
    assert!(d.hold_vip(VIP, false));
    assert!(!d.holds(VIP));
}

/// A held address with a kernel lifetime (quorum mode) comes back from a pass with what is left of it,
/// rounded down to whole seconds, and not at all once less than a second is left; one without stays
/// forever. Releasing it forgets its end; a reload keeps it while the address is held.
#[test]
fn a_held_address_comes_back_with_what_is_left_of_its_lifetime() {
    let (config, me, _, _) = three();
    let mut d = Desired::from_config(&config, &me);
    let vip = IpNet::V6(config::host_net(VIP));
    let now = Instant::now();
    d.hold_vip(VIP, true);
    assert_eq!(d.lifetime_left(vip, now), Lifetime::Forever);
    d.set_lifetime_end(vip, Some(now + Duration::from_millis(2_900)));
    assert_eq!(d.lifetime_left(vip, now), Lifetime::Left(Duration::from_secs(2)));
    assert_eq!(d.lifetime_left(vip, now + Duration::from_millis(1_950)), Lifetime::Over);
    assert!(d.set_config(&config, &me).is_empty());
    assert_eq!(
        d.lifetime_left(vip, now),
        Lifetime::Left(Duration::from_secs(2)),
        "kept by a reload"
    );
    d.hold_vip(VIP, false);
    d.hold_vip(VIP, true);
    assert_eq!(
        d.lifetime_left(vip, now),
        Lifetime::Forever,
        "a new hold starts without one"
    );
    let gateway: IpNet = "203.0.113.1/24".parse().unwrap();
    d.hold_gateway(VIP2, Some((gateway, "lan0".into())));
    d.set_lifetime_end(gateway, Some(now + Duration::from_secs(2)));
    assert_eq!(d.lifetime_left(gateway, now), Lifetime::Left(Duration::from_secs(2)));
    d.hold_gateway(VIP2, None);
    assert_eq!(d.lifetime_left(gateway, now), Lifetime::Forever, "released");
}

#[test]
fn peers_carry_their_address_and_are_found_by_it() {
    let (config, me, b, c) = three();
    let d = Desired::from_config(&config, &me);
    assert_eq!(d.peers[&b].address, "fd00:5d::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(d.key_of("fd00:5d::3".parse().unwrap()), Some(c));
    assert_eq!(d.key_of("fd00:5d::1".parse().unwrap()), None, "this node is no peer");
}

#[test]
fn planning_only_the_changed_peers_matches_the_full_plan() {
    let (config, me, b, c) = three();
    let mut d = Desired::from_config(&config, &me);
    let now = SystemTime::now();
    let device = applied(&plan_device(&d, &ActualDevice::default(), now));
    d.route_vip(VIP, Some(b));
    let changed = d.route_vip(VIP, Some(c));
    assert_eq!(changed, BTreeSet::from([b, c]));
    // b is back to its membership set (as on the device), c gained the VIP: one update either way.
    let partial = plan_peers(&d, &device, &changed, now);
    assert_eq!(partial, plan_device(&d, &device, now));
    assert_eq!(partial.update.len(), 1);
    assert_eq!(partial.update[0].public_key.0, c);
    // A peer named but unchanged plans nothing; a removed one is removed, an added one added.
    assert!(plan_peers(&d, &device, &BTreeSet::from([b]), now).is_empty());
    let mut fewer = config.clone();
    fewer.members.retain(|m| m.name != "b");
    let changed = d.set_config(&fewer, &me);
    assert_eq!(changed, BTreeSet::from([b]));
    let plan = plan_peers(&d, &device, &changed, now);
    assert_eq!(plan.remove.len(), 1);
    assert!(plan.add.is_empty() && plan.update.is_empty() && plan.private_key.is_none());
    let empty = ActualDevice::default();
    let plan = plan_peers(&d, &empty, &BTreeSet::from([c]), now);
    assert_eq!(plan.add.len(), 1);
    assert!(
        plan.private_key.is_none() && plan.listen_port.is_none(),
        "only peers are planned"
    );
}

#[test]
fn a_reload_that_changes_one_peer_plans_one_peer() {
    let (config, me, b, _) = three();
    let mut d = Desired::from_config(&config, &me);
    let now = SystemTime::now();
    let device = applied(&plan_device(&d, &ActualDevice::default(), now));
    let mut moved = config.clone();
    let member = moved.members.iter_mut().find(|m| m.name == "b").unwrap();
    member.endpoint = Some("[2001:db8::2]:51820".parse().unwrap());
    let changed = d.reload(&moved, &me).expect("the interface did not change");
    assert_eq!(changed, BTreeSet::from([b]));
    let plan = plan_peers(&d, &device, &changed, now);
    assert_eq!(plan, plan_device(&d, &device, now));
    assert_eq!(plan.update.len(), 1);
    assert_eq!(plan.update[0].public_key.0, b);
    // The same configuration again plans nothing; a new listen port needs a pass over the whole device.
    assert_eq!(d.reload(&moved, &me), Some(BTreeSet::new()));
    let mut port = moved.clone();
    port.interface.listen_port += 1;
    assert_eq!(d.reload(&port, &me), None);
}

/// `cfg` with workload prefixes as the registry's view gives them: an IPv4 overlay prefix, a pod pool per
/// family; me (1) and b (2) each with a /32, an IPv4 and an IPv6 pod share, b with an IPv4 site prefix.
fn workload_cfg(me: &Key, b: &Key) -> Config {
    let mut config = cfg(&[
        ("me", me, "fd00:5d::1", None),
        ("b", b, "fd00:5d::2", Some("192.0.2.2:51820")),
    ]);
    let pod = |p: &str| RoutedPrefix {
        prefix: p.parse().unwrap(),
        kind: PrefixKind::Pod,
    };
    config.prefixes = crate::config::NetworkPrefixes {
        overlay_prefix_v4: Some("203.0.113.0/24".parse().unwrap()),
        pod_pools: vec![
            crate::vocab::PodPool {
                prefix: "198.51.100.0/24".parse().unwrap(),
                node_len: 28,
            },
            crate::vocab::PodPool {
                prefix: "fd00:42::/48".parse().unwrap(),
                node_len: 64,
            },
        ],
        site_ranges: vec!["192.0.2.128/25".parse().unwrap()],
    };
    config.members[0].address_v4 = Some("203.0.113.1".parse().unwrap());
    config.members[0].workload = vec![pod("198.51.100.0/28"), pod("fd00:42::/64")];
    config.members[1].address_v4 = Some("203.0.113.2".parse().unwrap());
    config.members[1].workload = vec![
        pod("198.51.100.16/28"),
        pod("fd00:42:0:1::/64"),
        RoutedPrefix {
            prefix: "192.0.2.128/26".parse().unwrap(),
            kind: PrefixKind::Site,
        },
    ];
    config
}

fn nets(list: &[&str]) -> BTreeSet<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn workload_prefixes_are_their_own_owner_routed_and_the_own_slash32_on_the_interface() {
    let (me, b) = (key(1), key(2));
    let mut d = desired(&workload_cfg(&me, &b), &me);
    let b_key = b.get_public().0;
    let b_workload = nets(&[
        "203.0.113.2/32",
        "198.51.100.16/28",
        "fd00:42:0:1::/64",
        "192.0.2.128/26",
    ]);
    assert_eq!(d.workload_claims().get(&b_key), Some(&b_workload));
    assert_eq!(d.membership().get(&b_key), Some(&nets(&["fd00:5d::2/128"])));
    let mut all = b_workload.clone();
    all.insert("fd00:5d::2/128".parse().unwrap());
    assert_eq!(d.peers[&b_key].allowed_ips, all);
    // Routed: both overlays and b's prefixes; b's /32 is covered by the IPv4 overlay route; my own
    // prefixes are not routed into the tunnel.
    assert_eq!(
        d.routes,
        nets(&[
            "fd00:5d::/64",
            "203.0.113.0/24",
            "198.51.100.16/28",
            "fd00:42:0:1::/64",
            "192.0.2.128/26"
        ])
    );
    assert_eq!(d.address_v4, Some("203.0.113.1/32".parse().unwrap()));
    assert_eq!(d.workload.forwarding(), Families { v4: true, v6: true });
    assert_eq!(
        d.workload.own_pods().collect::<BTreeSet<_>>(),
        nets(&["198.51.100.0/28", "fd00:42::/64"])
    );
    // A VIP move does not disturb the workload claims, and a membership change does not strip them.
    let vip: Ipv6Addr = "fd00:5d::f1".parse().unwrap();
    d.route_vip(vip, Some(b_key));
    assert!(d.peers[&b_key].allowed_ips.is_superset(&b_workload));
    d.set_membership(Claims::from([(b_key, nets(&["fd00:5d::2/128"]))]));
    assert!(d.peers[&b_key].allowed_ips.is_superset(&b_workload));
    // A reload without the prefixes takes them away (and keeps the VIP route).
    let changed = d.set_config(
        &cfg(&[("me", &me, "fd00:5d::1", None), ("b", &b, "fd00:5d::2", None)]),
        &me,
    );
    assert!(changed.contains(&b_key));
    assert_eq!(
        d.peers[&b_key].allowed_ips,
        nets(&["fd00:5d::2/128", "fd00:5d::f1/128"])
    );
    assert_eq!(d.address_v4, None);
    assert_eq!(d.workload.forwarding(), Families::default());
}

#[test]
fn net_plan_adds_the_own_slash32_and_removes_only_owned_ipv4() {
    let (me, b) = (key(1), key(2));
    let d = desired(&workload_cfg(&me, &b), &me);
    let actual = ActualNet {
        up: true,
        mtu: 1420,
        addresses: d.addresses.clone(),
        addresses_v4: BTreeSet::from([
            "203.0.113.9/32".parse().unwrap(),  // a stale /32 of ours: removed
            "203.0.113.10/24".parse().unwrap(), // not a /32: someone else's
            "192.0.2.77/32".parse().unwrap(),   // outside the IPv4 overlay: someone else's
        ]),
        owned_routes: nets(&["fd00:5d::/64", "198.51.100.99/32"]),
    };
    let plan = plan_net(&d, &actual);
    assert_eq!(plan.add_addresses_v4, vec!["203.0.113.1/32".parse().unwrap()]);
    assert_eq!(plan.del_addresses_v4, vec!["203.0.113.9/32".parse().unwrap()]);
    assert_eq!(plan.del_routes, vec!["198.51.100.99/32".parse().unwrap()]);
    assert_eq!(plan.add_routes.len(), 4, "{:?}", plan.add_routes);
    assert!(plan.add_routes.contains(&"203.0.113.0/24".parse().unwrap()));
}

#[test]
fn tunnel_mtu_subtracts_the_outer_familys_overhead_down_to_1280() {
    assert_eq!(tunnel_mtu(1500, true), 1420);
    assert_eq!(tunnel_mtu(1500, false), 1440);
    assert_eq!(tunnel_mtu(9000, true), 8920);
    assert_eq!(tunnel_mtu(1400, false), 1340);
    assert_eq!(tunnel_mtu(1300, true), 1280, "never below IPv6's minimum");
    assert_eq!(tunnel_mtu(0, false), 1280);
}

#[test]
fn firewall_ruleset_golden() {
    let (me, b) = (key(1), key(2));
    let d = desired(&workload_cfg(&me, &b), &me);
    let ruleset = firewall::ruleset("wg0", &d.workload).expect("a node with pod prefixes has a table");
    let golden = "\
table inet sdwand {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname \"wg0\" return
\t\tip daddr { 192.0.2.128/26, 198.51.100.0/24, 203.0.113.0/24 } return
\t\tip6 daddr { fd00:42::/48, fd00:5d::/64 } return
\t\tip saddr { 198.51.100.0/28 } masquerade
\t\tip6 saddr { fd00:42::/64 } masquerade
\t}
\tchain forward {
\t\ttype filter hook forward priority mangle; policy accept;
\t\toifname \"wg0\" tcp flags syn tcp option maxseg size set rt mtu
\t}
}
";
    assert_eq!(ruleset, golden);
    assert_eq!(
        firewall::script(&ruleset),
        format!("table inet sdwand\ndelete table inet sdwand\n{golden}")
    );
    // Site prefixes only: routed, clamped, never masqueraded.
    let mut config = workload_cfg(&me, &b);
    config.members[0]
        .workload
        .retain(|p| p.prefix.to_string() == "fd00:42::/64");
    config.members[0].workload[0].kind = PrefixKind::Site;
    let site = firewall::ruleset("wg0", &desired(&config, &me).workload).unwrap();
    assert!(!site.contains("masquerade"), "{site}");
    assert!(site.contains("maxseg size set rt mtu"), "{site}");
    // No prefixes of its own: no table.
    config.members[0].workload.clear();
    assert_eq!(firewall::ruleset("wg0", &desired(&config, &me).workload), None);
}

#[test]
fn a_floating_prefix_moves_with_its_kernel_route_and_survives_a_reload() {
    let (config, me, b, c) = three();
    let mut d = Desired::from_config(&config, &me);
    let key: Ipv6Addr = "::ffff:203.0.113.0".parse().unwrap();
    let site = net("203.0.113.0/24");
    assert_eq!(d.route_floating(key, site, Some(b)), BTreeSet::from([b]));
    assert!(d.peers[&b].allowed_ips.contains(&site));
    assert!(d.routes.contains(&site) && d.floating_routed(&site));
    assert_eq!(d.route_metric(&site), Some(FLOATING_ROUTE_METRIC));
    assert_eq!(d.route_floating(key, site, Some(c)), BTreeSet::from([b, c]));
    assert!(!d.peers[&b].allowed_ips.contains(&site));
    assert!(d.peers[&c].allowed_ips.contains(&site));
    // A reload keeps the route where the machine put it.
    d.set_config(&config, &me);
    assert!(d.peers[&c].allowed_ips.contains(&site));
    assert!(d.routes.contains(&site));
    // This node takes it: no peer and no kernel route (it delivers on its LAN).
    assert_eq!(d.route_floating(key, site, None), BTreeSet::from([c]));
    assert!(!d.peers[&c].allowed_ips.contains(&site));
    assert!(!d.routes.contains(&site) && !d.floating_routed(&site));
    assert_eq!(d.route_metric(&site), None);
}
