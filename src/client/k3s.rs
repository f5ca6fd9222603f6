//! The k3s handshake (bootstrap or join), the configuration drop-in it produces and, with
//! `[k3s] pod_network = "sdwan"`, the CNI configuration for this node's pod prefixes ([`super::cni`]).
//!
//! [`Files`] owns both files: rendering is pure ([`render`], [`pod_files`]); they are written atomically
//! and only when their content changes, so k3s and its container runtime see no spurious change on a daemon
//! restart. The handshake and the drop-in's writes record where they stand ([`K3sProgress`]) for the k3s
//! section of `sdwanctl status`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use ipnet::IpNet;
use std::time::Duration;

use super::backoff::Backoff;
use super::cni::{self, CniError, PodNetwork};
use super::http::{ClientError, RegistryClient};
use super::repeats::{Log, Repeats, SUMMARY_INTERVAL};
use crate::config::{Config, K3sConfig, PodNetworkKind};
use crate::control::{K3sHandshake, K3sView};
use crate::statedir::write_atomic;
use crate::vocab::wire::{HandshakeRequest, HandshakeResponse, Phase};
use crate::vocab::{PrefixKind, Role};

/// Retry delays of a handshake the registry did not answer.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// Retry delays after a definitive refusal (the operator may fix the registry side): about a minute,
/// jittered like the others.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
const REFUSED_RETRY_CAP: Duration = Duration::from_secs(120);

/// How many hex digits of the drop-in's SHA-256 `sdwanctl status` shows.
const HASH_DIGITS: usize = 12;

/// Where the handshake of `[k3s]` and its drop-in stand: recorded by [`handshake`], read for `sdwanctl
/// status` ([`K3sProgress::view`]). Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct K3sProgress(Arc<Mutex<Progress>>);

#[derive(Debug, Clone, Default)]
struct Progress {
    handshake: Option<K3sHandshake>,
    refused_code: Option<String>,
    problem: Option<String>,
    /// The accepted answer's cluster: id, name, state.
    cluster: Option<(String, String, String)>,
    drop_in_sha256: Option<String>,
    written_at: Option<SystemTime>,
}

impl K3sProgress {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The k3s section of `sdwanctl status` for the handshake of `k3s`.
    pub fn view(&self, k3s: &K3sConfig) -> K3sView {
        let p = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (cluster_id, cluster_name, cluster_state) = match p.cluster {
            Some((id, name, state)) => (Some(id), Some(name), Some(state)),
            None => (None, None, None),
        };
        K3sView {
            role: k3s.role.to_string(),
            bootstrap: k3s.bootstrap,
            handshake: p.handshake.unwrap_or(K3sHandshake::Pending),
            refused_code: p.refused_code,
            problem: p.problem,
            cluster_id,
            cluster_name,
            cluster_state,
            drop_in: k3s.config_path.display().to_string(),
            drop_in_sha256: p.drop_in_sha256,
            written_at_unix: p
                .written_at
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        }
    }
}

impl super::Link {
    /// The k3s section of `sdwanctl status`; `None` without `[k3s]`.
    pub fn k3s_view(&self) -> Option<K3sView> {
        let (k3s, _) = self.handshake.as_ref()?;
        Some(self.metrics.k3s.view(k3s))
    }
}

/// The first [`HASH_DIGITS`] hex digits of the SHA-256 of `content`.
fn short_hash(content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let mut out = String::with_capacity(HASH_DIGITS);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
        if out.len() >= HASH_DIGITS {
            break;
        }
    }
    out.truncate(HASH_DIGITS);
    out
}

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
/// `server` on the VIP otherwise; the k3s tokens (see `tokens`); `tls-san` with the VIP for servers. With `pods`, also
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

/// What `pod_network = "sdwan"` writes for `cfg` (the effective configuration) on an interface of MTU
/// `mtu`: the CNI configuration for this node's pod prefixes (its own member's prefixes of kind pod) and
/// the drop-in's [`PodPlan`]. An error when this node has no usable pod prefix (yet).
pub fn pod_files(k3s: &K3sConfig, cfg: &Config, mtu: u32) -> Result<(String, PodPlan), CniError> {
    let own = cfg.members.iter().find(|m| m.address == cfg.interface.address);
    let prefixes: Vec<IpNet> = own
        .map(|m| {
            m.workload
                .iter()
                .filter(|p| p.kind == PrefixKind::Pod)
                .map(|p| p.prefix)
                .collect()
        })
        .unwrap_or_default();
    let conflist = cni::render(&PodNetwork {
        prefixes,
        mtu,
        ipam_data_dir: k3s.cni_ipam_data_dir.clone(),
    })?;
    let mut cluster_cidrs: Vec<IpNet> = cfg.prefixes.pod_pools.iter().map(|p| p.prefix).collect();
    cluster_cidrs.sort_by_key(|n| matches!(n, IpNet::V6(_)));
    let node_ips = own
        .and_then(|m| m.address_v4)
        .map(IpAddr::V4)
        .into_iter()
        .chain([IpAddr::V6(cfg.interface.address)])
        .collect();
    Ok((
        conflist,
        PodPlan {
            cluster_cidrs,
            service_cidrs: k3s.service_cidrs.clone(),
            node_ips,
        },
    ))
}

/// Why a k3s server on the SD-WAN will not start with `plan`, if it will not: k3s refuses a dual-stack or
/// IPv6 cluster CIDR without a service CIDR of the same families (its default is IPv4 only).
pub fn service_cidr_problem(k3s: &K3sConfig, plan: &PodPlan) -> Option<String> {
    let v6_pool = plan.cluster_cidrs.iter().find(|c| matches!(c, IpNet::V6(_)))?;
    let v6_service = plan.service_cidrs.iter().any(|c| matches!(c, IpNet::V6(_)));
    (k3s.role == Role::Server && !v6_service).then(|| {
        format!(
            "the network's pod pools include the IPv6 {v6_pool} but [k3s] service_cidrs has no IPv6 range: k3s \
             needs a dual-stack (or IPv6) service CIDR for that and will not start (fix: set [k3s] service_cidrs, \
             e.g. [\"10.43.0.0/16\", \"fd00:43::/112\"], the same on every server)"
        )
    })
}

/// The owner of the files k3s reads from sdwand: the drop-in (once the handshake was accepted) at
/// `[k3s] config_path` and, with `pod_network = "sdwan"`, the CNI configuration [`cni::FILE_NAME`] in
/// `[k3s] cni_conf_dir`. [`Files::write`] is called whenever what they are made of may have changed (a
/// view, a reload, the handshake's answer, and every resync, which retries a failed write); it writes only
/// what changed and logs a problem once until it changes.
#[derive(Debug, Default)]
pub struct Files {
    /// The problems last logged (the CNI configuration, the drop-in, the service CIDRs): not logged again
    /// while they stay the same.
    problems: [Option<String>; 3],
    /// Where the drop-in stands, for `sdwanctl status` (shared with the handshake task).
    progress: K3sProgress,
}

impl Files {
    /// Files whose drop-in writes are recorded in `progress`.
    pub fn new(progress: K3sProgress) -> Self {
        Self {
            problems: Default::default(),
            progress,
        }
    }

    /// Writes what `cfg` (the effective configuration, with `[k3s]`) and `joined` (the handshake's answer,
    /// once accepted) make of the two files, for an interface of MTU `mtu`.
    pub fn write(&mut self, cfg: &Config, joined: Option<&HandshakeResponse>, mtu: u32) {
        let Some(k3s) = &cfg.k3s else { return };
        let mut plan = None;
        if k3s.pod_network == PodNetworkKind::Sdwan {
            let path = k3s.cni_conf_dir.join(cni::FILE_NAME);
            match pod_files(k3s, cfg, mtu) {
                Ok((conflist, p)) => {
                    self.write_file(
                        0,
                        &path,
                        &conflist,
                        "CNI configuration",
                        "make k3s.cni_conf_dir writable",
                    );
                    plan = Some(p);
                }
                Err(e) => self.problem(
                    0,
                    format!(
                        "pod_network = \"sdwan\" but no CNI configuration can be written to {} yet: {e}",
                        path.display()
                    ),
                    // Before the registry's first view this node has no prefix: a wait, not a fault.
                    e != CniError::NoPrefix,
                ),
            }
        }
        let Some(resp) = joined else { return };
        if k3s.pod_network == PodNetworkKind::Sdwan {
            // Without the pod plan, a drop-in would start k3s on flannel: wait for it.
            let Some(plan) = &plan else {
                let waiting = self.problems[0]
                    .clone()
                    .unwrap_or_else(|| "waiting for this node's pod share before writing the drop-in".to_owned());
                self.progress.update(|p| p.problem = Some(waiting));
                return;
            };
            match service_cidr_problem(k3s, plan) {
                Some(problem) => self.problem(2, problem, true),
                None => self.problems[2] = None,
            }
        }
        let content = render(k3s, resp, plan.as_ref());
        let written = self.write_file(
            1,
            &k3s.config_path,
            &content,
            "k3s configuration drop-in",
            "make k3s.config_path writable",
        );
        let problem = self.problems[1].clone().or_else(|| self.problems[2].clone());
        self.progress.update(|p| {
            p.problem = problem;
            match written {
                Some(true) => {
                    p.drop_in_sha256 = Some(short_hash(&content));
                    p.written_at = Some(SystemTime::now());
                }
                // Unchanged: written when the file last changed.
                Some(false) if p.drop_in_sha256.is_none() => {
                    p.drop_in_sha256 = Some(short_hash(&content));
                    p.written_at = std::fs::metadata(&k3s.config_path).and_then(|m| m.modified()).ok();
                }
                _ => {}
            }
        });
    }

    /// Writes `content` to `path` when it changed; logs a write and a failure (`what`, `fix`). Whether it
    /// was written (`None`: it failed).
    fn write_file(&mut self, slot: usize, path: &Path, content: &str, what: &str, fix: &str) -> Option<bool> {
        match write_if_changed(path, content) {
            Ok(written) => {
                self.problems[slot] = None;
                if written {
                    tracing::info!(path = %path.display(), "{what} written");
                }
                Some(written)
            }
            Err(e) => {
                self.problem(
                    slot,
                    format!(
                        "writing the {what} {} failed: {e} (fix: {fix}; retried at every resync)",
                        path.display()
                    ),
                    true,
                );
                None
            }
        }
    }

    /// Logs `message` (at error, or warning) unless it is the one last logged for `slot`.
    fn problem(&mut self, slot: usize, message: String, error: bool) {
        if self.problems[slot].as_ref() != Some(&message) {
            if error {
                tracing::error!("{message}");
            } else {
                tracing::warn!("{message}");
            }
            self.problems[slot] = Some(message);
        }
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

/// Performs the handshake of `k3s` until the registry accepts it (the drop-in is written by [`Files`]). Unanswered
/// attempts are retried with a capped backoff; refusals (4xx) are logged with the registry's code and
/// message and retried every one to two minutes. Cancel it to stop. Each step is recorded in `progress`.
pub async fn handshake(client: &RegistryClient, k3s: &K3sConfig, progress: &K3sProgress) -> HandshakeResponse {
    progress.update(|p| *p = Progress::default());
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
                progress.update(|p| match &e {
                    ClientError::Refused {
                        status, code, message, ..
                    } if e.is_definitive() => {
                        p.handshake = Some(K3sHandshake::Refused);
                        p.refused_code = Some(format!("{status} {code}"));
                        p.problem = Some(message.clone());
                    }
                    e => {
                        p.handshake = Some(K3sHandshake::Pending);
                        p.refused_code = None;
                        p.problem = Some(e.to_string());
                    }
                });
                tokio::time::sleep(delay).await;
            }
        }
    };
    tracing::info!(
        phase = ?req.phase, role = %resp.role, cluster = %resp.cluster_id, cluster_name = %resp.cluster_name,
        state = %resp.state, vip = %resp.vip, api_endpoint = %resp.api_endpoint,
        "k3s handshake accepted"
    );
    progress.update(|p| {
        *p = Progress {
            handshake: Some(K3sHandshake::Accepted),
            cluster: Some((
                resp.cluster_id.clone(),
                resp.cluster_name.clone(),
                resp.state.to_string(),
            )),
            ..Progress::default()
        }
    });
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
            pod_network: crate::config::PodNetworkKind::Flannel,
            cni_conf_dir: PathBuf::from("/tmp/net.d"),
            cni_ipam_data_dir: None,
            service_cidrs: Vec::new(),
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

    /// A k3s server on `pod_network` with this node (fd00:5d::1, 203.0.113.1) owning `own` and a second
    /// member owning other prefixes; the network's pools are given IPv6 first.
    fn pods_config(dir: &Path, pod_network: &str, own: &[&str]) -> Config {
        let text = format!(
            "[interface]\nname = \"sdw0\"\n[registry]\nurl = \"https://reg\"\n[k3s]\nrole = \"server\"\n\
             pod_network = \"{pod_network}\"\nconfig_path = \"{d}/k3s.yaml\"\n{extra}",
            d = dir.display(),
            extra = if pod_network == "sdwan" {
                format!(
                    "cni_conf_dir = \"{}/net.d\"\ncni_ipam_data_dir = \"{}/ipam\"\n",
                    dir.display(),
                    dir.display()
                )
            } else {
                String::new()
            }
        );
        let mut cfg = crate::config::parse(Path::new("t.toml"), &text).unwrap();
        cfg.interface.address = "fd00:5d::1".parse().unwrap();
        cfg.prefixes.pod_pools = vec![
            crate::vocab::PodPool {
                prefix: "fd00:42::/48".parse().unwrap(),
                node_len: 64,
            },
            crate::vocab::PodPool {
                prefix: "198.51.100.0/24".parse().unwrap(),
                node_len: 28,
            },
        ];
        let prefix = |p: &str, kind| crate::vocab::RoutedPrefix {
            prefix: p.parse().unwrap(),
            kind,
        };
        let member = |name: &str, addr: &str, v4: &str, workload| crate::config::Member {
            name: name.into(),
            public_key: wireguard_control::Key::generate_private().get_public(),
            endpoint: None,
            address: addr.parse().unwrap(),
            routed_prefixes: vec![],
            address_v4: Some(v4.parse().unwrap()),
            workload,
            line: 0,
        };
        let mut mine: Vec<_> = own.iter().map(|p| prefix(p, PrefixKind::Pod)).collect();
        mine.push(prefix("192.0.2.0/28", PrefixKind::Site));
        cfg.members = vec![
            member(
                "b",
                "fd00:5d::2",
                "203.0.113.2",
                vec![prefix("198.51.100.16/28", PrefixKind::Pod)],
            ),
            member("a", "fd00:5d::1", "203.0.113.1", mine),
        ];
        cfg
    }

    #[test]
    fn pod_files_use_this_nodes_pod_prefixes_and_the_networks_pools() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = pods_config(dir.path(), "sdwan", &["198.51.100.0/28", "fd00:42::/64"]);
        let server = cfg.k3s.clone().unwrap();
        let (conflist, plan) = pod_files(&server, &cfg, 1380).unwrap();
        let v: serde_json::Value = serde_json::from_str(&conflist).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["mtu"], 1380);
        assert_eq!(
            bridge["ipam"]["ranges"],
            serde_json::json!([[{"subnet": "198.51.100.0/28"}], [{"subnet": "fd00:42::/64"}]]),
            "only this node's pod shares: not its site prefix, not another node's"
        );
        assert_eq!(bridge["ipam"]["dataDir"], format!("{}/ipam", dir.path().display()));
        let shown = |v: &[IpNet]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            shown(&plan.cluster_cidrs),
            ["198.51.100.0/24", "fd00:42::/48"],
            "IPv4 first"
        );
        assert_eq!(
            plan.node_ips,
            ["203.0.113.1".parse::<IpAddr>().unwrap(), "fd00:5d::1".parse().unwrap()]
        );
        let problem = service_cidr_problem(&server, &plan).expect("an IPv6 pool without an IPv6 service range");
        assert!(
            problem.contains("service_cidrs") && problem.contains("fd00:42::/48"),
            "{problem}"
        );
        let with_services = PodPlan {
            service_cidrs: vec!["203.0.113.0/24".parse().unwrap(), "fd00:43::/112".parse().unwrap()],
            ..plan.clone()
        };
        assert_eq!(service_cidr_problem(&server, &with_services), None);
        assert_eq!(
            service_cidr_problem(&k3s(Role::Agent, false), &plan),
            None,
            "agents take the servers'"
        );
        assert_eq!(
            pod_files(&server, &pods_config(dir.path(), "sdwan", &[]), 1380).unwrap_err(),
            CniError::NoPrefix
        );
    }

    #[test]
    fn files_follow_the_prefixes_and_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let conflist = dir.path().join("net.d").join(cni::FILE_NAME);
        let drop_in = dir.path().join("k3s.yaml");
        let mut files = Files::default();
        // No prefix yet: nothing, and no drop-in that would start k3s on flannel.
        files.write(&pods_config(dir.path(), "sdwan", &[]), Some(&resp("abc")), 1420);
        assert!(!conflist.exists() && !drop_in.exists());
        // The prefix is known before the handshake answers: the CNI configuration only.
        let cfg = pods_config(dir.path(), "sdwan", &["198.51.100.0/28"]);
        files.write(&cfg, None, 1420);
        assert!(std::fs::read_to_string(&conflist).unwrap().contains("198.51.100.0/28"));
        assert!(!drop_in.exists());
        files.write(&cfg, Some(&resp("abc")), 1420);
        let text = std::fs::read_to_string(&drop_in).unwrap();
        for line in [
            "flannel-backend: \"none\"\n",
            "cluster-cidr: \"198.51.100.0/24,fd00:42::/48\"\n",
            "node-ip: \"203.0.113.1,fd00:5d::1\"\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // A new share and MTU rewrite the CNI configuration.
        files.write(
            &pods_config(dir.path(), "sdwan", &["198.51.100.32/28"]),
            Some(&resp("abc")),
            1380,
        );
        let text = std::fs::read_to_string(&conflist).unwrap();
        assert!(text.contains("198.51.100.32/28") && text.contains("1380"), "{text}");
        // On flannel: the drop-in has no pod settings and no CNI configuration is written.
        let other = tempfile::tempdir().unwrap();
        files.write(
            &pods_config(other.path(), "flannel", &["198.51.100.0/28"]),
            Some(&resp("abc")),
            1420,
        );
        let text = std::fs::read_to_string(other.path().join("k3s.yaml")).unwrap();
        assert!(!text.contains("flannel-backend") && !text.contains("node-ip"), "{text}");
        assert!(!other.path().join("net.d").exists());
    }

    #[test]
    fn files_record_the_drop_in_for_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let progress = K3sProgress::default();
        let mut files = Files::new(progress.clone());
        let cfg = pods_config(dir.path(), "sdwan", &[]);
        let k3s = cfg.k3s.clone().unwrap();
        files.write(&cfg, Some(&resp("abc")), 1420);
        let v = progress.view(&k3s);
        assert_eq!(v.drop_in_sha256, None);
        assert!(
            v.problem.as_deref().is_some_and(|p| p.contains("no pod prefix")),
            "{:?}",
            v.problem
        );
        files.write(
            &pods_config(dir.path(), "sdwan", &["198.51.100.0/28"]),
            Some(&resp("abc")),
            1420,
        );
        let v = progress.view(&k3s);
        let written = std::fs::read_to_string(&k3s.config_path).unwrap();
        assert_eq!(v.drop_in_sha256, Some(short_hash(&written)));
        assert!(v.written_at_unix.is_some());
        // The IPv6 pool without an IPv6 service range is the problem left.
        assert!(
            v.problem.as_deref().is_some_and(|p| p.contains("service_cidrs")),
            "{:?}",
            v.problem
        );
    }

    #[test]
    fn the_status_view_follows_the_progress() {
        let cfg = K3sConfig {
            config_path: PathBuf::from("/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml"),
            ..k3s(Role::Agent, false)
        };
        let progress = K3sProgress::default();
        let v = progress.view(&cfg);
        assert_eq!(
            (v.role.as_str(), v.bootstrap, v.handshake, v.drop_in.as_str()),
            (
                "agent",
                false,
                K3sHandshake::Pending,
                "/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml"
            )
        );
        assert_eq!((v.cluster_id, v.drop_in_sha256, v.written_at_unix), (None, None, None));
        progress.update(|p| {
            p.handshake = Some(K3sHandshake::Refused);
            p.refused_code = Some("409 cluster_error".into());
        });
        let v = progress.view(&cfg);
        assert_eq!(
            (v.handshake, v.refused_code.as_deref()),
            (K3sHandshake::Refused, Some("409 cluster_error"))
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        progress.update(|p| {
            *p = Progress {
                handshake: Some(K3sHandshake::Accepted),
                cluster: Some(("c1".into(), "prod".into(), "active".into())),
                drop_in_sha256: Some(short_hash("a: 1\n")),
                written_at: Some(at),
                ..Progress::default()
            }
        });
        let v = progress.view(&cfg);
        assert_eq!(
            (
                v.handshake,
                v.refused_code,
                v.cluster_name.as_deref(),
                v.written_at_unix
            ),
            (K3sHandshake::Accepted, None, Some("prod"), Some(1_796_000_000))
        );
        assert_eq!(v.drop_in_sha256.as_deref().map(str::len), Some(HASH_DIGITS));
    }

    #[test]
    fn the_short_hash_is_the_sha256_prefix() {
        // `printf '' | sha256sum`, `printf 'abc' | sha256sum`.
        assert_eq!(short_hash(""), "e3b0c44298fc");
        assert_eq!(short_hash("abc"), "ba7816bf8f01");
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
