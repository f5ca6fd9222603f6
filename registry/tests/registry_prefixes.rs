//! Workload prefixes in the registry: a network's pod pools, IPv4 overlay prefix and site ranges (checked
//! at creation), each peer's /32 and pod shares (allocated at enrollment, lowest free first), their
//! hold-down after a removal or a reap, pool exhaustion, churn, operator-assigned site prefixes, tenancy,
//! and the `routed_prefixes` field older daemons read.
//!
//! Times are injected by calling the service functions with chosen clock values, as the reaper tests do.

mod registry_support;

use std::collections::HashSet;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use registry_support::{code, Registry, Tenant};
use sdwan_registry::model::PrefixHold;
use sdwan_registry::service::{self, Ttls};
use sdwan_registry::token;
use sdwand::vocab::wire::{EnrollRequest, EnrollResponse, MembersResponse};
use sdwand::vocab::Lifecycle;
use serde_json::{json, Value};
use wireguard_control::Key;

const HOLD: Duration = Duration::from_secs(600);

fn ttls() -> Ttls {
    Ttls {
        ephemeral: Duration::from_secs(600),
        spot: Duration::from_secs(120),
        prefix_hold_down: HOLD,
        ..Ttls::default()
    }
}

fn now() -> u64 {
    sdwand::now_ms()
}

/// Creates a network `fd00:<n>::/64` (VIP pool `fd00:<n>::ffff:0/112`) with the workload fields in `extra`.
async fn try_network(r: &Registry, admin: &str, n: u16, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({
        "name": "pods",
        "overlay_prefix": format!("fd00:{n:x}::/64"),
        "vip_pool": format!("fd00:{n:x}::ffff:0/112"),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    r.post("/v1/networks", admin, body).await
}

/// An account `name` with a network as [`try_network`] makes it, and an enrollment token.
async fn tenant(r: &Registry, name: &str, n: u16, extra: Value) -> Tenant {
    let account = r.account(name).await;
    let (s, v) = try_network(r, &account.admin_token, n, extra).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let network_id = v["id"].as_str().expect("id").to_owned();
    let enrollment = r.enrollment_token(&account.admin_token, &network_id).await;
    Tenant {
        account,
        network_id,
        enrollment,
    }
}

/// The usual workload network: an IPv4 overlay prefix, an IPv4 and an IPv6 pod pool, two site ranges.
fn dual_stack() -> Value {
    json!({
        "overlay_prefix_v4": "192.0.2.0/24",
        "pod_pools": [
            {"prefix": "198.51.100.0/24", "node_len": 28},
            {"prefix": "fd00:42::/48", "node_len": 64},
        ],
        "site_ranges": ["203.0.113.0/24", "2001:db8:5::/48"],
    })
}

/// Enrolls `name` (ephemeral) through the service at `now_ms`.
async fn enroll_at(r: &Registry, t: &Tenant, name: &str, now_ms: u64) -> Result<EnrollResponse, (StatusCode, String)> {
    let presented = token::parse(&t.enrollment).expect("enrollment token");
    let req = EnrollRequest {
        name: name.to_owned(),
        public_key: Key::generate_private().get_public().to_base64(),
        endpoint: None,
        lifecycle: Lifecycle::Ephemeral,
        roles: vec![],
    };
    r.state
        .write(move |tx| service::enroll(tx, &presented, &req, now_ms))
        .await
        .map_err(|e| (e.kind.status(), format!("{}: {}", e.code, e.message)))
}

async fn members(r: &Registry, t: &Tenant) -> MembersResponse {
    let (s, v) = r
        .get(
            &format!("/v1/networks/{}/members", t.network_id),
            &t.account.admin_token,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v).expect("members response")
}

async fn holds(r: &Registry, t: &Tenant) -> Vec<PrefixHold> {
    let id = t.network_id.clone();
    r.store.read(move |tx| tx.prefix_holds(&id)).await.expect("holds")
}

async fn put_sites(r: &Registry, admin: &str, peer_id: &str, prefixes: &[&str]) -> (StatusCode, Value) {
    r.call(
        Method::PUT,
        &format!("/v1/peers/{peer_id}/site-prefixes"),
        Some(admin),
        Some(json!({ "prefixes": prefixes })),
    )
    .await
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("<not a string>").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn enrollment_allocates_the_lowest_free_shares_of_both_families() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1, dual_stack()).await;
    let mut answers = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let (s, v) = r.try_enroll(&t.enrollment, name, &[]).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        answers.push(v);
    }
    let v4: Vec<&str> = answers
        .iter()
        .map(|a| a["address_v4"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        v4,
        ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
        "the network address .0 is skipped"
    );
    // The enrollment answer carries the ranges its members' prefixes are checked against, so the daemon's
    // first view keeps them.
    let last = &answers[2];
    assert_eq!(last["overlay_prefix_v4"], "192.0.2.0/24", "{last}");
    assert_eq!(last["pod_pools"].as_array().map(Vec::len), Some(2), "{last}");
    assert_eq!(last["site_ranges"].as_array().map(Vec::len), Some(2), "{last}");

    let view = members(&r, &t).await;
    assert_eq!(view.overlay_prefix_v4, Some("192.0.2.0/24".parse().expect("prefix")));
    assert_eq!(view.pod_pools.len(), 2);
    assert_eq!(view.site_ranges.len(), 2);
    let pods: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|m| m.prefixes.iter().map(|p| format!("{} {}", p.kind, p.prefix)).collect())
        .collect();
    assert_eq!(
        pods,
        [
            ["pod 198.51.100.0/28", "pod fd00:42::/64"],
            ["pod 198.51.100.16/28", "pod fd00:42:0:1::/64"],
            ["pod 198.51.100.32/28", "pod fd00:42:0:2::/64"],
        ]
    );
    // Daemons older than `prefixes` read `routed_prefixes`: the IPv6 ones.
    let routed: Vec<String> = view.members[1]
        .routed_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(routed, ["fd00:42:0:1::/64"]);
    assert_eq!(view.members[2].address_v4, Some("192.0.2.3".parse().expect("address")));

    // The network as its admin lists it.
    let (_, networks) = r.get("/v1/networks", &t.account.admin_token).await;
    let n = &networks["networks"][0];
    assert_eq!(n["overlay_prefix_v4"], "192.0.2.0/24");
    assert_eq!(n["pod_pools"][1], json!({"prefix": "fd00:42::/48", "node_len": 64}));
    assert_eq!(strings(&n["site_ranges"]), ["203.0.113.0/24", "2001:db8:5::/48"]);
    // And `sdwanctl registry peers`' source.
    let (_, peers) = r.get("/v1/peers", &t.account.admin_token).await;
    assert_eq!(peers["peers"][0]["address_v4"], "192.0.2.1");
    assert_eq!(
        peers["peers"][0]["prefixes"][0],
        json!({"prefix": "198.51.100.0/28", "kind": "pod"})
    );
}

#[tokio::test]
async fn a_network_without_workload_prefixes_gives_none() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let p = r.enroll(&t.enrollment, "n1", &[]).await;
    assert_eq!(p.answer["address_v4"], Value::Null);
    let view = members(&r, &t).await;
    assert_eq!(view.overlay_prefix_v4, None);
    assert!(view.pod_pools.is_empty() && view.members[0].prefixes.is_empty());
    assert!(view.members[0].routed_prefixes.is_empty());
}

#[tokio::test]
async fn an_exhausted_pool_is_refused_and_nothing_is_written() {
    let r = Registry::new();
    // Four /30 shares.
    let t = tenant(
        &r,
        "acme",
        1,
        json!({"pod_pools": [{"prefix": "198.51.100.0/28", "node_len": 30}]}),
    )
    .await;
    for i in 0..4 {
        r.enroll(&t.enrollment, &format!("n{i}"), &[]).await;
    }
    let before = members(&r, &t).await;
    let (s, v) = r.try_enroll(&t.enrollment, "n4", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "pool_exhausted"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("pod pool pod_pools[0] 198.51.100.0/28 has no free /30 left: 4 held by peers"),
        "{message}"
    );
    let after = members(&r, &t).await;
    assert_eq!(after.revision, before.revision, "no write");
    assert_eq!(after.members.len(), 4);
    let (_, tokens) = r.get("/v1/enrollment-tokens", &t.account.admin_token).await;
    assert_eq!(tokens["tokens"][0]["uses"], 4, "the refused enrollment used nothing");

    // The /32s run out the same way: a /30 has two (its first and last address are never given).
    let t = tenant(&r, "other", 2, json!({"overlay_prefix_v4": "192.0.2.0/30"})).await;
    r.enroll(&t.enrollment, "a", &[]).await;
    r.enroll(&t.enrollment, "b", &[]).await;
    let (s, v) = r.try_enroll(&t.enrollment, "c", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "pool_exhausted"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("overlay_prefix_v4 192.0.2.0/30"),
        "{v}"
    );
}

#[tokio::test]
async fn released_prefixes_are_held_down_then_reused() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1, dual_stack()).await;
    let t0 = now();
    let a = enroll_at(&r, &t, "a", t0).await.expect("a");
    enroll_at(&r, &t, "b", t0).await.expect("b");
    let admin = token::parse(&t.account.admin_token).expect("admin token");
    let (id, ttls) = (a.peer_id.clone(), ttls());
    r.state
        .write(move |tx| service::delete_peer(tx, &admin, &id, &ttls, t0 + 1_000))
        .await
        .expect("remove a");
    let held: HashSet<String> = holds(&r, &t).await.iter().map(|h| h.prefix.to_string()).collect();
    let expected: HashSet<String> = ["192.0.2.1/32", "198.51.100.0/28", "fd00:42::/64"]
        .map(String::from)
        .into();
    assert_eq!(held, expected, "a's /32 and pod shares are held down");

    // During the hold-down a new peer gets the next free ones, not a's.
    let c = enroll_at(&r, &t, "c", t0 + 1_000 + 599_000).await.expect("c");
    assert_eq!(c.address_v4, Some("192.0.2.3".parse().expect("address")));
    let view = members(&r, &t).await;
    let c_pods: Vec<String> = view.members[1].prefixes.iter().map(|p| p.prefix.to_string()).collect();
    assert_eq!(c_pods, ["198.51.100.32/28", "fd00:42:0:2::/64"]);

    // After it, the lowest free share is a's again, and the expired hold-downs are gone.
    let d = enroll_at(&r, &t, "d", t0 + 1_000 + 600_000).await.expect("d");
    assert_eq!(d.address_v4, a.address_v4);
    let view = members(&r, &t).await;
    let d_pods: Vec<String> = view.members[2].prefixes.iter().map(|p| p.prefix.to_string()).collect();
    assert_eq!(d_pods, ["198.51.100.0/28", "fd00:42::/64"]);
    assert!(holds(&r, &t).await.is_empty(), "expired hold-downs are deleted");
}

/// Ephemeral CI runners churn: a pool of 4 shares (and 6 /32s) serves 10 × 4 runners enrolled and reaped
/// one after the other, never handing out a share still held down.
#[tokio::test]
async fn a_pool_survives_ten_times_its_size_in_enroll_and_reap_cycles() {
    let r = Registry::new();
    let t = tenant(
        &r,
        "ci",
        1,
        json!({"overlay_prefix_v4": "192.0.2.0/29", "pod_pools": [{"prefix": "198.51.100.0/28", "node_len": 30}]}),
    )
    .await;
    let ttls = ttls();
    let mut at = now();
    let mut used = HashSet::new();
    for i in 0..40 {
        let live: HashSet<String> = holds(&r, &t)
            .await
            .iter()
            .filter(|h| h.until_ms > at)
            .map(|h| h.prefix.to_string())
            .collect();
        let runner = enroll_at(&r, &t, &format!("runner-{i}"), at)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e:?}"));
        let view = members(&r, &t).await;
        let mine = view
            .members
            .iter()
            .find(|m| m.peer_id == runner.peer_id)
            .expect("member");
        let share = mine.prefixes[0].prefix.to_string();
        let address = format!("{}/32", runner.address_v4.expect("a /32"));
        assert!(
            !live.contains(&share) && !live.contains(&address),
            "cycle {i}: {share} or {address} was held down"
        );
        used.insert(share);
        // Silent past its TTL: reaped.
        at += 700_000;
        let reaped = r
            .state
            .write(move |tx| service::reap(tx, &ttls, at, 0))
            .await
            .expect("reap");
        assert_eq!(reaped.len(), 1, "cycle {i}");
    }
    assert!(members(&r, &t).await.members.is_empty());
    assert!(used.len() >= 2, "shares were reused after their hold-down: {used:?}");
    assert!(holds(&r, &t).await.len() <= 4, "hold-downs do not pile up");
}

#[tokio::test]
async fn create_network_checks_every_workload_prefix() {
    let r = Registry::new();
    let admin = r.account("acme").await.admin_token;
    let pool = |prefix: &str, node_len: u8| json!({"prefix": prefix, "node_len": node_len});
    let cases = [
        (
            json!({"pod_pools": [pool("198.51.100.0/24", 28), pool("203.0.113.0/24", 28)]}),
            "pod_pools[1] 203.0.113.0/24 is a second IPv4 pod pool (pod_pools[0] is 198.51.100.0/24)",
        ),
        (
            json!({"pod_pools": [pool("198.51.100.0/24", 24)]}),
            "pod_pools[0] node_len 24 must be longer than the pool's /24",
        ),
        (
            json!({"pod_pools": [pool("198.51.100.0/24", 31)]}),
            "pod_pools[0] node_len 31 is longer than /30",
        ),
        (
            json!({"pod_pools": [pool("fd00:42::/112", 121)]}),
            "pod_pools[0] node_len 121 is longer than /120",
        ),
        (
            json!({"pod_pools": [pool("10.0.0.0/8", 28)]}),
            "pod_pools[0] 10.0.0.0/8 split in /28s makes 2^20 shares; at most 2^16",
        ),
        (
            json!({"pod_pools": [pool("198.51.100.1/24", 28)]}),
            "pod_pools[0] 198.51.100.1/24 has host bits set (did you mean 198.51.100.0/24?)",
        ),
        (
            json!({"pod_pools": [pool("0.0.0.0/0", 16)]}),
            "pod_pools[0] 0.0.0.0/0 is a default route (/0)",
        ),
        (
            json!({"pod_pools": [pool("127.0.0.0/16", 24)]}),
            "pod_pools[0] 127.0.0.0/16 overlaps loopback",
        ),
        (
            json!({"site_ranges": ["ff05::/16"]}),
            "site_ranges[0] ff05::/16 overlaps multicast",
        ),
        (
            json!({"site_ranges": ["::/0"]}),
            "site_ranges[0] ::/0 is a default route (/0)",
        ),
        (
            json!({"overlay_prefix_v4": "169.254.0.0/16"}),
            "overlay_prefix_v4 169.254.0.0/16 overlaps link-local",
        ),
        (
            json!({"site_ranges": ["0.0.0.0/8"]}),
            "site_ranges[0] 0.0.0.0/8 overlaps unspecified",
        ),
        (
            json!({"overlay_prefix_v4": "192.0.2.0/31"}),
            "overlay_prefix_v4 192.0.2.0/31 is a /31: use a /8 to /30",
        ),
        (
            json!({"pod_pools": [pool("198.51.100.0/24", 28)], "site_ranges": ["198.51.100.128/25"]}),
            "site_ranges[0] 198.51.100.128/25 overlaps pod_pools[0] 198.51.100.0/24",
        ),
        (
            json!({"pod_pools": [pool("fd00:1:0:0:1::/80", 96)]}),
            "pod_pools[0] fd00:1:0:0:1::/80 overlaps overlay_prefix fd00:1::/64",
        ),
        (
            json!({"site_ranges": ["fd00:1::ff00:0/104"]}),
            "site_ranges[0] fd00:1::ff00:0/104 overlaps vip_pool fd00:1::ffff:0/112",
        ),
        (
            json!({"overlay_prefix_v4": "198.51.100.0/24", "pod_pools": [pool("198.51.100.0/25", 28)]}),
            "pod_pools[0] 198.51.100.0/25 overlaps overlay_prefix_v4 198.51.100.0/24",
        ),
        (
            json!({"site_ranges": ["203.0.113.0/24", "203.0.113.0/25"]}),
            "site_ranges[1] 203.0.113.0/25 overlaps site_ranges[0] 203.0.113.0/24",
        ),
    ];
    for (extra, message) in cases {
        let (s, v) = try_network(&r, &admin, 1, extra.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"), "{extra}: {v}");
        let got = v["error"]["message"].as_str().unwrap_or_default();
        assert!(got.starts_with(message), "{extra}:\n got  {got}\n want {message}");
    }
    let (s, v) = try_network(
        &r,
        &admin,
        1,
        json!({"pod_pools": [{"prefix": "198.51.100.0/24", "len": 28}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields of a pool are refused: {v}");
    let (_, networks) = r.get("/v1/networks", &admin).await;
    assert_eq!(networks["networks"], json!([]), "nothing was created");
    let (s, v) = try_network(&r, &admin, 1, dual_stack()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn site_prefixes_are_checked_set_and_bump_the_revision() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1, dual_stack()).await;
    let admin = t.account.admin_token.clone();
    let a = r.enroll(&t.enrollment, "a", &[]).await;
    let b = r.enroll(&t.enrollment, "b", &[]).await;
    let before = members(&r, &t).await.revision;

    let (s, v) = put_sites(&r, &admin, &a.id, &["203.0.113.0/26", "2001:db8:5:1::/64"]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "a");
    assert_eq!(
        v["prefixes"],
        json!([
            {"prefix": "198.51.100.0/28", "kind": "pod"},
            {"prefix": "fd00:42::/64", "kind": "pod"},
            {"prefix": "203.0.113.0/26", "kind": "site"},
            {"prefix": "2001:db8:5:1::/64", "kind": "site"},
        ])
    );
    assert_eq!(strings(&v["routed_prefixes"]), ["fd00:42::/64", "2001:db8:5:1::/64"]);
    let after = members(&r, &t).await.revision;
    assert!(after > before, "watchers see the change");
    let (s, _) = put_sites(&r, &admin, &a.id, &["203.0.113.0/26", "2001:db8:5:1::/64"]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        members(&r, &t).await.revision,
        after,
        "the same prefixes again change nothing"
    );

    let refused = [
        (
            vec!["203.0.113.32/27"],
            StatusCode::CONFLICT,
            "prefix_conflict",
            "prefixes[0] 203.0.113.32/27 overlaps site prefix 203.0.113.0/26 of peer \"a\"",
        ),
        (
            vec!["198.51.100.16/28"],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "prefixes[0] 198.51.100.16/28 is not inside any of the network's site_ranges (203.0.113.0/24, \
             2001:db8:5::/48)",
        ),
        (
            vec!["fd00:1::/64"],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "prefixes[0] fd00:1::/64 is not inside any of the network's site_ranges",
        ),
        (
            vec!["0.0.0.0/0"],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "prefixes[0] 0.0.0.0/0 is a default route (/0)",
        ),
        (
            vec!["203.0.113.65/26"],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "prefixes[0] 203.0.113.65/26 has host bits set (did you mean 203.0.113.64/26?)",
        ),
        (
            vec!["203.0.113.64/26", "203.0.113.96/27"],
            StatusCode::BAD_REQUEST,
            "bad_request",
            "prefixes[1] 203.0.113.96/27 overlaps prefixes[0] 203.0.113.64/26",
        ),
    ];
    for (prefixes, status, error, message) in refused {
        let (s, v) = put_sites(&r, &admin, &b.id, &prefixes).await;
        assert_eq!((s, code(&v)), (status, error), "{prefixes:?}: {v}");
        let got = v["error"]["message"].as_str().unwrap_or_default();
        assert!(got.starts_with(message), "{prefixes:?}:\n got  {got}\n want {message}");
    }
    let too_many: Vec<String> = (0..65).map(|i| format!("2001:db8:5:{i:x}::/64")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let (s, v) = put_sites(&r, &admin, &b.id, &too_many).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(members(&r, &t).await.revision, after, "refusals change nothing");

    // An operator moves a site from a to b: taken off a, it is free at once.
    let (s, _) = put_sites(&r, &admin, &a.id, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = put_sites(&r, &admin, &b.id, &["203.0.113.0/26"]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let view = members(&r, &t).await;
    let sites: Vec<(String, usize)> = view
        .members
        .iter()
        .map(|m| (m.name.clone(), m.prefixes.len()))
        .collect();
    assert_eq!(sites, [("a".to_owned(), 2), ("b".to_owned(), 3)]);
}

#[tokio::test]
async fn another_account_can_neither_see_nor_set_prefixes() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1, dual_stack()).await;
    let other = r.tenant("other", 2).await;
    let a = r.enroll(&t.enrollment, "a", &[]).await;
    let (s, v) = put_sites(&r, &other.account.admin_token, &a.id, &["203.0.113.0/26"]).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "peer_not_found"), "{v}");
    let (s, v) = put_sites(&r, &a.token, &a.id, &["203.0.113.0/26"]).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"), "{v}");
    let (_, peers) = r.get("/v1/peers", &other.account.admin_token).await;
    assert_eq!(peers["peers"], json!([]));
    let (s, _) = r
        .get(
            &format!("/v1/networks/{}/members", t.network_id),
            &other.account.admin_token,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A network without site ranges takes no site prefix.
    let o = r.enroll(&other.enrollment, "o", &[]).await;
    let (s, v) = put_sites(&r, &other.account.admin_token, &o.id, &["203.0.113.0/26"]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has no site_ranges"),
        "{v}"
    );
    let (s, v) = r
        .call(
            Method::PUT,
            &format!("/v1/peers/{}/site-prefixes", o.id),
            Some(&other.account.admin_token),
            Some(json!({"prefixes": [], "extra": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields are refused: {v}");
}

#[tokio::test]
async fn a_reaped_peer_s_prefixes_leave_with_it_and_are_held_down() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1, dual_stack()).await;
    let admin = t.account.admin_token.clone();
    let t0 = now();
    let keep = enroll_at(&r, &t, "keep", t0).await.expect("keep");
    let runner = enroll_at(&r, &t, "runner", t0).await.expect("runner");
    let (s, v) = put_sites(&r, &admin, &runner.peer_id, &["203.0.113.0/26"]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // keep reports; runner falls silent and is reaped.
    let (ttls, at) = (ttls(), t0 + 700_000);
    let presented = token::parse(&keep.peer_token).expect("peer token");
    let report: sdwand::vocab::wire::PeerReportRequest = serde_json::from_value(json!({"vips": []})).expect("report");
    r.state
        .write(move |tx| service::peer_report(tx, &presented, &report, at))
        .await
        .expect("report");
    let reaped = r
        .state
        .write(move |tx| service::reap(tx, &ttls, at, 0))
        .await
        .expect("reap");
    assert_eq!(reaped.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["runner"]);
    let view = members(&r, &t).await;
    assert_eq!(view.members.len(), 1);
    assert!(view.members.iter().all(|m| m.name == "keep"));
    let held: HashSet<String> = holds(&r, &t).await.iter().map(|h| h.prefix.to_string()).collect();
    let expected: HashSet<String> = ["192.0.2.2/32", "198.51.100.16/28", "fd00:42:0:1::/64", "203.0.113.0/26"]
        .map(String::from)
        .into();
    assert_eq!(held, expected);
    // The site prefix cannot be assigned again during the hold-down (the API reads the real clock, which is
    // before `at + 600 s`).
    let (s, v) = put_sites(&r, &admin, &keep.peer_id, &["203.0.113.0/25"]).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "prefix_held_down"), "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("prefixes[0] 203.0.113.0/25 overlaps 203.0.113.0/26, which removed peer \"runner\" held"),
        "{message}"
    );
    // Nor are its pod share and /32 handed out.
    let next = enroll_at(&r, &t, "next", at + 1).await.expect("next");
    assert_eq!(next.address_v4, Some("192.0.2.3".parse().expect("address")));
}
