//! In-process tests of the k3s handshakes: bootstrap (idempotent), join (order, targets, errors), and the
//! ready/failed report.

mod registry_support;

use axum::http::StatusCode;
use registry_support::{code, Enrolled, Registry};
use sdwan_registry::store::StoreError;
use serde_json::{json, Value};

fn id(v: &Value) -> String {
    v["cluster_id"].as_str().expect("cluster_id").to_owned()
}

fn candidates(v: &Value) -> Vec<String> {
    v["vip_candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect()
}

async fn join(r: &Registry, peer: &Enrolled, role: &str, target: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"phase": "join_request", "role": role});
    if let Some(t) = target {
        body["target_cluster_id"] = json!(t);
    }
    r.handshake(peer, body).await
}

#[tokio::test]
async fn bootstrap_creates_the_cluster_and_its_vip() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let v = r.bootstrap(&s1).await;
    assert_eq!(v["state"], "bootstrapping");
    assert_eq!(v["role"], "server");
    assert_eq!(v["vip"], "fd00:1::ffff:1");
    assert_eq!(v["api_endpoint"], "https://[fd00:1::ffff:1]:6443");
    assert!(v["join_token"].as_str().is_some_and(|t| t.len() == 64));
    assert_eq!(candidates(&v), ["s1"]);
    assert_eq!(v["vip_candidates"][0]["address"], s1.address.as_str());
    let (s, m) = r
        .get(&format!("/v1/networks/{}/members", t.network_id), &s1.token)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        m["revision"].as_u64() > s1.answer["revision"].as_u64(),
        "a new VIP bumps the revision"
    );
}

#[tokio::test]
async fn bootstrap_retries_return_the_same_cluster_and_vip() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let first = r.bootstrap(&s1).await;
    let retries = futures::future::join_all((0..16).map(|_| r.bootstrap(&s1))).await;
    for again in retries {
        assert_eq!(again, first);
    }
    let named = json!({"phase": "bootstrap", "role": "server", "cluster_name": first["cluster_name"]});
    assert_eq!(r.handshake(&s1, named).await.1, first);
    let renamed = json!({"phase": "bootstrap", "role": "server", "cluster_name": "another"});
    let (s, v) = r.handshake(&s1, renamed).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_member"));
    // The retries allocated nothing: the next cluster gets the pool's second address.
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let named = json!({"phase": "bootstrap", "role": "server", "cluster_name": "staging"});
    let (s, second) = r.handshake(&s2, named).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(
        (second["vip"].clone(), second["cluster_name"].clone()),
        (json!("fd00:1::ffff:2"), json!("staging"))
    );
    assert_ne!(id(&second), id(&first));
}

#[tokio::test]
async fn joining_servers_become_candidates_in_join_order() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let cluster = id(&r.bootstrap(&s1).await);
    let mut servers = Vec::new();
    for name in ["s2", "s3", "s4"] {
        servers.push(r.enroll(&t.enrollment, name, &["server", "agent"]).await);
    }
    let mut last = Value::Null;
    for s in &servers {
        let (status, v) = join(&r, s, "server", Some(&cluster)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            v["state"], "bootstrapping",
            "joining a bootstrapping cluster by id is allowed"
        );
        last = v;
    }
    assert_eq!(candidates(&last), ["s1", "s2", "s3", "s4"]);
    assert_eq!(last["api_endpoint"], "https://[fd00:1::ffff:1]:6443");
    // A retried join appends nothing; an agent is no candidate.
    let (_, again) = join(&r, &servers[0], "server", Some(&cluster)).await;
    assert_eq!(candidates(&again), ["s1", "s2", "s3", "s4"]);
    let agent = r.enroll(&t.enrollment, "a1", &["agent"]).await;
    let (s, v) = join(&r, &agent, "agent", Some(&cluster)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["role"].clone(), candidates(&v).len()), (json!("agent"), 4));
    // An agent's token is the cluster's agent token, not the servers' join token.
    assert_eq!(v["join_token"], last["agent_token"]);
}

#[tokio::test]
async fn concurrent_server_joins_each_appear_once() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s0 = r.enroll(&t.enrollment, "s0", &["server"]).await;
    let cluster = id(&r.bootstrap(&s0).await);
    let mut servers = Vec::new();
    for i in 1..=20 {
        servers.push(r.enroll(&t.enrollment, &format!("s{i}"), &["server"]).await);
    }
    let answers = futures::future::join_all(servers.iter().map(|s| join(&r, s, "server", Some(&cluster)))).await;
    let mut longest = Vec::new();
    for (s, v) in answers {
        assert_eq!(s, StatusCode::OK, "{v}");
        let c = candidates(&v);
        // Each answer is a prefix of the final order: commit order is candidate order.
        if c.len() > longest.len() {
            assert!(c.starts_with(&longest));
            longest = c;
        } else {
            assert!(longest.starts_with(&c));
        }
    }
    assert_eq!(longest.len(), 21);
    let mut unique = longest.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 21);
}

#[tokio::test]
async fn join_target_must_exist_be_ours_and_not_in_error() {
    let r = Registry::new();
    let a = r.tenant("a", 1).await;
    let b = r.tenant("b", 2).await;
    let a1 = r.enroll(&a.enrollment, "a1", &["server"]).await;
    let a2 = r.enroll(&a.enrollment, "a2", &["server"]).await;
    let agent = r.enroll(&a.enrollment, "agent", &["agent"]).await;
    let b1 = r.enroll(&b.enrollment, "b1", &["server"]).await;
    let foreign = id(&r.bootstrap(&b1).await);
    let broken = id(&r.bootstrap(&a1).await);

    let (s, v) = join(&r, &agent, "agent", Some("7d1c61b6-0d6a-4a8e-9c35-1a4f3e1c2b00")).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    let (s, v) = join(&r, &agent, "agent", Some(&foreign)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "cluster_not_found"),
        "foreign = missing"
    );
    assert_eq!(r.report(&a1, &broken, "failed").await.0, StatusCode::OK);
    let (s, v) = join(&r, &agent, "agent", Some(&broken)).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "cluster_error"));
    let (s, v) = join(&r, &a2, "server", Some(&broken)).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "cluster_error"));
    // Bootstrapping and error clusters are not picked by an empty target.
    let (s, v) = join(&r, &agent, "agent", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "no_active_cluster"));
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("target_cluster_id")));
    let (s, v) = join(&r, &agent, "agent", Some("")).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "no_active_cluster"),
        "empty = absent"
    );
}

#[tokio::test]
async fn an_empty_target_picks_the_most_recent_active_cluster() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let s3 = r.enroll(&t.enrollment, "s3", &["server"]).await;
    let prod = id(&r.bootstrap(&s1).await);
    let staging = id(&r.bootstrap(&s2).await);
    let newest = id(&r.bootstrap(&s3).await);
    for (server, cluster) in [(&s1, &prod), (&s2, &staging)] {
        let (s, v) = r.report(server, cluster, "ready").await;
        assert_eq!((s, v["state"].clone()), (StatusCode::OK, json!("active")));
    }
    // `newest` is still bootstrapping: the most recent *active* one is staging.
    let w1 = r.enroll(&t.enrollment, "w1", &["agent"]).await;
    let (s, v) = join(&r, &w1, "agent", None).await;
    assert_eq!((s, id(&v)), (StatusCode::OK, staging.clone()));
    assert_eq!(r.report(&s2, &staging, "failed").await.1["state"], "error");
    let w2 = r.enroll(&t.enrollment, "w2", &["agent"]).await;
    assert_eq!(id(&join(&r, &w2, "agent", None).await.1), prod);
    assert_eq!(r.report(&s3, &newest, "ready").await.0, StatusCode::OK);
    let w3 = r.enroll(&t.enrollment, "w3", &["agent"]).await;
    assert_eq!(id(&join(&r, &w3, "agent", None).await.1), newest);
}

#[tokio::test]
async fn roles_and_memberships_are_enforced() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let agent_only = r.enroll(&t.enrollment, "w", &["agent"]).await;
    let (s, v) = r
        .handshake(&agent_only, json!({"phase": "bootstrap", "role": "server"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "role_not_enrolled"));
    let both = r.enroll(&t.enrollment, "both", &["server", "agent"]).await;
    let (s, v) = r.handshake(&both, json!({"phase": "bootstrap", "role": "agent"})).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r
        .handshake(
            &both,
            json!({"phase": "bootstrap", "role": "server", "target_cluster_id": "x"}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r
        .handshake(
            &both,
            json!({"phase": "join_request", "role": "agent", "cluster_name": "x"}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r
        .handshake(
            &both,
            json!({"phase": "bootstrap", "role": "server", "cluster_name": "no spaces"}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));

    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let c1 = id(&r.bootstrap(&s1).await);
    let c2 = id(&r.bootstrap(&s2).await);
    let (s, _) = join(&r, &both, "agent", Some(&c1)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = join(&r, &both, "server", Some(&c1)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "already_member"),
        "one role per cluster"
    );
    // An agent naming another cluster moves there (one cluster per peer); a server does not.
    let (s, v) = join(&r, &both, "agent", Some(&c2)).await;
    assert_eq!((s, id(&v)), (StatusCode::OK, c2.clone()), "the agent moved");
    let (s, v) = join(&r, &s1, "server", Some(&c2)).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_member"));
    let (s, v) = r.bootstrap_raw(&both).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "already_member"),
        "a joined peer cannot bootstrap"
    );

    for token in [t.enrollment.as_str(), t.account.admin_token.as_str()] {
        let (s, v) = r
            .post(
                "/v1/runtime/handshake",
                token,
                json!({"phase": "bootstrap", "role": "server"}),
            )
            .await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    }
}

#[tokio::test]
async fn joins_stay_inside_the_callers_network() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let net2 = r
        .network(&t.account.admin_token, "net2", "fd00:2::/64", "fd00:2::ffff:0/112")
        .await;
    let e2 = r.enrollment_token(&t.account.admin_token, &net2).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let cluster = id(&r.bootstrap(&s1).await);
    assert_eq!(r.report(&s1, &cluster, "ready").await.0, StatusCode::OK);
    let elsewhere = r.enroll(&e2, "w", &["agent", "server"]).await;
    // Another network's cluster of the same account is as unknown as a random id (no existence oracle).
    let (s, v) = join(&r, &elsewhere, "agent", Some(&cluster)).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    let (s, random) = join(&r, &elsewhere, "agent", Some("00000000-0000-4000-8000-000000000000")).await;
    assert_eq!((s, code(&random)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    // Joining it as a server, or reporting on it, is the same 404.
    let (s, v) = join(&r, &elsewhere, "server", Some(&cluster)).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    let (s, v) = r.report(&elsewhere, &cluster, "failed").await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    let (s, v) = join(&r, &elsewhere, "agent", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "no_active_cluster"));
}

#[tokio::test]
async fn reports_come_from_server_members_only() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let w = r.enroll(&t.enrollment, "w", &["agent"]).await;
    let outsider = r.enroll(&t.enrollment, "o", &["server"]).await;
    let cluster = id(&r.bootstrap(&s1).await);
    assert_eq!(join(&r, &s2, "server", Some(&cluster)).await.0, StatusCode::OK);
    assert_eq!(join(&r, &w, "agent", Some(&cluster)).await.0, StatusCode::OK);
    for peer in [&w, &outsider] {
        let (s, v) = r.report(peer, &cluster, "ready").await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "not_cluster_server"));
    }
    let (s, v) = r.report(&s2, &cluster, "ready").await;
    assert_eq!((s, v["state"].clone()), (StatusCode::OK, json!("active")));
    assert_eq!(
        r.report(&s1, &cluster, "ready").await.1["state"],
        "active",
        "ready twice is fine"
    );
    assert_eq!(r.report(&s1, &cluster, "failed").await.1["state"], "error");
    let (s, v) = r.report(&s1, &cluster, "ready").await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "cluster_error"),
        "error is not left by a report"
    );
    let (s, v) = r.report(&s1, "no-such-cluster", "ready").await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    let (s, v) = r
        .post(
            &format!("/v1/clusters/{cluster}/report"),
            &s1.token,
            json!({"k3s": "sleepy"}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, v) = r
        .post(
            &format!("/v1/clusters/{cluster}/report"),
            &t.account.admin_token,
            json!({"k3s": "ready"}),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
}

#[tokio::test]
async fn the_vip_pool_runs_out() {
    let r = Registry::new();
    let account = r.account("acme").await;
    let net = r
        .network(&account.admin_token, "n", "fd00:3::/64", "fd00:3::ffff:0/126")
        .await;
    let enrollment = r.enrollment_token(&account.admin_token, &net).await;
    for i in 1..=3 {
        let s = r.enroll(&enrollment, &format!("s{i}"), &["server"]).await;
        assert_eq!(r.bootstrap(&s).await["vip"], format!("fd00:3::ffff:{i}"));
    }
    let s4 = r.enroll(&enrollment, "s4", &["server"]).await;
    let (s, v) = r.bootstrap_raw(&s4).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "vip_pool_exhausted"));
    // The failed bootstrap left nothing behind: s4 is in no cluster and may join one.
    let (s, v) = join(&r, &s4, "server", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "no_active_cluster"));
}

/// R12: a VIP has at most as many candidates as the failover protocol carries.
#[tokio::test]
async fn a_vip_takes_at_most_32_candidates() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let first = r.enroll(&t.enrollment, "s0", &["server"]).await;
    let cluster = id(&r.bootstrap(&first).await);
    for i in 1..32 {
        let s = r.enroll(&t.enrollment, &format!("s{i}"), &["server", "agent"]).await;
        let (status, v) = join(&r, &s, "server", Some(&cluster)).await;
        assert_eq!(status, StatusCode::OK, "{i}: {v}");
    }
    let extra = r.enroll(&t.enrollment, "s32", &["server", "agent"]).await;
    let (s, v) = join(&r, &extra, "server", Some(&cluster)).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "too_many_candidates"), "{v}");
    // Nothing of the refused join stayed: the VIP lists 32, and the peer may still join as agent.
    let (_, vips) = r.get("/v1/vips", &t.account.admin_token).await;
    assert_eq!(vips["vips"][0]["candidates"].as_array().map(Vec::len), Some(32));
    let (s, v) = join(&r, &extra, "agent", Some(&cluster)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(candidates(&v).len(), 32);
}

/// R13: a cluster in error is recovered by its account's operator; joins work again after it.
#[tokio::test]
async fn an_operator_takes_a_cluster_out_of_error() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let cluster = id(&r.bootstrap(&s1).await);
    assert_eq!(r.report(&s1, &cluster, "failed").await.1["state"], "error");
    let (s, v) = join(&r, &s2, "server", Some(&cluster)).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "cluster_error"));

    let path = format!("/v1/clusters/{cluster}/state");
    let active = json!({"state": "active"});
    // Not a peer (even a server of the cluster), not another account, not back to bootstrapping.
    let (s, v) = r.post(&path, &s1.token, active.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "wrong_token_kind"));
    let other = r.tenant("other", 2).await;
    let (s, v) = r.post(&path, &other.account.admin_token, active.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "cluster_not_found"));
    let (s, v) = r
        .post(&path, &t.account.admin_token, json!({"state": "bootstrapping"}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));

    let (s, v) = r.post(&path, &t.account.admin_token, active).await;
    assert_eq!((s, &v["state"]), (StatusCode::OK, &json!("active")), "{v}");
    let (s, v) = join(&r, &s2, "server", Some(&cluster)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(candidates(&v), ["s1", "s2"]);
    // An operator may also stop joins on purpose.
    let (s, v) = r.post(&path, &t.account.admin_token, json!({"state": "error"})).await;
    assert_eq!((s, &v["state"]), (StatusCode::OK, &json!("error")));
}

/// The k3s tokens of an answer: (`join_token`, `agent_token`).
fn tokens(v: &Value) -> (String, Option<String>) {
    let join = v["join_token"].as_str().expect("join_token").to_owned();
    (join, v["agent_token"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn servers_get_both_tokens_and_agents_only_the_agent_token() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let boot = r.bootstrap(&s1).await;
    let (server_token, agent_token) = tokens(&boot);
    let agent_token = agent_token.expect("a server's answer carries the agent token");
    assert_eq!(agent_token.len(), 64);
    assert_ne!(server_token, agent_token);
    let cluster = id(&boot);
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let (s, joined) = join(&r, &s2, "server", Some(&cluster)).await;
    assert_eq!(s, StatusCode::OK, "{joined}");
    assert_eq!(tokens(&joined), (server_token.clone(), Some(agent_token.clone())));
    let a1 = r.enroll(&t.enrollment, "a1", &["agent"]).await;
    let (s, agent) = join(&r, &a1, "agent", Some(&cluster)).await;
    assert_eq!(s, StatusCode::OK, "{agent}");
    assert_eq!(tokens(&agent), (agent_token.clone(), Some(agent_token)));
    assert!(
        !agent.to_string().contains(&server_token),
        "an agent never sees the server token: {agent}"
    );
}

#[tokio::test]
async fn two_clusters_have_different_tokens() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&t.enrollment, "s2", &["server"]).await;
    let (first, second) = (r.bootstrap(&s1).await, r.bootstrap(&s2).await);
    assert_ne!(id(&first), id(&second));
    let ((j1, a1), (j2, a2)) = (tokens(&first), tokens(&second));
    let all = [j1, a1.expect("agent token"), j2, a2.expect("agent token")];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "every token is the cluster's own");
        }
    }
}

/// A cluster stored before agent tokens (its `agent_token` unset, as the schema 5 migration leaves it) gets
/// one at its next handshake, keeps it, and keeps its server token.
#[tokio::test]
async fn a_cluster_from_before_agent_tokens_gets_one_at_its_next_handshake() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let boot = r.bootstrap(&s1).await;
    let (server_token, first) = tokens(&boot);
    let cluster_id = id(&boot);
    let stored_token = |cluster_id: String| {
        r.store.read(move |tx| {
            let cluster = tx.cluster(&cluster_id)?.expect("the cluster");
            Ok::<_, StoreError>(cluster.agent_token)
        })
    };
    let cleared = cluster_id.clone();
    r.store
        .write(move |tx| {
            let mut cluster = tx.cluster(&cleared)?.expect("the cluster");
            cluster.agent_token = None;
            tx.put_cluster(&cluster)
        })
        .await
        .expect("clear");
    assert_eq!(stored_token(cluster_id.clone()).await.expect("read"), None);
    let again = r.bootstrap(&s1).await;
    let (join_token, agent_token) = tokens(&again);
    let agent_token = agent_token.expect("given one");
    assert_eq!(join_token, server_token);
    assert_ne!(Some(&agent_token), first.as_ref(), "a new one, not the cleared one");
    let stored = stored_token(cluster_id).await.expect("read");
    assert_eq!(stored.as_ref(), Some(&agent_token), "stored, not made up per answer");
    let a1 = r.enroll(&t.enrollment, "a1", &["agent"]).await;
    let (s, agent) = join(&r, &a1, "agent", Some(&id(&boot))).await;
    assert_eq!(s, StatusCode::OK, "{agent}");
    assert_eq!(tokens(&agent).0, agent_token);
}
