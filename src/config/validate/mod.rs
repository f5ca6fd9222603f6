//! The validator: [`Ctx`] turns the serde input ([`raw`](super::raw)) into the validated
//! [`schema`](super::schema), collecting every problem of the file with its line, key and fix.
//!
//! One file per section: `interface.rs` (`[interface]`, `[backend]`, `[daemon]`), `members.rs`,
//! `failover.rs` (`[failover]`, `[[vip]]`), `registry.rs` (`[registry]`, `[k3s]`). Pure: nothing is read
//! from disk here (not the key file, not the enrollment token).

use std::net::Ipv6Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use toml::Spanned;

use super::raw::RawConfig;
use super::{host_net, Config, ConfigError, ConfigErrors, InterfaceConfig, NetworkPrefixes};

mod failover;
mod floating;
mod interface;
mod members;
mod registry;

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

pub(super) struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    /// A validator for `text`, the contents of `path`, with no problem found yet.
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Ctx {
            path,
            text,
            errors: Vec::new(),
        }
    }

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

    pub(super) fn validate(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
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
        let floating = self.floating(
            &raw.floating,
            &floating::Taken {
                overlay: interface.as_ref().and_then(|i| i.overlay_prefix),
                vips: vips.as_deref().unwrap_or_default(),
                members: &raw.members,
            },
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
            let iface = raw.interface.get_ref();
            self.registry(r, address, prefix).map(|mut reg| {
                for (key, field) in [
                    ("interface.address", &iface.address),
                    ("interface.overlay_prefix", &iface.overlay_prefix),
                ] {
                    if let Some(f) = field {
                        reg.key_lines.push((key, line_of(self.text, f.span().start)));
                    }
                }
                reg
            })
        });
        let k3s = raw.k3s.as_ref().map(|k| self.k3s(k, from_registry));
        let registry_ok = registry.as_ref().is_none_or(|r| r.is_some()) && k3s.as_ref().is_none_or(|k| k.is_some());
        match (interface, backend, daemon, members, failover, vips, floating) {
            (
                Some(interface),
                Some(backend),
                Some(daemon),
                Some(members),
                Some(failover),
                Some(vips),
                Some(floating),
            ) if self.errors.is_empty() && registry_ok => Ok(Config {
                source: self.path.to_owned(),
                interface: InterfaceConfig {
                    private_key_file: interface
                        .private_key_file
                        .unwrap_or_else(|| daemon.state_dir.join("private.key")),
                    name: interface.name,
                    listen_port: interface.listen_port,
                    mtu: interface.mtu,
                    mtu_from_file: interface.mtu_from_file,
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
                floating,
                registry: registry.flatten(),
                k3s: k3s.flatten(),
                prefixes: NetworkPrefixes::default(),
            }),
            _ => {
                self.errors.sort_by_key(|e| e.line);
                Err(ConfigErrors(self.errors))
            }
        }
    }
}

struct PartialInterface {
    name: String,
    private_key_file: Option<PathBuf>,
    listen_port: u16,
    mtu: u32,
    mtu_from_file: bool,
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
