//! The CNI network configuration for the node's pod prefixes (`[k3s] pod_network = "sdwan"`): what a
//! container runtime (k3s's containerd, or the lab acting as one) reads to put pods on the node's share of
//! the network's pod pools.
//!
//! It uses only the standard plugins k3s ships and Debian packages (`containernetworking-plugins`): `bridge`
//! with `host-local` addresses from the node's pod prefixes, then `portmap` for `hostPort`s. The bridge is the
//! pods' default gateway; it does not masquerade (`ipMasq: false`): traffic between pod prefixes crosses the
//! overlay with the pods' own addresses, and sdwand's nftables table masquerades only what leaves the
//! network through the underlay. The runtime's `loopback` plugin sets up each pod's `lo`, as always.
//!
//! Rendering is pure; the file is written with [`super::k3s::write_if_changed`] (atomic, only on change,
//! so the runtime sees no spurious change on a daemon restart).

use ipnet::IpNet;
use serde_json::{json, Value};

/// The CNI network's name: runtimes pick the first configuration file of their directory, and pods record
/// the network they were attached to by this name.
pub const NETWORK_NAME: &str = "sdwan";
/// The file it is written to, in the configured directory. With `flannel-backend: none` k3s writes no
/// configuration of its own there, so the runtime loads this one (runtimes take the first file by name).
pub const FILE_NAME: &str = "10-sdwan.conflist";
/// The bridge the pods' veths plug into (one per node).
pub const BRIDGE: &str = "sdwan-pods";
/// The CNI specification version written.
pub const CNI_VERSION: &str = "1.0.0";

/// What the configuration is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The node's pod prefixes (at most one per family), as the registry allocated them.
    pub prefixes: Vec<IpNet>,
    /// The pods' MTU: the WireGuard interface's, since traffic between nodes crosses it.
    pub mtu: u32,
    /// Where `host-local` keeps its leases; `None`: its default (`/var/lib/cni/networks`). Several nodes on
    /// one machine (the lab) need one each.
    pub ipam_data_dir: Option<std::path::PathBuf>,
}

/// Why a configuration cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniError {
    /// The node has no pod prefix (the network has no pod pool, or the registry has not allocated one).
    #[error("this node has no pod prefix: give its network a pod pool (sdwanctl registry create-network --pod-pool)")]
    NoPrefix,
    /// Two prefixes of one family.
    #[error("this node has two {family} pod prefixes ({first} and {second}); a node gets one per family")]
    TwoOfAFamily {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The first.
        first: IpNet,
        /// The second.
        second: IpNet,
    },
    /// A prefix too small to hold the gateway and one pod.
    #[error("the pod prefix {0} is too small: it needs room for the bridge's gateway address and pods")]
    TooSmall(IpNet),
}

/// The `.conflist` for `net`, pretty-printed JSON ending in a newline.
pub fn render(net: &PodNetwork) -> Result<String, CniError> {
    let (mut v4, mut v6) = (None, None);
    for p in &net.prefixes {
        let (slot, family, max) = match p {
            IpNet::V4(_) => (&mut v4, "IPv4", 30),
            IpNet::V6(_) => (&mut v6, "IPv6", 126),
        };
        if p.prefix_len() > max {
            return Err(CniError::TooSmall(*p));
        }
        if let Some(first) = *slot {
            return Err(CniError::TwoOfAFamily {
                family,
                first,
                second: *p,
            });
        }
        *slot = Some(*p);
    }
    // host-local hands out addresses after the gateway (the first host address), which the bridge takes.
    let ranges: Vec<Value> = v4
        .into_iter()
        .chain(v6)
        .map(|p| json!([{ "subnet": p.trunc().to_string() }]))
        .collect();
    if ranges.is_empty() {
        return Err(CniError::NoPrefix);
    }
    // `isDefaultGateway` makes the bridge plugin add each family's default route through the gateway;
    // listing them in `ipam.routes` as well fails the ADD ("file exists").
    let mut ipam = json!({ "type": "host-local", "ranges": ranges });
    if let Some(dir) = &net.ipam_data_dir {
        ipam["dataDir"] = json!(dir.display().to_string());
    }
    let conf = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": net.mtu,
                "ipam": ipam,
            },
            { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
        ],
    });
    let mut text = serde_json::to_string_pretty(&conf).expect("a JSON value always serialises");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(prefixes: &[&str]) -> PodNetwork {
        PodNetwork {
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            mtu: 1420,
            ipam_data_dir: None,
        }
    }

    #[test]
    fn dual_stack_gets_both_ranges_from_one_bridge() {
        let text = render(&net(&["198.51.100.16/28", "fd00:42:0:1::/64"])).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cniVersion"], CNI_VERSION);
        assert_eq!(v["name"], NETWORK_NAME);
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], BRIDGE);
        assert_eq!(bridge["ipMasq"], false, "pod traffic between nodes is never NATed");
        assert_eq!(bridge["isDefaultGateway"], true);
        assert_eq!(bridge["mtu"], 1420);
        assert_eq!(
            bridge["ipam"],
            json!({
                "type": "host-local",
                "ranges": [[{"subnet": "198.51.100.16/28"}], [{"subnet": "fd00:42:0:1::/64"}]],
            })
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(v["plugins"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn one_family_gets_one_range_and_a_data_dir_when_asked() {
        let v: Value = serde_json::from_str(&render(&net(&["fd00:42:0:7::/64"])).unwrap()).unwrap();
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet": "fd00:42:0:7::/64"}]])
        );
        assert!(v["plugins"][0]["ipam"].get("dataDir").is_none());
        let mut n = net(&["198.51.100.0/26"]);
        n.ipam_data_dir = Some("/run/lab/p1/cni".into());
        let v: Value = serde_json::from_str(&render(&n).unwrap()).unwrap();
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/run/lab/p1/cni");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet": "198.51.100.0/26"}]])
        );
    }

    #[test]
    fn the_same_input_renders_the_same_bytes() {
        let a = render(&net(&["198.51.100.16/28", "fd00:42:0:1::/64"])).unwrap();
        let b = render(&net(&["198.51.100.16/28", "fd00:42:0:1::/64"])).unwrap();
        assert_eq!(a, b, "a daemon restart must not rewrite the file");
    }

    #[test]
    fn unusable_prefixes_are_refused_with_the_reason() {
        assert_eq!(render(&net(&[])), Err(CniError::NoPrefix));
        let two = render(&net(&["198.51.100.0/28", "198.51.100.16/28"])).unwrap_err();
        assert!(matches!(two, CniError::TwoOfAFamily { family: "IPv4", .. }), "{two}");
        assert!(two.to_string().contains("198.51.100.16/28"), "{two}");
        assert_eq!(
            render(&net(&["198.51.100.4/31"])),
            Err(CniError::TooSmall("198.51.100.4/31".parse().unwrap()))
        );
        assert!(render(&net(&["fd00:42::/127"])).is_err());
    }
}
