//! Floating prefixes and quorum mode in the registry: create, list, change, move and delete (admin token,
//! account tenancy), every refusal of the checks, the revision bump a watch sees, the cascade of a peer's
//! removal, daemon reports recording the holder, the per-object gauges, and quorum mode of VIPs.
//!
//! Runs on SQLite, and on etcd with `SDWAN_REGISTRY_TEST_STORE=etcd`.

mod registry_support;

use axum::http::{Method, StatusCode};
use registry_support::{code, Enrolled, Registry, Tenant};
use sdwand::vocab::wire::{FloatingView, MembersResponse};
use serde_json::{json, Value};

/// An account `name` with network `fd00:<n>::/64` (VIP pool `fd00:<n>::ffff:0/112`), an IPv4 overlay
/// prefix, an IPv4 and an IPv6 pod pool and two site ranges, and an enrollment token.
async fn tenant(r: &Registry, name: &str, n: u16) -> Tenant {
    let account = r.account(name).await;
    let (s, v) = r
        .post(
            "/v1/networks",
            &account.admin_token,
            json!({
                "name": "branch",
                "overlay_prefix": format!("fd00:{n:x}::/64"),
                "vip_pool": format!("fd00:{n:x}::ffff:0/112"),
                "overlay_prefix_v4": "192.0.2.0/24",
                "pod_pools": [
                    {"prefix": "198.51.100.0/24", "node_len": 28},
                    {"prefix": "fd00:42::/48", "node_len": 64},
                ],
                "site_ranges": ["203.0.113.0/24", "2001:db8:5::/48"],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let network_id = v["id"].as_str().expect("id").to_owned();
    let enrollment = r.enrollment_token(&account.admin_token, &network_id).await;
    Tenant {
        account,
        network_id,
        enrollment,
    }
}

async fn create(r: &Registry, t: &Tenant, body: Value) -> (StatusCode, Value) {
    r.post(
        &format!("/v1/networks/{}/floating", t.network_id),
        &t.account.admin_token,
        body,
    )
    .await
}

/// Creates a floating prefix that must be accepted; answers its view.
async fn created(r: &Registry, t: &Tenant, body: Value) -> FloatingView {
    let (s, v) = create(r, t, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    serde_json::from_value(v).expect("floating view")
}

async fn put(r: &Registry, admin: &str, id: &str, body: Value) -> (StatusCode, Value) {
    r.call(Method::PUT, &format!("/v1/floating/{id}"), Some(admin), Some(body))
        .await
}

async fn list(r: &Registry, admin: &str) -> Vec<FloatingView> {
    let (s, v) = r.get("/v1/floating", admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v["floating"].clone()).expect("floating list")
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

fn names(f: &FloatingView) -> Vec<&str> {
    f.candidates.iter().map(|c| c.name.as_str()).collect()
}

fn witnesses(f: &FloatingView) -> Option<Vec<&str>> {
    f.quorum
        .as_ref()
        .map(|q| q.witnesses.iter().map(|w| w.name.as_str()).collect())
}

/// Asserts an error answer's status, code and the start of its message.
fn refused(answer: &(StatusCode, Value), status: StatusCode, error: &str, message: &str, what: &str) {
    let (s, v) = answer;
    assert_eq!((*s, code(v)), (status, error), "{what}: {v}");
    let got = v["error"]["message"].as_str().unwrap_or_default();
    assert!(got.starts_with(message), "{what}:\n got  {got}\n want {message}");
}

#[tokio::test]
async fn floating_prefixes_are_created_listed_changed_moved_and_deleted() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let admin = t.account.admin_token.clone();
    let gw1 = r.enroll(&t.enrollment, "gw1", &[]).await;
    let gw2 = r.enroll(&t.enrollment, "gw2", &[]).await;
    r.enroll(&t.enrollment, "w", &[]).await;
    let revision = members(&r, &t).await.revision;

    // Candidates by name or by id; quorum off by default.
    let f = created(
        &r,
        &t,
        json!({"prefix": "203.0.113.128/25", "gateway": "203.0.113.129", "candidates": ["gw1", gw2.id]}),
    )
    .await;
    assert_eq!(f.prefix.to_string(), "203.0.113.128/25");
    assert_eq!(f.gateway.map(|g| g.to_string()).as_deref(), Some("203.0.113.129"));
    assert_eq!(names(&f), ["gw1", "gw2"]);
    assert_eq!((f.holder.as_deref(), f.epoch, f.quorum.as_ref()), (None, None, None));
    let v6 = created(
        &r,
        &t,
        json!({"prefix": "2001:db8:6::/48", "candidates": ["gw2"], "quorum": true, "witnesses": ["w", "gw1"]}),
    )
    .await;
    assert_eq!(witnesses(&v6), Some(vec!["w", "gw1"]));

    // Listed and in the members view in creation order; each change bumped the revision.
    let listed = list(&r, &admin).await;
    assert_eq!(listed, [f.clone(), v6.clone()]);
    let view = members(&r, &t).await;
    assert_eq!(view.floating, listed);
    assert_eq!(view.revision, revision + 2);

    // Candidates reordered, quorum on with a witness.
    let (s, v) = put(
        &r,
        &admin,
        &f.floating_id,
        json!({"candidates": ["gw2", "gw1"], "quorum": true, "witnesses": ["w"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let changed: FloatingView = serde_json::from_value(v).expect("view");
    assert_eq!(
        (names(&changed), witnesses(&changed)),
        (vec!["gw2", "gw1"], Some(vec!["w"]))
    );
    assert_eq!(members(&r, &t).await.revision, revision + 3);
    // The same again changes nothing, and bumps nothing.
    let (s, _) = put(&r, &admin, &f.floating_id, json!({"candidates": ["gw2", "gw1"]})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(members(&r, &t).await.revision, revision + 3);
    // Quorum off drops the witnesses; the candidates are kept.
    let (s, v) = put(&r, &admin, &f.floating_id, json!({"quorum": false})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["quorum"].clone(), v["candidates"][0]["name"].clone()),
        (Value::Null, json!("gw2"))
    );

    // A manual move, as for VIPs.
    let path = format!("/v1/floating/{}/move", f.floating_id);
    let (s, v) = r.post(&path, &admin, json!({"to": "gw1"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["move_request"], json!({"to": "gw1", "seq": 1}));
    refused(
        &r.post(&path, &admin, json!({"to": "w"})).await,
        StatusCode::CONFLICT,
        "not_a_candidate",
        "peer \"w\" is not a candidate of floating prefix 203.0.113.128/25",
        "move to a non-candidate",
    );
    refused(
        &r.post(&path, &admin, json!({"to": "nobody"})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "no peer named \"nobody\"",
        "move to an unknown peer",
    );
    // Taking the move target out of the candidates forgets the move.
    let (s, v) = put(&r, &admin, &f.floating_id, json!({"candidates": ["gw2"]})).await;
    assert_eq!((s, v["move_request"].clone()), (StatusCode::OK, Value::Null), "{v}");

    // Deleted: gone from the list and the members view, with a revision bump.
    let before = members(&r, &t).await.revision;
    let (s, _) = r.delete(&format!("/v1/floating/{}", f.floating_id), &admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let view = members(&r, &t).await;
    assert_eq!((view.revision, view.floating.len()), (before + 1, 1));
    refused(
        &r.delete(&format!("/v1/floating/{}", f.floating_id), &admin).await,
        StatusCode::NOT_FOUND,
        "floating_not_found",
        "no floating prefix",
        "deleted twice",
    );
    // Its space is free again at once: an operator deleted it on purpose.
    created(&r, &t, json!({"prefix": "203.0.113.128/26", "candidates": [gw1.id]})).await;
}

#[tokio::test]
async fn every_check_refuses_with_a_code_and_a_message_naming_the_conflict() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let admin = t.account.admin_token.clone();
    let gw1 = r.enroll(&t.enrollment, "gw1", &[]).await;
    r.enroll(&t.enrollment, "gw2", &[]).await;
    let site = r.enroll(&t.enrollment, "site", &[]).await;
    let gone = r.enroll(&t.enrollment, "gone", &[]).await;
    let other = tenant(&r, "other", 2).await;
    let stranger = r.enroll(&other.enrollment, "stranger", &[]).await;
    for (peer, prefix) in [(&site, "203.0.113.0/26"), (&gone, "2001:db8:5:1::/64")] {
        let (s, v) = r
            .call(
                Method::PUT,
                &format!("/v1/peers/{}/site-prefixes", peer.id),
                Some(&admin),
                Some(json!({ "prefixes": [prefix] })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, _) = r.delete(&format!("/v1/peers/{}", gone.id), &admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let taken = created(&r, &t, json!({"prefix": "203.0.113.128/25", "candidates": ["gw1"]})).await;
    let revision = members(&r, &t).await.revision;

    let ok = |prefix: &str| json!({"prefix": prefix, "candidates": ["gw1"]});
    let (bad, conflict, held) = (StatusCode::BAD_REQUEST, StatusCode::CONFLICT, "prefix_held_down");
    let too_many: Vec<String> = (0..33).map(|i| format!("p{i}")).collect();
    let cases: Vec<(Value, StatusCode, &str, String)> = vec![
        (
            ok("0.0.0.0/0"),
            bad,
            "bad_request",
            "prefix 0.0.0.0/0 is a default route (/0)".into(),
        ),
        (
            ok("::/0"),
            bad,
            "bad_request",
            "prefix ::/0 is a default route (/0)".into(),
        ),
        (
            ok("203.0.113.65/26"),
            bad,
            "bad_request",
            "prefix 203.0.113.65/26 has host bits set (did you mean 203.0.113.64/26?)".into(),
        ),
        (
            ok("127.0.0.0/8"),
            bad,
            "bad_request",
            "prefix 127.0.0.0/8 overlaps loopback".into(),
        ),
        (
            ok("fe80::/64"),
            bad,
            "bad_request",
            "prefix fe80::/64 overlaps link-local".into(),
        ),
        (
            ok("fd00:1::ffff:0/120"),
            conflict,
            "prefix_conflict",
            "prefix fd00:1::ffff:0/120 overlaps the network's VIP pool fd00:1::ffff:0/112".into(),
        ),
        (
            ok("fd00:1::/80"),
            conflict,
            "prefix_conflict",
            "prefix fd00:1::/80 overlaps the network's VIP pool".into(),
        ),
        (
            ok("fd00:1::1:0:0/96"),
            conflict,
            "prefix_conflict",
            "prefix fd00:1::1:0:0/96 overlaps the network's overlay prefix fd00:1::/64".into(),
        ),
        (
            ok("fd00::/16"),
            conflict,
            "prefix_conflict",
            "prefix fd00::/16 overlaps the network's VIP pool".into(),
        ),
        (
            ok("192.0.2.128/25"),
            conflict,
            "prefix_conflict",
            "prefix 192.0.2.128/25 overlaps the network's IPv4 overlay prefix 192.0.2.0/24".into(),
        ),
        (
            ok("198.51.100.64/26"),
            conflict,
            "prefix_conflict",
            "prefix 198.51.100.64/26 overlaps pod pool pod_pools[0] 198.51.100.0/24".into(),
        ),
        (
            ok("fd00:42:0:7::/64"),
            conflict,
            "prefix_conflict",
            "prefix fd00:42:0:7::/64 overlaps pod pool pod_pools[1] fd00:42::/48".into(),
        ),
        (
            ok("203.0.113.0/27"),
            conflict,
            "prefix_conflict",
            format!(
                "prefix 203.0.113.0/27 overlaps site prefix 203.0.113.0/26 of peer \"site\" (id {})",
                site.id
            ),
        ),
        (
            ok("203.0.113.192/26"),
            conflict,
            "prefix_conflict",
            format!(
                "prefix 203.0.113.192/26 overlaps floating prefix 203.0.113.128/25 (id {})",
                taken.floating_id
            ),
        ),
        (
            ok("2001:db8:5::/56"),
            conflict,
            held,
            "prefix 2001:db8:5::/56 overlaps 2001:db8:5:1::/64, which removed peer \"gone\" held".into(),
        ),
        (
            json!({"prefix": "203.0.113.64/26", "gateway": "203.0.113.1", "candidates": ["gw1"]}),
            bad,
            "bad_request",
            "gateway 203.0.113.1 is not inside prefix 203.0.113.64/26".into(),
        ),
        (
            json!({"prefix": "203.0.113.64/26", "gateway": "2001:db8:6::1", "candidates": ["gw1"]}),
            bad,
            "bad_request",
            "gateway 2001:db8:6::1 is not inside prefix 203.0.113.64/26".into(),
        ),
        (
            json!({"prefix": "203.0.113.64/26", "gateway": "203.0.113.64", "candidates": ["gw1"]}),
            bad,
            "bad_request",
            "gateway 203.0.113.64 is the network address of 203.0.113.64/26".into(),
        ),
        (
            json!({"prefix": "203.0.113.64/26", "gateway": "203.0.113.127", "candidates": ["gw1"]}),
            bad,
            "bad_request",
            "gateway 203.0.113.127 is the broadcast address of 203.0.113.64/26".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "gateway": "2001:db8:6::", "candidates": ["gw1"]}),
            bad,
            "bad_request",
            "gateway 2001:db8:6:: is the network address of 2001:db8:6::/48".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": []}),
            bad,
            "bad_request",
            "candidates has 0 peers: give 1 to 32".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": too_many}),
            bad,
            "bad_request",
            "candidates has 33 peers: give 1 to 32".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw1", "nope"]}),
            bad,
            "bad_request",
            "candidates[1] \"nope\": no peer of network \"branch\" has this name or id".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw1", gw1.id]}),
            bad,
            "bad_request",
            format!("candidates[1] \"{}\" names peer \"gw1\" again (candidates[0])", gw1.id),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": [stranger.id]}),
            bad,
            "bad_request",
            format!("candidates[0] \"{}\": no peer of network \"branch\"", stranger.id),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw1"], "quorum": true, "witnesses": ["gw2", "gw1"]}),
            bad,
            "bad_request",
            "witnesses[1] \"gw1\" is a candidate: a peer votes as a candidate or as a witness, not both".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw1"], "witnesses": ["gw2"]}),
            bad,
            "bad_request",
            "witnesses are given but quorum is off".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw1"], "quorum": true, "witnesses": ["nope"]}),
            bad,
            "bad_request",
            "witnesses[0] \"nope\": no peer".into(),
        ),
        (
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw1"], "priority": 1}),
            bad,
            "bad_request",
            String::new(),
        ),
        (
            json!({"prefix": "203.0.113.0/33", "candidates": ["gw1"]}),
            bad,
            "bad_request",
            String::new(),
        ),
        (json!({"prefix": "2001:db8:6::/48"}), bad, "bad_request", String::new()),
    ];
    for (body, status, error, message) in &cases {
        refused(
            &create(&r, &t, body.clone()).await,
            *status,
            error,
            message,
            &body.to_string(),
        );
    }
    // The same checks on a change: candidates and witnesses.
    let id = &taken.floating_id;
    for (body, message) in [
        (json!({"candidates": []}), "candidates has 0 peers"),
        (json!({"candidates": ["nope"]}), "candidates[0] \"nope\": no peer"),
        (json!({"witnesses": ["gw2"]}), "witnesses are given but quorum is off"),
        (
            json!({"quorum": true, "witnesses": ["gw1"]}),
            "witnesses[0] \"gw1\" is a candidate",
        ),
        (json!({"prefix": "203.0.113.0/25"}), ""),
    ] {
        refused(
            &put(&r, &admin, id, body.clone()).await,
            bad,
            "bad_request",
            message,
            &body.to_string(),
        );
    }
    // A witness cannot be made a candidate while it is one.
    let (s, v) = put(&r, &admin, id, json!({"quorum": true, "witnesses": ["gw2"]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    refused(
        &put(&r, &admin, id, json!({"candidates": ["gw1", "gw2"]})).await,
        bad,
        "bad_request",
        "witnesses[0] \"gw2\" is a candidate",
        "a witness made a candidate",
    );
    assert_eq!(
        members(&r, &t).await.revision,
        revision + 1,
        "refusals change nothing (only the accepted quorum change bumped it)"
    );
    // A site prefix may not overlap a floating prefix either.
    refused(
        &r.call(
            Method::PUT,
            &format!("/v1/peers/{}/site-prefixes", site.id),
            Some(&admin),
            Some(json!({"prefixes": ["203.0.113.0/26", "203.0.113.128/27"]})),
        )
        .await,
        conflict,
        "prefix_conflict",
        &format!("prefixes[1] 203.0.113.128/27 overlaps floating prefix 203.0.113.128/25 (id {id})"),
        "site prefix over a floating prefix",
    );
}

#[tokio::test]
async fn another_account_can_neither_see_nor_change_floating_prefixes() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let other = tenant(&r, "other", 2).await;
    let gw = r.enroll(&t.enrollment, "gw", &[]).await;
    let f = created(&r, &t, json!({"prefix": "203.0.113.0/25", "candidates": ["gw"]})).await;
    let theirs = other.account.admin_token.clone();
    refused(
        &create(
            &r,
            &Tenant {
                account: other.account.clone(),
                network_id: t.network_id.clone(),
                enrollment: String::new(),
            },
            json!({"prefix": "2001:db8:6::/48", "candidates": ["gw"]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "network_not_found",
        "no network",
        "create in another account's network",
    );
    assert!(list(&r, &theirs).await.is_empty());
    let path = format!("/v1/floating/{}", f.floating_id);
    for answer in [
        put(&r, &theirs, &f.floating_id, json!({"candidates": ["gw"]})).await,
        r.delete(&path, &theirs).await,
        r.post(&format!("{path}/move"), &theirs, json!({"to": "gw"})).await,
    ] {
        refused(
            &answer,
            StatusCode::NOT_FOUND,
            "floating_not_found",
            "no floating prefix",
            "other account",
        );
    }
    // A peer token is no admin token; no token is no caller.
    refused(
        &r.get("/v1/floating", &gw.token).await,
        StatusCode::FORBIDDEN,
        "wrong_token_kind",
        "",
        "peer token",
    );
    let (s, _) = r.call(Method::GET, "/v1/floating", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The other account's own network cannot name our peers.
    r.enroll(&other.enrollment, "o", &[]).await;
    refused(
        &r.post(
            &format!("/v1/networks/{}/floating", other.network_id),
            &theirs,
            json!({"prefix": "2001:db8:6::/48", "candidates": [gw.id]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "candidates[0]",
        "another account's peer",
    );
    assert_eq!(list(&r, &t.account.admin_token).await, [f]);
}

#[tokio::test]
async fn a_waiting_watch_sees_a_new_floating_prefix() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let gw = r.enroll(&t.enrollment, "gw", &[]).await;
    let since = members(&r, &t).await.revision;
    let watch = format!("/v1/networks/{}/watch?since={since}&wait_ms=10000", t.network_id);
    let ((s, v), f) = tokio::join!(
        r.get(&watch, &gw.token),
        created(&r, &t, json!({"prefix": "203.0.113.0/25", "candidates": ["gw"]}))
    );
    assert_eq!(s, StatusCode::OK, "the watch answers the change, not a timeout: {v}");
    let seen: MembersResponse = serde_json::from_value(v).expect("members");
    assert_eq!((seen.revision, seen.floating), (since + 1, vec![f]));
}

#[tokio::test]
async fn removing_a_peer_takes_it_out_of_every_floating_prefix() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let admin = t.account.admin_token.clone();
    let gw1 = r.enroll(&t.enrollment, "gw1", &[]).await;
    let gw2 = r.enroll(&t.enrollment, "gw2", &[]).await;
    let w = r.enroll(&t.enrollment, "w", &[]).await;
    let f = created(
        &r,
        &t,
        json!({"prefix": "203.0.113.0/25", "candidates": ["gw1", "gw2"], "quorum": true, "witnesses": ["w"]}),
    )
    .await;
    report(&r, &gw1, "::ffff:203.0.113.0", "gw1", 3).await;
    let (s, v) = r
        .post(
            &format!("/v1/floating/{}/move", f.floating_id),
            &admin,
            json!({"to": "gw2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let remove = |p: &Enrolled| {
        let path = format!("/v1/peers/{}", p.id);
        let admin = admin.clone();
        let r = &r;
        async move {
            let (s, v) = r.delete(&path, &admin).await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        }
    };
    remove(&gw1).await;
    let now = &list(&r, &admin).await[0];
    assert_eq!(
        (names(now), now.holder.as_deref()),
        (vec!["gw2"], None),
        "the holder left"
    );
    assert_eq!(now.move_request.as_ref().map(|m| m.to.as_str()), Some("gw2"));
    remove(&w).await;
    assert_eq!(
        witnesses(&list(&r, &admin).await[0]),
        Some(vec![]),
        "quorum stays on, without the witness"
    );
    let before = members(&r, &t).await.revision;
    remove(&gw2).await;
    // The last candidate gone: the prefix stays, with no candidate, no holder and no move, so no member
    // routes it, until an operator names candidates again.
    let view = members(&r, &t).await;
    assert_eq!(view.revision, before + 1);
    let left = &view.floating[0];
    assert_eq!(
        (
            left.candidates.len(),
            left.holder.as_deref(),
            left.move_request.as_ref()
        ),
        (0, None, None)
    );
    let gw3 = r.enroll(&t.enrollment, "gw3", &[]).await;
    let (s, v) = put(&r, &admin, &f.floating_id, json!({"candidates": [gw3.name]})).await;
    assert_eq!(
        (s, v["candidates"][0]["name"].clone()),
        (StatusCode::OK, json!("gw3")),
        "{v}"
    );
}

/// Posts a report of `key` by `peer`: holder `holder` at epoch (term, 0); answers the answer.
async fn report(r: &Registry, peer: &Enrolled, key: &str, holder: &str, term: u64) -> Value {
    let (s, v) = r
        .post(
            "/v1/peers/self/report",
            &peer.token,
            json!({"vips": [{"address": key, "role": "holding", "holder": holder, "epoch": {"term": term, "rank": 0}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn reports_under_the_floating_key_record_the_holder_and_epoch() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let admin = t.account.admin_token.clone();
    let gw1 = r.enroll(&t.enrollment, "gw1", &[]).await;
    let gw2 = r.enroll(&t.enrollment, "gw2", &[]).await;
    let outsider = r.enroll(&t.enrollment, "outsider", &[]).await;
    let v4 = created(
        &r,
        &t,
        json!({"prefix": "203.0.113.0/25", "candidates": ["gw1", "gw2"]}),
    )
    .await;
    created(&r, &t, json!({"prefix": "2001:db8:6::/48", "candidates": ["gw2"]})).await;
    let revision = members(&r, &t).await.revision;

    // A non-candidate's report is ignored.
    report(&r, &outsider, "::ffff:203.0.113.0", "outsider", 5).await;
    assert_eq!(list(&r, &admin).await[0].holder, None);

    let answer = report(&r, &gw1, "::ffff:203.0.113.0", "gw1", 2).await;
    assert_eq!(
        answer["epochs"],
        json!([{"address": "::ffff:203.0.113.0", "epoch": {"term": 2, "rank": 0}}]),
        "the floor of the floating key is handed back"
    );
    let now = &list(&r, &admin).await[0];
    assert_eq!(
        (now.holder.as_deref(), now.epoch.map(|e| e.term)),
        (Some("gw1"), Some(2))
    );
    // A move to gw2 completes when gw2 reports holding it at a higher epoch.
    let (s, _) = r
        .post(
            &format!("/v1/floating/{}/move", v4.floating_id),
            &admin,
            json!({"to": "gw2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    report(&r, &gw2, "::ffff:203.0.113.0", "gw2", 3).await;
    let now = &list(&r, &admin).await[0];
    assert_eq!((now.holder.as_deref(), now.move_request.as_ref()), (Some("gw2"), None));
    // An older epoch changes nothing; an IPv6 prefix is reported under its network address.
    report(&r, &gw1, "::ffff:203.0.113.0", "gw1", 2).await;
    report(&r, &gw2, "2001:db8:6::", "gw2", 1).await;
    let listed = list(&r, &admin).await;
    assert_eq!(listed[0].holder.as_deref(), Some("gw2"));
    assert_eq!(listed[1].holder.as_deref(), Some("gw2"));
    // An implausible term is refused, the rest kept.
    let answer = report(&r, &gw1, "::ffff:203.0.113.0", "gw1", 1 << 63).await;
    assert_eq!(answer["refused"].as_array().map(Vec::len), Some(1), "{answer}");
    let line = answer["refused"][0].as_str().unwrap_or_default();
    assert!(
        line.starts_with("floating prefix 203.0.113.0/25: term "),
        "names the prefix: {line}"
    );
    assert_eq!(
        members(&r, &t).await.revision - revision,
        1,
        "reports change no revision (only the move request did)"
    );
}

#[tokio::test]
async fn quorum_mode_of_a_vip_is_set_with_witnesses_and_cleared() {
    let r = Registry::new();
    let t = tenant(&r, "acme", 1).await;
    let admin = t.account.admin_token.clone();
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let w = r.enroll(&t.enrollment, "w", &[]).await;
    let cluster = r.bootstrap(&s1).await;
    let (_, vips) = r.get("/v1/vips", &admin).await;
    let vip_id = vips["vips"][0]["vip_id"].as_str().expect("vip id").to_owned();
    let path = format!("/v1/vips/{vip_id}/quorum");
    let set = |body: Value| {
        let (r, path, admin) = (&r, path.clone(), admin.clone());
        async move { r.call(Method::PUT, &path, Some(&admin), Some(body)).await }
    };
    let revision = members(&r, &t).await.revision;

    let (s, v) = set(json!({"enabled": true, "witnesses": ["w", s2.id]})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["quorum"]["witnesses"][0]["name"], "w");
    assert_eq!(v["quorum"]["witnesses"][1]["name"], "s2");
    assert_eq!(
        members(&r, &t).await.vips[0].quorum,
        serde_json::from_value(v["quorum"].clone()).ok()
    );
    assert_eq!(members(&r, &t).await.revision, revision + 1);

    refused(
        &set(json!({"enabled": true, "witnesses": ["s1"]})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "witnesses[0] \"s1\" is a candidate",
        "candidate as witness",
    );
    refused(
        &set(json!({"enabled": false, "witnesses": ["w"]})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "witnesses are given but enabled is false",
        "witnesses without quorum",
    );
    refused(
        &set(json!({"enabled": true, "witnesses": ["w", "w"]})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "witnesses[1] \"w\" names peer \"w\" again",
        "a witness twice",
    );
    refused(
        &set(json!({"on": true})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "",
        "unknown field",
    );

    // A witness that joins as a server becomes a candidate and stops being a witness.
    let cluster_id = cluster["cluster_id"].as_str().expect("cluster id");
    let (s, v) = r
        .handshake(
            &s2,
            json!({"phase": "join_request", "role": "server", "target_cluster_id": cluster_id}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let vip = &members(&r, &t).await.vips[0];
    let candidates: Vec<&str> = vip.candidates.iter().map(|c| c.name.as_str()).collect();
    let voters: Vec<&str> = vip
        .quorum
        .iter()
        .flat_map(|q| q.witnesses.iter().map(|w| w.name.as_str()))
        .collect();
    assert_eq!((candidates, voters), (vec!["s1", "s2"], vec!["w"]));
    // A removed witness leaves the list.
    let (s, _) = r.delete(&format!("/v1/peers/{}", w.id), &admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let vip = &members(&r, &t).await.vips[0];
    assert_eq!(vip.quorum.as_ref().map(|q| q.witnesses.len()), Some(0));

    let (s, v) = set(json!({"enabled": false})).await;
    assert_eq!((s, v["quorum"].clone()), (StatusCode::OK, Value::Null), "{v}");
    // Another account's admin does not see the VIP.
    let other = r.account("other").await;
    refused(
        &r.call(
            Method::PUT,
            &path,
            Some(&other.admin_token),
            Some(json!({"enabled": false})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "vip_not_found",
        "no VIP",
        "other account",
    );
}

/// Behind `metrics_token_file`, each floating prefix has a holder and an epoch-term gauge, as VIPs do.
#[tokio::test]
async fn floating_prefixes_have_holder_and_epoch_gauges_behind_the_metrics_token() {
    use sdwan_registry::api::MetricsToken;
    use tower::ServiceExt;
    let r = Registry::with_state(|state| state.with_metrics_token(MetricsToken::new("m3trics").expect("token")));
    let t = tenant(&r, "acme", 1).await;
    let gw = r.enroll(&t.enrollment, "gw", &[]).await;
    created(&r, &t, json!({"prefix": "203.0.113.0/24", "candidates": ["gw"]})).await;
    created(&r, &t, json!({"prefix": "2001:db8:6::/48", "candidates": ["gw"]})).await;
    // Reported before the first scrape: a census serves scrapes for seconds.
    report(&r, &gw, "::ffff:203.0.113.0", "gw", 4).await;
    let req = axum::http::Request::get("/metrics")
        .header(axum::http::header::AUTHORIZATION, "Bearer m3trics")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = r.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let text = String::from_utf8_lossy(&bytes);
    let n = &t.network_id;
    for line in [
        format!(r#"sdwan_registry_floating_holder{{holder="gw",network="{n}",prefix="203.0.113.0/24"}} 1"#),
        format!(r#"sdwan_registry_floating_epoch_term{{network="{n}",prefix="203.0.113.0/24"}} 4"#),
        format!(r#"sdwan_registry_floating_holder{{holder="",network="{n}",prefix="2001:db8:6::/48"}} 1"#),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains(&format!(
            r#"sdwan_registry_floating_epoch_term{{network="{n}",prefix="2001:db8:6::/48"}}"#
        )),
        "no term before the first report: {text}"
    );
}
