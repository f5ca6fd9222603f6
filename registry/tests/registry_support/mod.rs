//! Shared by the registry tests: a registry on a fresh store in a temporary directory, called in process
//! through `tower::ServiceExt::oneshot`, and helpers for the usual setup steps.
//!
//! [`Registry::new`] stores in SQLite, or with `SDWAN_REGISTRY_TEST_STORE=etcd` in etcd under a key prefix
//! of its own, on an etcd the harness starts ([`etcd`]): the same tests run on both backends. The crash
//! tests run the real binary instead ([`crash`]).

#![allow(dead_code)] // each test crate uses a different subset

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use sdwan_registry::api;
use sdwan_registry::service;
use sdwan_registry::store::etcd::{EtcdOptions, EtcdStore};
use sdwan_registry::store::sqlite::{SqliteOptions, SqliteStore};
use sdwan_registry::store::Store;
use sdwand::vocab::wire::AccountCreated;
use serde_json::{json, Value};
use tower::ServiceExt;
use wireguard_control::Key;

pub mod crash;
pub mod etcd;

/// A registry over its own store.
pub struct Registry {
    pub router: Router,
    pub state: api::AppState,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    /// The etcd the store lives in (etcd runs), kept running while the registry lives.
    pub etcd: Option<Arc<etcd::Etcd>>,
}

/// A fresh store on etcd: its own key prefix on the test binary's etcd.
pub fn etcd_store() -> (Arc<dyn Store>, Arc<etcd::Etcd>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let etcd = etcd::shared();
    let options = EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        key_prefix: format!("/test-{}/", NEXT.fetch_add(1, Ordering::Relaxed)),
        tls: None,
    };
    let store: Arc<dyn Store> = Arc::new(EtcdStore::open(&options).expect("open the etcd store"));
    (store, etcd)
}

/// An account with one network and an enrollment token for it.
pub struct Tenant {
    pub account: AccountCreated,
    pub network_id: String,
    pub enrollment: String,
}

/// An enrolled peer.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub id: String,
    pub name: String,
    pub address: String,
    pub token: String,
    pub answer: Value,
}

impl Enrolled {
    /// The peer `name` from a successful enrollment answer.
    pub fn from_answer(name: &str, answer: Value) -> Self {
        Enrolled {
            id: answer["peer_id"].as_str().expect("peer_id").to_owned(),
            name: name.to_owned(),
            address: answer["address"].as_str().expect("address").to_owned(),
            token: answer["peer_token"].as_str().expect("peer_token").to_owned(),
            answer,
        }
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::with_options(SqliteOptions::default())
    }

    /// A registry on the requested backend (`options` tune SQLite only).
    pub fn with_options(options: SqliteOptions) -> Self {
        if etcd::requested() {
            let (store, etcd) = etcd_store();
            return Self::over(store, tempfile::tempdir().expect("tempdir"), Some(etcd));
        }
        Self::in_dir(tempfile::tempdir().expect("tempdir"), options)
    }

    /// A registry on the requested backend whose state `configure` sets up (limits, metrics token).
    pub fn with_state(configure: impl FnOnce(api::AppState) -> api::AppState) -> Self {
        let mut r = Self::new();
        r.state = configure(r.state);
        r.router = api::router_with(r.state.clone());
        r
    }

    /// A registry on SQLite in `dir` (benchmarks put it on a real disk: /tmp may be tmpfs).
    pub fn in_dir(dir: tempfile::TempDir, options: SqliteOptions) -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), options).expect("open store"));
        Self::over(store, dir, None)
    }

    /// A registry over `store` (kept in `dir`; on `etcd`, which stays up while it lives).
    pub fn over(store: Arc<dyn Store>, dir: tempfile::TempDir, etcd: Option<Arc<etcd::Etcd>>) -> Self {
        let state = api::AppState::new(store.clone());
        Registry {
            router: api::router_with(state.clone()),
            state,
            store,
            dir,
            etcd,
        }
    }

    pub async fn account(&self, name: &str) -> AccountCreated {
        let name = name.to_owned();
        self.store
            .write(move |tx| service::create_account(tx, &name, 1))
            .await
            .expect("account")
    }

    /// Sends one request; answers the status and the JSON body (`Value::Null` when the body is not JSON).
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Asks for an enrollment token of `network_id` with the limits in `body`; answers status and body.
    pub async fn try_enrollment_token_with(&self, admin: &str, network_id: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/v1/networks/{network_id}/enrollment-tokens"), admin, body)
            .await
    }

    /// An enrollment token of `network_id` with the limits in `body`: (token text, its id).
    pub async fn enrollment_token_with(&self, admin: &str, network_id: &str, body: Value) -> (String, String) {
        let (s, v) = self.try_enrollment_token_with(admin, network_id, body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["token"].as_str().expect("token").to_owned(),
            v["id"].as_str().expect("id").to_owned(),
        )
    }

    /// Enrolls `name` with `public_key` (and nothing else).
    pub async fn enroll_key(&self, enrollment: &str, name: &str, public_key: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/peers/enroll",
            enrollment,
            json!({"name": name, "public_key": public_key}),
        )
        .await
    }

    /// Posts an empty peer report with `token`; answers the status.
    pub async fn empty_report(&self, token: &str) -> StatusCode {
        self.post("/v1/peers/self/report", token, json!({"vips": []})).await.0
    }

    pub async fn network(&self, admin: &str, name: &str, overlay: &str, pool: &str) -> String {
        let (s, v) = self
            .post(
                "/v1/networks",
                admin,
                json!({"name": name, "overlay_prefix": overlay, "vip_pool": pool}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }

    pub async fn enrollment_token(&self, admin: &str, network_id: &str) -> String {
        let (s, v) = self
            .post(
                &format!("/v1/networks/{network_id}/enrollment-tokens"),
                admin,
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }

    /// An account named `name` with a network `fd00:<n>::/64` (VIP pool `fd00:<n>::ffff:0/112`).
    pub async fn tenant(&self, name: &str, n: u16) -> Tenant {
        let account = self.account(name).await;
        let network_id = self
            .network(
                &account.admin_token,
                "net",
                &format!("fd00:{n:x}::/64"),
                &format!("fd00:{n:x}::ffff:0/112"),
            )
            .await;
        let enrollment = self.enrollment_token(&account.admin_token, &network_id).await;
        Tenant {
            account,
            network_id,
            enrollment,
        }
    }

    pub async fn try_enroll(&self, enrollment: &str, name: &str, roles: &[&str]) -> (StatusCode, Value) {
        let key = Key::generate_private().get_public().to_base64();
        self.post(
            "/v1/peers/enroll",
            enrollment,
            json!({"name": name, "public_key": key, "roles": roles}),
        )
        .await
    }

    pub async fn enroll(&self, enrollment: &str, name: &str, roles: &[&str]) -> Enrolled {
        let (s, v) = self.try_enroll(enrollment, name, roles).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        Enrolled::from_answer(name, v)
    }

    pub async fn handshake(&self, peer: &Enrolled, body: Value) -> (StatusCode, Value) {
        self.post("/v1/runtime/handshake", &peer.token, body).await
    }

    pub async fn bootstrap_raw(&self, peer: &Enrolled) -> (StatusCode, Value) {
        self.handshake(peer, json!({"phase": "bootstrap", "role": "server"}))
            .await
    }

    pub async fn bootstrap(&self, peer: &Enrolled) -> Value {
        let (s, v) = self.bootstrap_raw(peer).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub async fn report(&self, peer: &Enrolled, cluster_id: &str, k3s: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/v1/clusters/{cluster_id}/report"),
            &peer.token,
            json!({"k3s": k3s}),
        )
        .await
    }
}

/// The `error.code` of an error answer.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}
