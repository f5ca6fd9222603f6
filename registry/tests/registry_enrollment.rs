//! In-process tests of enrollment as a limited credential: token expiry, use limits, revocation and role
//! scopes, the listing operators see, retries that cannot steal an enrolled identity, and the checks of
//! what an enrollee says about itself (name, key, endpoint, roles, lifecycle).

mod registry_support;

use axum::http::StatusCode;
use registry_support::{code, Registry};
use sdwan_registry::error::ApiError;
use sdwan_registry::service;
use sdwan_registry::token;
use sdwand::now_ms;
use sdwand::vocab::wire::{EnrollRequest, EnrollResponse};
use serde_json::{json, Value};
use wireguard_control::Key;

fn new_key() -> String {
    Key::generate_private().get_public().to_base64()
}

/// Enrolls `name` with `enrollment` at `now` (a time the test picks) through the service, as the route does.
async fn enroll_at(r: &Registry, enrollment: &str, name: &str, now: u64) -> Result<EnrollResponse, ApiError> {
    let presented = token::parse(enrollment).expect("token shape");
    let req = EnrollRequest {
        name: name.to_owned(),
        public_key: new_key(),
        endpoint: None,
        lifecycle: sdwand::vocab::Lifecycle::Persistent,
        roles: Vec::new(),
    };
    r.store
        .write(move |tx| service::enroll(tx, &presented, &req, now))
        .await
}

async fn listed(r: &Registry, admin: &str) -> Vec<Value> {
    let (s, v) = r.get("/v1/enrollment-tokens", admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["tokens"].as_array().expect("tokens").clone()
}

fn find<'a>(tokens: &'a [Value], id: &str) -> &'a Value {
    tokens.iter().find(|t| t["id"] == id).expect("listed")
}

#[tokio::test]
async fn tokens_carry_their_limits_and_are_listed_without_secrets() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let admin = &t.account.admin_token;
    let before = now_ms();
    let (s, v) = r
        .try_enrollment_token_with(
            admin,
            &t.network_id,
            json!({"expires_in_s": 3600, "max_uses": 3, "roles": ["agent", "agent"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = v["token"].as_str().expect("token").to_owned();
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(
        secret.starts_with(&format!("sdwe_{id}_")),
        "the id is the token's public key id"
    );
    let expires = v["expires_at_ms"].as_u64().expect("expiry");
    assert!((before + 3_600_000..=now_ms() + 3_600_000).contains(&expires));
    assert_eq!(
        (&v["max_uses"], &v["uses"], &v["roles"]),
        (&json!(3), &json!(0), &json!(["agent"]))
    );
    assert_eq!(v["network_id"], t.network_id.as_str());
    // No body at all, as clients sent before limits existed: a token without limits.
    let (s, v) = r
        .call(
            axum::http::Method::POST,
            &format!("/v1/networks/{}/enrollment-tokens", t.network_id),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (&v["expires_at_ms"], &v["max_uses"], &v["roles"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );

    let (s, text) = r.get("/v1/enrollment-tokens", admin).await;
    assert_eq!(s, StatusCode::OK);
    let tokens = text["tokens"].as_array().expect("tokens");
    assert_eq!(
        tokens.len(),
        3,
        "the tenant's own, the limited one and the plain one: {text}"
    );
    let mine = find(tokens, &id);
    assert_eq!(mine["expires_at_ms"], expires);
    assert_eq!(mine["revoked_at_ms"], Value::Null);
    let secret_part = secret.rsplit('_').next().expect("secret");
    assert!(
        !text.to_string().contains(secret_part),
        "a listing never shows a secret"
    );
    assert!(tokens
        .iter()
        .all(|t| t.get("token").is_none() && t.get("secret_hash").is_none()));
    // Another account sees none of them; other token kinds cannot list.
    let other = r.tenant("other", 2).await;
    let theirs = listed(&r, &other.account.admin_token).await;
    assert!(
        theirs.iter().all(|t| t["network_id"] == other.network_id.as_str()),
        "{theirs:?}"
    );
    let (s, v) = r.get("/v1/enrollment-tokens", &t.enrollment).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));

    for bad in [
        json!({"expires_in_s": 60, "expires_at_ms": now_ms() + 60_000}),
        json!({"expires_at_ms": 1}),
        json!({"expires_in_s": 0}),
        json!({"max_uses": 0}),
        json!({"roles": ["root"]}),
        json!({"uses": 5}),
    ] {
        let (s, v) = r.try_enrollment_token_with(admin, &t.network_id, bad.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}");
    }
}

#[tokio::test]
async fn an_expired_token_answers_401_token_expired() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let expires = now_ms() + 60_000;
    let (e, _) = r
        .enrollment_token_with(&t.account.admin_token, &t.network_id, json!({"expires_at_ms": expires}))
        .await;
    assert!(enroll_at(&r, &e, "early", expires - 1).await.is_ok());
    let refused = enroll_at(&r, &e, "late", expires).await.expect_err("expired");
    assert_eq!(
        (refused.kind.status(), refused.code),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );
    assert!(enroll_at(&r, &e, "later", expires + 86_400_000).await.is_err());
    // A token without expiry never expires.
    assert!(enroll_at(&r, &t.enrollment, "forever", u64::MAX / 2).await.is_ok());
}

#[tokio::test]
async fn a_token_enrolls_at_most_max_uses_peers() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let admin = &t.account.admin_token;
    let (e, id) = r
        .enrollment_token_with(admin, &t.network_id, json!({"max_uses": 2}))
        .await;
    // A refused enrollment uses nothing.
    let (s, _) = r.enroll_key(&e, "bad name", &new_key()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(r.try_enroll(&e, "one", &[]).await.0, StatusCode::CREATED);
    let key = new_key();
    let (s, first) = r.enroll_key(&e, "two", &key).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, v) = r.try_enroll(&e, "three", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "token_used_up"));
    assert_eq!(find(&listed(&r, admin).await, &id)["uses"], 2);
    // The retry of a lost answer is no new peer, so no new use: it still works.
    let (s, again) = r.enroll_key(&e, "two", &key).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["peer_id"], first["peer_id"]);
    assert_eq!(find(&listed(&r, admin).await, &id)["uses"], 2);
}

#[tokio::test]
async fn a_revoked_token_answers_401_and_its_peers_keep_working() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let admin = &t.account.admin_token;
    let (e, id) = r.enrollment_token_with(admin, &t.network_id, json!({})).await;
    let peer = r.enroll(&e, "a", &[]).await;
    let path = format!("/v1/enrollment-tokens/{id}");
    // Only the account's admin revokes; anyone else's view is "no such token".
    let other = r.tenant("other", 2).await;
    let (s, v) = r.delete(&path, &other.account.admin_token).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "token_not_found"));
    let (s, v) = r.delete(&path, &peer.token).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    let peer_key_id = peer.token.split('_').nth(1).expect("key id");
    let (s, v) = r.delete(&format!("/v1/enrollment-tokens/{peer_key_id}"), admin).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "token_not_found"),
        "only enrollment tokens"
    );

    let (s, v) = r.delete(&path, admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let revoked_at = v["revoked_at_ms"].as_u64().expect("revoked");
    let (s, v) = r.try_enroll(&e, "b", &[]).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "token_revoked"));
    // The peer it enrolled keeps its own token.
    assert_eq!(r.empty_report(&peer.token).await, StatusCode::OK);
    // Revoking again keeps the first time; the listing shows it.
    let (s, v) = r.delete(&path, admin).await;
    assert_eq!((s, &v["revoked_at_ms"]), (StatusCode::OK, &json!(revoked_at)));
    assert_eq!(find(&listed(&r, admin).await, &id)["revoked_at_ms"], revoked_at);
    // The network's other token still enrolls.
    assert_eq!(r.try_enroll(&t.enrollment, "c", &[]).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_role_scoped_token_enrolls_only_those_roles() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let (agents, _) = r
        .enrollment_token_with(&t.account.admin_token, &t.network_id, json!({"roles": ["agent"]}))
        .await;
    for roles in [&["server"][..], &["agent", "server"]] {
        let (s, v) = r.try_enroll(&agents, "s", roles).await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "role_not_allowed"), "{roles:?}");
    }
    let agent = r.enroll(&agents, "a", &["agent"]).await;
    r.enroll(&agents, "plain", &[]).await;
    // So it cannot become a VIP candidate, nor get the server join path.
    let (s, v) = r.bootstrap_raw(&agent).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "role_not_enrolled"));
    let (s, v) = r
        .handshake(&agent, json!({"phase": "join_request", "role": "server"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "role_not_enrolled"));
    // A token for no role at all enrolls plain mesh members only.
    let (none, _) = r
        .enrollment_token_with(&t.account.admin_token, &t.network_id, json!({"roles": []}))
        .await;
    assert_eq!(r.try_enroll(&none, "m", &[]).await.0, StatusCode::CREATED);
    assert_eq!(r.try_enroll(&none, "n", &["agent"]).await.0, StatusCode::FORBIDDEN);
}

/// R14: a holder of the enrollment token who knows an enrolled peer's name and public key (every member
/// does) cannot take its identity, and the peer's token keeps working.
#[tokio::test]
async fn an_enrolled_identity_cannot_be_stolen_by_a_retry() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let key = new_key();
    let (s, v) = r.enroll_key(&t.enrollment, "victim", &key).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let victim = v["peer_token"].as_str().expect("token").to_owned();

    // Before its first call, another enrollment token of the same network cannot retry it either.
    let (other, _) = r
        .enrollment_token_with(&t.account.admin_token, &t.network_id, json!({}))
        .await;
    let (s, v) = r.enroll_key(&other, "victim", &key).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_enrolled"), "{v}");

    // The peer calls the registry (its daemon reports as soon as it starts).
    assert_eq!(r.empty_report(&victim).await, StatusCode::OK);
    let (s, v) = r.enroll_key(&t.enrollment, "victim", &key).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_enrolled"), "{v}");
    assert!(v.get("peer_token").is_none() && !v.to_string().contains("sdwp_"));
    assert_eq!(
        r.empty_report(&victim).await,
        StatusCode::OK,
        "the victim's token keeps working"
    );
    let (s, _) = r.get(&format!("/v1/networks/{}/members", t.network_id), &victim).await;
    assert_eq!(s, StatusCode::OK);
}

/// A peer whose first call is a read (members or watch) ends its retry window too: a retry with the same
/// enrollment token, name and key then gets 409, not a second token for the running identity.
#[tokio::test]
async fn a_first_read_ends_the_retry_window() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    for (name, route) in [("m", "members"), ("w", "watch?since=0&wait_ms=0")] {
        let key = new_key();
        let (s, v) = r.enroll_key(&t.enrollment, name, &key).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let token = v["peer_token"].as_str().expect("token").to_owned();
        let (s, v) = r.enroll_key(&t.enrollment, name, &key).await;
        assert_eq!(s, StatusCode::CREATED, "a retry before any call is answered: {v}");
        let (s, _) = r.get(&format!("/v1/networks/{}/{route}", t.network_id), &token).await;
        assert_eq!(s, StatusCode::OK, "{route}");
        let (s, v) = r.enroll_key(&t.enrollment, name, &key).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::CONFLICT, "already_enrolled"),
            "after {route}: {v}"
        );
    }
}

/// R15: what an enrollee says about itself is checked before anything is stored.
#[tokio::test]
async fn enrollment_refuses_bad_endpoints_keys_names_roles_and_lifecycles() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let good = new_key();
    let body = |extra: Value| {
        let mut b = json!({"name": "x", "public_key": new_key()});
        if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(extra.clone());
        }
        b
    };
    let mut bad: Vec<Value> = [
        "0.0.0.0:0",
        "[::]:51820",
        "127.0.0.1:22",
        "[ff02::1]:51820",
        "192.0.2.1:0",
        "169.254.0.1:51820",
        "[fe80::1]:51820",
        "255.255.255.255:51820",
    ]
    .iter()
    .map(|e| body(json!({ "endpoint": e })))
    .collect();
    bad.extend(
        [
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            good[..43].to_owned(),
            format!("{good}A"),
            format!(" {good} "),
        ]
        .iter()
        .map(|k| body(json!({ "public_key": k }))),
    );
    bad.extend(
        [&"a".repeat(65), "a/b", "", "é"]
            .iter()
            .map(|n| body(json!({ "name": n }))),
    );
    bad.push(body(json!({"roles": ["root"]})));
    bad.push(body(json!({"lifecycle": "forever"})));
    for b in bad {
        let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, b.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"), "{b}");
    }
    let (_, m) = r
        .get(
            &format!("/v1/networks/{}/members", t.network_id),
            &t.account.admin_token,
        )
        .await;
    assert_eq!(m["members"], json!([]), "nothing was stored");
    // Duplicate roles are deduplicated; a routable endpoint is taken.
    let ok = body(json!({"name": "ok", "roles": ["server", "server"], "endpoint": "198.51.100.7:51820"}));
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, ok).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let me = &v["members"][0];
    assert_eq!(
        (&me["roles"], &me["endpoint"]),
        (&json!(["server"]), &json!("198.51.100.7:51820"))
    );
}

/// A refused peer name's 400 says what is wrong with it and what the rule is (`vocab::name::PeerName`).
#[tokio::test]
async fn a_refused_name_is_told_what_is_wrong_and_what_is_allowed() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let body = json!({"name": "Web 1", "public_key": new_key()});
    let (s, v) = r.post("/v1/peers/enroll", &t.enrollment, body).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("\"Web 1\" has ' ' at position 4"), "{message}");
    assert!(
        message.contains("1-64 ASCII letters, digits, '-', '_' or '.'"),
        "{message}"
    );
}
