//! Configuration: the TOML schema, its defaults and its validation.
//!
//! Parsing is pure (text in, [`Config`] or every problem out) so it is unit-tested without a file system;
//! [`load`] adds the file read. Every [`ConfigError`] names the file, the line, the key and how to fix it,
//! and all problems of a file are reported at once. Private-key handling lives in [`crate::keyfile`];
//! `[[members]]` is validated in `members.rs`, `[failover]` and `[[vip]]` in `failover.rs`.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use serde::Deserialize;
use toml::Spanned;
use wireguard_control::Key;

mod failover;
mod members;
mod registry;

pub use failover::{FailoverConfig, HealthCheck, HealthConfig, VipConfig, DEFAULT_PORT as DEFAULT_FAILOVER_PORT};
use members::RawMember;
pub use registry::{valid_peer_name, K3sConfig, RegistryConfig, DEFAULT_K3S_CONFIG_PATH};

/// Where `sdwand` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sdwand/sdwand.toml";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    /// The WireGuard interface and this node's overlay identity.
    pub interface: InterfaceConfig,
    /// Which WireGuard implementation drives the interface.
    pub backend: BackendConfig,
    /// Daemon housekeeping: state, metrics, timers.
    pub daemon: DaemonConfig,
    /// Static member list, in file order (the registry replaces it later).
    pub members: Vec<Member>,
    /// VIP failover settings shared by every VIP.
    pub failover: FailoverConfig,
    /// The VIPs, in file order.
    pub vips: Vec<VipConfig>,
    /// `[registry]`: identity, members and VIPs come from the registry (then `members` is empty in the
    /// file, and the daemon runs on the effective configuration built by `crate::client`).
    pub registry: Option<RegistryConfig>,
    /// `[k3s]`: the handshake and the drop-in.
    pub k3s: Option<K3sConfig>,
}

/// `[interface]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceConfig {
    /// Interface name (1–15 characters).
    pub name: String,
    /// File holding the base64 private key.
    pub private_key_file: PathBuf,
    /// WireGuard UDP listen port.
    pub listen_port: u16,
    /// Interface MTU.
    pub mtu: u32,
    /// This node's /128 overlay address. With `[registry]` it comes from the enrollment: in the file's
    /// configuration it is then the unspecified address (`::`) when the file does not give it.
    pub address: Ipv6Addr,
    /// The overlay network, routed through the interface. With `[registry]` it comes from the registry:
    /// in the file's configuration it is then `::/128` when the file does not give it.
    pub overlay_prefix: Ipv6Net,
    /// Persistent keepalive for every member, seconds; `None` = off.
    pub persistent_keepalive: Option<u16>,
}

/// `[backend] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Kernel WireGuard when available, else userspace.
    Auto,
    /// Kernel WireGuard only.
    Kernel,
    /// The userspace implementation only.
    Userspace,
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Requested backend.
    pub kind: BackendKind,
    /// Path of the userspace implementation (`wireguard-go`).
    pub userspace_path: PathBuf,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// State directory.
    pub state_dir: PathBuf,
    /// Address of the Prometheus endpoint. Fail-soft: if it cannot be bound (a port taken by another
    /// process), the daemon runs on, says so in the log and `sdwanctl status`, and retries.
    pub metrics_listen: SocketAddr,
    /// Period of the full resync.
    pub resync_interval: Duration,
    /// Remove the data plane on SIGTERM instead of leaving it up.
    pub teardown_on_exit: bool,
    /// Unix socket `sdwanctl` talks to.
    pub control_socket: PathBuf,
}

/// One `[[members]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Human name, unique in the list (used in logs and metric labels).
    pub name: String,
    /// WireGuard public key, unique in the list.
    pub public_key: Key,
    /// Underlay endpoint; `None` waits for the member to reach us.
    pub endpoint: Option<SocketAddr>,
    /// The member's /128 overlay address.
    pub address: Ipv6Addr,
    /// Extra prefixes routed to the member.
    pub routed_prefixes: Vec<Ipv6Net>,
    /// Line of the entry in the file, for messages raised after parsing.
    pub line: usize,
}

impl Member {
    /// Every prefix this member is reached at: its /128 first, then its routed prefixes.
    pub fn prefixes(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        std::iter::once(host_net(self.address)).chain(self.routed_prefixes.iter().copied())
    }
}

/// `addr/128`.
pub fn host_net(addr: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new(addr, 128).expect("128 is a valid IPv6 prefix length")
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the problem has no place, e.g. an unreadable file).
    pub line: usize,
    /// Dotted key, e.g. `members[2].address`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (fix: {})", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found in one file; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{} problem{} in configuration", n, if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Reads and validates the file at `path`. Touches nothing else (the key file is not read here).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
            hint: format!("create it (see config/sdwand.example.toml) or pass another path with --config; default is {DEFAULT_PATH}"),
        }])),
    }
}

/// Validates `text` as the contents of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let ctx = Ctx {
        path,
        text,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            return Err(ConfigErrors(vec![ConfigError {
                path: path.to_owned(),
                line,
                key: String::new(),
                message: e.message().trim_end().to_owned(),
                hint: "see config/sdwand.example.toml for every key and its type".into(),
            }]));
        }
    };
    ctx.validate(raw)
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn error(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            path: self.path.to_owned(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Parses a string-valued field with `parse`, recording an error on failure.
    fn parse_str<T>(
        &mut self,
        field: &Spanned<String>,
        key: &str,
        hint: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(field.get_ref()) {
            Ok(v) => Some(v),
            Err(why) => {
                self.error(field.span(), key, format!("{:?} {why}", field.get_ref()), hint);
                None
            }
        }
    }

    fn int_in<T: TryFrom<i64>>(&mut self, field: &Spanned<i64>, key: &str, lo: i64, hi: i64, hint: &str) -> Option<T> {
        let v = *field.get_ref();
        if v < lo || v > hi {
            self.error(field.span(), key, format!("{v} is out of range {lo}..={hi}"), hint);
            return None;
        }
        T::try_from(v).ok()
    }

    fn validate(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let interface = self.interface(&raw.interface, raw.registry.is_some());
        let backend = self.backend(raw.backend.as_ref());
        let daemon = self.daemon(raw.daemon.as_ref());
        let members = self.members(&raw.members, interface.as_ref());
        let failover = self.failover(
            raw.failover.as_ref(),
            raw.interface.get_ref(),
            interface.as_ref().map(|i| i.listen_port),
        );
        let from_registry = raw.registry.is_some();
        let vips = self.vips(
            &raw.vip,
            &raw.members,
            interface.as_ref().and_then(|i| i.address),
            from_registry,
        );
        let registry = raw.registry.as_ref().map(|r| {
            if let Some(first) = raw.members.first() {
                self.error(
                    first.span(),
                    "members",
                    "is set together with [registry]; the members come from the registry",
                    "remove every [[members]] entry, or remove [registry] to keep a static member list",
                );
            }
            let (address, prefix) = interface
                .as_ref()
                .map_or((None, None), |i| (i.address, i.overlay_prefix));
            self.registry(r, address, prefix)
        });
        let k3s = raw.k3s.as_ref().map(|k| self.k3s(k, from_registry));
        let registry_ok = registry.as_ref().is_none_or(|r| r.is_some()) && k3s.as_ref().is_none_or(|k| k.is_some());
        match (interface, backend, daemon, members, failover, vips) {
            (Some(interface), Some(backend), Some(daemon), Some(members), Some(failover), Some(vips))
                if self.errors.is_empty() && registry_ok =>
            {
                Ok(Config {
                    source: self.path.to_owned(),
                    interface: InterfaceConfig {
                        private_key_file: interface
                            .private_key_file
                            .unwrap_or_else(|| daemon.state_dir.join("private.key")),
                        name: interface.name,
                        listen_port: interface.listen_port,
                        mtu: interface.mtu,
                        address: interface.address.unwrap_or(Ipv6Addr::UNSPECIFIED),
                        overlay_prefix: interface
                            .overlay_prefix
                            .unwrap_or_else(|| host_net(Ipv6Addr::UNSPECIFIED)),
                        persistent_keepalive: interface.persistent_keepalive,
                    },
                    backend,
                    daemon,
                    members,
                    failover,
                    vips,
                    registry: registry.flatten(),
                    k3s: k3s.flatten(),
                })
            }
            _ => {
                self.errors.sort_by_key(|e| e.line);
                Err(ConfigErrors(self.errors))
            }
        }
    }

    /// `[interface]`; `from_registry`: address and overlay_prefix may be left out (enrollment assigns them).
    fn interface(&mut self, raw: &Spanned<RawInterface>, from_registry: bool) -> Option<PartialInterface> {
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
            address: address.map_or(Some(None), |a| a.map(Some))?,
            overlay_prefix: prefix.map_or(Some(None), |p| p.map(Some))?,
            persistent_keepalive: keepalive?,
        })
    }

    fn backend(&mut self, raw: Option<&Spanned<RawBackend>>) -> Option<BackendConfig> {
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

    fn daemon(&mut self, raw: Option<&Spanned<RawDaemon>>) -> Option<DaemonConfig> {
        let mut out = DaemonConfig {
            state_dir: PathBuf::from("/var/lib/sdwand"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9581)),
            resync_interval: Duration::from_secs(10),
            teardown_on_exit: false,
            control_socket: PathBuf::from("/run/sdwand/sdwand.sock"),
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
        ok.then_some(out)
    }
}

struct PartialInterface {
    name: String,
    private_key_file: Option<PathBuf>,
    listen_port: u16,
    mtu: u32,
    /// `None` only with `[registry]`.
    address: Option<Ipv6Addr>,
    /// `None` only with `[registry]`.
    overlay_prefix: Option<Ipv6Net>,
    persistent_keepalive: Option<u16>,
}

fn parse_abs_path(s: &str) -> Result<PathBuf, String> {
    Path::new(s)
        .is_absolute()
        .then(|| PathBuf::from(s))
        .ok_or_else(|| "is not an absolute path".to_owned())
}

/// A humantime duration in `lo..=hi`.
fn parse_duration_in(s: &str, lo: Duration, hi: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("is not a duration ({e})"))?;
    if d < lo || d > hi {
        return Err(format!(
            "is out of range {}..={}",
            humantime::format_duration(lo),
            humantime::format_duration(hi)
        ));
    }
    Ok(d)
}

fn parse_host(s: &str) -> Result<Ipv6Addr, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Err(format!("has a prefix length; write the address alone ({})", net.addr()));
    }
    let a: Ipv6Addr = s.parse().map_err(|_| "is not an IPv6 address".to_owned())?;
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
        return Err("is not a unicast address".into());
    }
    Ok(a)
}

/// Whether Linux accepts `s` as an interface name (and it is safe as a file name for the UAPI socket).
pub fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s != "."
        && s != ".."
}

impl Config {
    /// Checks the parts that need this node's public key: the member carrying it must have this node's
    /// address, and no other member may use that address.
    pub fn check_identity(&self, own_public: &Key) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let is_self = m.public_key == *own_public;
            let (message, hint) = if is_self && m.address != self.interface.address {
                (
                    format!(
                        "carries this node's public key but address {} instead of interface.address {}",
                        m.address, self.interface.address
                    ),
                    "make the two addresses equal, or fix the key",
                )
            } else if !is_self && m.address == self.interface.address {
                (
                    format!("uses this node's address {} with another public key", m.address),
                    "give the member its own address, or fix the key",
                )
            } else {
                continue;
            };
            errors.push(ConfigError {
                path: self.source.clone(),
                line: m.line,
                key: format!("members[{i}]"),
                message,
                hint: hint.into(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The settings that a reload (SIGHUP) cannot change, with their current values, for a clear refusal.
    pub fn restart_only_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("interface.name", self.interface.name.clone()),
            (
                "interface.private_key_file",
                self.interface.private_key_file.display().to_string(),
            ),
            ("backend.kind", format!("{:?}", self.backend.kind)),
            (
                "backend.userspace_path",
                self.backend.userspace_path.display().to_string(),
            ),
            ("daemon.state_dir", self.daemon.state_dir.display().to_string()),
            ("daemon.metrics_listen", self.daemon.metrics_listen.to_string()),
            (
                "daemon.control_socket",
                self.daemon.control_socket.display().to_string(),
            ),
            ("failover.port", self.failover.port.to_string()),
            (
                "registry",
                format!("{:?}", self.registry.as_ref().map(RegistryConfig::restart_only)),
            ),
            (
                "k3s.role/bootstrap",
                format!("{:?}", self.k3s.as_ref().map(|k| (k.role, k.bootstrap))),
            ),
        ]
    }

    /// The overlay address of the member called `name` (VIP candidates are member names).
    pub fn member_address(&self, name: &str) -> Option<Ipv6Addr> {
        self.members.iter().find(|m| m.name == name).map(|m| m.address)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Spanned<RawInterface>,
    backend: Option<Spanned<RawBackend>>,
    daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    members: Vec<Spanned<RawMember>>,
    failover: Option<Spanned<failover::RawFailover>>,
    #[serde(default)]
    vip: Vec<Spanned<failover::RawVip>>,
    registry: Option<Spanned<registry::RawRegistry>>,
    k3s: Option<Spanned<registry::RawK3s>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    private_key_file: Option<Spanned<String>>,
    listen_port: Option<Spanned<i64>>,
    mtu: Option<Spanned<i64>>,
    address: Option<Spanned<String>>,
    overlay_prefix: Option<Spanned<String>>,
    persistent_keepalive: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<Spanned<String>>,
    userspace_path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    resync_interval: Option<Spanned<String>>,
    teardown_on_exit: Option<bool>,
    control_socket: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests;
