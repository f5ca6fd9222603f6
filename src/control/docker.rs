//! `sdwanctl docker-network`: puts Docker containers on this node's pod share (use case 8).
//!
//! Owns the plan and its execution: from the daemon's status answer (the node's pod shares, the WireGuard
//! interface and its MTU) it derives a user-defined Docker bridge network on the share, without Docker's
//! masquerade (sdwand's `inet sdwand` table masquerades only what leaves by the underlay), and the
//! `DOCKER-USER` rules that let traffic from the WireGuard interface into the bridge (Docker's `FORWARD`
//! chain drops forwarded traffic into its bridges except published ports, and Docker sets the chain's
//! policy to `DROP` when it enables forwarding itself). [`Network::commands`] is the plan as shell text
//! (`--print`); [`Network::apply`] runs the `docker`, `iptables` and `ip6tables` CLIs, idempotently.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::WorkloadView;

/// Docker's bridge-driver option that turns its masquerade of the network's subnets off.
const NO_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade=false";

/// Which of the node's pod shares the Docker network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// The IPv4 share only.
    Ipv4,
    /// The IPv6 share only (Docker 20.10 still gives the network an IPv4 subnet from its default pools).
    Ipv6,
    /// Every share the node has (IPv4, IPv6 or both).
    #[default]
    All,
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Family, String> {
        match s {
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            "all" => Ok(Family::All),
            other => Err(format!("unknown family {other:?}: use ipv4, ipv6 or all")),
        }
    }
}

/// Why the network could not be planned or created. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerError(pub String);

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DockerError {}

/// The Docker network to create on this node, planned from the daemon's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The Docker network's name.
    pub name: String,
    /// The Linux bridge Docker creates for it.
    pub bridge: String,
    /// The WireGuard interface the other nodes' containers arrive by.
    pub interface: String,
    /// The bridge's MTU: the WireGuard interface's, so containers' packets fit the tunnel.
    pub mtu: u32,
    /// The IPv4 pod share, when used.
    pub v4: Option<Ipv4Net>,
    /// The IPv6 pod share, when used.
    pub v6: Option<Ipv6Net>,
}

/// One accept rule in a firewall chain: `-i from -o to -j ACCEPT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accept {
    from: String,
    to: String,
}

impl Network {
    /// The network for `workload` (this node's prefixes) on `interface`, with the shares of `family`.
    /// Refuses a node without a pod share of that family, and a bridge name Linux would refuse.
    pub fn plan(
        name: &str,
        bridge: &str,
        interface: &str,
        workload: &WorkloadView,
        family: Family,
    ) -> Result<Network, DockerError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err(DockerError(format!(
                "{name:?} is not a Docker network name: use letters, digits, '_', '.' and '-'"
            )));
        }
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(DockerError(format!(
                "{bridge:?} is not a usable bridge name: 1 to 15 letters, digits, '_', '.' or '-' (--bridge)"
            )));
        }
        let v4 = workload.pods().find_map(|p| match p {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        });
        let v6 = workload.pods().find_map(|p| match p {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        });
        let (v4, v6) = match family {
            Family::Ipv4 => (Some(v4.ok_or_else(|| no_share("IPv4 "))?), None),
            Family::Ipv6 => (None, Some(v6.ok_or_else(|| no_share("IPv6 "))?)),
            Family::All if v4.is_none() && v6.is_none() => return Err(no_share("")),
            Family::All => (v4, v6),
        };
        Ok(Network {
            name: name.to_owned(),
            bridge: bridge.to_owned(),
            interface: interface.to_owned(),
            mtu: workload.mtu,
            v4,
            v6,
        })
    }

    /// The subnets of the network, IPv4 first.
    pub fn subnets(&self) -> Vec<IpNet> {
        self.v4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.v6.map(IpNet::V6))
            .collect()
    }

    /// The arguments of `docker` that create the network.
    pub fn create_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["network", "create", "--driver", "bridge"].map(String::from).to_vec();
        if let Some(v4) = self.v4 {
            args.extend(["--subnet".to_owned(), v4.to_string()]);
            args.extend(["--gateway".to_owned(), gateway_v4(v4).to_string()]);
        }
        if let Some(v6) = self.v6 {
            args.extend(["--ipv6".to_owned(), "--subnet".to_owned(), v6.to_string()]);
            args.extend(["--gateway".to_owned(), gateway_v6(v6).to_string()]);
        }
        for option in [
            NO_MASQUERADE.to_owned(),
            format!("com.docker.network.bridge.name={}", self.bridge),
            format!("com.docker.network.driver.mtu={}", self.mtu),
        ] {
            args.extend(["-o".to_owned(), option]);
        }
        args.push(self.name.clone());
        args
    }

    /// Both directions between the WireGuard interface and the bridge.
    fn accepts(&self) -> [Accept; 2] {
        [
            Accept {
                from: self.interface.clone(),
                to: self.bridge.clone(),
            },
            Accept {
                from: self.bridge.clone(),
                to: self.interface.clone(),
            },
        ]
    }

    /// The plan as shell commands (`--print`): the network, then the firewall rules, each guarded so the
    /// script can run again.
    pub fn commands(&self) -> String {
        let mut out = String::from("# the Docker network on this node's pod share\n");
        out += &format!("docker {}\n", shell_words(&self.create_args()));
        if self.v4.is_some() {
            out += "# IPv4: let the other nodes' containers in through Docker's firewall\n";
            for a in self.accepts() {
                out += &guarded("iptables", "DOCKER-USER", &a);
            }
        }
        if self.v6.is_some() {
            out += "# IPv6: only when dockerd runs with --ip6tables (experimental in 20.10, which has no\n";
            out += "# DOCKER-USER chain for IPv6 but sets the ip6tables FORWARD policy to DROP)\n";
            for a in self.accepts() {
                out += &guarded("ip6tables", "FORWARD", &a);
            }
        }
        out
    }

    /// Creates the network (or finds it already there with the same subnets) through `docker`, with
    /// `DOCKER_HOST` set to `docker_host` when given, then adds the missing accept rules. Returns what
    /// it did, one line each.
    pub fn apply(&self, docker_host: Option<&str>) -> Result<Vec<String>, DockerError> {
        let mut done = Vec::new();
        let docker = |args: &[&str]| {
            let mut c = Command::new("docker");
            c.args(args);
            if let Some(host) = docker_host {
                c.env("DOCKER_HOST", host);
            }
            c
        };
        let filter = format!("name=^{}$", self.name);
        let listed = run(docker(&["network", "ls", "--filter", &filter, "--format", "{{.Name}}"]))?;
        if listed.lines().any(|l| l.trim() == self.name) {
            let ipam = run(docker(&[
                "network",
                "inspect",
                &self.name,
                "--format",
                "{{json .IPAM.Config}}",
            ]))?;
            let existing = parse_ipam(&ipam)?;
            let wanted = self.subnets();
            if wanted.iter().any(|s| !existing.contains(s)) {
                return Err(DockerError(format!(
                    "a Docker network {:?} already exists with subnets {} instead of {}: remove it (docker network rm \
                     {}) or choose another --name",
                    self.name,
                    list(&existing),
                    list(&wanted),
                    self.name
                )));
            }
            done.push(format!("network {} already exists on {}", self.name, list(&wanted)));
        } else {
            let args = self.create_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(docker(&args))?;
            done.push(format!(
                "created network {} on {} (bridge {}, mtu {})",
                self.name,
                list(&self.subnets()),
                self.bridge,
                self.mtu
            ));
        }
        if self.v4.is_some() {
            if chain_exists("iptables", "DOCKER-USER") {
                done.extend(self.ensure_accepts("iptables", "DOCKER-USER")?);
            } else {
                done.push(
                    "no iptables DOCKER-USER chain (dockerd runs without --iptables): no IPv4 rule needed".into(),
                );
            }
        }
        if self.v6.is_some() {
            // 20.10 with --ip6tables: Docker's chains, FORWARD policy DROP, but no DOCKER-USER chain.
            let chain = if chain_exists("ip6tables", "DOCKER-USER") {
                Some("DOCKER-USER")
            } else if chain_exists("ip6tables", "DOCKER") {
                Some("FORWARD")
            } else {
                None
            };
            match chain {
                Some(chain) => done.extend(self.ensure_accepts("ip6tables", chain)?),
                None => done.push(
                    "dockerd does not manage ip6tables (no --ip6tables): Docker does not filter IPv6, no rule needed"
                        .into(),
                ),
            }
        }
        Ok(done)
    }

    /// Inserts each accept rule missing from `chain` at its top.
    fn ensure_accepts(&self, tool: &str, chain: &str) -> Result<Vec<String>, DockerError> {
        let mut done = Vec::new();
        for a in self.accepts() {
            let rule = ["-i", &a.from, "-o", &a.to, "-j", "ACCEPT"];
            let present = Command::new(tool)
                .args(["-C", chain])
                .args(rule)
                .output()
                .is_ok_and(|o| o.status.success());
            if present {
                done.push(format!("{tool} {chain}: {} -> {} already accepted", a.from, a.to));
                continue;
            }
            let mut c = Command::new(tool);
            c.args(["-I", chain]).args(rule);
            run(c)?;
            done.push(format!("{tool} {chain}: accepted {} -> {}", a.from, a.to));
        }
        Ok(done)
    }
}

/// The refusal for a node without a pod share (`which` = "IPv4 ", "IPv6 " or "").
fn no_share(which: &str) -> DockerError {
    DockerError(format!(
        "this node has no {which}pod prefix: its network needs a pod pool of that family (sdwanctl registry \
         create-network --pod-pool PREFIX:LEN), and sdwand must have enrolled (sdwanctl status shows the \
         prefixes)"
    ))
}

/// The first host of an IPv4 share: the bridge's address, the containers' gateway.
pub fn gateway_v4(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

/// The first host of an IPv6 share.
pub fn gateway_v6(net: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()).saturating_add(1))
}

/// The subnets of `docker network inspect --format '{{json .IPAM.Config}}'`
/// (`[{"Subnet":"198.51.100.16/28","Gateway":"198.51.100.17"}]`, or `null`).
pub fn parse_ipam(json: &str) -> Result<Vec<IpNet>, DockerError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "Subnet", default)]
        subnet: String,
    }
    let bad = |e: &dyn fmt::Display| {
        DockerError(format!(
            "cannot read `docker network inspect`'s IPAM answer {json:?}: {e}"
        ))
    };
    let entries: Option<Vec<Entry>> = serde_json::from_str(json.trim()).map_err(|e| bad(&e))?;
    entries
        .unwrap_or_default()
        .iter()
        .filter(|e| !e.subnet.is_empty())
        .map(|e| e.subnet.parse::<IpNet>().map(|n| n.trunc()).map_err(|err| bad(&err)))
        .collect()
}

/// Whether `tool` (iptables, ip6tables) has `chain` in its filter table.
fn chain_exists(tool: &str, chain: &str) -> bool {
    Command::new(tool)
        .args(["-S", chain])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `command`; its standard output, or an error naming the command and its standard error.
fn run(mut command: Command) -> Result<String, DockerError> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command.output().map_err(|e| {
        DockerError(format!(
            "cannot run `{shown}`: {e} (is it installed and on PATH? Debian: apt install docker.io)"
        ))
    })?;
    if !output.status.success() {
        return Err(DockerError(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `iptables -C … 2>/dev/null || iptables -I …` for one rule.
fn guarded(tool: &str, chain: &str, a: &Accept) -> String {
    let rule = format!("-i {} -o {} -j ACCEPT", a.from, a.to);
    format!("{tool} -C {chain} {rule} 2>/dev/null || {tool} -I {chain} {rule}\n")
}

/// `args` joined for a shell: those with characters a shell treats specially in single quotes.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a, b` (or `none`).
fn list(nets: &[IpNet]) -> String {
    if nets.is_empty() {
        return "none".to_owned();
    }
    nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{PrefixKind, RoutedPrefix};

    fn workload(prefixes: &[(&str, PrefixKind)]) -> WorkloadView {
        WorkloadView {
            mtu: 1380,
            prefixes: prefixes
                .iter()
                .map(|(p, kind)| RoutedPrefix {
                    prefix: p.parse().unwrap(),
                    kind: *kind,
                })
                .collect(),
        }
    }

    #[test]
    fn the_network_is_the_pod_share_without_masquerade_at_the_tunnel_mtu() {
        let w = workload(&[
            ("203.0.113.0/24", PrefixKind::Site),
            ("198.51.100.16/28", PrefixKind::Pod),
            ("fd00:42:0:1::/64", PrefixKind::Pod),
        ]);
        let n = Network::plan("sdwan", "sdwan-docker", "sdwan0", &w, Family::All).unwrap();
        assert_eq!(
            n.create_args().join(" "),
            "network create --driver bridge --subnet 198.51.100.16/28 --gateway 198.51.100.17 --ipv6 --subnet \
             fd00:42:0:1::/64 --gateway fd00:42:0:1::1 -o com.docker.network.bridge.enable_ip_masquerade=false \
             -o com.docker.network.bridge.name=sdwan-docker -o com.docker.network.driver.mtu=1380 sdwan"
        );
        let v4 = Network::plan("sdwan", "sdwan-docker", "sdwan0", &w, Family::Ipv4).unwrap();
        assert_eq!(v4.subnets(), vec!["198.51.100.16/28".parse::<IpNet>().unwrap()]);
        assert!(!v4.create_args().contains(&"--ipv6".to_owned()));
        let script = v4.commands();
        assert!(script.contains(
            "iptables -C DOCKER-USER -i sdwan0 -o sdwan-docker -j ACCEPT 2>/dev/null || iptables -I DOCKER-USER -i \
             sdwan0 -o sdwan-docker -j ACCEPT\n"
        ));
        assert!(script.contains("iptables -I DOCKER-USER -i sdwan-docker -o sdwan0 -j ACCEPT\n"));
        assert!(!script.contains("ip6tables"));
        assert!(n
            .commands()
            .contains("ip6tables -I FORWARD -i sdwan0 -o sdwan-docker -j ACCEPT\n"));
    }

    #[test]
    fn a_missing_share_or_a_bad_name_is_refused_with_the_fix() {
        let site_only = workload(&[("203.0.113.0/24", PrefixKind::Site)]);
        let e = Network::plan("sdwan", "br0", "sdwan0", &site_only, Family::All).unwrap_err();
        assert!(e.0.contains("no pod prefix") && e.0.contains("--pod-pool"), "{e}");
        let v4_only = workload(&[("198.51.100.16/28", PrefixKind::Pod)]);
        let e = Network::plan("sdwan", "br0", "sdwan0", &v4_only, Family::Ipv6).unwrap_err();
        assert!(e.0.contains("no IPv6 pod prefix"), "{e}");
        let e = Network::plan("sdwan", "a-bridge-name-too-long", "sdwan0", &v4_only, Family::All).unwrap_err();
        assert!(e.0.contains("--bridge"), "{e}");
        assert!(Network::plan("bad name", "br0", "sdwan0", &v4_only, Family::All).is_err());
        assert_eq!("ipv6".parse::<Family>(), Ok(Family::Ipv6));
        assert!("v7".parse::<Family>().is_err());
    }

    #[test]
    fn docker_ipam_answers_are_read() {
        let json = r#"[{"Subnet":"198.51.100.16/28","Gateway":"198.51.100.17"},{"Subnet":"fd00:42:0:1::/64"}]"#;
        assert_eq!(
            parse_ipam(json).unwrap(),
            vec![
                "198.51.100.16/28".parse::<IpNet>().unwrap(),
                "fd00:42:0:1::/64".parse().unwrap()
            ]
        );
        assert_eq!(parse_ipam("null\n").unwrap(), vec![]);
        assert!(parse_ipam("[{\"Subnet\":\"x\"}]").is_err());
        assert!(parse_ipam("<html>").is_err());
        assert_eq!(gateway_v6("fd00:42::/64".parse().unwrap()).to_string(), "fd00:42::1");
    }
}
