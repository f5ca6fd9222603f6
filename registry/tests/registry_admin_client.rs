//! `sdwanctl registry tokens …` and `cluster-state` end to end: the admin client of
//! [`sdwand::client::admin`] against a registry served on 127.0.0.1.

mod registry_support;

use registry_support::Registry;
use sdwand::client::admin::AdminClient;
use sdwand::client::http::ClientError;
use sdwand::vocab::wire::CreateEnrollmentTokenRequest;
use sdwand::vocab::{ClusterState, Role};

#[tokio::test]
async fn operators_issue_list_and_revoke_tokens_and_recover_clusters() {
    let r = Registry::new();
    let t = r.tenant("acme", 1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = r.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{}\n", t.account.admin_token)).expect("write");
    let client = AdminClient::new(&url, &token_file, true, None).expect("client");

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
        .post(format!("{url}/v1/networks/{}/enrollment-tokens", t.network_id))
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
    server.abort();
}
