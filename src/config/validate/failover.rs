//! `[failover]` and `[[vip]]`: the VIP failover settings and the VIPs with their candidates and health checks.
//!
//! Validation only; the names in `candidates` stay names here (the daemon resolves them with
//! [`Config::member_address`](crate::config::Config::member_address)), and nothing is read from disk.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};

use std::time::Duration;

use ipnet::Ipv6Net;
use toml::Spanned;

use super::{parse_abs_path, parse_duration_in, parse_host, Ctx};
use crate::config::raw::{RawFailover, RawHealth, RawInterface, RawMember, RawVip};
use crate::config::{FailoverConfig, HealthCheck, HealthConfig, VipConfig, DEFAULT_FAILOVER_PORT as DEFAULT_PORT};
use crate::vocab::MAX_CANDIDATES;

/// The quorum settings of one `[[vip]]` or `[[floating]]` entry, as [`Ctx::quorum`] checks them.
pub(super) struct Voters<'a> {
    /// `quorum`, if given.
    pub(super) quorum: Option<bool>,
    /// `witnesses`, if given.
    pub(super) witnesses: Option<&'a Spanned<Vec<Spanned<String>>>>,
    /// The dotted key of `witnesses` (`vip[0].witnesses`).
    pub(super) key: String,
    /// The table and the thing it configures, for messages: `("[[vip]]", "VIP")`.
    pub(super) what: (&'static str, &'static str),
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

impl Ctx<'_> {
    /// An optional integer key in `lo..=hi`, `default` when absent.
    fn int_or<T: TryFrom<i64>>(
        &mut self,
        field: Option<&Spanned<i64>>,
        key: &str,
        (lo, hi): (i64, i64),
        default: T,
        hint: &str,
    ) -> Option<T> {
        match field {
            Some(f) => self.int_in(f, key, lo, hi, hint),
            None => Some(default),
        }
    }

    /// An optional duration key in `lo..=hi`, `default` when absent.
    fn duration_or(
        &mut self,
        field: Option<&Spanned<String>>,
        key: &str,
        (lo, hi): (Duration, Duration),
        default: Duration,
        hint: &str,
    ) -> Option<Duration> {
        match field {
            Some(f) => self.parse_str(f, key, hint, |s| parse_duration_in(s, lo, hi)),
            None => Some(default),
        }
    }

    /// `[failover]`; `listen_port` is the validated `interface.listen_port`, if it is valid.
    pub(super) fn failover(
        &mut self,
        raw: Option<&Spanned<RawFailover>>,
        iface: &RawInterface,
        listen_port: Option<u16>,
    ) -> Option<FailoverConfig> {
        let empty = RawFailover::default();
        let r = raw.map_or(&empty, |r| r.get_ref());
        let port = self.int_or(
            r.port.as_ref(),
            "failover.port",
            (1, 65535),
            DEFAULT_PORT,
            "a free UDP port other than interface.listen_port, below 1024 so only root can bind it, e.g. 851",
        );
        let interval = self.duration_or(
            r.interval.as_ref(),
            "failover.interval",
            (10 * MS, 10 * SECOND),
            50 * MS,
            "a duration between 10ms and 10s, e.g. \"50ms\"",
        );
        let dead_after = self.int_or(
            r.dead_after.as_ref(),
            "failover.dead_after",
            (2, 100),
            4,
            "intervals of silence before a candidate is dead, e.g. 4",
        );
        let preempt_delay = self.duration_or(
            r.preempt_delay.as_ref(),
            "failover.preempt_delay",
            (Duration::ZERO, HOUR),
            5 * SECOND,
            "a duration between 0s and 1h, e.g. \"5s\"",
        );
        if let (Some(port), Some(listen_port)) = (port, listen_port) {
            if port == listen_port {
                match (&r.port, &iface.listen_port) {
                    (Some(p), _) => self.error(
                        p.span(),
                        "failover.port",
                        format!("{port} is also interface.listen_port"),
                        "heartbeats need a UDP port of their own, e.g. 851",
                    ),
                    // The defaults differ, so an unset failover.port clashes only with a set listen_port.
                    (None, Some(lp)) => self.error(
                        lp.span(),
                        "interface.listen_port",
                        format!("{port} is also failover.port (its default)"),
                        "pick another listen_port, or set failover.port to a free UDP port",
                    ),
                    (None, None) => {}
                }
                return None;
            }
        }
        Some(FailoverConfig {
            port: port?,
            interval: interval?,
            dead_after: dead_after?,
            preempt: r.preempt.unwrap_or(false),
            preempt_delay: preempt_delay?,
        })
    }

    /// `[[vip]]`, checked against the members as far as they parse (their own problems are reported by
    /// `members`) and against this node's address. With `[registry]` (`from_registry`) the candidates name
    /// registry peers, which are not known here: their names are not checked against `[[members]]`.
    pub(super) fn vips(
        &mut self,
        raw: &[Spanned<RawVip>],
        members: &[Spanned<RawMember>],
        own: Option<Ipv6Addr>,
        from_registry: bool,
    ) -> Option<Vec<VipConfig>> {
        let names: HashSet<&str> = members.iter().map(|m| m.get_ref().name.get_ref().as_str()).collect();
        let mut out = Vec::with_capacity(raw.len());
        let mut seen: HashMap<Ipv6Addr, usize> = HashMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let before = self.errors.len();
            let r = spanned.get_ref();
            let at = |k: &str| format!("vip[{i}].{k}");
            let address = self.parse_str(
                &r.address,
                &at("address"),
                "a free IPv6 address for the service, e.g. \"fd00:5d:f::1\" (no prefix length)",
                parse_host,
            );
            if let Some(a) = address {
                if let Some(first) = seen.insert(a, i) {
                    self.error(
                        r.address.span(),
                        at("address"),
                        format!("{a} is also the address of vip[{first}]"),
                        "give every VIP its own address",
                    );
                } else if let Some(why) = taken_by(a, members, own) {
                    self.error(
                        r.address.span(),
                        at("address"),
                        format!("{a} {why}"),
                        "a VIP needs an address no member is reached at",
                    );
                }
            }
            let candidates = self.candidates(
                &r.candidates,
                (!from_registry).then_some(&names),
                &at("candidates"),
                "VIP",
            );
            let health = r
                .health
                .as_ref()
                .and_then(|h| self.health(h, &format!("vip[{i}].health")));
            let quorum = self.quorum(
                Voters {
                    quorum: r.quorum,
                    witnesses: r.witnesses.as_ref(),
                    key: format!("vip[{i}].witnesses"),
                    what: ("[[vip]]", "VIP"),
                },
                candidates.as_deref(),
                (!from_registry).then_some(&names),
            );
            if self.errors.len() == before {
                if let (Some(address), Some(candidates)) = (address, candidates) {
                    out.push(VipConfig {
                        address,
                        candidates,
                        health,
                        quorum,
                        line: super::line_of(self.text, spanned.span().start),
                    });
                }
            }
        }
        (out.len() == raw.len()).then_some(out)
    }

    /// `quorum` and `witnesses` of a `[[vip]]` or `[[floating]]` entry: witnesses only with `quorum = true`,
    /// each a member (when `names` is known) named once, and none of them a candidate.
    pub(super) fn quorum(
        &mut self,
        v: Voters<'_>,
        candidates: Option<&[String]>,
        names: Option<&HashSet<&str>>,
    ) -> Option<Vec<String>> {
        let Voters {
            quorum,
            witnesses,
            key,
            what: (table, thing),
        } = v;
        let on = quorum.unwrap_or(false);
        let Some(raw) = witnesses else {
            return on.then(Vec::new);
        };
        if !on {
            self.error(
                raw.span(),
                &key,
                "witnesses are set but quorum mode is off".to_owned(),
                format!("add `quorum = true` to this {table}, or remove `witnesses`"),
            );
            return None;
        }
        let mut out: Vec<String> = Vec::with_capacity(raw.get_ref().len());
        for (j, name) in raw.get_ref().iter().enumerate() {
            let n = name.get_ref();
            let problem = if let Some(first) = out.iter().position(|o| o == n) {
                Some((format!("{n:?} is also witnesses[{first}]"), "name every witness once"))
            } else if candidates.is_some_and(|c| c.contains(n)) {
                Some((
                    format!("{n:?} is a candidate of this {thing}"),
                    "a candidate votes already: name only members that are not candidates",
                ))
            } else if names.is_some_and(|names| !names.contains(n.as_str())) {
                Some((
                    format!("{n:?} is not the name of a [[members]] entry"),
                    "use the name of a member",
                ))
            } else {
                None
            };
            if let Some((what, fix)) = problem {
                self.error(name.span(), format!("{key}[{j}]"), what, fix);
            }
            out.push(n.clone());
        }
        Some(out)
    }

    /// A candidate list whose dotted key is `key`, for a `what` (`VIP`, `floating prefix`); the names are
    /// checked against `names` when given.
    pub(super) fn candidates(
        &mut self,
        raw: &Spanned<Vec<Spanned<String>>>,
        names: Option<&HashSet<&str>>,
        key: &str,
        what: &str,
    ) -> Option<Vec<String>> {
        let list = raw.get_ref();
        if list.is_empty() || list.len() > MAX_CANDIDATES {
            self.error(
                raw.span(),
                key,
                format!("has {} names; a {what} needs 1 to {MAX_CANDIDATES}", list.len()),
                format!("list the members that may hold the {what}, in promotion order"),
            );
            return None;
        }
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        let mut ok = true;
        for (j, name) in list.iter().enumerate() {
            let n = name.get_ref();
            if let Some(first) = out.iter().position(|o| o == n) {
                self.error(
                    name.span(),
                    format!("{key}[{j}]"),
                    format!("{n:?} is also candidates[{first}]"),
                    "name every candidate once",
                );
                ok = false;
            } else if names.is_some_and(|names| !names.contains(n.as_str())) {
                self.error(
                    name.span(),
                    format!("{key}[{j}]"),
                    format!("{n:?} is not the name of a [[members]] entry"),
                    "use the name of a member (this node's own entry included)",
                );
                ok = false;
            }
            out.push(n.clone());
        }
        ok.then_some(out)
    }

    /// A health check table whose dotted key is `base` (`vip[0].health`, `k3s.health`).
    pub(super) fn health(&mut self, raw: &Spanned<RawHealth>, base: &str) -> Option<HealthConfig> {
        let r = raw.get_ref();
        let at = |k: &str| format!("{base}.{k}");
        let kind = self.parse_str(&r.kind, &at("kind"), "one of \"tcp\", \"http\", \"https\"", |s| {
            ["tcp", "http", "https"]
                .into_iter()
                .find(|k| *k == s)
                .ok_or_else(|| "is not a health check kind".to_owned())
        });
        let interval = self.duration_or(
            r.interval.as_ref(),
            &at("interval"),
            (100 * MS, HOUR),
            SECOND,
            "a duration between 100ms and 1h, e.g. \"1s\"",
        );
        let timeout = match (&r.timeout, interval) {
            (Some(t), _) => self.parse_str(
                t,
                &at("timeout"),
                "a duration shorter than interval, e.g. \"500ms\"",
                |s| {
                    let d = parse_duration_in(s, MS, HOUR)?;
                    match interval {
                        Some(iv) if d >= iv => Err(format!(
                            "is not shorter than interval {}",
                            humantime::format_duration(iv)
                        )),
                        _ => Ok(d),
                    }
                },
            ),
            (None, Some(iv)) => Some((500 * MS).min(iv / 2)),
            (None, None) => None,
        };
        let rise = self.int_or(
            r.rise.as_ref(),
            &at("rise"),
            (1, 10),
            2,
            "passes in a row to become healthy, e.g. 2",
        );
        let fall = self.int_or(
            r.fall.as_ref(),
            &at("fall"),
            (1, 10),
            3,
            "failures in a row to become unhealthy, e.g. 3",
        );
        let check = match kind? {
            "tcp" => self.tcp_check(raw, base),
            kind => self.http_check(raw, base, kind),
        };
        Some(HealthConfig {
            check: check?,
            interval: interval?,
            timeout: timeout?,
            rise: rise?,
            fall: fall?,
        })
    }

    /// Reports each key of `keys` that is set although `kind` does not use it.
    fn unused(&mut self, keys: &[(&str, &Option<Spanned<String>>)], base: &str, kind: &str, used_by: &str) -> bool {
        let mut ok = true;
        for (name, field) in keys {
            if let Some(f) = field {
                self.error(
                    f.span(),
                    format!("{base}.{name}"),
                    format!("is not used by kind = \"{kind}\""),
                    format!("remove it, or use kind = {used_by}"),
                );
                ok = false;
            }
        }
        ok
    }

    fn tcp_check(&mut self, raw: &Spanned<RawHealth>, base: &str) -> Option<HealthCheck> {
        let r = raw.get_ref();
        let tls = [
            ("url", &r.url),
            ("ca_file", &r.ca_file),
            ("client_cert", &r.client_cert),
            ("client_key", &r.client_key),
        ];
        let ok = self.unused(&tls, base, "tcp", "\"http\" or \"https\"");
        let Some(target) = &r.target else {
            self.error(
                raw.span(),
                base.to_owned(),
                "kind = \"tcp\" needs target",
                "add target = \"[::1]:6443\" (the address and port to connect to)",
            );
            return None;
        };
        let target = self.parse_str(
            target,
            &format!("{base}.target"),
            "an IP address and port such as \"[::1]:6443\" or \"127.0.0.1:6443\" (not a host name)",
            |s| s.parse::<SocketAddr>().map_err(|_| "is not an address:port".to_owned()),
        )?;
        ok.then_some(HealthCheck::Tcp { target })
    }

    fn http_check(&mut self, raw: &Spanned<RawHealth>, base: &str, kind: &str) -> Option<HealthCheck> {
        let r = raw.get_ref();
        let at = |k: &str| format!("{base}.{k}");
        let mut ok = self.unused(&[("target", &r.target)], base, kind, "\"tcp\"");
        if kind == "http" {
            let tls = [
                ("ca_file", &r.ca_file),
                ("client_cert", &r.client_cert),
                ("client_key", &r.client_key),
            ];
            ok &= self.unused(&tls, base, kind, "\"https\"");
        }
        let Some(url) = &r.url else {
            self.error(
                raw.span(),
                base.to_owned(),
                format!("kind = \"{kind}\" needs url"),
                format!("add url = \"{kind}://[::1]:6443/readyz\" (the URL to GET; 2xx is healthy)"),
            );
            return None;
        };
        let url = self.parse_str(
            url,
            &at("url"),
            &format!("a URL such as \"{kind}://[::1]:6443/readyz\""),
            |s| parse_url(s, kind),
        );
        if kind == "http" {
            return ok.then_some(HealthCheck::Http { url: url? });
        }
        let mut path = |field: &Option<Spanned<String>>, key: &str| match field {
            Some(f) => {
                let p = self.parse_str(f, &at(key), "an absolute path to a PEM file", parse_abs_path);
                ok &= p.is_some();
                p
            }
            None => None,
        };
        let ca_file = path(&r.ca_file, "ca_file");
        let client_cert = path(&r.client_cert, "client_cert");
        let client_key = path(&r.client_key, "client_key");
        for (given, missing, field) in [
            ("client_cert", "client_key", &r.client_cert),
            ("client_key", "client_cert", &r.client_key),
        ] {
            if let (Some(f), false) = (field, r.client_cert.is_some() && r.client_key.is_some()) {
                self.error(
                    f.span(),
                    at(given),
                    format!("is set without {missing}"),
                    "give both client_cert and client_key, or neither",
                );
                ok = false;
            }
        }
        ok.then_some(HealthCheck::Https {
            url: url?,
            ca_file,
            client_cert,
            client_key,
        })
    }
}

/// Why `a` cannot be a VIP: whose address it is, or whose routed prefix it is inside.
fn taken_by(a: Ipv6Addr, members: &[Spanned<RawMember>], own: Option<Ipv6Addr>) -> Option<String> {
    if own == Some(a) {
        return Some("is this node's interface.address".into());
    }
    for (j, m) in members.iter().enumerate() {
        let m = m.get_ref();
        let name = m.name.get_ref();
        if m.address.get_ref().parse::<Ipv6Addr>().ok() == Some(a) {
            return Some(format!("is the address of members[{j}] ({name:?})"));
        }
        let inside = m
            .routed_prefixes
            .iter()
            .filter_map(|p| p.get_ref().parse::<Ipv6Net>().ok())
            .find(|p| p.contains(&a));
        if let Some(p) = inside {
            return Some(format!("is inside routed prefix {p} of members[{j}] ({name:?})"));
        }
    }
    None
}

/// Checks an `http(s)://` URL of scheme `kind` with the parser the HTTP client uses.
fn parse_url(s: &str, kind: &str) -> Result<String, String> {
    let Some((scheme, _)) = s.split_once("://") else {
        return Err(format!("has no scheme (write {kind}://…)"));
    };
    let url = reqwest::Url::parse(s).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !scheme.eq_ignore_ascii_case(kind) {
        return Err(format!("is not an {kind}:// URL, as kind = \"{kind}\" needs"));
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if url.fragment().is_some() {
        return Err("has a #fragment, which is never sent to the server".into());
    }
    Ok(s.to_owned())
}
