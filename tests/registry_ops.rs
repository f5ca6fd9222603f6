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
