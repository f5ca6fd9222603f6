//! The k3s handshake (bootstrap or join) and the configuration drop-in it produces.
//!
//! Rendering is pure; the file is written atomically and only when its content changes, so k3s sees no
//! spurious change on a daemon restart.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use std::time::Duration;

use super::backoff::Backoff;
use super::http::{ClientError, RegistryClient};
use super::repeats::{Log, Repeats, SUMMARY_INTERVAL};
use crate::config::K3sConfig;
use crate::statedir::write_atomic;
use crate::vocab::wire::{HandshakeRequest, HandshakeResponse, Phase};
use crate::vocab::Role;

/// Retry delays of a handshake the registry did not answer.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// Retry delays after a definitive refusal (the operator may fix the registry side): about a minute,
/// jittered like the others.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
const REFUSED_RETRY_CAP: Duration = Duration::from_secs(120);

/// The handshake request for `k3s`.
pub fn request(k3s: &K3sConfig) -> HandshakeRequest {
    if k3s.bootstrap {
        HandshakeRequest {
            phase: Phase::Bootstrap,
            role: Role::Server,
            target_cluster_id: None,
            cluster_name: k3s.cluster_name.clone(),
        }
    } else {
        HandshakeRequest {
            phase: Phase::JoinRequest,
            role: k3s.role,
            target_cluster_id: k3s.target_cluster_id.clone(),
            cluster_name: None,
        }
    }
}

/// What the drop-in says when pods use the SD-WAN (`[k3s] pod_network = "sdwan"`) instead of flannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// The network's pod pools, IPv4 first: k3s's `cluster-cidr` (servers only, the same on every server).
    pub cluster_cidrs: Vec<IpNet>,
    /// Service ranges, IPv4 first: `service-cidr` (servers only); empty: k3s's default (IPv4 only, so a
    /// dual-stack or IPv6 pod network needs them set).
    pub service_cidrs: Vec<IpNet>,
    /// The node's overlay addresses, IPv4 first: `node-ip`, so the kubelet, the API server and etcd use
    /// the SD-WAN, and the primary family matches the first cluster CIDR's.
    pub node_ips: Vec<IpAddr>,
}

/// The drop-in for the answer `resp` to a handshake of `k3s`: `cluster-init` for the bootstrap server,
/// `server` on the VIP otherwise; the k3s tokens (see [`tokens`]); `tls-san` with the VIP for servers. With `pods`, also
/// `node-ip`, and for servers `flannel-backend: none` and the cluster (and service) CIDRs: sdwand routes
/// the pod prefixes and the CNI configuration of [`super::cni`] attaches the pods.
pub fn render(k3s: &K3sConfig, resp: &HandshakeResponse, pods: Option<&PodPlan>) -> String {
    let mut out = String::from("# Written by sdwand from its registry handshake; changes are overwritten.\n");
    if k3s.bootstrap {
        out.push_str("cluster-init: true\n");
    } else {
        out.push_str(&format!("server: {}\n", yaml_str(&resp.api_endpoint)));
    }
    let (token, agent_token) = tokens(k3s.role, resp);
    out.push_str(&format!("token: {}\n", yaml_str(token)));
    if let Some(agent_token) = agent_token {
        out.push_str(&format!("agent-token: {}\n", yaml_str(agent_token)));
    }
    if k3s.role == Role::Server {
        out.push_str(&format!("tls-san:\n  - {}\n", yaml_str(&resp.vip.to_string())));
    }
    if let Some(pods) = pods {
        let list = |items: Vec<String>| yaml_str(&items.join(","));
        if !pods.node_ips.is_empty() {
            out.push_str(&format!(
                "node-ip: {}\n",
                list(pods.node_ips.iter().map(ToString::to_string).collect())
            ));
        }
        if k3s.role == Role::Server {
            out.push_str("flannel-backend: \"none\"\n");
            out.push_str(&format!(
                "cluster-cidr: {}\n",
                list(pods.cluster_cidrs.iter().map(ToString::to_string).collect())
            ));
            if !pods.service_cidrs.is_empty() {
                out.push_str(&format!(
                    "service-cidr: {}\n",
                    list(pods.service_cidrs.iter().map(ToString::to_string).collect())
                ));
            }
        }
    }
    out
}

/// The drop-in's `token` and `agent-token` for `role`: a server gets the server token and, from a registry
/// that has agent tokens, the agent token k3s then accepts from agents; an agent gets only the agent token
/// (k3s refuses it to servers), or the server token from a registry without agent tokens.
fn tokens(role: Role, resp: &HandshakeResponse) -> (&str, Option<&str>) {
    let agent = resp.agent_token.as_deref();
    match role {
        Role::Server => (&resp.join_token, agent),
        Role::Agent => (agent.unwrap_or(&resp.join_token), None),
    }
}

/// A YAML double-quoted scalar.
fn yaml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `content` to `path` (creating its directory) unless the file already holds exactly that.
/// Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &str) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(path, content.as_bytes())?;
    Ok(true)
}

/// Performs the handshake of `k3s` until the registry accepts it, then writes the drop-in. Unanswered
/// attempts are retried with a capped backoff; refusals (4xx) are logged with the registry's code and
/// message and retried every one to two minutes. Cancel it to stop.
pub async fn handshake(client: &RegistryClient, k3s: &K3sConfig) -> HandshakeResponse {
    let req = request(k3s);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut refused = Backoff::new(REFUSED_RETRY, REFUSED_RETRY_CAP);
    let mut failures = Repeats::new(SUMMARY_INTERVAL);
    let resp = loop {
        match client.handshake(&req).await {
            Ok(resp) => break resp,
            Err(e) => {
                let delay = if e.is_definitive() {
                    refused.fail()
                } else {
                    backoff.fail()
                };
                log_failure(&mut failures, &e, &req, delay);
                tokio::time::sleep(delay).await;
            }
        }
    };
    tracing::info!(
        phase = ?req.phase, role = %resp.role, cluster = %resp.cluster_id, cluster_name = %resp.cluster_name,
        state = %resp.state, vip = %resp.vip, api_endpoint = %resp.api_endpoint,
        "k3s handshake accepted"
    );
    let content = render(k3s, &resp, None);
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    loop {
        match write_if_changed(&k3s.config_path, &content) {
            Ok(true) => {
                tracing::info!(path = %k3s.config_path.display(), "k3s configuration drop-in written");
                break;
            }
            Ok(false) => {
                tracing::info!(path = %k3s.config_path.display(), "k3s configuration drop-in unchanged");
                break;
            }
            Err(e) => {
                let delay = backoff.fail();
                tracing::error!(path = %k3s.config_path.display(), error = %e, retry_in = ?delay, "writing the k3s drop-in failed (fix: make k3s.config_path writable)");
                tokio::time::sleep(delay).await;
            }
        }
    }
    resp
}

/// Logs a failed handshake: the first of a repeated failure in full, then one summary per
/// [`SUMMARY_INTERVAL`].
fn log_failure(failures: &mut Repeats, e: &ClientError, req: &HandshakeRequest, delay: Duration) {
    let key = match e {
        ClientError::Refused { status, code, .. } => format!("refused {status} {code}"),
        e => format!("{:?}", std::mem::discriminant(e)),
    };
    let repeats = match failures.failure(&key, std::time::Instant::now()) {
        Log::First => None,
        Log::Summary(n) => Some(n),
        Log::Quiet => return,
    };
    match e {
        ClientError::Refused { code, message, .. } => tracing::error!(
            phase = ?req.phase, role = %req.role, target = ?req.target_cluster_id, code = %code, retry_in = ?delay,
            repeats = ?repeats,
            "k3s handshake refused by the registry: {message} (fix it on the registry side or in [k3s]; retrying)"
        ),
        e => {
            tracing::warn!(phase = ?req.phase, role = %req.role, retry_in = ?delay, repeats = ?repeats, "k3s handshake failed: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ClusterState;
    use std::path::PathBuf;

    fn k3s(role: Role, bootstrap: bool) -> K3sConfig {
        K3sConfig {
            role,
            bootstrap,
            target_cluster_id: None,
            cluster_name: None,
            config_path: PathBuf::from("/tmp/x.yaml"),
            health: None,
        }
    }

    fn resp(token: &str) -> HandshakeResponse {
        HandshakeResponse {
            cluster_id: "c1".into(),
            cluster_name: "prod".into(),
            state: ClusterState::Active,
            role: Role::Server,
            api_endpoint: "https://[fd00:5d:f::1]:6443".into(),
            join_token: token.into(),
            agent_token: None,
            vip: "fd00:5d:f::1".parse().unwrap(),
            vip_candidates: vec![],
        }
    }

    #[test]
    fn bootstrap_server_initialises_the_cluster() {
        let text = render(&k3s(Role::Server, true), &resp("abc"), None);
        let body: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            body,
            [
                "cluster-init: true",
                "token: \"abc\"",
                "tls-san:",
                "  - \"fd00:5d:f::1\""
            ]
        );
    }

    #[test]
    fn joining_server_and_agent_point_at_the_vip() {
        let server = render(&k3s(Role::Server, false), &resp("abc"), None);
        assert_eq!(
            server.lines().skip(1).collect::<Vec<_>>(),
            [
                "server: \"https://[fd00:5d:f::1]:6443\"",
                "token: \"abc\"",
                "tls-san:",
                "  - \"fd00:5d:f::1\""
            ]
        );
        let agent = render(&k3s(Role::Agent, false), &resp("abc"), None);
        assert_eq!(
            agent.lines().skip(1).collect::<Vec<_>>(),
            ["server: \"https://[fd00:5d:f::1]:6443\"", "token: \"abc\""]
        );
    }

    /// From a registry with agent tokens: a server's answer has the server token and the agent token.
    fn resp_with_agent_token() -> HandshakeResponse {
        HandshakeResponse {
            agent_token: Some("agt".into()),
            ..resp("srv")
        }
    }

    #[test]
    fn servers_get_both_tokens_and_agents_only_the_agent_token() {
        let bootstrap = render(&k3s(Role::Server, true), &resp_with_agent_token(), None);
        assert_eq!(
            bootstrap.lines().skip(1).take(3).collect::<Vec<_>>(),
            ["cluster-init: true", "token: \"srv\"", "agent-token: \"agt\""],
            "{bootstrap}"
        );
        let server = render(&k3s(Role::Server, false), &resp_with_agent_token(), None);
        assert!(
            server.contains("\ntoken: \"srv\"\nagent-token: \"agt\"\ntls-san:\n"),
            "{server}"
        );
        // The registry answers an agent with the agent token in both fields.
        let agent_resp = HandshakeResponse {
            join_token: "agt".into(),
            ..resp_with_agent_token()
        };
        let agent = render(&k3s(Role::Agent, false), &agent_resp, None);
        assert_eq!(
            agent.lines().skip(1).collect::<Vec<_>>(),
            ["server: \"https://[fd00:5d:f::1]:6443\"", "token: \"agt\""]
        );
        // Even an answer that carried the server token too never puts it in an agent's drop-in.
        let agent = render(&k3s(Role::Agent, false), &resp_with_agent_token(), None);
        assert!(agent.contains("token: \"agt\"\n") && !agent.contains("srv"), "{agent}");
    }

    fn plan() -> PodPlan {
        PodPlan {
            cluster_cidrs: vec!["198.51.100.0/24".parse().unwrap(), "fd00:42::/48".parse().unwrap()],
            service_cidrs: vec!["203.0.113.0/24".parse().unwrap(), "fd00:43::/112".parse().unwrap()],
            node_ips: vec!["192.0.2.7".parse().unwrap(), "fd00:5d::7".parse().unwrap()],
        }
    }

    #[test]
    fn pods_on_the_sdwan_replace_flannel_on_servers_and_pin_node_ip_everywhere() {
        let server = render(&k3s(Role::Server, false), &resp("abc"), Some(&plan()));
        assert_eq!(
            server.lines().skip(5).collect::<Vec<_>>(),
            [
                "node-ip: \"192.0.2.7,fd00:5d::7\"",
                "flannel-backend: \"none\"",
                "cluster-cidr: \"198.51.100.0/24,fd00:42::/48\"",
                "service-cidr: \"203.0.113.0/24,fd00:43::/112\"",
            ],
            "{server}"
        );
        // Agents take the network settings from the servers: only their own address.
        let agent = render(&k3s(Role::Agent, false), &resp("abc"), Some(&plan()));
        assert_eq!(
            agent.lines().skip(3).collect::<Vec<_>>(),
            ["node-ip: \"192.0.2.7,fd00:5d::7\""],
            "{agent}"
        );
        let no_services = PodPlan {
            service_cidrs: vec![],
            ..plan()
        };
        let server = render(&k3s(Role::Server, true), &resp("abc"), Some(&no_services));
        assert!(!server.contains("service-cidr"), "{server}");
        assert!(server.contains("cluster-init: true\n"), "{server}");
    }

    #[test]
    fn values_are_quoted() {
        let text = render(&k3s(Role::Agent, false), &resp("a\"b\\c\nd"), None);
        assert!(text.contains("token: \"a\\\"b\\\\c\\nd\"\n"), "{text}");
    }

    #[test]
    fn requests_follow_the_config() {
        let b = request(&K3sConfig {
            cluster_name: Some("prod".into()),
            ..k3s(Role::Server, true)
        });
        assert_eq!(
            (b.phase, b.role, b.cluster_name.as_deref()),
            (Phase::Bootstrap, Role::Server, Some("prod"))
        );
        let j = request(&K3sConfig {
            target_cluster_id: Some("c9".into()),
            ..k3s(Role::Agent, false)
        });
        assert_eq!(
            (j.phase, j.role, j.target_cluster_id.as_deref()),
            (Phase::JoinRequest, Role::Agent, Some("c9"))
        );
    }

    #[test]
    fn write_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/50-sdwand.yaml");
        assert!(write_if_changed(&path, "a: 1\n").unwrap());
        assert!(!write_if_changed(&path, "a: 1\n").unwrap());
        assert!(write_if_changed(&path, "a: 2\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 2\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
