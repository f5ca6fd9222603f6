//! Site LANs behind peers (issue 10, use case 1: an edge gateway): the network's site ranges
//! ([`crate::UpOptions::site_ranges`]), the real `sdwanctl registry` with the lab account's admin token
//! ([`Lab::sdwanctl_registry`]), and a host on a LAN behind a peer ([`Lab::add_site`]).
//!
//! A site host is a namespace `NAME-pIs` joined to peer `i`'s namespace by a veth (`site` on the peer,
//! `eth0` on the host): the peer holds the prefix's first address, the host its second, with a default
//! route through the peer. Routing the prefix to the peer is the operator's part (`sdwanctl registry
//! site-prefixes pI PREFIX`); forwarding on the peer is its daemon's. `down` removes the namespace with the
//! lab's others (its name is the lab's, see [`Layout::owns_netns`]).

use std::net::IpAddr;
use std::process::Output;

use ipnet::IpNet;

use crate::cmd::{self, in_netns};
use crate::error::{LabError, Result};
use crate::lab::{write_new, Lab, UpOptions};
use crate::layout::{self, Layout};

/// The peer's end of the veth to its site host.
pub const SITE_IF: &str = "site";

/// A host on a LAN behind a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteHost {
    /// Its namespace (`NAME-pIs`).
    pub netns: String,
    /// The LAN's prefix.
    pub prefix: IpNet,
    /// The peer's address on the LAN (the prefix's first address): the host's default gateway.
    pub gateway: IpAddr,
    /// The host's address (the prefix's second address).
    pub address: IpAddr,
}

/// Refuses site ranges in a lab without the registry (the registry's network holds them).
pub fn validate(opts: &UpOptions) -> Result<()> {
    if !opts.site_ranges.is_empty() && !opts.registry {
        return Err(LabError::Format {
            context: "--site-range".into(),
            message: "site ranges belong to the registry's network: drop --no-registry".into(),
        });
    }
    Ok(())
}

/// The `n`-th address of `prefix` (its network address is the 0th), if `n` is below its last address (for
/// IPv4 the broadcast address, which stays free).
fn nth_host(prefix: IpNet, n: u8) -> Option<IpAddr> {
    match prefix {
        IpNet::V4(p) => {
            let a = u32::from(p.network()).checked_add(u32::from(n))?;
            (a < u32::from(p.broadcast())).then(|| IpAddr::from(std::net::Ipv4Addr::from(a)))
        }
        IpNet::V6(p) => {
            let a = u128::from(p.network()).checked_add(u128::from(n))?;
            (a < u128::from(p.broadcast())).then(|| IpAddr::from(std::net::Ipv6Addr::from(a)))
        }
    }
}

impl Lab {
    /// Creates a host on the LAN `prefix` behind peer `i` (see the module's docs). Fails if `prefix` has
    /// no room for a gateway and a host or peer `i` already has a site host.
    pub fn add_site(&self, i: usize, prefix: IpNet) -> Result<SiteHost> {
        let node = self.netns(i)?;
        let (Some(gateway), Some(address)) = (nth_host(prefix, 1), nth_host(prefix, 2)) else {
            return Err(LabError::InvalidOption(format!(
                "site prefix {prefix} is too small for a gateway and a host"
            )));
        };
        let netns = self.layout.site_netns(i);
        let len = prefix.prefix_len();
        // `nodad`: an IPv6 address is usable at once (no duplicate address detection on a veth of two).
        let extra: &[&str] = if prefix.addr().is_ipv6() { &["nodad"] } else { &[] };
        cmd::ip(&["netns", "add", &netns])?;
        cmd::ip_in(
            &node,
            &[
                "link", "add", SITE_IF, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        let gw = format!("{gateway}/{len}");
        cmd::ip_in(&node, &[&["addr", "add", gw.as_str(), "dev", SITE_IF], extra].concat())?;
        cmd::ip_in(&node, &["link", "set", SITE_IF, "up"])?;
        let host = format!("{address}/{len}");
        cmd::ip_in(&netns, &["link", "set", "lo", "up"])?;
        cmd::ip_in(
            &netns,
            &[&["addr", "add", host.as_str(), "dev", "eth0"], extra].concat(),
        )?;
        cmd::ip_in(&netns, &["link", "set", "eth0", "up"])?;
        let family = if prefix.addr().is_ipv6() { "-6" } else { "-4" };
        cmd::ip_in(
            &netns,
            &[family, "route", "add", "default", "via", &gateway.to_string()],
        )?;
        Ok(SiteHost {
            netns,
            prefix,
            gateway,
            address,
        })
    }

    /// Runs the real `sdwanctl registry --url URL --insecure --token-file FILE ARGS…` inside the registry's
    /// namespace, with the lab account's admin token (written to `registry/admin-token`, 0600, on first
    /// use); its output whatever its exit status.
    pub fn sdwanctl_registry<S: AsRef<str>>(&self, args: &[S]) -> Result<Output> {
        let token_file = self.layout.registry_dir().join("admin-token");
        if !token_file.exists() {
            write_new(&token_file, format!("{}\n", self.admin_token()?).as_bytes(), 0o600)?;
        }
        let bin = cmd::sdwanctl_bin()?;
        let mut argv: Vec<String> = vec![
            bin.display().to_string(),
            "registry".into(),
            "--url".into(),
            layout::registry_url(),
            "--insecure".into(),
            "--token-file".into(),
            token_file.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
        cmd::output(&mut in_netns(&self.layout.registry_netns(), &argv))
    }

    /// `sdwanctl registry site-prefixes pI PREFIX…` (none: `--clear`); a non-zero exit is an error with
    /// its stderr.
    pub fn set_site_prefixes(&self, i: usize, prefixes: &[IpNet]) -> Result<()> {
        let mut args = vec!["site-prefixes".to_owned(), Layout::peer_name(i)];
        if prefixes.is_empty() {
            args.push("--clear".into());
        }
        args.extend(prefixes.iter().map(ToString::to_string));
        let out = self.sdwanctl_registry(&args)?;
        if !out.status.success() {
            return Err(LabError::Process(format!(
                "sdwanctl registry {} exited with {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_and_the_host_are_the_first_two_addresses() {
        let v4: IpNet = "203.0.113.128/26".parse().unwrap();
        assert_eq!(nth_host(v4, 1), Some("203.0.113.129".parse().unwrap()));
        assert_eq!(nth_host(v4, 2), Some("203.0.113.130".parse().unwrap()));
        let v6: IpNet = "2001:db8:5::/64".parse().unwrap();
        assert_eq!(nth_host(v6, 2), Some("2001:db8:5::2".parse().unwrap()));
        let v4_30: IpNet = "203.0.113.128/30".parse().unwrap();
        assert_eq!(
            nth_host(v4_30, 2),
            Some("203.0.113.130".parse().unwrap()),
            "a /30 holds both"
        );
        assert_eq!(nth_host(v4_30, 3), None, "the broadcast address stays free");
        assert_eq!(nth_host("203.0.113.128/31".parse().unwrap(), 1), None);
        assert_eq!(nth_host("2001:db8:5::/127".parse().unwrap(), 1), None);
    }
}
