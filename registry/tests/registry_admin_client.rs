//! `sdwanctl registry networks`, `create-network` (with pod pools and site ranges), `site-prefixes`, `tokens …`,
//! `floating …`, `vip-quorum` and `cluster-state`, and `sdwan-registry init-account`, end to end: the admin client of
//! [`sdwand::client::admin`] against a registry served on 127.0.0.1.

mod registry_support;

use std::path::Path;

use registry_support::Registry;
use sdwand::client::admin::AdminClient;
use sdwand::client::http::ClientError;
use sdwand::vocab::wire::{CreateEnrollmentTokenRequest, CreateNetworkRequest};
use sdwand::vocab::{ClusterState, Role};

/// An admin client against `r`, served on 127.0.0.1, reading `admin_token` from a file of its own; the
/// server stops when it is dropped.
struct Served {
    client: AdminClient,
    url: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(r: &Registry, admin_token: &str) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = r.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{admin_token}\n")).expect("write");
    let client = AdminClient::new(std::slice::from_ref(&url), &token_file, true, None).expect("client");
    Served {
        client,
        url,
        server,
        _dir: dir,
    }
}

#[tokio::test]
async fn operators_issue_list_and_revoke_tokens_and_recover_clusters() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let served = serve(&r, &t.account.admin_token).await;
    let client = &served.client;

    let req = CreateEnrollmentTokenRequest {
        expires_in_s: Some(3600),
        max_uses: Some(1),
        roles: Some(vec![Role::Agent]),
        ..Default::default()
    };
    let created = client
        .create_enrollment_token(&t.network_id, &req)
        .await
        .expect("create");
    assert_eq!(
        (created.info.max_uses, created.info.roles.clone()),
        (Some(1), Some(vec![Role::Agent]))
    );
    let listed = client.enrollment_tokens().await.expect("list");
    assert_eq!(listed.tokens.len(), 2);
    assert!(listed.tokens.iter().any(|i| i == &created.info));
    let revoked = client.revoke_enrollment_token(&created.info.id).await.expect("revoke");
    assert!(revoked.revoked_at_ms.is_some());
    match client.revoke_enrollment_token("0000000000000000").await {
        Err(ClientError::Refused { status: 404, code, .. }) => assert_eq!(code, "token_not_found"),
        other => panic!("{other:?}"),
    }
    let (s, v) = r.try_enroll(&created.token, "late", &["agent"]).await;
    assert_eq!((s.as_u16(), registry_support::code(&v)), (401, "token_revoked"));

    // A client of the days before token limits posts no body at all (Content-Length: 0): still a token.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/networks/{}/enrollment-tokens", served.url, t.network_id))
        .bearer_auth(&t.account.admin_token)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 201);

    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    let cluster = r.bootstrap(&s1).await["cluster_id"].as_str().expect("id").to_owned();
    assert_eq!(r.report(&s1, &cluster, "failed").await.0.as_u16(), 200);
    let view = client
        .set_cluster_state(&cluster, ClusterState::Active)
        .await
        .expect("recover");
    assert_eq!(view.state, ClusterState::Active);
}

/// `sdwanctl registry networks` / `create-network` through the admin client: an account sees and creates
/// only its own networks; another account's stay invisible (and its ids unknown).
#[tokio::test]
async fn operators_create_and_list_their_networks_only() {
    let r = Registry::new();
    let acme = r.tenant("acme", 1).await;
    let other = r.tenant("other", 2).await;
    let served = serve(&r, &acme.account.admin_token).await;
    let client = &served.client;

    let req = CreateNetworkRequest {
        name: "lab".into(),
        overlay_prefix: "fd00:77::/32".parse().expect("prefix"),
        vip_pool: "fd00:77:f::/64".parse().expect("prefix"),
        overlay_prefix_v4: None,
        pod_pools: vec![],
        site_ranges: vec![],
    };
    let created = client.create_network(&req).await.expect("create");
    assert_eq!((created.name.as_str(), created.revision), ("lab", 1));
    assert_eq!(created.account_id, acme.account.account_id);
    let listed = client.networks().await.expect("list");
    let ids: Vec<&str> = listed.networks.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, [acme.network_id.as_str(), created.id.as_str()], "oldest first");
    assert!(
        !ids.contains(&other.network_id.as_str()),
        "another account's network is invisible"
    );

    let bad = CreateNetworkRequest {
        vip_pool: "fd00:99::/64".parse().expect("prefix"),
        ..req
    };
    match client.create_network(&bad).await {
        Err(ClientError::Refused { status: 400, .. }) => {}
        other => panic!("a VIP pool outside the overlay: {other:?}"),
    }
    // Tenancy on the raw route too: the other account sees its one network; an enrollment or peer token
    // is refused.
    let (s, v) = r.get("/v1/networks", &other.account.admin_token).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(v["networks"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["networks"][0]["id"], other.network_id.as_str());
    let (s, _) = r.get("/v1/networks", &acme.enrollment).await;
    assert_eq!(s.as_u16(), 403);
    let (s, _) = r.get("/v1/networks", "sdwa_nope_nope").await;
    assert_eq!(s.as_u16(), 401);
}

/// `sdwan-registry --config C init-account …` run as the operator runs it.
fn init_account(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sdwan-registry"))
        .arg("--config")
        .arg(config)
        .arg("init-account")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run init-account")
}

#[test]
fn init_account_refuses_a_taken_name_and_writes_the_token_to_a_new_0600_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("registry.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\nstate_dir = \"{}\"\ninsecure = true\n",
            state.display()
        ),
    )
    .expect("write config");
    let token_file = dir.path().join("acme.token");
    let path = token_file.to_str().expect("utf-8 path");

    let out = init_account(&config, &["--name", "acme", "--token-file", path, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v.get("admin_token").is_none(), "the token is not printed: {v}");
    assert_eq!(v["admin_token_file"], path);
    let token = std::fs::read_to_string(&token_file).expect("token file");
    assert!(token.starts_with("sdwa_") && token.ends_with('\n'), "{token:?}");
    let mode = std::fs::metadata(&token_file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The same name again: refused, exit non-zero, the first account's token untouched.
    let out = init_account(&config, &["--name", "acme"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists already") && err.contains("acme"), "{err}");
    assert!(out.stdout.is_empty(), "no token printed");
    assert_eq!(std::fs::read_to_string(&token_file).expect("token file"), token);

    // An existing token file is never overwritten, and no account is created.
    let out = init_account(&config, &["--name", "beta", "--token-file", path]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&token_file).expect("token file"), token);
    let out = init_account(&config, &["--name", "beta"]);
    assert!(out.status.success(), "beta was not created by the refused run: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("name: beta") && text.contains("admin_token: sdwa_"),
        "{text}"
    );

    // A taken name with --token-file: refused, and the new file is removed again.
    let second = dir.path().join("second.token");
    let out = init_account(
        &config,
        &["--name", "beta", "--token-file", second.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(!second.exists());
}

/// `sdwanctl registry move ADDRESS|ID` and `remove-peer NAME|ID`: the client resolves names and addresses
/// through the list routes; an unknown one is refused with what to use instead.
#[tokio::test]
async fn vips_resolve_by_address_and_peers_by_name() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let served = serve(&r, &t.account.admin_token).await;
    let client = &served.client;

    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    r.bootstrap(&s1).await;
    let vips = client.vips().await.expect("vips");
    let vip = vips.vips.first().expect("the cluster's VIP");
    assert_eq!(
        client.resolve_vip(&vip.address.to_string()).await.expect("by address"),
        vip.vip_id
    );
    assert_eq!(client.resolve_vip(&vip.vip_id).await.expect("by id"), vip.vip_id);
    match client.resolve_vip("fd00:1::9").await {
        Err(ClientError::Setup(e)) => assert!(e.contains(&vip.vip_id), "{e}"),
        other => panic!("{other:?}"),
    }
    let moved = client
        .move_vip(
            &client.resolve_vip(&vip.address.to_string()).await.expect("resolve"),
            "s1",
        )
        .await
        .expect("move by address");
    assert_eq!(moved.vip_id, vip.vip_id);

    assert_eq!(client.resolve_peer("s1").await.expect("by name"), s1.id);
    assert_eq!(client.resolve_peer(&s1.id).await.expect("by id"), s1.id);
    match client.resolve_peer("s9").await {
        Err(ClientError::Setup(e)) => assert!(e.contains("s1 (") && e.contains(&s1.id), "{e}"),
        other => panic!("{other:?}"),
    }
    client
        .remove_peer(&client.resolve_peer("s1").await.expect("resolve"))
        .await
        .expect("remove");
    assert!(client.peers().await.expect("peers").peers.is_empty());
}

/// `sdwanctl registry create-network --pod-pool … --site-range …` and `site-prefixes NAME [PREFIX…]`
/// through the admin client: the network keeps its pools, the peer gets its share, the operator sets and
/// clears its site prefixes, and a refusal comes back with its code.
#[tokio::test]
async fn operators_create_pod_networks_and_set_site_prefixes() {
    let r = Registry::new();
    let account = r.account("acme").await;
    let served = serve(&r, &account.admin_token).await;
    let client = &served.client;

    let req = CreateNetworkRequest {
        name: "pods".into(),
        overlay_prefix: "fd00:77::/48".parse().expect("prefix"),
        vip_pool: "fd00:77:0:f::/64".parse().expect("prefix"),
        overlay_prefix_v4: Some("192.0.2.0/24".parse().expect("prefix")),
        pod_pools: vec![sdwand::client::admin::parse_pod_pool("198.51.100.0/24:28").expect("pool")],
        site_ranges: vec!["203.0.113.0/24".parse().expect("range")],
    };
    let network = client.create_network(&req).await.expect("create");
    assert_eq!(
        (network.overlay_prefix_v4, &network.pod_pools, &network.site_ranges),
        (req.overlay_prefix_v4, &req.pod_pools, &req.site_ranges)
    );
    let enrollment = r.enrollment_token(&account.admin_token, &network.id).await;
    r.enroll(&enrollment, "edge", &[]).await;
    let edge = client.resolve_peer("edge").await.expect("resolve");
    let set = client
        .set_site_prefixes(&edge, &["203.0.113.0/26".parse().expect("prefix")])
        .await
        .expect("set");
    let shown: Vec<String> = set
        .member
        .prefixes
        .iter()
        .map(|p| format!("{} {}", p.kind, p.prefix))
        .collect();
    assert_eq!(shown, ["pod 198.51.100.0/28", "site 203.0.113.0/26"]);
    assert_eq!(set.member.address_v4, Some("192.0.2.1".parse().expect("address")));
    match client
        .set_site_prefixes(&edge, &["198.51.100.0/28".parse().expect("prefix")])
        .await
    {
        Err(ClientError::Refused {
            status: 400,
            code,
            message,
            ..
        }) => {
            assert_eq!(code, "bad_request");
            assert!(
                message.contains("not inside any of the network's site_ranges"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let cleared = client.set_site_prefixes(&edge, &[]).await.expect("clear");
    assert_eq!(cleared.member.prefixes.len(), 1, "only the pod share is left");
    let peers = client.peers().await.expect("peers");
    assert_eq!(peers.peers[0].member.prefixes, cleared.member.prefixes);
}

#[tokio::test]
async fn operators_create_set_move_and_delete_floating_prefixes_and_set_vip_quorum() {
    use sdwand::vocab::wire::{CreateFloatingRequest, SetFloatingRequest, SetQuorumRequest};
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    for name in ["gw1", "gw2", "w"] {
        r.enroll(&t.enrollment, name, &[]).await;
    }
    let s1 = r.enroll(&t.enrollment, "s1", &["server"]).await;
    r.bootstrap(&s1).await;
    let served = serve(&r, &t.account.admin_token).await;
    let client = &served.client;

    let network_id = client.resolve_network("net").await.expect("network by name");
    assert_eq!(network_id, t.network_id);
    let req = CreateFloatingRequest {
        prefix: "203.0.113.0/24".parse().expect("prefix"),
        gateway: Some("203.0.113.1".parse().expect("gateway")),
        candidates: vec!["gw1".into(), "gw2".into()],
        quorum: true,
        witnesses: vec!["w".into()],
    };
    let created = client.create_floating(&network_id, &req).await.expect("create");
    let id = client.resolve_floating("203.0.113.0/24").await.expect("by prefix");
    assert_eq!(id, created.floating_id);
    let set = SetFloatingRequest {
        candidates: Some(vec!["gw2".into(), "gw1".into()]),
        ..Default::default()
    };
    let changed = client.set_floating(&id, &set).await.expect("set");
    assert_eq!(changed.candidates[0].name, "gw2");
    let moved = client.move_floating(&id, "gw1").await.expect("move");
    assert_eq!(moved.move_request.map(|m| m.to).as_deref(), Some("gw1"));
    match client.move_floating(&id, "w").await {
        Err(ClientError::Refused { status: 409, code, .. }) => assert_eq!(code, "not_a_candidate"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.floating().await.expect("list").floating.len(), 1);
    client.delete_floating(&id).await.expect("delete");
    assert!(client.floating().await.expect("list").floating.is_empty());
    let e = client.resolve_floating("203.0.113.0/24").await.expect_err("gone");
    assert!(e.to_string().contains("no floating prefix"), "{e}");

    let vip_id = client.vips().await.expect("vips").vips[0].vip_id.clone();
    let quorum = SetQuorumRequest {
        enabled: true,
        witnesses: vec!["w".into()],
    };
    let vip = client.set_vip_quorum(&vip_id, &quorum).await.expect("quorum");
    assert_eq!(vip.quorum.map(|q| q.witnesses[0].name.clone()).as_deref(), Some("w"));
}
