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
    // A peer that is no candidate of the VIP (an agent) cannot push its epoch up.
    let v = self_report(&r, &a1, json!([vip_report(vip, "s1", 1_000_000, 0, None)])).await;
    assert_eq!(v["epochs"][0]["epoch"], json!({"term": 4, "rank": 1}));
    // A term the store cannot hold is refused (that entry), not stored.
    let v = self_report(&r, &s1, json!([vip_report(vip, "s1", u64::MAX, 0, None)])).await;
    assert_eq!(v["epochs"][0]["epoch"], json!({"term": 4, "rank": 1}));
    assert_eq!(v["refused"].as_array().map(Vec::len), Some(1), "{v}");
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

async fn enroll_as(r: &Registry, t: &Tenant, name: &str, roles: &[&str], lifecycle: &str) -> Enrolled {
    let key = wireguard_control::Key::generate_private().get_public().to_base64();
    let body = json!({"name": name, "public_key": key, "roles": roles, "lifecycle": lifecycle});
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    Enrolled::from_answer(name, v)
}

#[tokio::test]
async fn operators_list_peers_clusters_and_vips_of_their_account_only() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (id, s1, s2, a1) = cluster(&r, &t).await;
    let o = r.tenant("other", 2).await;
    let (other_id, x1, ..) = cluster(&r, &o).await;
    let admin = &t.account.admin_token;

    let (s, v) = r.get("/v1/peers", admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(names(&v["peers"], "name"), ["s1", "s2", "a1"]);
    assert_eq!(v["peers"][0]["cluster"], json!([id, "server"]));
    assert_eq!(v["peers"][2]["cluster"], json!([id, "agent"]));
    assert_eq!(v["peers"][0]["network_id"], t.network_id.as_str());
    assert_eq!(v["peers"][0]["stale"], false);
    assert_eq!(v["peers"][0]["address"], s1.address.as_str());

    let (s, v) = r.get("/v1/clusters", admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let clusters = v["clusters"].as_array().expect("clusters");
    assert_eq!(clusters.len(), 1, "the other account's cluster is not listed: {v}");
    assert_eq!(clusters[0]["cluster_id"], id.as_str());
    assert_eq!(clusters[0]["state"], "active");
    assert_eq!(clusters[0]["api_endpoint"], "https://[fd00:1::ffff:1]:6443");
    assert_eq!(
        clusters[0]["members"],
        json!([["s1", "server"], ["s2", "server"], ["a1", "agent"]])
    );
    assert_eq!(names(&clusters[0]["vip"]["candidates"], "name"), ["s1", "s2"]);

    let (s, v) = r.get("/v1/vips", admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["vips"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["vips"][0]["cluster_id"], id.as_str());
    let vip_id = v["vips"][0]["vip_id"].as_str().expect("vip_id").to_owned();

    // Another account's ids are as if they did not exist.
    let (_, theirs) = r.get("/v1/vips", &o.account.admin_token).await;
    let their_vip = theirs["vips"][0]["vip_id"].as_str().expect("vip_id").to_owned();
    assert_eq!(theirs["vips"][0]["cluster_id"], other_id.as_str());
    let (s, v) = r
        .post(&format!("/v1/vips/{their_vip}/move"), admin, json!({"to": "s1"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "vip_not_found"));
    let (s, v) = r
        .call(
            axum::http::Method::DELETE,
            &format!("/v1/peers/{}", x1.id),
            Some(admin),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "peer_not_found"));
    let (_, still) = r.get("/v1/peers", &o.account.admin_token).await;
    assert_eq!(
        still["peers"].as_array().map(Vec::len),
        Some(3),
        "nothing of the other account removed"
    );

    // Token misuse: peer and enrollment tokens on admin routes, no token at all.
    for path in ["/v1/peers", "/v1/clusters", "/v1/vips"] {
        for token in [&s2.token, &t.enrollment] {
            let (s, v) = r.get(path, token).await;
            assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"), "{path}");
        }
        let (s, _) = r.call(axum::http::Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, v) = r
        .post(&format!("/v1/vips/{vip_id}/move"), &s1.token, json!({"to": "s2"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    let (s, v) = r
        .call(
            axum::http::Method::DELETE,
            &format!("/v1/peers/{}", a1.id),
            Some(&s1.token),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
}

#[tokio::test]
async fn a_manual_move_is_recorded_with_a_growing_seq_and_bumps_the_revision() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, _s2, a1) = cluster(&r, &t).await;
    let admin = &t.account.admin_token;
    let (_, v) = r.get("/v1/vips", admin).await;
    let vip_id = v["vips"][0]["vip_id"].as_str().expect("vip_id").to_owned();
    let before = members(&r, &t, &a1.token).await;
    let path = format!("/v1/vips/{vip_id}/move");
    let (s, v) = r.post(&path, admin, json!({"to": "s2"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["move_request"], json!({"to": "s2", "seq": 1}));
    let (_, v) = r.post(&path, admin, json!({"to": "s1"})).await;
    assert_eq!(v["move_request"], json!({"to": "s1", "seq": 2}));
    let m = members(&r, &t, &s1.token).await;
    assert!(
        m["revision"].as_u64() > before["revision"].as_u64(),
        "a move request bumps the revision"
    );
    assert_eq!(m["vips"][0]["move_request"], json!({"to": "s1", "seq": 2}));
    // Targets that cannot hold the VIP.
    let (s, v) = r.post(&path, admin, json!({"to": "a1"})).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "not_a_candidate"));
    let (s, v) = r.post(&path, admin, json!({"to": "ghost"})).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r.post("/v1/vips/nope/move", admin, json!({"to": "s1"})).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "vip_not_found"));
    // The holder reaching the target completes the request.
    self_report(&r, &s1, json!([vip_report("fd00:1::ffff:1", "s1", 7, 0, Some(2))])).await;
    let m = members(&r, &t, &a1.token).await;
    assert_eq!(m["vips"][0]["move_request"], Value::Null);
}

#[tokio::test]
async fn an_agent_joining_another_cluster_moves_a_server_does_not() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (first, _s1, s2, a1) = cluster(&r, &t).await;
    let s9 = r.enroll(&t.enrollment, "s9", &["server"]).await;
    let second = r.bootstrap(&s9).await["cluster_id"].as_str().expect("id").to_owned();
    let join = |target: &str| json!({"phase": "join_request", "role": "agent", "target_cluster_id": target});
    let (s, v) = r.handshake(&a1, join(&second)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cluster_id"], second.as_str());
    let (_, peers) = r.get("/v1/peers", &t.account.admin_token).await;
    assert_eq!(
        peers["peers"][2]["cluster"],
        json!([second, "agent"]),
        "membership replaced"
    );
    let (s, v) = r.handshake(&a1, join(&first)).await;
    assert_eq!(
        (s, v["cluster_id"].as_str()),
        (StatusCode::OK, Some(first.as_str())),
        "and back"
    );
    let (s, v) = r
        .handshake(
            &s2,
            json!({"phase": "join_request", "role": "server", "target_cluster_id": second}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_member"));
}

#[tokio::test]
async fn removal_cascades_and_the_reaper_spares_persistent_peers() {
    use sdwan_registry::service::{self, Ttls};
    use sdwan_registry::token;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = enroll_as(&r, &t, "s1", &["server"], "persistent").await;
    let s2 = enroll_as(&r, &t, "s2", &["server"], "ephemeral").await;
    let s3 = enroll_as(&r, &t, "s3", &["server"], "persistent").await;
    let spot = enroll_as(&r, &t, "spot", &["agent"], "spot").await;
    let boot = r.bootstrap(&s1).await;
    let id = boot["cluster_id"].as_str().expect("id").to_owned();
    assert_eq!(r.report(&s1, &id, "ready").await.0, StatusCode::OK);
    for (p, role) in [(&s2, "server"), (&s3, "server"), (&spot, "agent")] {
        let (s, v) = r.handshake(p, json!({"phase": "join_request", "role": role})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    self_report(&r, &s2, json!([vip_report("fd00:1::ffff:1", "s2", 2, 1, Some(3))])).await;
    let (_, vips) = r.get("/v1/vips", &t.account.admin_token).await;
    let vip_id = vips["vips"][0]["vip_id"].as_str().expect("vip_id").to_owned();
    let (s, v) = r
        .post(
            &format!("/v1/vips/{vip_id}/move"),
            &t.account.admin_token,
            json!({"to": "s2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let before = members(&r, &t, &s1.token).await;
    assert_eq!(names(&before["vips"][0]["candidates"], "name"), ["s1", "s2", "s3"]);

    let ttls = Ttls {
        ephemeral: Duration::from_secs(600),
        spot: Duration::from_secs(120),
        ..Ttls::default()
    };
    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()).expect("ms");
    // A registry that came up at `now + 170 s` (after an outage) counts silence from then: nothing goes.
    let restarted = r
        .state
        .write(move |tx| service::reap(tx, &ttls, now + 180_000, now + 170_000))
        .await
        .expect("reap");
    assert!(restarted.is_empty(), "reaped right after a restart: {restarted:?}");
    let reap = |at: u64| r.state.write(move |tx| service::reap(tx, &ttls, at, now));
    let removed: Vec<String> = reap(now + 60_000)
        .await
        .expect("reap")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        removed.is_empty(),
        "nobody is silent past a TTL after a minute: {removed:?}"
    );
    let removed: Vec<String> = reap(now + 180_000)
        .await
        .expect("reap")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(removed, ["spot"], "spot peers go first");
    let removed: Vec<String> = reap(now + 660_000)
        .await
        .expect("reap")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(removed, ["s2"], "then ephemeral ones; persistent ones never");

    let after = members(&r, &t, &s1.token).await;
    assert!(
        after["revision"].as_u64() > before["revision"].as_u64(),
        "removals bump the revision"
    );
    assert_eq!(names(&after["members"], "name"), ["s1", "s3"]);
    assert_eq!(
        names(&after["vips"][0]["candidates"], "name"),
        ["s1", "s3"],
        "order kept"
    );
    assert_eq!(after["vips"][0]["holder"], Value::Null, "a removed holder is no holder");
    assert_eq!(
        after["vips"][0]["epoch"],
        json!({"term": 2, "rank": 1}),
        "the epoch stays"
    );
    let (_, clusters) = r.get("/v1/clusters", &t.account.admin_token).await;
    assert_eq!(
        clusters["clusters"][0]["members"],
        json!([["s1", "server"], ["s3", "server"]])
    );
    for gone in [&s2, &spot] {
        let (s, v) = r
            .get(&format!("/v1/networks/{}/members", t.network_id), &gone.token)
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{}'s token",
            gone.name
        );
    }
    // Persistent peers silent as long are shown stale, not removed.
    let admin = token::parse(&t.account.admin_token).expect("admin token");
    let later = now + 660_000;
    let peers = r
        .store
        .read(move |tx| service::list_peers(tx, &admin, &ttls, later))
        .await
        .expect("peers");
    let stale: Vec<(&str, bool)> = peers.peers.iter().map(|p| (p.member.name.as_str(), p.stale)).collect();
    assert_eq!(stale, [("s1", true), ("s3", true)]);

    // An operator's removal is the same cascade.
    let (s, _) = r
        .call(
            axum::http::Method::DELETE,
            &format!("/v1/peers/{}", s3.id),
            Some(&t.account.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let last = members(&r, &t, &s1.token).await;
    assert_eq!(names(&last["vips"][0]["candidates"], "name"), ["s1"]);
    assert!(last["revision"].as_u64() > after["revision"].as_u64());
    let (s, v) = r
        .call(
            axum::http::Method::DELETE,
            &format!("/v1/peers/{}", s3.id),
            Some(&t.account.admin_token),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "peer_not_found"));
}

#[tokio::test]
async fn the_reaper_task_removes_silent_peers_and_wakes_watchers() {
    use sdwan_registry::{reaper, service::Ttls};
    use std::time::{Duration, Instant};

    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let keeper = enroll_as(&r, &t, "keeper", &[], "persistent").await;
    enroll_as(&r, &t, "gone", &[], "spot").await;
    let since = members(&r, &t, &keeper.token).await["revision"]
        .as_u64()
        .expect("revision");
    tokio::time::sleep(Duration::from_millis(5)).await; // let the spot peer be silent past its 1 ms TTL
    let ttls = Ttls {
        ephemeral: Duration::from_millis(60_000),
        spot: Duration::from_millis(1),
        ..Ttls::default()
    };
    let state = r.state.clone().with_ttls(ttls);
    assert_eq!(
        reaper::period(&state),
        Duration::from_secs(1),
        "clamped to at least a second"
    );
    let path = format!("/v1/networks/{}/watch?since={since}&wait_ms=5000", t.network_id);
    let started = Instant::now();
    let _reaper = reaper::spawn(state);
    let (s, v) = r.get(&path, &keeper.token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the first pass runs at once"
    );
    assert_eq!(names(&v["members"], "name"), ["keeper"]);
}

async fn scrape(r: &Registry) -> String {
    use tower::ServiceExt;
    let req = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = r.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_census_peers_and_clusters() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, ..) = cluster(&r, &t).await;
    enroll_as(&r, &t, "e1", &[], "ephemeral").await;
    let (s, _) = r
        .get(&format!("/v1/networks/{}/members", t.network_id), "sdwp_bogus")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    members(&r, &t, &s1.token).await;
    assert_eq!(r.get("/v1/nowhere", &s1.token).await.0, StatusCode::NOT_FOUND);
    let text = scrape(&r).await;
    for line in [
        r#"sdwan_registry_requests_total{code="201",route="/v1/peers/enroll"} 4"#,
        r#"sdwan_registry_requests_total{code="401",route="/v1/networks/{id}/members"} 1"#,
        r#"sdwan_registry_requests_total{code="200",route="/v1/networks/{id}/members"} 1"#,
        r#"sdwan_registry_requests_total{code="200",route="/v1/clusters/{id}/report"} 1"#,
        r#"sdwan_registry_requests_total{code="404",route="unmatched"} 1"#,
        r#"sdwan_registry_request_duration_seconds_count{route="/v1/runtime/handshake"} 3"#,
        r#"sdwan_registry_peers{class="persistent",state="live"} 3"#,
        r#"sdwan_registry_peers{class="ephemeral",state="live"} 1"#,
        r#"sdwan_registry_peers{class="spot",state="stale"} 0"#,
        r#"sdwan_registry_clusters{state="active"} 1"#,
        r#"sdwan_registry_clusters{state="bootstrapping"} 0"#,
        "sdwan_registry_watch_clients 0",
        &format!(
            r#"sdwan_registry_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(has(&text, line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains(&t.network_id), "raw paths never become labels");
    let rev = members(&r, &t, &s1.token).await["revision"].as_u64().expect("revision");
    let path = format!("/v1/networks/{}/watch?since={rev}&wait_ms=2000", t.network_id);
    let (_, text) = tokio::join!(r.get(&path, &s1.token), async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while r.state.watchers.waiting() == 0 {
            assert!(std::time::Instant::now() < deadline, "the watch never waited");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        scrape(&r).await
    });
    assert!(has(&text, "sdwan_registry_watch_clients 1"), "{text}");
}

/// The last-seen time of `name`, as operators see it.
async fn last_seen(r: &Registry, t: &Tenant, name: &str) -> u64 {
    let (s, v) = r.get("/v1/peers", &t.account.admin_token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .and_then(|p| p["last_seen_ms"].as_u64())
        .expect("listed")
}

/// R10: a report with an entry the registry refuses still records the caller's liveness, and the rest of
/// it.
#[tokio::test]
async fn a_report_with_a_bad_epoch_still_records_liveness() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, ..) = cluster(&r, &t).await;
    let spot = enroll_as(&r, &t, "spot", &[], "spot").await;
    let enrolled = last_seen(&r, &t, "spot").await;
    let vip = "fd00:1::ffff:1";
    let bad = json!([{"address": vip, "role": "standby", "holder": null,
        "epoch": {"term": 9_223_372_036_854_775_808_u64, "rank": 0}, "confirmed_peers": null}]);
    let v = self_report(&r, &spot, bad.clone()).await;
    assert_eq!(v["refused"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(last_seen(&r, &t, "spot").await > enrolled, "liveness recorded");
    // A candidate's report: the bad entry is skipped, the good one is taken.
    let mut both = bad;
    if let Some(list) = both.as_array_mut() {
        list.push(vip_report(vip, "s1", 2, 0, Some(3)));
    }
    let v = self_report(&r, &s1, both).await;
    assert_eq!(v["epochs"], json!([{"address": vip, "epoch": {"term": 2, "rank": 0}}]));
    assert_eq!(v["refused"].as_array().map(Vec::len), Some(1), "{v}");
}

/// R11: a candidate cannot push the floor every daemon claims above out of reach.
#[tokio::test]
async fn a_candidate_cannot_push_the_floor_out_of_reach() {
    use sdwand::vip::{CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP};
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, s2, a1) = cluster(&r, &t).await;
    let vip = "fd00:1::ffff:1";
    self_report(&r, &s1, json!([vip_report(vip, "s1", 3, 0, None)])).await;
    for term in [MAX_TERM, CATCH_UP_TERM + 1] {
        let v = self_report(&r, &s2, json!([vip_report(vip, "s2", term, 1, None)])).await;
        assert_eq!(v["epochs"][0]["epoch"], json!({"term": 3, "rank": 0}), "{term}: {v}");
        assert!(
            v["refused"][0].as_str().is_some_and(|l| l.contains("honest terms")),
            "{v}"
        );
    }
    // The daemons' own bound: a jump as far as CATCH_UP_TERM, then steps; a failover after it works.
    let v = self_report(&r, &s2, json!([vip_report(vip, "s2", CATCH_UP_TERM, 1, None)])).await;
    assert_eq!(v["refused"], Value::Null, "{v}");
    let v = self_report(
        &r,
        &s2,
        json!([vip_report(vip, "s2", CATCH_UP_TERM + MAX_TERM_STEP + 1, 1, None)]),
    )
    .await;
    assert!(
        v["refused"][0].as_str().is_some_and(|l| l.contains("honest terms")),
        "{v}"
    );
    let next = CATCH_UP_TERM + MAX_TERM_STEP;
    for (peer, holder) in [(&s1, "s1"), (&s2, "s1"), (&a1, "s1")] {
        let v = self_report(&r, peer, json!([vip_report(vip, holder, next, 0, None)])).await;
        assert_eq!(
            (&v["refused"], &v["epochs"][0]["epoch"]["term"]),
            (&Value::Null, &json!(next))
        );
    }
}

/// A floor stored before these rules (or by a corrupt store) that leaves no room to claim is never handed
/// out, and the next plausible candidate report replaces it.
#[tokio::test]
async fn an_unreachable_stored_floor_is_never_handed_out() {
    use sdwan_registry::model::Vip;
    use sdwand::vip::{Epoch, MAX_TERM};
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (_, s1, _, a1) = cluster(&r, &t).await;
    let network = t.network_id.clone();
    r.store
        .write(move |tx| {
            let mut vip: Vip = tx.vips(&network)?.remove(0);
            vip.epoch = Some(Epoch {
                term: MAX_TERM,
                rank: 1,
            });
            tx.put_vip(&vip)
        })
        .await
        .expect("poison");
    let v = self_report(&r, &a1, json!([])).await;
    assert_eq!(v["epochs"], json!([]), "{v}");
    let vip = "fd00:1::ffff:1";
    let v = self_report(&r, &s1, json!([vip_report(vip, "s1", 7, 0, None)])).await;
    assert_eq!(v["epochs"], json!([{"address": vip, "epoch": {"term": 7, "rank": 0}}]));
}

/// A peer silent longer than `silent_after` is listed `silent` (a display state: it is neither stale nor
/// reaped); one that reported recently is not; the default `silent_after` is 3 × sdwand's 5 s reports.
#[tokio::test]
async fn peers_silent_past_silent_after_are_listed_silent_not_stale() {
    use sdwan_registry::service::{self, Ttls, DAEMON_REPORT_INTERVAL, DEFAULT_SILENT_AFTER};
    use std::time::Duration;

    assert_eq!(DEFAULT_SILENT_AFTER, 3 * DAEMON_REPORT_INTERVAL);
    assert_eq!(Ttls::default().silent_after, Duration::from_secs(15));
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    enroll_as(&r, &t, "node-1", &[], "persistent").await;
    let (s, v) = r.get("/v1/peers", &t.account.admin_token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["peers"][0]["silent"], &v["peers"][0]["stale"]),
        (&json!(false), &json!(false))
    );

    let admin = sdwan_registry::token::parse(&t.account.admin_token).expect("token");
    let ttls = Ttls {
        silent_after: Duration::from_secs(10),
        ..Ttls::default()
    };
    let list = |now_ms: u64| {
        let admin = admin.clone();
        r.store.read(move |tx| service::list_peers(tx, &admin, &ttls, now_ms))
    };
    let seen = v["peers"][0]["last_seen_ms"].as_u64().expect("last_seen_ms");
    let p = list(seen + 9_000).await.expect("list");
    assert!(!p.peers[0].silent, "9 s of silence is within 10 s");
    let p = list(seen + 11_000).await.expect("list");
    assert!(p.peers[0].silent && !p.peers[0].stale, "silent, not stale");
    let p = list(seen + 601_000).await.expect("list");
    assert!(
        p.peers[0].stale && !p.peers[0].silent,
        "past ephemeral_ttl it is stale (and only that)"
    );
}
