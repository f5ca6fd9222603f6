//! In-process tests of the network state daemons and operators see: VIPs in the member list, peer reports
//! (highest epoch per VIP), the operator routes (listings, removal, manual moves), agent joins moving
//! between clusters, and the reaper's cascade.

mod registry_support;

use axum::http::StatusCode;
use registry_support::{code, Enrolled, Registry, Tenant};
use serde_json::{json, Value};

/// A tenant with a bootstrapped cluster (server s1, joined server s2, agent a1); answers the cluster id.
async fn cluster(r: &Registry, t: &Tenant) -> (String, Enrolled, Enrolled, Enrolled) {
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let a1 = r.enroll(&t.enrollment, "a1", &["agent"]).await;
    let boot = r.bootstrap(&s1).await;
    let id = boot["cluster_id"].as_str().expect("cluster_id").to_owned();
    assert_eq!(r.report(&s1, &id, "ready").await.0, StatusCode::OK);
    for (p, role) in [(&s2, "server"), (&a1, "agent")] {
        let (s, v) = r.handshake(p, json!({"phase": "join_request", "role": role})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    (id, s1, s2, a1)
}

async fn members(r: &Registry, t: &Tenant, token: &str) -> Value {
    let (s, v) = r.get(&format!("/v1/networks/{}/members", t.network_id), token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().filter_map(|c| c[field].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn members_carry_the_vips_and_the_overlay_prefix() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (id, s1, _s2, a1) = cluster(&r, &t).await;
    let m = members(&r, &t, &a1.token).await;
    assert_eq!(m["overlay_prefix"], "fd00:1::/64");
    let vips = m["vips"].as_array().expect("vips");
    assert_eq!(vips.len(), 1, "{m}");
    assert_eq!(vips[0]["address"], "fd00:1::ffff:1");
    assert_eq!(vips[0]["cluster_id"], id.as_str());
    assert_eq!(names(&vips[0]["candidates"], "name"), ["s1", "s2"]);
    assert_eq!(vips[0]["candidates"][0]["address"], s1.address.as_str());
    assert_eq!(vips[0]["holder"], Value::Null);
    assert_eq!(vips[0]["move_request"], Value::Null);
    let admin = members(&r, &t, &t.account.admin_token).await;
    assert_eq!(admin["vips"], m["vips"]);
    let (s, v) = r
        .get(&format!("/v1/networks/{}/members", t.network_id), "garbage")
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
}

async fn self_report(r: &Registry, peer: &Enrolled, vips: Value) -> Value {
    let (s, v) = r
        .post("/v1/peers/self/report", &peer.token, json!({ "vips": vips }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn vip_report(address: &str, holder: &str, term: u64, rank: u16, confirmed: Option<u32>) -> Value {
    json!({"address": address, "role": "holding", "holder": holder, "epoch": {"term": term, "rank": rank},
           "confirmed_peers": confirmed})
}

#[tokio::test]
async fn reports_keep_the_highest_epoch_and_do_not_bump_the_revision() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, s2, a1) = cluster(&r, &t).await;
    let before = members(&r, &t, &a1.token).await;
    let vip = "fd00:1::ffff:1";
    let v = self_report(&r, &s1, json!([vip_report(vip, "s1", 3, 0, Some(2))])).await;
    assert_eq!(v["revision"], before["revision"]);
    assert_eq!(v["epochs"], json!([{"address": vip, "epoch": {"term": 3, "rank": 0}}]));
    // Lower epochs (an older term; the same term from a worse rank) change nothing.
    for (term, rank) in [(2, 0), (3, 1)] {
        let v = self_report(&r, &s2, json!([vip_report(vip, "s2", term, rank, Some(9))])).await;
        assert_eq!(v["epochs"][0]["epoch"], json!({"term": 3, "rank": 0}));
    }
    // The same epoch from a follower fills in nothing it does not know.
    self_report(
        &r,
        &a1,
        json!([{"address": vip, "role": "follower", "holder": "s1", "epoch": {"term": 3, "rank": 0}}]),
    )
    .await;
    let m = members(&r, &t, &a1.token).await;
    assert_eq!(m["revision"], before["revision"], "reports are not membership changes");
    assert_eq!(m["vips"][0]["holder"], "s1");
    assert_eq!(m["vips"][0]["epoch"], json!({"term": 3, "rank": 0}));
    assert_eq!(m["vips"][0]["confirmed_peers"], 2);
    // A higher epoch replaces holder and confirmed peers.
    let v = self_report(&r, &s2, json!([vip_report(vip, "s2", 4, 1, None)])).await;
    assert_eq!(v["epochs"][0]["epoch"], json!({"term": 4, "rank": 1}));
    let m = members(&r, &t, &a1.token).await;
    assert_eq!(
        (&m["vips"][0]["holder"], &m["vips"][0]["confirmed_peers"]),
        (&json!("s2"), &Value::Null)
    );
    assert!(m["members"][1]["last_seen_ms"].as_u64() >= before["members"][1]["last_seen_ms"].as_u64());
}

#[tokio::test]
async fn reports_ignore_unknown_and_foreign_vips() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, ..) = cluster(&r, &t).await;
    let o = r.tenant("other", 2).await;
    let (_, x1, ..) = cluster(&r, &o).await;
    self_report(&r, &x1, json!([vip_report("fd00:2::ffff:1", "s1", 5, 0, None)])).await;
    // s1 names the other network's VIP, an address that is no VIP, and a holder that does not exist.
    let v = self_report(
        &r,
        &s1,
        json!([
            vip_report("fd00:2::ffff:1", "s1", 50, 0, None),
            vip_report("fd00:1::ffff:99", "s1", 50, 0, None),
            vip_report("fd00:1::ffff:1", "nobody", 1, 0, None),
        ]),
    )
    .await;
    assert_eq!(
        v["epochs"],
        json!([{"address": "fd00:1::ffff:1", "epoch": {"term": 1, "rank": 0}}])
    );
    let theirs = members(&r, &o, &x1.token).await;
    assert_eq!(
        theirs["vips"][0]["epoch"],
        json!({"term": 5, "rank": 0}),
        "untouched by another account"
    );
    let ours = members(&r, &t, &s1.token).await;
    assert_eq!(
        ours["vips"][0]["holder"],
        Value::Null,
        "an unknown holder name is not stored"
    );
    // Only peer tokens report; malformed reports are refused.
    let (s, v) = r
        .post("/v1/peers/self/report", &t.account.admin_token, json!({"vips": []}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    let (s, v) = r
        .post("/v1/peers/self/report", &s1.token, json!({"vips": [{"address": "x"}]}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
}
