//! In-process API tests: enrollment, member lists, admin routes, token misuse, account isolation, and
//! malformed, oversized or misrouted requests.

mod registry_support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use registry_support::{code, Registry};
use serde_json::{json, Value};
use wireguard_control::Key;

#[tokio::test]
async fn enrollment_allocates_addresses_and_returns_the_member_list() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let a = r.enroll(&t.enrollment, "a", &["server"]).await;
    assert_eq!(a.address, "fd00:1::1");
    assert!(a.token.starts_with("sdwp_"));
    assert_eq!(a.answer["overlay_prefix"], "fd00:1::/64");
    assert_eq!(a.answer["members"].as_array().map(Vec::len), Some(1));
    let b = r.enroll(&t.enrollment, "b", &[]).await;
    assert_eq!(b.address, "fd00:1::2");
    let names: Vec<&str> = b.answer["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(b.answer["revision"].as_u64() > a.answer["revision"].as_u64());
    let (s, v) = r.get(&format!("/v1/networks/{}/members", t.network_id), &a.token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revision"], b.answer["revision"]);
    assert_eq!(v["members"][1]["address"], "fd00:1::2");
    assert_eq!(v["members"][1]["lifecycle"], "persistent");
    assert_eq!(v["members"][0]["roles"], json!(["server"]));
}

#[tokio::test]
async fn enrollment_refuses_missing_bad_and_wrong_kind_tokens() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let body = json!({"name": "a", "public_key": Key::generate_private().get_public().to_base64()});
    let (s, v) = r.call(Method::POST, "/v1/peers/enroll", None, Some(body.clone())).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    for bad in [
        "garbage",
        "sdwe_0011223344556677_00",
        &t.enrollment.replace("sdwe_", "sdwp_"),
    ] {
        let (s, v) = r.post("/v1/peers/enroll", bad, body.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{bad}");
    }
    // The right key id with a wrong secret.
    let mut wrong = t.enrollment.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let (s, _) = r.post("/v1/peers/enroll", &wrong, body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Not "Bearer".
    let req = Request::post("/v1/peers/enroll")
        .header(header::AUTHORIZATION, format!("Basic {}", t.enrollment))
        .body(Body::from(body.to_string()))
        .expect("request");
    assert_eq!(r.send(req).await.0, StatusCode::UNAUTHORIZED);
    // Valid tokens of other kinds.
    let (s, v) = r.post("/v1/peers/enroll", &t.account.admin_token, body.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    let peer = r.enroll(&t.enrollment, "p", &[]).await;
    let (s, v) = r.post("/v1/peers/enroll", &peer.token, body).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
}

#[tokio::test]
async fn a_retried_enrollment_gets_the_same_peer_until_its_token_is_used() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let key = Key::generate_private().get_public().to_base64();
    let body = json!({"name": "a", "public_key": key});
    let (s, first) = r.post("/v1/peers/enroll", &t.enrollment, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    // The answer was lost: the daemon asks again with the same name and key.
    let (s, second) = r.post("/v1/peers/enroll", &t.enrollment, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    assert_eq!(
        (&second["peer_id"], &second["address"]),
        (&first["peer_id"], &first["address"])
    );
    assert_eq!(second["members"].as_array().map(Vec::len), Some(1), "still one peer");
    let old = first["peer_token"].as_str().expect("token");
    let new = second["peer_token"].as_str().expect("token");
    assert_ne!(old, new);
    let report = json!({"vips": []});
    // A retry never takes a working identity away: both tokens work.
    for token in [new, old] {
        let (s, v) = r.post("/v1/peers/self/report", token, report.clone()).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Once the peer used its token, the enrollment token and its key no longer get it.
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, body.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_enrolled"), "{v}");
    // Another name with that key is another conflict.
    let mut renamed = body;
    renamed["name"] = json!("b");
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, renamed).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "duplicate_public_key"));
}

#[tokio::test]
async fn enrollment_validates_its_fields() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let key = Key::generate_private().get_public().to_base64();
    let (s, _) = r
        .post(
            "/v1/peers/enroll",
            &t.enrollment,
            json!({"name": "a", "public_key": key}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let again = json!({"name": "other", "public_key": key});
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, again).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "duplicate_public_key"));
    let (s, v) = r.try_enroll(&t.enrollment, "a", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "name_taken"));
    // The same key may enroll in another account's network.
    let u = r.tenant("other", 2).await;
    let (s, v) = r
        .post(
            "/v1/peers/enroll",
            &u.enrollment,
            json!({"name": "a", "public_key": key}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let bad: [Value; 6] = [
        json!({"name": "x", "public_key": "not base64"}),
        json!({"name": "x", "public_key": "AAAA"}),
        json!({"name": "bad name", "public_key": Key::generate_private().get_public().to_base64()}),
        json!({"name": "", "public_key": Key::generate_private().get_public().to_base64()}),
        json!({"name": "x", "public_key": Key::generate_private().get_public().to_base64(), "lifecycle": "forever"}),
        json!({"name": "x", "public_key": Key::generate_private().get_public().to_base64(), "roles": ["boss"]}),
    ];
    for body in bad {
        let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, body.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"), "{body}");
    }
    let ok = json!({"name": "x", "public_key": Key::generate_private().get_public().to_base64(),
        "endpoint": "[2001:db8::1]:51820", "lifecycle": "spot", "roles": ["agent", "server", "agent"]});
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, ok).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let me = v["members"].as_array().and_then(|m| m.last()).expect("member");
    assert_eq!(
        (me["lifecycle"].clone(), me["roles"].clone()),
        (json!("spot"), json!(["server", "agent"]))
    );
    assert_eq!(me["endpoint"], "[2001:db8::1]:51820");
}

#[tokio::test]
async fn addresses_run_out_and_concurrent_enrollments_get_distinct_addresses() {
    let r = Registry::new();
    let account = r.account("acme").await;
    let net = r
        .network(&account.admin_token, "small", "fd00:9::/120", "fd00:9::f0/124")
        .await;
    let enrollment = r.enrollment_token(&account.admin_token, &net).await;
    // Offsets 1..=0xef: 239 peer addresses (the pool takes 0xf0..=0xff).
    let names: Vec<String> = (0..239).map(|i| format!("p{i}")).collect();
    let answers = futures::future::join_all(names.iter().map(|n| r.try_enroll(&enrollment, n, &[]))).await;
    let mut addresses: Vec<String> = answers
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, StatusCode::CREATED, "{v}");
            v["address"].as_str().expect("address").to_owned()
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 239);
    for a in &addresses {
        let a: std::net::Ipv6Addr = a.parse().expect("address");
        assert!((1..0xf0).contains(&a.segments()[7]), "{a} is outside the peer range");
    }
    let (s, v) = r.try_enroll(&enrollment, "one-too-many", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "addresses_exhausted"));
}

#[tokio::test]
async fn member_lists_are_scoped_to_the_network_and_account() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let a = r.enroll(&t.enrollment, "a", &[]).await;
    let path = format!("/v1/networks/{}/members", t.network_id);
    let (s, _) = r.get(&path, &t.account.admin_token).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = r.get(&path, &t.enrollment).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    // A second network of the same account: its peers do not see the first one.
    let net2 = r
        .network(&t.account.admin_token, "net2", "fd00:2::/64", "fd00:2::ffff:0/112")
        .await;
    let e2 = r.enrollment_token(&t.account.admin_token, &net2).await;
    let b = r.enroll(&e2, "b", &[]).await;
    let (s, v) = r.get(&path, &b.token).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "network_not_found"));
    let (s, v) = r.get("/v1/networks/no-such-network/members", &a.token).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "network_not_found"));
}

#[tokio::test]
async fn another_account_neither_sees_nor_changes_anything() {
    let r = Registry::new();
    let a = r.tenant("a", 1).await;
    let b = r.tenant("b", 2).await;
    let a_server = r.enroll(&a.enrollment, "server", &["server"]).await;
    let cluster = r.bootstrap(&a_server).await;
    let cluster_id = cluster["cluster_id"].as_str().expect("id").to_owned();
    assert_eq!(r.report(&a_server, &cluster_id, "ready").await.0, StatusCode::OK);
    let b_peer = r.enroll(&b.enrollment, "intruder", &["server", "agent"]).await;
    let b_admin = &b.account.admin_token;

    let members = format!("/v1/networks/{}/members", a.network_id);
    for token in [b_admin.as_str(), b_peer.token.as_str()] {
        let (s, v) = r.get(&members, token).await;
        assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "network_not_found"));
    }
    let (s, v) = r
        .post(
            &format!("/v1/networks/{}/enrollment-tokens", a.network_id),
            b_admin,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "network_not_found"));
    for role in ["server", "agent"] {
        let join = json!({"phase": "join_request", "role": role, "target_cluster_id": cluster_id});
        let (s, v) = r.handshake(&b_peer, join).await;
        assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"), "{v}");
    }
    let (s, v) = r
        .handshake(&b_peer, json!({"phase": "join_request", "role": "agent"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "no_active_cluster"));
    for k3s in ["ready", "failed"] {
        let (s, v) = r.report(&b_peer, &cluster_id, k3s).await;
        assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    }
    // Nothing of A changed: still one member, the cluster still active with one candidate.
    let (_, v) = r.get(&members, &a_server.token).await;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1));
    let again = r.bootstrap(&a_server).await;
    assert_eq!(again["state"], "active");
    assert_eq!(again["vip_candidates"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn admin_routes_take_only_admin_tokens_and_check_prefixes() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let peer = r.enroll(&t.enrollment, "p", &[]).await;
    let body = json!({"name": "n", "overlay_prefix": "fd00:7::/64", "vip_pool": "fd00:7::ff00/120"});
    for token in [peer.token.as_str(), t.enrollment.as_str()] {
        let (s, v) = r.post("/v1/networks", token, body.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
        let (s, v) = r
            .post(
                &format!("/v1/networks/{}/enrollment-tokens", t.network_id),
                token,
                json!({}),
            )
            .await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    }
    let (s, v) = r.post("/v1/networks", "nope", body).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    for (overlay, pool) in [
        ("fd00:7::/64", "fd00:8::/120"),
        ("fd00:7::1/64", "fd00:7::ff00/120"),
        ("fd00:7::/64", "fd00:7::/64"),
    ] {
        let body = json!({"name": "n", "overlay_prefix": overlay, "vip_pool": pool});
        let (s, v) = r.post("/v1/networks", &t.account.admin_token, body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{overlay} {pool}"
        );
    }
    let body = json!({"name": "n", "overlay_prefix": "10.0.0.0/8", "vip_pool": "10.1.0.0/16"});
    assert_eq!(
        r.post("/v1/networks", &t.account.admin_token, body).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn malformed_oversized_and_misrouted_requests_get_json_errors() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let raw = |body: Body| {
        Request::post("/v1/peers/enroll")
            .header(header::AUTHORIZATION, format!("Bearer {}", t.enrollment))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request")
    };
    let bodies: [&[u8]; 8] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"{\"name\": 5, \"public_key\": \"k\"}",
        b"{\"public_key\": \"k\"}",
        b"{\"name\": \"a\", \"public_key\": \"k\", \"surprise\": 1}",
        b"\xff\xfe\x00garbage",
    ];
    for body in bodies {
        let (s, v) = r.send(raw(Body::from(body.to_vec()))).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"), "{body:?}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(100 * 1024));
    let (s, v) = r.send(raw(Body::from(big))).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    // Oversized without a Content-Length (streamed): refused all the same.
    let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
    let (s, v) = r.send(raw(Body::from_stream(futures::stream::iter(chunks)))).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));

    let (s, v) = r.get("/v1/nowhere", &t.enrollment).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = r
        .call(Method::DELETE, "/v1/peers/enroll", Some(&t.enrollment), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (s, v) = r.get("/v1/networks/%ff%fe/members", &t.account.admin_token).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r
        .call(
            Method::POST,
            "/v1/runtime/handshake",
            None,
            Some(json!({"phase": "dance"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "no token: 401 before the body"
    );
    let peer = r.enroll(&t.enrollment, "p", &["agent"]).await;
    let (s, v) = r.handshake(&peer, json!({"phase": "dance", "role": "agent"})).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r
        .handshake(
            &peer,
            json!({"phase": "join_request", "role": "agent", "target_cluster": "x"}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "a misspelt field is refused: {v}"
    );
}

/// R16: a network's overlay prefix is unicast space between /16 and /120, without host bits, with a VIP
/// pool strictly inside it that holds an address.
#[tokio::test]
async fn networks_refuse_unusable_prefixes() {
    let r = Registry::new();
    let account = r.account("acme").await;
    let admin = &account.admin_token;
    for (overlay, pool) in [
        ("::/0", "fd00::/120"),
        ("ff00::/8", "ff00::/120"),
        ("fe80::/10", "fe80::/120"),
        ("::/16", "::ff00/120"),
        ("fd00::/15", "fd00::/120"),
        ("fd00::/121", "fd00::/126"),
        ("fd00::1/64", "fd00::ff00/120"),
        ("fd00::/64", "fd01::/120"),
        ("fd00::/64", "fd00::/64"),
        ("fd00::/64", "fd00::5/128"),
    ] {
        let body = json!({"name": "n", "overlay_prefix": overlay, "vip_pool": pool});
        let (s, v) = r.post("/v1/networks", admin, body).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{overlay} {pool}: {v}"
        );
    }
    for (overlay, pool) in [("fd00::/16", "fd00::ffff:0/112"), ("fd00:9::/120", "fd00:9::80/126")] {
        let body = json!({"name": "n", "overlay_prefix": overlay, "vip_pool": pool});
        let (s, v) = r.post("/v1/networks", admin, body).await;
        assert_eq!(s, StatusCode::CREATED, "{overlay} {pool}: {v}");
    }
}
