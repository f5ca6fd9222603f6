//! Pods (`sdwan-lab up --pods N`): the lab acts as a container runtime. For each peer it reads the CNI
//! configuration its daemon wrote (`[k3s] pod_network = "sdwan"`, `pI/cni/net.d/10-sdwan.conflist`) and
//! attaches N pod namespaces `NAME-pIqJ` with the real plugins from [`CNI_PATH`], exactly as the CNI
//! specification says a runtime does: `loopback` for `lo`, then every plugin of the list in order with
//! `CNI_COMMAND=ADD`, each getting the previous one's result as `prevResult`; `DEL` in reverse order when
//! the pod goes. The plugins run in the peer's namespace (the bridge and the host ends of the veths live
//! there), their leases in `pI/cni/ipam`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cmd;
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::layout::Layout;

/// Where the plugins are (Debian's `containernetworking-plugins`).
pub const CNI_PATH: &str = "/usr/lib/cni";
/// The file the daemon writes in its `cni_conf_dir`.
pub const CONFLIST: &str = "10-sdwan.conflist";
/// The interface name of every pod's network.
pub const POD_IF: &str = "eth0";
/// How long `up` waits for a daemon to write its CNI configuration.
pub const CONFLIST_TIMEOUT: Duration = Duration::from_secs(20);

/// The pod families of the lab's network (`--pod-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodFamily {
    /// An IPv4 pool only.
    Ipv4,
    /// An IPv6 pool only.
    Ipv6,
    /// Both (the default).
    #[default]
    Dual,
}

impl PodFamily {
    /// The network's pod pools: `198.51.100.0/24` in /28s (16 nodes, 13 pods each) and `fd00:42::/48` in
    /// /64s, as the registry's `pod_pools`.
    pub fn pools(self) -> Vec<Value> {
        let v4 = json!({"prefix": "198.51.100.0/24", "node_len": 28});
        let v6 = json!({"prefix": "fd00:42::/48", "node_len": 64});
        match self {
            PodFamily::Ipv4 => vec![v4],
            PodFamily::Ipv6 => vec![v6],
            PodFamily::Dual => vec![v4, v6],
        }
    }
}

impl std::str::FromStr for PodFamily {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ipv4" => Ok(PodFamily::Ipv4),
            "ipv6" => Ok(PodFamily::Ipv6),
            "dual" => Ok(PodFamily::Dual),
            _ => Err(format!("{s:?} is not one of ipv4, ipv6, dual")),
        }
    }
}

/// The most pods per peer (a /28 holds the gateway and 13 pods).
pub const MAX_PODS: usize = 13;
/// The most peers of a lab with pods (16 /28s in the IPv4 pool).
pub const MAX_POD_PEERS: usize = 16;

/// One pod in `lab.json` and in the JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// `pIqJ`.
    pub name: String,
    /// The peer it runs on (`pI`).
    pub peer: String,
    /// Its namespace (`NAME-pIqJ`).
    pub netns: String,
    /// Its IPv4 address, if the network has an IPv4 pool (and once attached).
    pub ipv4: Option<String>,
    /// Its IPv6 address, likewise.
    pub ipv6: Option<String>,
}

/// The plugin configurations of a `.conflist`, with its `name` and `cniVersion`.
#[derive(Debug, Clone)]
pub struct NetConfList {
    /// The network name.
    pub name: String,
    /// The CNI version.
    pub cni_version: String,
    /// The plugins, in order.
    pub plugins: Vec<Value>,
}

impl NetConfList {
    /// Parses a `.conflist`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| LabError::Format {
            context: format!("the CNI configuration {}", path.display()),
            message,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| bad(format!("no {k:?}")));
        let plugins = v["plugins"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("no \"plugins\"".into()))?
            .clone();
        if plugins.iter().any(|p| p["type"].as_str().is_none()) {
            return Err(bad("a plugin without \"type\"".into()));
        }
        Ok(NetConfList {
            name: field("name")?,
            cni_version: field("cniVersion")?,
            plugins,
        })
    }

    /// The node's pod prefixes: the `host-local` ranges' subnets.
    pub fn prefixes(&self) -> Vec<String> {
        self.plugins
            .iter()
            .filter_map(|p| p["ipam"]["ranges"].as_array())
            .flatten()
            .filter_map(|set| set.as_array())
            .flatten()
            .filter_map(|r| r["subnet"].as_str().map(str::to_owned))
            .collect()
    }

    /// The stdin of `plugin` (an element of `plugins`, or `loopback`'s): its configuration plus the list's
    /// `name` and `cniVersion`, and `prevResult` when there is one (CNI spec, "Section 4").
    pub fn stdin_of(&self, plugin: &Value, prev: Option<&Value>) -> String {
        let mut conf = plugin.clone();
        conf["name"] = json!(self.name);
        conf["cniVersion"] = json!(self.cni_version);
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf.to_string()
    }
}

/// The addresses of a CNI result: (IPv4, IPv6), without prefix lengths.
pub fn result_addresses(result: &Value) -> (Option<String>, Option<String>) {
    let mut out = (None, None);
    for ip in result["ips"].as_array().into_iter().flatten() {
        let Some(addr) = ip["address"].as_str().and_then(|a| a.split('/').next()) else {
            continue;
        };
        if addr.contains(':') {
            out.1.get_or_insert_with(|| addr.to_owned());
        } else {
            out.0.get_or_insert_with(|| addr.to_owned());
        }
    }
    out
}

/// Peer `i`'s CNI configuration directory (its `k3s.cni_conf_dir`).
pub fn cni_conf_dir(l: &Layout, i: usize) -> PathBuf {
    l.peer_dir(i).join("cni").join("net.d")
}

/// Peer `i`'s `host-local` lease directory (its `k3s.cni_ipam_data_dir`).
pub fn cni_ipam_dir(l: &Layout, i: usize) -> PathBuf {
    l.peer_dir(i).join("cni").join("ipam")
}

/// Refuses pods in a lab they cannot work in: without the registry, above [`MAX_PODS`] per peer, or with
/// more than [`MAX_POD_PEERS`] peers.
pub fn validate(opts: &crate::lab::UpOptions) -> Result<()> {
    let refuse = |why: String| {
        Err(LabError::Format {
            context: "--pods".into(),
            message: why,
        })
    };
    if opts.pods == 0 {
        return Ok(());
    }
    if !opts.registry {
        return refuse("pods need the registry (it allocates each peer's pod prefixes): drop --no-registry".into());
    }
    if opts.pods > MAX_PODS {
        return refuse(format!(
            "at most {MAX_PODS} pods per peer (a peer's IPv4 share is a /28)"
        ));
    }
    if opts.peers > MAX_POD_PEERS {
        return refuse(format!(
            "at most {MAX_POD_PEERS} peers with pods (198.51.100.0/24 in /28s)"
        ));
    }
    Ok(())
}

impl Lab {
    /// The lab's pods, in order of creation.
    pub fn pods(&self) -> &[PodState] {
        &self.state.pods
    }

    /// Peer `i`'s pod prefixes as its daemon's CNI configuration has them (empty when it has none).
    pub fn pod_prefixes(&self, i: usize) -> Vec<String> {
        let path = cni_conf_dir(&self.layout, i).join(CONFLIST);
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| NetConfList::parse(&text, &path).ok())
            .map(|c| c.prefixes())
            .unwrap_or_default()
    }

    /// Peer `i`'s CNI configuration as its daemon wrote it, waiting up to `timeout` for it.
    pub fn wait_conflist(&self, i: usize, timeout: Duration) -> Result<NetConfList> {
        let path = cni_conf_dir(&self.layout, i).join(CONFLIST);
        let start = Instant::now();
        loop {
            self.check_cancel()?;
            if let Ok(text) = std::fs::read_to_string(&path) {
                return NetConfList::parse(&text, &path);
            }
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("{} to write {}", Layout::peer_name(i), path.display()),
                    waited: start.elapsed(),
                    details: self.log_tail(i, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates `n` pods on every peer (see the module's docs).
    pub(crate) fn build_pods(&mut self, n: usize) -> Result<()> {
        for i in 1..=self.peer_count() {
            self.add_pods(i, n)?;
        }
        Ok(())
    }

    /// Attaches `n` more pods to peer `i` (e.g. one added with [`Lab::add_peer`] and a `[k3s]` section
    /// [`crate::nodecfg::K3sSection::with_pods`]), once its daemon has written its CNI configuration;
    /// returns them. Each is recorded in `lab.json` before its namespace exists, so a failure half-way is
    /// cleaned up by `down`.
    pub fn add_pods(&mut self, i: usize, n: usize) -> Result<Vec<PodState>> {
        let conf = self.wait_conflist(i, CONFLIST_TIMEOUT)?;
        let peer = Layout::peer_name(i);
        let first = self.state.pods.iter().filter(|p| p.peer == peer).count() + 1;
        if first + n - 1 > MAX_PODS {
            return Err(LabError::InvalidOption(format!(
                "{peer} would have {} pods: at most {MAX_PODS} (a peer's IPv4 share is a /28)",
                first + n - 1
            )));
        }
        let mut added = Vec::new();
        for j in first..first + n {
            self.check_cancel()?;
            let name = format!("p{i}q{j}");
            let netns = format!("{}-{name}", self.name());
            self.state.pods.push(PodState {
                name,
                peer: peer.clone(),
                netns: netns.clone(),
                ipv4: None,
                ipv6: None,
            });
            self.save()?;
            cmd::ip(&["netns", "add", netns.as_str()])?;
            let (ipv4, ipv6) = cni_add(&self.layout.peer_netns(i), &conf, &netns)?;
            if let Some(pod) = self.state.pods.last_mut() {
                (pod.ipv4, pod.ipv6) = (ipv4, ipv6);
                added.push(pod.clone());
            }
            self.save()?;
        }
        Ok(added)
    }
}

/// `ADD` of pod namespace `netns` with the plugins run in `node` (a peer's namespace): `loopback`, then the
/// list; the pod's addresses.
fn cni_add(node: &str, conf: &NetConfList, netns: &str) -> Result<(Option<String>, Option<String>)> {
    run_plugin(
        node,
        "ADD",
        netns,
        "lo",
        &conf.stdin_of(&json!({"type": "loopback"}), None),
    )?;
    let mut prev: Option<Value> = None;
    for plugin in &conf.plugins {
        let out = run_plugin(node, "ADD", netns, POD_IF, &conf.stdin_of(plugin, prev.as_ref()))?;
        let result: Value = serde_json::from_str(&out).map_err(|e| LabError::Format {
            context: format!("the result of CNI plugin {} for {netns}", plugin["type"]),
            message: e.to_string(),
        })?;
        prev = Some(result);
    }
    Ok(prev.as_ref().map(result_addresses).unwrap_or_default())
}

/// `DEL` of pod namespace `netns` with the plugins run in `node`: the list in reverse order, then
/// `loopback`.
fn cni_del(node: &str, conf: &NetConfList, netns: &str) -> Result<()> {
    for plugin in conf.plugins.iter().rev() {
        run_plugin(node, "DEL", netns, POD_IF, &conf.stdin_of(plugin, None))?;
    }
    run_plugin(
        node,
        "DEL",
        netns,
        "lo",
        &conf.stdin_of(&json!({"type": "loopback"}), None),
    )?;
    Ok(())
}

/// Runs the plugin `stdin` names (its `type`) in namespace `node`; its stdout (the result).
fn run_plugin(node: &str, command: &str, netns: &str, ifname: &str, stdin: &str) -> Result<String> {
    let conf: Value = serde_json::from_str(stdin).unwrap_or_default();
    let plugin = Path::new(CNI_PATH).join(conf["type"].as_str().unwrap_or_default());
    let mut c = Command::new("ip");
    c.args(["netns", "exec", node])
        .arg(&plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", netns)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", CNI_PATH);
    cmd::run_stdin(&mut c, stdin)
}

/// `DEL` of every recorded pod whose peer's configuration is still there (best effort: each failure is a
/// warning), in reverse order of creation. The namespaces themselves are deleted with the lab's.
pub(crate) fn del_all(l: &Layout, pods: &[PodState], warnings: &mut Vec<String>) {
    for pod in pods.iter().rev() {
        let Some(i) = l.peer_index_of(&format!("{}-{}", l.name(), pod.peer)) else {
            continue;
        };
        let path = cni_conf_dir(l, i).join(CONFLIST);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let result = NetConfList::parse(&text, &path).and_then(|conf| cni_del(&l.peer_netns(i), &conf, &pod.netns));
        if let Err(e) = result {
            warnings.push(format!("CNI DEL of pod {}: {e}", pod.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"cniVersion": "1.0.0", "name": "sdwan", "plugins": [
        {"type": "bridge", "bridge": "sdwan-pods", "ipam": {"type": "host-local",
         "ranges": [[{"subnet": "198.51.100.16/28"}], [{"subnet": "fd00:42:0:1::/64"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]}"#;

    #[test]
    fn a_plugins_stdin_carries_the_lists_name_version_and_the_previous_result() {
        let conf = NetConfList::parse(LIST, Path::new("x")).unwrap();
        assert_eq!(conf.prefixes(), ["198.51.100.16/28", "fd00:42:0:1::/64"]);
        let prev =
            json!({"cniVersion": "1.0.0", "ips": [{"address": "198.51.100.18/28"}, {"address": "fd00:42:0:1::2/64"}]});
        let stdin: Value = serde_json::from_str(&conf.stdin_of(&conf.plugins[1], Some(&prev))).unwrap();
        assert_eq!(stdin["type"], "portmap");
        assert_eq!(
            (stdin["name"].as_str(), stdin["cniVersion"].as_str()),
            (Some("sdwan"), Some("1.0.0"))
        );
        assert_eq!(stdin["prevResult"], prev);
        let first: Value = serde_json::from_str(&conf.stdin_of(&conf.plugins[0], None)).unwrap();
        assert!(first.get("prevResult").is_none());
        assert_eq!(
            result_addresses(&prev),
            (Some("198.51.100.18".into()), Some("fd00:42:0:1::2".into()))
        );
    }

    #[test]
    fn broken_lists_are_refused() {
        for text in [
            "",
            "{}",
            r#"{"name": "n", "cniVersion": "1.0.0", "plugins": []}"#,
            r#"{"name": "n", "cniVersion": "1.0.0", "plugins": [{"bridge": "x"}]}"#,
        ] {
            assert!(NetConfList::parse(text, Path::new("x")).is_err(), "{text}");
        }
        assert_eq!("dual".parse::<PodFamily>(), Ok(PodFamily::Dual));
        assert!("both".parse::<PodFamily>().is_err());
        assert_eq!(PodFamily::Ipv6.pools().len(), 1);
    }
}
