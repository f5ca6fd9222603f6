//! E5 (security review §9.E, finding M1): a hostile registry (here a fake one in the real one's place) sends
//! views that would re-route members' traffic. Accepted, each would move an allowed IP to the wrong key on
//! every node (WireGuard gives an allowed IP to its last writer), which is exactly what key pinning is there
//! to stop. One after the other, at rising revisions:
//!
//! - (a) a new member X whose routed prefix is p1's /128 (traffic to p1 would go to X, and X could send as
//!   p1);
//! - (b) X with the routed prefix `::/0` (all IPv6 egress into the tunnel to X);
//! - (c) a VIP whose address is p2's /128, with p1 as its candidate (p1 would claim p2's address);
//! - (e) X with an address outside the network's overlay prefix.
//!
//! Every daemon must refuse each (the whole view or the offending entry): the members' allowed IPs stay
//! what they were, nobody gets the stolen prefix, and each refusal is counted.

use std::time::Duration;

use sdwan_lab::metrics::sum;
use sdwan_lab::{FakeRegistry, Lab, Layout};
use serde_json::{json, Value};
use wireguard_control::Key;

use crate::common::{allowed, lab, POLL};

/// The daemon's counters of refused registry views and dropped view entries (any of them counts).
const VIEW_REFUSALS: [&str; 2] = [
    "sdwand_registry_views_refused_total",
    "sdwand_registry_view_entries_dropped_total",
];

/// The nodes whose interfaces are checked.
const OBSERVERS: [usize; 2] = [2, 3];

/// X's address inside the overlay, and one outside it.
const X_ADDR: &str = "fd00:5d::e5";
const X_ADDR_OUTSIDE: &str = "fd01::e5";

fn refusals(lab: &Lab, i: usize) -> f64 {
    let text = lab.metrics(i).unwrap_or_default();
    VIEW_REFUSALS.iter().map(|m| sum(&text, m, &[])).sum()
}

/// Every entry's allowed IPs on peer `i`'s interface, by public key.
fn entries(lab: &Lab, i: usize) -> Vec<(String, Vec<String>)> {
    let dev = lab.device(i).unwrap();
    let mut v: Vec<(String, Vec<String>)> = dev
        .peers
        .iter()
        .map(|p| (p.config.public_key.to_base64(), allowed(p)))
        .collect();
    v.sort();
    v
}

/// The /128 of peer `j`, as an allowed IP.
fn slash128(j: usize) -> String {
    format!("{}/128", Layout::overlay_addr(j))
}

/// A member X (p1's entry as a template) with a fresh key, `address` and `routed`.
fn member_x(view: &Value, key: &str, address: &str, routed: &[&str]) -> Value {
    let mut x = view["members"][0].clone();
    x["peer_id"] = "00000000-0000-4000-8000-0000000000e5".into();
    x["name"] = "x".into();
    x["public_key"] = key.into();
    x["endpoint"] = "192.0.2.250:51820".into();
    x["address"] = address.into();
    x["routed_prefixes"] = json!(routed);
    x["lifecycle"] = "persistent".into();
    x["roles"] = json!([]);
    x
}

/// Makes a hostile view from the real one and X's public key.
type MakeView = Box<dyn Fn(&Value, &str) -> Value>;

/// One hostile view: what it changes and which allowed IP must appear in no entry but its owner's.
struct Case {
    /// Review label and what the view does.
    what: &'static str,
    /// Makes the hostile view from the real one.
    make: MakeView,
    /// The allowed IP that must not move: (owner's key or none, prefix).
    guarded: (Option<usize>, String),
}

#[test]
fn views_that_steal_or_capture_addresses_are_refused() {
    let mut lab = lab("hv", 3);
    let real = serde_json::to_value(lab.registry_members().unwrap()).unwrap();
    let p1 = real["members"][0].clone();
    let cases = [
        Case {
            what: "(a) X routes p1's /128",
            make: Box::new(|v, key| {
                let mut v = v.clone();
                let x = member_x(&v, key, X_ADDR, &[&slash128(1)]);
                v["members"].as_array_mut().unwrap().push(x);
                v
            }),
            guarded: (Some(1), slash128(1)),
        },
        Case {
            what: "(b) X routes ::/0",
            make: Box::new(|v, key| {
                let mut v = v.clone();
                let x = member_x(&v, key, X_ADDR, &["::/0"]);
                v["members"].as_array_mut().unwrap().push(x);
                v
            }),
            guarded: (None, "::/0".to_owned()),
        },
        Case {
            what: "(c) a VIP at p2's /128 with p1 as its candidate",
            make: Box::new(move |v, _| {
                let mut v = v.clone();
                v["vips"].as_array_mut().unwrap().push(json!({
                    "vip_id": "00000000-0000-4000-8000-0000000000c5",
                    "address": Layout::overlay_addr(2).to_string(),
                    "cluster_id": null,
                    "candidates": [{ "peer_id": p1["peer_id"], "name": p1["name"], "address": p1["address"] }],
                    "holder": null,
                    "epoch": null,
                }));
                v
            }),
            guarded: (Some(2), slash128(2)),
        },
        Case {
            what: "(e) X outside the overlay prefix",
            make: Box::new(|v, key| {
                let mut v = v.clone();
                let x = member_x(&v, key, X_ADDR_OUTSIDE, &[]);
                v["members"].as_array_mut().unwrap().push(x);
                v
            }),
            guarded: (None, format!("{X_ADDR_OUTSIDE}/128")),
        },
    ];

    let before: Vec<Vec<(String, Vec<String>)>> = OBSERVERS.iter().map(|&i| entries(&lab, i)).collect();
    // The lab's own peers (an X a daemon kept, without the offending entry, is not compared).
    let members: Vec<String> = (1..=lab.peer_count())
        .map(|j| lab.peer(j).unwrap().public_key.clone())
        .collect();
    lab.kill_registry().unwrap();
    let mut revision = real["revision"].as_u64().unwrap();
    let mut fake: Option<FakeRegistry> = None;
    for case in &cases {
        revision += 1;
        let x_key = Key::generate_private().get_public().to_base64();
        let mut view = (case.make)(&real, &x_key);
        view["revision"] = revision.into();
        let refused_before: Vec<f64> = OBSERVERS.iter().map(|&i| refusals(&lab, i)).collect();
        let served = fake.as_ref().map_or(0, FakeRegistry::views_served);
        match &fake {
            Some(f) => f.set_view(view).unwrap(),
            None => fake = Some(lab.start_fake_registry(view).unwrap()),
        }
        let f = fake.as_ref().unwrap();
        sdwan_lab::wait_until(Duration::from_secs(20), POLL, || {
            f.views_served() >= served + lab.peer_count() as u64
        })
        .unwrap_or_else(|e| panic!("{}: the daemons did not fetch the view: {e}", case.what));

        let (owner, prefix) = &case.guarded;
        let owner_key = owner.map(|o| lab.peer(o).unwrap().public_key.clone());
        for (n, &i) in OBSERVERS.iter().enumerate() {
            let stolen = || {
                entries(&lab, i)
                    .iter()
                    .any(|(key, ips)| ips.contains(prefix) && Some(key) != owner_key.as_ref())
            };
            // Handled: counted as refused, or (the defect) applied.
            let waited = sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
                refusals(&lab, i) > refused_before[n] || stolen()
            });
            let now = entries(&lab, i);
            assert!(
                !stolen(),
                "{}: p{i} gave {prefix} to the wrong key\nbefore: {:?}\nnow:    {now:?}",
                case.what,
                before[n]
            );
            let kept: Vec<&(String, Vec<String>)> = now.iter().filter(|(k, _)| members.contains(k)).collect();
            assert_eq!(
                kept,
                before[n].iter().collect::<Vec<_>>(),
                "{}: p{i}'s members' allowed IPs changed",
                case.what
            );
            assert!(
                refusals(&lab, i) > refused_before[n],
                "{}: p{i} did not count the refusal in {VIEW_REFUSALS:?} (waited: {waited:?})\n{}",
                case.what,
                lab.log_tail(i, 20)
            );
        }
    }
}
