//! E5a (security review §9.E, finding M1): a hostile registry (here a fake one in the real one's place)
//! adds a member X whose routed prefix is p1's /128. Accepted, it would move p1's allowed IP to X's key on
//! every node (WireGuard gives an allowed IP to its last writer): traffic to p1 would go to X, and X could
//! send as p1, which is exactly what key pinning is there to stop. Every daemon must refuse it: p1's entry
//! keeps its /128, X never gets it, and the refusal is counted.

use std::time::Duration;

use sdwan_lab::metrics::sum;
use sdwan_lab::{Lab, Layout};
use wireguard_control::Key;

use crate::common::{allowed, entry, lab, POLL};

/// The daemon's counters of refused registry views and dropped view entries (any of them counts).
const VIEW_REFUSALS: [&str; 2] = [
    "sdwand_registry_views_refused_total",
    "sdwand_registry_view_entries_dropped_total",
];

/// The member whose address the hostile view gives away.
const VICTIM: usize = 1;
/// The nodes that must keep routing the victim's /128 to the victim.
const OBSERVERS: [usize; 2] = [2, 3];

fn refusals(lab: &Lab, i: usize) -> f64 {
    let text = lab.metrics(i).unwrap_or_default();
    VIEW_REFUSALS.iter().map(|m| sum(&text, m, &[])).sum()
}

/// The allowed IPs of the entry with public key `key` on peer `i`'s interface (`None`: no such entry).
fn allowed_of(lab: &Lab, i: usize, key: &str) -> Option<Vec<String>> {
    let dev = lab.device(i).ok()?;
    dev.peers
        .iter()
        .find(|p| p.config.public_key.to_base64() == key)
        .map(allowed)
}

#[test]
fn a_view_that_gives_a_members_address_away_is_refused() {
    let mut lab = lab("hv", 3);
    let victim_addr = format!("{}/128", Layout::overlay_addr(VICTIM));
    let victim_allowed: Vec<Vec<String>> = OBSERVERS
        .iter()
        .map(|&i| {
            let dev = lab.device(i).unwrap();
            allowed(entry(&lab, &dev, VICTIM).expect("the victim's entry"))
        })
        .collect();
    assert!(
        victim_allowed.iter().all(|a| a.contains(&victim_addr)),
        "{victim_allowed:?}"
    );
    let refused_before: Vec<f64> = OBSERVERS.iter().map(|&i| refusals(&lab, i)).collect();

    // The real view, one revision on, with X added: a fresh key, an address of its own inside the overlay,
    // and the victim's /128 as a routed prefix.
    let mut view = serde_json::to_value(lab.registry_members().unwrap()).unwrap();
    let x_key = Key::generate_private().get_public().to_base64();
    let mut x = view["members"][0].clone();
    x["peer_id"] = "00000000-0000-4000-8000-0000000000e5".into();
    x["name"] = "x".into();
    x["public_key"] = x_key.clone().into();
    x["endpoint"] = "192.0.2.250:51820".into();
    x["address"] = "fd00:5d::e5".into();
    x["routed_prefixes"] = serde_json::json!([victim_addr]);
    x["lifecycle"] = "persistent".into();
    x["roles"] = serde_json::json!([]);
    view["members"].as_array_mut().unwrap().push(x);
    view["revision"] = (view["revision"].as_u64().unwrap() + 1).into();

    lab.kill_registry().unwrap();
    let fake = lab.start_fake_registry(view).unwrap();
    sdwan_lab::wait_until(Duration::from_secs(20), POLL, || {
        fake.views_served() >= lab.peer_count() as u64
    })
    .unwrap_or_else(|e| {
        panic!(
            "the daemons did not fetch the hostile view ({} served): {e}",
            fake.views_served()
        )
    });

    for (n, &i) in OBSERVERS.iter().enumerate() {
        let victim_key = lab.peer(VICTIM).unwrap().public_key.clone();
        let moved = || {
            allowed_of(&lab, i, &victim_key).is_some_and(|a| !a.contains(&victim_addr))
                || allowed_of(&lab, i, &x_key).is_some_and(|a| a.contains(&victim_addr))
        };
        // Handled: counted as refused, or (the defect) applied.
        let waited = sdwan_lab::wait_until(Duration::from_secs(10), POLL, || {
            refusals(&lab, i) > refused_before[n] || moved()
        });
        let dev = lab.device(i).unwrap();
        assert_eq!(
            entry(&lab, &dev, VICTIM).map(allowed),
            Some(victim_allowed[n].clone()),
            "p{i}: p{VICTIM}'s allowed IPs changed"
        );
        let x_allowed = allowed_of(&lab, i, &x_key);
        assert!(
            !x_allowed.as_ref().is_some_and(|a| a.contains(&victim_addr)),
            "p{i} gave p{VICTIM}'s {victim_addr} to X: {x_allowed:?}"
        );
        assert!(
            refusals(&lab, i) > refused_before[n],
            "p{i} did not count the refusal in {VIEW_REFUSALS:?} (waited: {waited:?})\n{}",
            lab.log_tail(i, 20)
        );
    }
}
