//! `sdwan-registry`'s configuration file (TOML).
//!
//! ```toml
//! listen = "[::]:7443"                   # address of the HTTP API
//! state_dir = "/var/lib/sdwan-registry"  # the store lives here (registry.db)
//! insecure = true                        # plain HTTP: labs only
//! # tls_cert = "/etc/sdwan-registry/cert.pem"
//! # tls_key = "/etc/sdwan-registry/key.pem"
//! ephemeral_ttl = "10m"                  # silent ephemeral peers are removed after this (persistent: shown stale)
//! spot_ttl = "2m"                        # silent spot peers are removed after this (shorter than ephemeral_ttl)
//! ```
//!
//! Plain HTTP carries bearer tokens in clear, so it needs `insecure = true`; without it the registry needs
//! a certificate and key. TLS serving is not in this build yet: a configuration that asks for it is refused
//! with a message that says so, rather than silently serving plain HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::service::Ttls;
use std::time::Duration;

/// Where `sdwan-registry` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sdwan-registry/registry.toml";

/// A validated registry configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The file it was read from.
    pub source: PathBuf,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// The store's directory.
    pub state_dir: PathBuf,
    /// When silent peers are stale or reaped (`ephemeral_ttl`, `spot_ttl`).
    pub ttls: Ttls,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The settings do not make a usable server.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default)]
    insecure: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    ephemeral_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    spot_ttl: Option<Duration>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0u16; 8], 7443))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sdwan-registry")
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<RegistryConfig, RegistryConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistryConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Validates `text`, read from `path` (used in messages only).
pub fn parse(path: &Path, text: &str) -> Result<RegistryConfig, RegistryConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| RegistryConfigError::Parse {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        }),
        message: e.message().to_owned(),
    })?;
    let invalid = |message: &str| RegistryConfigError::Invalid {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    match (raw.insecure, raw.tls_cert.is_some(), raw.tls_key.is_some()) {
        (true, false, false) => {}
        (true, _, _) => return Err(invalid("insecure = true and tls_cert/tls_key are both set: choose one")),
        (false, false, false) => {
            return Err(invalid(
                "no TLS certificate is configured: set tls_cert and tls_key, or set insecure = true to serve \
                 plain HTTP (bearer tokens travel in clear: labs only)",
            ))
        }
        (false, true, true) => {
            return Err(invalid(
                "TLS serving is not available in this build of sdwan-registry yet: set insecure = true (labs \
                 only) and remove tls_cert/tls_key",
            ))
        }
        (false, _, _) => return Err(invalid("tls_cert and tls_key must be set together")),
    }
    if raw.state_dir.as_os_str().is_empty() {
        return Err(invalid("state_dir must not be empty"));
    }
    let ttls = ttls(raw.ephemeral_ttl, raw.spot_ttl).map_err(|m| invalid(&m))?;
    Ok(RegistryConfig {
        source: path.to_owned(),
        listen: raw.listen,
        state_dir: raw.state_dir,
        ttls,
    })
}

/// The reaper's TTLs from the file (defaults for what is absent): both at least a second, spot shorter.
fn ttls(ephemeral: Option<Duration>, spot: Option<Duration>) -> Result<Ttls, String> {
    let defaults = Ttls::default();
    let ttls = Ttls {
        ephemeral: ephemeral.unwrap_or(defaults.ephemeral),
        spot: spot.unwrap_or(defaults.spot),
    };
    for (key, ttl) in [("ephemeral_ttl", ttls.ephemeral), ("spot_ttl", ttls.spot)] {
        if ttl < Duration::from_secs(1) {
            return Err(format!(
                "{key} = {:?} is too short: peers report every few seconds; use at least \"1s\"",
                humantime::format_duration(ttl).to_string()
            ));
        }
    }
    if ttls.spot >= ttls.ephemeral {
        return Err(format!(
            "spot_ttl ({}) must be shorter than ephemeral_ttl ({}): spot peers are reaped first",
            humantime::format_duration(ttls.spot),
            humantime::format_duration(ttls.ephemeral)
        ));
    }
    Ok(ttls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<RegistryConfig, String> {
        parse(Path::new("r.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn insecure_is_explicit() {
        let c = check("listen = \"127.0.0.1:8080\"\nstate_dir = \"/tmp/r\"\ninsecure = true\n").expect("valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        let e = check("state_dir = \"/tmp/r\"\n").expect_err("no TLS, not insecure");
        assert!(e.contains("no TLS certificate") && e.contains("insecure = true"), "{e}");
        let e = check("insecure = false\ntls_cert = \"c\"\ntls_key = \"k\"\n").expect_err("TLS not built yet");
        assert!(e.contains("not available"), "{e}");
        assert!(check("tls_cert = \"c\"\n").expect_err("half").contains("together"));
        assert!(check("insecure = true\ntls_key = \"k\"\n")
            .expect_err("both")
            .contains("choose one"));
    }

    #[test]
    fn ttls_parse_and_validate() {
        let base = "insecure = true\n";
        assert_eq!(check(base).expect("defaults").ttls, Ttls::default());
        let c = check(&format!("{base}ephemeral_ttl = \"1h 30m\"\nspot_ttl = \"45s\"\n")).expect("valid");
        assert_eq!(c.ttls.ephemeral, Duration::from_secs(5400));
        assert_eq!(c.ttls.spot, Duration::from_secs(45));
        let e = check(&format!("{base}ephemeral_ttl = \"1m\"\n")).expect_err("spot (2m) not shorter");
        assert!(
            e.contains("spot_ttl (2m) must be shorter than ephemeral_ttl (1m)"),
            "{e}"
        );
        let e = check(&format!("{base}spot_ttl = \"0s\"\n")).expect_err("zero");
        assert!(e.contains("spot_ttl") && e.contains("too short"), "{e}");
        let e = check(&format!("{base}\nspot_ttl = \"soon\"\n")).expect_err("not a duration");
        assert!(e.starts_with("r.toml:3:"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let e = check("insecure = true\nlisten = \"nowhere\"\n").expect_err("bad address");
        assert!(e.starts_with("r.toml:2:"), "{e}");
        let e = check("insecure = true\n\nlsten = \"[::]:1\"\n").expect_err("unknown key");
        assert!(e.starts_with("r.toml:3:"), "{e}");
    }
}
