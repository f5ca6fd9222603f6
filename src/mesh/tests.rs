use std::collections::BTreeMap;
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
    let (mut d, claims) = Desired::from_config(config, own);
    let mut allowed = AllowedIps::default();
    allowed.set_owner(Owner::Membership, claims);
    d.compose(&allowed);
    d
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
    let (mut d, membership) = Desired::from_config(&config, &me);
    let mut allowed = AllowedIps::default();
    allowed.set_owner(Owner::Membership, membership.clone());
    d.compose(&allowed);
    let mut device = applied(&plan_device(&d, &ActualDevice::default(), SystemTime::now()));
    // Another owner's prefix is present on the device (e.g. a VIP routed to b): only the membership
    // claims composed alone would strip it, the composed set keeps it.
    let vip: IpNet = "fd00:5d::100/128".parse().unwrap();
    device.peers.get_mut(&b.get_public().0).unwrap().allowed_ips.insert(vip);
    let mut composed = membership;
    composed.get_mut(&b.get_public().0).unwrap().insert(vip);
    allowed.set_owner(Owner::Membership, composed);
    d.compose(&allowed);
    assert!(plan_device(&d, &device, SystemTime::now()).is_empty());
    // Without the claim, the prefix is removed by replacing b's set with the claimed one.
    allowed.set_owner(
        Owner::Membership,
        BTreeMap::from([(b.get_public().0, BTreeSet::from(["fd00:5d::2/128".parse().unwrap()]))]),
    );
    d.compose(&allowed);
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
