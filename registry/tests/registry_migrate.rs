//! `sdwan-registry migrate`: a SQLite registry populated through the API (two accounts, workload prefixes,
//! a k3s cluster with its VIP, a revoked token, a removed peer's hold-downs) is copied into etcd, and the
//! registry served from etcd answers every read route exactly as the SQLite one does; tokens issued before
//! the migration still work; a second migration into the same prefix is refused. Needs etcd (Debian's
//! etcd-server); skipped without it except in CI.

mod registry_support;

use std::sync::Arc;

use axum::http::StatusCode;
use registry_support::etcd;
use registry_support::Registry;
use sdwan_registry::migrate::{migrate, MigrateError};
use sdwan_registry::store::etcd::{EtcdOptions, EtcdStore};
use sdwan_registry::store::sqlite::SqliteOptions;
use sdwan_registry::store::Store;
use serde_json::{json, Value};

/// Every read route an admin (or a peer) has, with the token to ask it with.
async fn reads(r: &Registry, admin: &str, networks: &[String], peer: &str) -> Vec<(String, StatusCode, Value)> {
    let mut routes: Vec<(String, String)> = [
        "/v1/networks",
        "/v1/peers",
        "/v1/clusters",
        "/v1/vips",
        "/v1/enrollment-tokens",
    ]
    .iter()
    .map(|p| (p.to_string(), admin.to_owned()))
    .collect();
    for id in networks {
        routes.push((format!("/v1/networks/{id}/members"), admin.to_owned()));
        routes.push((format!("/v1/networks/{id}/watch?since=0"), admin.to_owned()));
        routes.push((format!("/v1/networks/{id}/members"), peer.to_owned()));
    }
    let mut answers = Vec::new();
    for (path, token) in routes {
        let (status, body) = r.get(&path, &token).await;
        answers.push((path, status, body));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_registry_answers_every_read_as_the_original() {
    if !etcd::installed_or_skip("a_migrated_registry") {
        return;
    }
    let r = Registry::in_dir(tempfile::tempdir().expect("tempdir"), SqliteOptions::default());
    let acme = r.account("acme").await;
    let (s, v) = r
        .post(
            "/v1/networks",
            &acme.admin_token,
            json!({
                "name": "workloads",
                "overlay_prefix": "fd00:1::/64",
                "vip_pool": "fd00:1::ffff:0/112",
                "overlay_prefix_v4": "192.0.2.0/24",
                "pod_pools": [{"prefix": "198.51.100.0/24", "node_len": 28}],
                "site_ranges": ["203.0.113.0/24"],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let workloads = v["id"].as_str().expect("id").to_owned();
    let enrollment = r.enrollment_token(&acme.admin_token, &workloads).await;
    let (revoked, revoked_id) = r
        .enrollment_token_with(&acme.admin_token, &workloads, json!({"max_uses": 3}))
        .await;
    let (s, _) = r
        .delete(&format!("/v1/enrollment-tokens/{revoked_id}"), &acme.admin_token)
        .await;
    assert!(s.is_success(), "{s}");
    let s1 = r.enroll(&enrollment, "s1", &["server"]).await;
    let s2 = r.enroll(&enrollment, "s2", &["server"]).await;
    let a1 = r.enroll(&enrollment, "a1", &["agent"]).await;
    let gone = r.enroll(&enrollment, "gone", &["agent"]).await;
    let cluster = r.bootstrap(&s1).await["cluster_id"]
        .as_str()
        .expect("cluster")
        .to_owned();
    let (s, v) = r.report(&s1, &cluster, "ready").await;
    assert!(s.is_success(), "{v}");
    let (s, v) = r
        .handshake(&s2, json!({"phase": "join_request", "role": "server"}))
        .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = r
        .handshake(&a1, json!({"phase": "join_request", "role": "agent"}))
        .await;
    assert!(s.is_success(), "{v}");
    assert!(r.empty_report(&s1.token).await.is_success());
    let (s, v) = r.delete(&format!("/v1/peers/{}", gone.id), &acme.admin_token).await;
    assert!(s.is_success(), "{v}");
    let beta = r.tenant("beta", 2).await;
    let b1 = r.enroll(&beta.enrollment, "b1", &[]).await;
    let (s, _) = r.enroll_key(&revoked, "late", "x").await;
    assert!(!s.is_success(), "the revoked token is refused before the migration");

    let tenants = [
        (acme.admin_token.clone(), vec![workloads.clone()], s1.token.clone()),
        (
            beta.account.admin_token.clone(),
            vec![beta.network_id.clone()],
            b1.token.clone(),
        ),
    ];
    let Registry { dir, .. } = r;
    let etcd = etcd::shared();
    let target = EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        key_prefix: "/migrated/".into(),
        tls: None,
    };
    let copied = migrate(dir.path(), &target).await.expect("migrate");
    assert_eq!(
        (
            copied.accounts,
            copied.networks,
            copied.peers,
            copied.clusters,
            copied.members,
            copied.vips
        ),
        (2, 2, 4, 1, 3, 1),
        "{copied}"
    );
    assert!(
        copied.holds >= 2,
        "the removed peer's /32 and pod share are held down: {copied}"
    );
    assert!(copied.tokens >= 9, "{copied}");

    let original = Registry::in_dir(dir, SqliteOptions::default());
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&target).expect("open the copy"));
    let copy = Registry::over(store, tempfile::tempdir().expect("tempdir"), Some(etcd.clone()));
    for (admin, networks, peer) in &tenants {
        let expected = reads(&original, admin, networks, peer).await;
        let answered = reads(&copy, admin, networks, peer).await;
        for ((path, s1, v1), (_, s2, v2)) in expected.iter().zip(&answered) {
            assert_eq!(*s1, StatusCode::OK, "{path} on SQLite: {v1}");
            assert_eq!((s1, v1), (s2, v2), "{path}: SQLite and the etcd copy answer the same");
        }
    }
    // The copy works on: the revoked token stays revoked, the others enroll and report.
    let (s, v) = copy.enroll_key(&revoked, "late", "x").await;
    assert_eq!(registry_support::code(&v), "token_revoked", "{s} {v}");
    assert!(copy.empty_report(&b1.token).await.is_success());
    let fresh = copy.enroll(&enrollment, "after", &["agent"]).await;
    assert_ne!(fresh.address, gone.address, "the address counter was copied");

    let dir = original.dir;
    match migrate(dir.path(), &target).await {
        Err(e @ MigrateError::NotEmpty(_)) => assert!(e.to_string().contains("/migrated/"), "{e}"),
        other => panic!("a second migration into the same prefix: {other:?}"),
    }
    match migrate(&dir.path().join("nothing"), &target).await {
        Err(e @ MigrateError::NoSource(_)) => assert!(e.to_string().contains("registry.db"), "{e}"),
        other => panic!("a directory without a registry: {other:?}"),
    }
}
