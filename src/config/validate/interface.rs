//! `[interface]`, `[backend]` and `[daemon]`: this node's interface and identity, the WireGuard
//! implementation, and the daemon's housekeeping, with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv6Net;
use toml::Spanned;

use super::{parse_abs_path, parse_duration_in, parse_host, valid_ifname, Ctx, PartialInterface};
use crate::config::raw::{RawBackend, RawDaemon, RawInterface};
use crate::config::{BackendConfig, BackendKind, DaemonConfig, PeerMetrics};

impl Ctx<'_> {
    /// `[interface]`; `from_registry`: address and overlay_prefix may be left out (enrollment assigns them).
    pub(super) fn interface(&mut self, raw: &Spanned<RawInterface>, from_registry: bool) -> Option<PartialInterface> {
        let r = raw.get_ref();
        let name = self.parse_str(
            &r.name,
            "interface.name",
            "use 1-15 characters of letters, digits, '-', '_' or '.'",
            |s| {
                valid_ifname(s)
                    .then(|| s.to_owned())
                    .ok_or_else(|| "is not a valid interface name".to_owned())
            },
        );
        let listen_port = match &r.listen_port {
            Some(p) => self.int_in(p, "interface.listen_port", 1, 65535, "pick a free UDP port, e.g. 51820"),
            None => Some(51820),
        };
        let mtu = match &r.mtu {
            Some(m) => self.int_in(
                m,
                "interface.mtu",
                1280,
                9000,
                "IPv6 needs at least 1280; 1420 suits a 1500-byte underlay",
            ),
            None => Some(1420),
        };
        let keepalive = match &r.persistent_keepalive {
            Some(k) => self
                .int_in::<u16>(
                    k,
                    "interface.persistent_keepalive",
                    0,
                    65535,
                    "seconds between keepalives; 0 turns them off",
                )
                .map(|k| (k > 0).then_some(k)),
            None => Some(Some(25)),
        };
        let mut ok = true;
        for (key, field, example) in [
            ("interface.address", &r.address, "address = \"fd00:5d::1\""),
            (
                "interface.overlay_prefix",
                &r.overlay_prefix,
                "overlay_prefix = \"fd00:5d::/64\"",
            ),
        ] {
            if field.is_none() && !from_registry {
                self.error(
                    raw.span(),
                    key,
                    "is missing",
                    format!("add {example}, or configure [registry] to get it from enrollment"),
                );
                ok = false;
            }
        }
        let prefix = r.overlay_prefix.as_ref().map(|p| {
            self.parse_str(
                p,
                "interface.overlay_prefix",
                "an IPv6 network such as \"fd00:5d::/64\"",
                |s| {
                    let net: Ipv6Net = s.parse().map_err(|_| "is not an IPv6 prefix".to_owned())?;
                    if net.prefix_len() >= 128 {
                        return Err("is a single address, not a network".into());
                    }
                    if net != net.trunc() {
                        return Err(format!("has host bits set (did you mean {}?)", net.trunc()));
                    }
                    Ok(net)
                },
            )
        });
        let address = r.address.as_ref().map(|a| {
            self.parse_str(
                a,
                "interface.address",
                "this node's own IPv6 address, e.g. \"fd00:5d::1\" (no prefix length)",
                parse_host,
            )
        });
        if let (Some(Some(a)), Some(Some(p)), Some(field)) = (address, prefix, &r.address) {
            if !p.contains(&a) {
                self.error(
                    field.span(),
                    "interface.address",
                    format!("{a} is outside overlay_prefix {p}"),
                    "pick an address inside overlay_prefix",
                );
            }
        }
        let key_file = r.private_key_file.as_ref().and_then(|f| {
            self.parse_str(
                f,
                "interface.private_key_file",
                "an absolute path, e.g. \"/var/lib/sdwand/private.key\"",
                parse_abs_path,
            )
        });
        if !ok || (r.private_key_file.is_some() && key_file.is_none()) {
            return None;
        }
        Some(PartialInterface {
            name: name?,
            private_key_file: key_file,
            listen_port: listen_port?,
            mtu: mtu?,
            mtu_from_file: r.mtu.is_some(),
            address: address.map_or(Some(None), |a| a.map(Some))?,
            overlay_prefix: prefix.map_or(Some(None), |p| p.map(Some))?,
            persistent_keepalive: keepalive?,
        })
    }

    pub(super) fn backend(&mut self, raw: Option<&Spanned<RawBackend>>) -> Option<BackendConfig> {
        let mut out = BackendConfig {
            kind: BackendKind::Auto,
            userspace_path: PathBuf::from("/usr/bin/wireguard-go"),
        };
        let Some(raw) = raw else { return Some(out) };
        let r = raw.get_ref();
        if let Some(kind) = &r.kind {
            out.kind = self.parse_str(
                kind,
                "backend.kind",
                "one of \"auto\", \"kernel\", \"userspace\"",
                |s| match s {
                    "auto" => Ok(BackendKind::Auto),
                    "kernel" => Ok(BackendKind::Kernel),
                    "userspace" => Ok(BackendKind::Userspace),
                    _ => Err("is not a backend".into()),
                },
            )?;
        }
        if let Some(path) = &r.userspace_path {
            out.userspace_path = self.parse_str(
                path,
                "backend.userspace_path",
                "an absolute path such as \"/usr/bin/wireguard-go\"",
                parse_abs_path,
            )?;
        }
        Some(out)
    }

    pub(super) fn daemon(&mut self, raw: Option<&Spanned<RawDaemon>>) -> Option<DaemonConfig> {
        let mut out = DaemonConfig {
            state_dir: PathBuf::from("/var/lib/sdwand"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9581)),
            resync_interval: Duration::from_secs(10),
            teardown_on_exit: false,
            control_socket: PathBuf::from("/run/sdwand/sdwand.sock"),
            peer_metrics: PeerMetrics::All,
            metrics_overlay_port: None,
        };
        let Some(raw) = raw else { return Some(out) };
        let r = raw.get_ref();
        let mut ok = true;
        if let Some(dir) = &r.state_dir {
            match self.parse_str(
                dir,
                "daemon.state_dir",
                "an absolute path such as \"/var/lib/sdwand\"",
                parse_abs_path,
            ) {
                Some(d) => out.state_dir = d,
                None => ok = false,
            }
        }
        if let Some(listen) = &r.metrics_listen {
            match self.parse_str(
                listen,
                "daemon.metrics_listen",
                "an address and port such as \"127.0.0.1:9581\" or \"[::1]:9581\"",
                |s| s.parse::<SocketAddr>().map_err(|_| "is not an address:port".to_owned()),
            ) {
                Some(a) => out.metrics_listen = a,
                None => ok = false,
            }
        }
        if let Some(interval) = &r.resync_interval {
            match self.parse_str(
                interval,
                "daemon.resync_interval",
                "a duration between 1s and 1h, e.g. \"10s\"",
                |s| parse_duration_in(s, Duration::from_secs(1), Duration::from_secs(3600)),
            ) {
                Some(d) => out.resync_interval = d,
                None => ok = false,
            }
        }
        if let Some(t) = r.teardown_on_exit {
            out.teardown_on_exit = t;
        }
        if let Some(socket) = &r.control_socket {
            match self.parse_str(
                socket,
                "daemon.control_socket",
                "an absolute path such as \"/run/sdwand/sdwand.sock\"",
                parse_abs_path,
            ) {
                Some(p) => out.control_socket = p,
                None => ok = false,
            }
        }
        if let Some(mode) = &r.peer_metrics {
            match self.parse_str(mode, "daemon.peer_metrics", "\"all\" or \"none\"", |s| {
                PeerMetrics::parse(s).ok_or_else(|| "is not a per-peer metrics setting".to_owned())
            }) {
                Some(m) => out.peer_metrics = m,
                None => ok = false,
            }
        }
        if let Some(port) = &r.metrics_overlay_port {
            let hint = "a free TCP port such as 9581, or remove the key to serve metrics only on daemon.metrics_listen";
            match self.int_in(port, "daemon.metrics_overlay_port", 1, 65535, hint) {
                Some(p) => out.metrics_overlay_port = Some(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
