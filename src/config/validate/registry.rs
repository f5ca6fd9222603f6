//! `[registry]` and `[k3s]`: where the node enrolls and learns its members, and what it asks for k3s.
//!
//! Validation only. Nothing is read here: the enrollment token file is read by the registry client at the
//! first enrollment, the host name (the default peer name) by the daemon.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use toml::Spanned;

use super::{line_of, parse_abs_path, parse_duration_in, Ctx};
use crate::config::raw::{RawK3s, RawRegistry};
use crate::config::{K3sConfig, PodNetworkKind, RegistryConfig, DEFAULT_CNI_CONF_DIR, DEFAULT_K3S_CONFIG_PATH};
use crate::vocab::name::{self, PeerName};
use crate::vocab::{Lifecycle, Role};

impl Ctx<'_> {
    /// `[registry]`; `address` and `prefix` are `interface.address` and `interface.overlay_prefix` if given.
    pub(super) fn registry(
        &mut self,
        raw: &Spanned<RawRegistry>,
        address: Option<Ipv6Addr>,
        prefix: Option<Ipv6Net>,
    ) -> Option<RegistryConfig> {
        let r = raw.get_ref();
        let insecure = r.insecure.unwrap_or(false);
        let hint = "the registry's base URL, e.g. \"https://registry.example:7443\"";
        let urls: Option<Vec<String>> = match (&r.url, &r.urls) {
            (Some(url), None) => self
                .parse_str(url, "registry.url", hint, |s| parse_registry_url(s, insecure))
                .map(|u| vec![u]),
            (None, Some(list)) if list.get_ref().is_empty() => {
                self.error(
                    list.span(),
                    "registry.urls",
                    "is empty",
                    "list the base URL of every registry replica, e.g. urls = [\"https://r1.example:7443\", \"https://r2.example:7443\"]",
                );
                None
            }
            (None, Some(list)) => {
                let mut all = Some(Vec::new());
                for u in list.get_ref() {
                    let parsed = self.parse_str(u, "registry.urls", hint, |s| parse_registry_url(s, insecure));
                    match (parsed, all.as_mut()) {
                        (Some(p), Some(v)) if v.contains(&p) => {
                            self.error(
                                u.span(),
                                "registry.urls",
                                format!("{p:?} is listed twice"),
                                "list each replica once",
                            );
                            all = None;
                        }
                        (Some(p), Some(v)) => v.push(p),
                        (None, _) => all = None,
                        (Some(_), None) => {}
                    }
                }
                all
            }
            (Some(url), Some(_)) => {
                self.error(
                    url.span(),
                    "registry.url",
                    "is set together with registry.urls",
                    "keep one: url for one registry, urls for several replicas (tried in order, the next on failure)",
                );
                None
            }
            (None, None) => {
                self.error(
                    raw.span(),
                    "registry.url",
                    "is missing",
                    "add url = \"https://registry.example:7443\" (the registry's base URL), or urls = [...] for several replicas",
                );
                None
            }
        };
        let mut ok = true;
        let mut path = |ctx: &mut Self, field: &Option<Spanned<String>>, key: &str| match field {
            Some(f) => {
                let p = ctx.parse_str(f, key, "an absolute path", parse_abs_path);
                ok &= p.is_some();
                p
            }
            None => None,
        };
        let token_file = path(self, &r.enrollment_token_file, "registry.enrollment_token_file");
        let ca_file = path(self, &r.ca_file, "registry.ca_file");
        let name = r.name.as_ref().and_then(|n| {
            let v = self.parse_str(n, "registry.name", name::RULE, |s| {
                PeerName::parse(s).map_err(|e| format!("is not a valid peer name: it {}", e.problem()))
            });
            ok &= v.is_some();
            v
        });
        let endpoint = r.endpoint.as_ref().and_then(|e| {
            let v = self.parse_str(
                e,
                "registry.endpoint",
                "the underlay address and port others reach this node at, e.g. \"198.51.100.10:51820\"",
                |s| s.parse::<SocketAddr>().map_err(|_| "is not an address:port".to_owned()),
            );
            ok &= v.is_some();
            v
        });
        let lifecycle = match &r.lifecycle {
            Some(l) => self.parse_str(
                l,
                "registry.lifecycle",
                "one of \"persistent\", \"ephemeral\", \"spot\"",
                |s| {
                    s.parse::<Lifecycle>()
                        .map_err(|_| "is not a lifecycle class".to_owned())
                },
            ),
            None => Some(Lifecycle::Persistent),
        };
        let report_interval = match &r.report_interval {
            Some(d) => self.parse_str(
                d,
                "registry.report_interval",
                "a duration between 1s and 1h, e.g. \"5s\"",
                |s| parse_duration_in(s, Duration::from_secs(1), Duration::from_secs(3600)),
            ),
            None => Some(Duration::from_secs(5)),
        };
        if !ok {
            return None;
        }
        Some(RegistryConfig {
            urls: urls?,
            insecure,
            enrollment_token_file: token_file,
            name,
            endpoint,
            lifecycle: lifecycle?,
            ca_file,
            report_interval: report_interval?,
            file_address: address,
            file_overlay_prefix: prefix,
            line: line_of(self.text, raw.span().start),
            key_lines: [
                (
                    "registry.url",
                    r.url.as_ref().map(|f| f.span()).or(r.urls.as_ref().map(|f| f.span())),
                ),
                ("registry.name", r.name.as_ref().map(|f| f.span())),
                (
                    "registry.enrollment_token_file",
                    r.enrollment_token_file.as_ref().map(|f| f.span()),
                ),
                ("registry.ca_file", r.ca_file.as_ref().map(|f| f.span())),
            ]
            .into_iter()
            .filter_map(|(key, span)| span.map(|s| (key, line_of(self.text, s.start))))
            .collect(),
        })
    }

    /// `[k3s]`; `registry` tells whether `[registry]` is set (k3s needs it).
    pub(super) fn k3s(&mut self, raw: &Spanned<RawK3s>, registry: bool) -> Option<K3sConfig> {
        let r = raw.get_ref();
        if !registry {
            self.error(
                raw.span(),
                "k3s",
                "needs [registry]: the handshake runs against the registry",
                "add a [registry] table, or remove [k3s]",
            );
            return None;
        }
        let role = match &r.role {
            Some(role) => self.parse_str(role, "k3s.role", "one of \"server\", \"agent\"", |s| {
                s.parse::<Role>().map_err(|_| "is not a k3s role".to_owned())
            }),
            None => {
                self.error(
                    raw.span(),
                    "k3s.role",
                    "is missing",
                    "add role = \"server\" or role = \"agent\"",
                );
                None
            }
        };
        let bootstrap = r.bootstrap.as_ref().is_some_and(|b| *b.get_ref());
        let mut ok = true;
        if let (Some(Role::Agent), Some(b)) = (role, &r.bootstrap) {
            if *b.get_ref() {
                self.error(
                    b.span(),
                    "k3s.bootstrap",
                    "is true but role = \"agent\"; only a server creates a cluster",
                    "set role = \"server\", or remove bootstrap",
                );
                ok = false;
            }
        }
        let target = r.target_cluster_id.as_ref().filter(|t| !t.get_ref().trim().is_empty());
        if let (true, Some(t)) = (bootstrap, target) {
            self.error(
                t.span(),
                "k3s.target_cluster_id",
                "is set but bootstrap = true creates a new cluster",
                "remove target_cluster_id, or set bootstrap = false to join that cluster",
            );
            ok = false;
        }
        if let (false, Some(n)) = (bootstrap, &r.cluster_name) {
            self.error(
                n.span(),
                "k3s.cluster_name",
                "is used only with bootstrap = true",
                "remove cluster_name, or set bootstrap = true",
            );
            ok = false;
        }
        let config_path = match &r.config_path {
            Some(p) => self.parse_str(
                p,
                "k3s.config_path",
                "an absolute path, e.g. \"/etc/rancher/k3s/config.yaml.d/50-sdwand.yaml\"",
                parse_abs_path,
            ),
            None => Some(PathBuf::from(DEFAULT_K3S_CONFIG_PATH)),
        };
        let health = match &r.health {
            Some(h) => {
                let v = self.health(h, "k3s.health");
                ok &= v.is_some();
                v
            }
            None => None,
        };
        let pods = self.k3s_pods(r, role);
        ok &= pods.is_some();
        if !ok {
            return None;
        }
        let (pod_network, cni_conf_dir, cni_ipam_data_dir, service_cidrs) = pods?;
        Some(K3sConfig {
            role: role?,
            bootstrap,
            target_cluster_id: target.map(|t| t.get_ref().trim().to_owned()),
            cluster_name: r.cluster_name.as_ref().map(|n| n.get_ref().clone()),
            config_path: config_path?,
            health,
            pod_network,
            cni_conf_dir,
            cni_ipam_data_dir,
            service_cidrs,
        })
    }

    /// The pod network keys of `[k3s]`: `pod_network`, `cni_conf_dir`, `cni_ipam_data_dir`,
    /// `service_cidrs` (servers on the SD-WAN only; at most one per family, IPv4 first once parsed).
    fn k3s_pods(&mut self, r: &RawK3s, role: Option<Role>) -> Option<K3sPods> {
        let pod_network = match &r.pod_network {
            Some(p) => self.parse_str(p, "k3s.pod_network", "one of \"flannel\", \"sdwan\"", |s| match s {
                "flannel" => Ok(PodNetworkKind::Flannel),
                "sdwan" => Ok(PodNetworkKind::Sdwan),
                _ => Err("is not a pod network".to_owned()),
            }),
            None => Some(PodNetworkKind::Flannel),
        };
        let mut ok = pod_network.is_some();
        let sdwan = pod_network == Some(PodNetworkKind::Sdwan);
        let mut dir = |key: &str, field: &Option<Spanned<String>>, example: &str| -> Option<Option<PathBuf>> {
            let f = field.as_ref()?;
            if pod_network == Some(PodNetworkKind::Flannel) {
                self.error(
                    f.span(),
                    key,
                    "is used only with pod_network = \"sdwan\"",
                    format!("set pod_network = \"sdwan\", or remove {key}"),
                );
                return Some(None);
            }
            Some(self.parse_str(f, key, &format!("an absolute path, e.g. \"{example}\""), parse_abs_path))
        };
        let conf_dir = dir("k3s.cni_conf_dir", &r.cni_conf_dir, DEFAULT_CNI_CONF_DIR);
        let ipam_dir = dir("k3s.cni_ipam_data_dir", &r.cni_ipam_data_dir, "/var/lib/cni/networks");
        ok &= !matches!(conf_dir, Some(None)) && !matches!(ipam_dir, Some(None));
        let mut service_cidrs: Vec<IpNet> = Vec::new();
        let mut families: [Option<usize>; 2] = [None, None];
        for (j, c) in r.service_cidrs.iter().enumerate() {
            let key = format!("k3s.service_cidrs[{j}]");
            if !sdwan || role != Some(Role::Server) {
                self.error(
                    c.span(),
                    &key,
                    "is used only by a server with pod_network = \"sdwan\" (with flannel, or on an agent, k3s's own \
                     settings apply)",
                    "remove service_cidrs, or set role = \"server\" and pod_network = \"sdwan\"",
                );
                ok = false;
                continue;
            }
            let Some(net) = self.parse_str(c, &key, "a prefix such as \"10.43.0.0/16\" or \"fd00:43::/112\"", |s| {
                let net: IpNet = s.parse().map_err(|_| "is not an IP prefix".to_owned())?;
                (net == net.trunc())
                    .then_some(net)
                    .ok_or_else(|| format!("has host bits set (did you mean {}?)", net.trunc()))
            }) else {
                ok = false;
                continue;
            };
            let family = usize::from(matches!(net, IpNet::V6(_)));
            if let Some(first) = families[family] {
                self.error(
                    c.span(),
                    &key,
                    format!(
                        "is a second {} range (k3s.service_cidrs[{first}] is one)",
                        if family == 0 { "IPv4" } else { "IPv6" }
                    ),
                    "give at most one IPv4 and one IPv6 service range",
                );
                ok = false;
                continue;
            }
            families[family] = Some(j);
            service_cidrs.push(net);
        }
        service_cidrs.sort_by_key(|n| matches!(n, IpNet::V6(_)));
        if !ok {
            return None;
        }
        Some((
            pod_network?,
            conf_dir
                .flatten()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_CONF_DIR)),
            ipam_dir.flatten(),
            service_cidrs,
        ))
    }
}

/// The pod network keys of `[k3s]`, validated: kind, CNI configuration directory, IPAM data directory,
/// service CIDRs.
type K3sPods = (PodNetworkKind, PathBuf, Option<PathBuf>, Vec<IpNet>);

fn parse_registry_url(s: &str, insecure: bool) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("is not a valid URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if insecure => {}
        "http" => return Err("is plain http:// but insecure is not set".into()),
        other => return Err(format!("has scheme {other}:// (want https://)")),
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("has a query or fragment; give the base URL only".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}
