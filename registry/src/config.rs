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
//! silent_after = "15s"                   # peers silent this long are listed `silent` (3 x sdwand's 5 s reports)
//! prefix_hold_down = "10m"               # a removed or reaped peer's /32 and prefixes are reused only after this
//! max_connections = 32768                # open connections at most; more are closed at once
//! header_read_timeout = "10s"            # a request's head must arrive within this (also the idle timeout)
//! max_connection_age = "10m"             # then a connection is closed after its request in flight
//! request_timeout = "10s"                # every request but the watch is answered within this (else 503)
//! watches_per_token = 4                  # concurrent long-poll watches of one token (429 beyond)
//! report_min_interval = "500ms"          # one report write per peer token per interval (429 sooner)
//! # metrics_token_file = "/etc/sdwan-registry/metrics-token"  # then GET /metrics needs this bearer token
//!
//! # [store]                             # where the records live; without it: SQLite in state_dir
//! # backend = "etcd"                    # "sqlite" (default) or "etcd"
//! # endpoints = ["https://192.0.2.1:2379", "https://192.0.2.2:2379", "https://192.0.2.3:2379"]
//! # key_prefix = "/sdwan-registry/"     # every key of this registry starts with it
//! # ca_file = "etcd-ca.pem"             # TLS to etcd (https:// endpoints need it)
//! # cert_file = "etcd-client.pem"       # a client certificate, if etcd asks for one (with key_file)
//! # key_file = "etcd-client-key.pem"
//! ```
//!
//! Plain HTTP carries bearer tokens in clear, so it needs `insecure = true`; without it the registry serves
//! HTTPS with the PEM certificate chain in `tls_cert` (leaf first) and the PEM private key in `tls_key`
//! (PKCS#8, PKCS#1 or SEC1). The files are read when the server starts ([`super::server::tls`]), so a bad file
//! stops it with a message naming that file.
//!
//! Relative file paths (`tls_cert`, `tls_key`, `metrics_token_file`) are taken from `$CREDENTIALS_DIRECTORY`
//! when it is set, else from the directory of the configuration file. systemd sets it to the copies the unit's
//! `LoadCredential=` lines make (`/run/credentials/sdwan-registry.service/`), which the transient user of
//! `DynamicUser=yes` can read while it cannot read `/etc/sdwan-registry/key.pem`: so one file,
//! `tls_cert = "cert.pem"`, names `/etc/sdwan-registry/cert.pem` when run by hand and its credential copy
//! under the unit, and the example configuration fits both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sdwand::problem::{toml_problem, ConfigError, ConfigErrors};
use serde::Deserialize;

use super::api;
use super::service::Ttls;
use super::store::etcd::{EtcdOptions, EtcdTls};
use super::store::StoreConfig;
use sdwand::http_serve;
use std::time::Duration;

/// Where `sdwan-registry` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sdwan-registry/registry.toml";

/// A validated registry configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The file it was read from.
    pub source: PathBuf,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// The store's directory (SQLite).
    pub state_dir: PathBuf,
    /// Which backend holds the records (`[store]`).
    pub store: StoreConfig,
    /// The certificate and key to serve HTTPS with; `None` serves plain HTTP (`insecure = true`).
    pub tls: Option<TlsFiles>,
    /// When silent peers are stale or reaped (`ephemeral_ttl`, `spot_ttl`), and how long released
    /// prefixes are held down (`prefix_hold_down`).
    pub ttls: Ttls,
    /// What clients may hold and how often they may call.
    pub limits: Limits,
    /// A file holding the bearer token `GET /metrics` requires; `None`: the metrics are public.
    pub metrics_token_file: Option<PathBuf>,
}

/// The registry's limits on clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections (`max_connections`, `header_read_timeout`, `max_connection_age`).
    pub http: http_serve::Limits,
    /// Requests (`request_timeout`, `watches_per_token`, `report_min_interval`).
    pub api: api::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            http: http_serve::Limits {
                max_connections: 32_768,
                header_read_timeout: Duration::from_secs(10),
                max_connection_age: Duration::from_secs(600),
                close_grace: CLOSE_GRACE,
            },
            api: api::Limits::default(),
        }
    }
}

/// How long a connection asked to close may finish its request in flight: the longest watch, and some.
const CLOSE_GRACE: Duration = Duration::from_millis(sdwand::vocab::wire::WATCH_MAX_WAIT_MS + 5_000);

/// The PEM files of the registry's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`tls_cert`).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (`tls_key`).
    pub key: PathBuf,
}

/// A configuration that cannot be used: every problem of the file, each with its line, key (or an
/// assignment that names it) and fix, in the format of sdwand's own configuration errors.
pub type ServerConfigError = ConfigErrors;

/// Where every key is documented on an installed system (the `sdwan-registry` package's example).
pub const REFERENCE: &str = "/usr/share/doc/sdwan-registry/examples/sdwan-registry.example.toml";

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
    #[serde(default, with = "humantime_serde")]
    silent_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    prefix_hold_down: Option<Duration>,
    max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_connection_age: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    watches_per_token: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    report_min_interval: Option<Duration>,
    metrics_token_file: Option<PathBuf>,
    store: Option<RawStore>,
}

/// `[store]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    key_prefix: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// The key prefix when `[store]` names none.
pub const DEFAULT_KEY_PREFIX: &str = "/sdwan-registry/";

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0u16; 8], 7443))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sdwan-registry")
}

/// The environment variable systemd sets to the directory of a service's credentials (`LoadCredential=`).
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Reads and validates the file at `path`; relative file paths are taken from `$CREDENTIALS_DIRECTORY` when
/// it is set (see the module's documentation).
pub fn load(path: &Path) -> Result<ServerConfig, ServerConfigError> {
    load_text(path).and_then(|text| parse_in(path, &text, credentials_dir().as_deref()))
}

/// `check-config`: [`load`], then what the start reads before the TLS handshake can be set up: the files
/// `tls_cert`, `tls_key` and `metrics_token_file` name can be read. Every problem at once.
pub fn check(path: &Path) -> Result<ServerConfig, ServerConfigError> {
    let text = load_text(path)?;
    let credentials = credentials_dir();
    let config = parse_in(path, &text, credentials.as_deref())?;
    let mut problems = Problems::new(path, &text);
    let etcd_tls = match &config.store {
        StoreConfig::Etcd(EtcdOptions { tls: Some(tls), .. }) => Some(tls),
        _ => None,
    };
    let files = config
        .tls
        .iter()
        .flat_map(|t| [("tls_cert", &t.cert), ("tls_key", &t.key)])
        .chain(config.metrics_token_file.iter().map(|f| ("metrics_token_file", f)))
        .chain(etcd_tls.iter().map(|t| ("ca_file", &t.ca)))
        .chain(
            etcd_tls
                .iter()
                .flat_map(|t| t.identity.iter())
                .flat_map(|(cert, key)| [("cert_file", cert), ("key_file", key)]),
        );
    for (key, file) in files {
        if let Err(e) = std::fs::File::open(file) {
            let hint = match &credentials {
                Some(dir) if file.starts_with(dir) => format!(
                    "systemd passes it as a credential: check the unit's LoadCredential= line for {} (systemctl \
                     cat sdwan-registry) and the file it copies",
                    file.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
                _ => "make the file readable by the user the registry runs as (relative paths are taken from \
                      the configuration's directory, or from $CREDENTIALS_DIRECTORY under systemd)"
                    .into(),
            };
            problems.keyed(key, format!("{}: cannot read: {e}", file.display()), hint);
        }
    }
    problems.finish().map(|()| config)
}

/// The directory of systemd's credentials for this service, if it set one.
fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn load_text(path: &Path) -> Result<String, ServerConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
            hint: format!("create it (from {REFERENCE}) or pass another path with --config; default is {DEFAULT_PATH}"),
        }])
    })
}

/// Validates `text`, read from `path`: relative file paths are taken from `path`'s directory.
pub fn parse(path: &Path, text: &str) -> Result<ServerConfig, ServerConfigError> {
    parse_in(path, text, None)
}

/// Validates `text`, read from `path`: relative file paths are taken from `credentials` when given (systemd's
/// `$CREDENTIALS_DIRECTORY`), else from `path`'s directory. Every problem at once, in file order.
pub fn parse_in(path: &Path, text: &str, credentials: Option<&Path>) -> Result<ServerConfig, ServerConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let mut problem = toml_problem(path, text, &e, &|_| REFERENCE.to_owned());
        if problem.key == "listen" {
            problem.hint = "an address and a port, e.g. listen = \"[::]:7443\" (every address) or \
                            \"192.0.2.10:7443\""
                .into();
        }
        ConfigErrors(vec![problem])
    })?;
    let mut problems = Problems::new(path, text);
    let beside = |file: PathBuf| match credentials.or(path.parent()) {
        Some(dir) => dir.join(file),
        None => file,
    };
    let limits = limits(&raw, &mut problems);
    let tls = tls_files(
        raw.insecure,
        raw.tls_cert.map(beside),
        raw.tls_key.map(beside),
        &mut problems,
    );
    if raw.state_dir.as_os_str().is_empty() {
        problems.keyed(
            "state_dir",
            "must not be empty".into(),
            "the store's directory, e.g. state_dir = \"/var/lib/sdwan-registry\"".into(),
        );
    }
    let ttls = ttls(
        raw.ephemeral_ttl,
        raw.spot_ttl,
        raw.silent_after,
        raw.prefix_hold_down,
        &mut problems,
    );
    if raw
        .metrics_token_file
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty())
    {
        problems.keyed(
            "metrics_token_file",
            "metrics_token_file must name a file, not be empty".into(),
            "name the token's file, or remove the line to serve /metrics without a token".into(),
        );
    }
    let store = store(raw.store, &beside, &mut problems);
    problems.finish()?;
    Ok(ServerConfig {
        source: path.to_owned(),
        listen: raw.listen,
        state_dir: raw.state_dir,
        store,
        tls,
        ttls,
        limits,
        metrics_token_file: raw.metrics_token_file.map(beside),
    })
}

/// The backend `[store]` names (SQLite without it), with its settings validated.
fn store(raw: Option<RawStore>, beside: &dyn Fn(PathBuf) -> PathBuf, problems: &mut Problems<'_>) -> StoreConfig {
    let Some(raw) = raw else {
        return StoreConfig::Sqlite;
    };
    let etcd_keys = !raw.endpoints.is_empty()
        || raw.key_prefix.is_some()
        || raw.ca_file.is_some()
        || raw.cert_file.is_some()
        || raw.key_file.is_some();
    match raw.backend.as_deref() {
        None | Some("sqlite") => {
            if etcd_keys {
                problems.keyed(
                    "backend",
                    "[store] sets etcd keys (endpoints, key_prefix, ca_file, cert_file, key_file) but the backend \
                     is sqlite"
                        .into(),
                    "set backend = \"etcd\" to use etcd, or remove those keys".into(),
                );
            }
            return StoreConfig::Sqlite;
        }
        Some("etcd") => {}
        Some(other) => {
            problems.keyed(
                "backend",
                format!("unknown store backend {other:?}"),
                "backend = \"sqlite\" (the embedded default) or backend = \"etcd\"".into(),
            );
            return StoreConfig::Sqlite;
        }
    }
    let example =
        "e.g. endpoints = [\"https://192.0.2.1:2379\", \"https://192.0.2.2:2379\", \"https://192.0.2.3:2379\"]";
    if raw.endpoints.is_empty() {
        problems.keyed(
            "endpoints",
            "backend = \"etcd\" needs the client URLs of the etcd members".into(),
            example.into(),
        );
    }
    let tls_files = [&raw.ca_file, &raw.cert_file, &raw.key_file];
    if tls_files
        .iter()
        .any(|f| f.as_ref().is_some_and(|f| f.as_os_str().is_empty()))
    {
        problems.keyed(
            "ca_file",
            "ca_file, cert_file and key_file must name files, not be empty".into(),
            "name the PEM files, or remove the lines to reach etcd without TLS".into(),
        );
    }
    let tls = raw.ca_file.is_some() || raw.cert_file.is_some() || raw.key_file.is_some();
    for endpoint in &raw.endpoints {
        let scheme_ok = match endpoint.split_once("://") {
            Some(("https", rest)) => tls && !rest.is_empty(),
            Some(("http", rest)) => !tls && !rest.is_empty(),
            _ => false,
        };
        if !scheme_ok {
            let hint = if tls {
                "with ca_file set, every endpoint is https://host:port".to_owned()
            } else {
                format!("http://host:port, or https://host:port with ca_file set ({example})")
            };
            problems.keyed(
                "endpoints",
                format!("{endpoint:?} is not a usable etcd client URL"),
                hint,
            );
        }
    }
    let identity = match (raw.cert_file, raw.key_file) {
        (Some(cert), Some(key)) => Some((beside(cert), beside(key))),
        (None, None) => None,
        (cert, _) => {
            let (set, missing) = if cert.is_some() {
                ("cert_file", "key_file")
            } else {
                ("key_file", "cert_file")
            };
            problems.keyed(
                set,
                format!("cert_file and key_file must be set together: {missing} is missing"),
                format!("add {missing}, the other half of etcd's client identity"),
            );
            None
        }
    };
    let tls = match raw.ca_file {
        Some(ca) => Some(EtcdTls {
            ca: beside(ca),
            identity,
        }),
        None if identity.is_some() => {
            problems.keyed(
                "ca_file",
                "a client certificate is set but no ca_file".into(),
                "set ca_file to the CA that signed etcd's certificates (TLS to etcd needs it)".into(),
            );
            None
        }
        None => None,
    };
    let key_prefix = raw.key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    if !key_prefix.starts_with('/') || !key_prefix.ends_with('/') || key_prefix.len() < 2 {
        problems.keyed(
            "key_prefix",
            format!("key_prefix {key_prefix:?} must start and end with / and name something"),
            format!("e.g. key_prefix = \"{DEFAULT_KEY_PREFIX}\" (one prefix per registry sharing an etcd)"),
        );
    }
    StoreConfig::Etcd(EtcdOptions {
        endpoints: raw.endpoints,
        key_prefix,
        tls,
    })
}

/// The problems of one file, each placed at the line of the key it concerns.
struct Problems<'a> {
    path: &'a Path,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Problems {
            path,
            text,
            list: Vec::new(),
        }
    }

    /// A problem of `key`, at the line that sets it (0 when the file leaves it to its default). A message
    /// that starts with the key (`max_connections = 0 is …`) is shown without repeating it.
    fn keyed(&mut self, key: &str, message: String, hint: String) {
        let line = key_line(self.text, key);
        let shown = if message.starts_with(key) { "" } else { key };
        self.list.push(ConfigError {
            path: self.path.to_owned(),
            line,
            key: shown.to_owned(),
            message,
            hint,
        });
    }

    /// Every problem, in file order (those of keys the file does not set last), or `Ok` when none.
    fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.list.is_empty() {
            return Ok(());
        }
        self.list.sort_by_key(|p| if p.line == 0 { usize::MAX } else { p.line });
        Err(ConfigErrors(self.list))
    }
}

/// The 1-based line that sets the top-level `key`, 0 when none does.
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// The limits from the file (defaults for what is absent, or out of range), each within its range.
fn limits(raw: &Raw, problems: &mut Problems<'_>) -> Limits {
    let d = Limits::default();
    let mut count = |key: &str, value: Option<usize>, default: usize, max: usize| match value {
        Some(n) if !(1..=max).contains(&n) => {
            problems.keyed(
                key,
                format!("{key} = {n} is out of range"),
                format!("use 1 to {max}; the default is {key} = {default}"),
            );
            default
        }
        v => v.unwrap_or(default),
    };
    let max_connections = count(
        "max_connections",
        raw.max_connections,
        d.http.max_connections,
        1_000_000,
    );
    let watches_per_token = count(
        "watches_per_token",
        raw.watches_per_token,
        d.api.watches_per_token,
        1024,
    );
    let mut span = |key: &str, value: Option<Duration>, default: Duration, min: Duration, max: Duration| match value {
        Some(t) if !(min..=max).contains(&t) => {
            problems.keyed(
                key,
                format!("{key} = \"{}\" is out of range", humantime::format_duration(t)),
                format!(
                    "use \"{}\" to \"{}\"; the default is {key} = \"{}\"",
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                    humantime::format_duration(default)
                ),
            );
            default
        }
        v => v.unwrap_or(default),
    };
    let (ms, s) = (Duration::from_millis, Duration::from_secs);
    Limits {
        http: http_serve::Limits {
            max_connections,
            header_read_timeout: span(
                "header_read_timeout",
                raw.header_read_timeout,
                d.http.header_read_timeout,
                ms(100),
                s(600),
            ),
            max_connection_age: span(
                "max_connection_age",
                raw.max_connection_age,
                d.http.max_connection_age,
                s(1),
                s(86_400),
            ),
            close_grace: d.http.close_grace,
        },
        api: api::Limits {
            request_timeout: span(
                "request_timeout",
                raw.request_timeout,
                d.api.request_timeout,
                ms(100),
                s(600),
            ),
            watches_per_token,
            report_min_interval: span(
                "report_min_interval",
                raw.report_min_interval,
                d.api.report_min_interval,
                Duration::ZERO,
                s(60),
            ),
        },
    }
}

/// The TLS setting: the files, or `None` for plain HTTP, which must be asked for with `insecure = true`.
fn tls_files(
    insecure: bool,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    problems: &mut Problems<'_>,
) -> Option<TlsFiles> {
    let credentials = "PEM files; relative paths from this file's directory, or under systemd from the \
                       unit's LoadCredential= copies";
    match (insecure, cert, key) {
        (true, None, None) => None,
        (true, _, _) => {
            problems.keyed(
                "insecure",
                "insecure = true and tls_cert/tls_key are both set: choose one".into(),
                "remove insecure = true to serve HTTPS, or remove tls_cert and tls_key to serve plain HTTP \
                 (labs only)"
                    .into(),
            );
            None
        }
        (false, None, None) => {
            problems.keyed(
                "tls_cert",
                "no TLS certificate is configured".into(),
                format!(
                    "set tls_cert and tls_key ({credentials}), or set insecure = true to serve plain HTTP (bearer \
                     tokens travel in clear: labs only)"
                ),
            );
            None
        }
        (false, Some(cert), Some(key)) if cert.as_os_str().is_empty() || key.as_os_str().is_empty() => {
            let which = if cert.as_os_str().is_empty() {
                "tls_cert"
            } else {
                "tls_key"
            };
            problems.keyed(
                which,
                "tls_cert and tls_key must name files, not be empty".into(),
                format!("e.g. tls_cert = \"cert.pem\" and tls_key = \"key.pem\" ({credentials})"),
            );
            None
        }
        (false, Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (false, cert, _) => {
            let (set, missing) = if cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            problems.keyed(
                set,
                format!("tls_cert and tls_key must be set together: {missing} is missing"),
                format!("add {missing} ({credentials})"),
            );
            None
        }
    }
}

/// The reaper's TTLs, `silent_after` and `prefix_hold_down` from the file (defaults for what is absent):
/// each at least a second (the hold-down may be 0: released prefixes are free at once), spot shorter than
/// ephemeral.
fn ttls(
    ephemeral: Option<Duration>,
    spot: Option<Duration>,
    silent_after: Option<Duration>,
    prefix_hold_down: Option<Duration>,
    problems: &mut Problems<'_>,
) -> Ttls {
    let defaults = Ttls::default();
    let ttls = Ttls {
        ephemeral: ephemeral.unwrap_or(defaults.ephemeral),
        spot: spot.unwrap_or(defaults.spot),
        silent_after: silent_after.unwrap_or(defaults.silent_after),
        prefix_hold_down: prefix_hold_down.unwrap_or(defaults.prefix_hold_down),
    };
    for (key, ttl) in [
        ("ephemeral_ttl", ttls.ephemeral),
        ("spot_ttl", ttls.spot),
        ("silent_after", ttls.silent_after),
    ] {
        if ttl < Duration::from_secs(1) {
            problems.keyed(
                key,
                format!(
                    "{key} = {:?} is too short: peers report every few seconds",
                    humantime::format_duration(ttl).to_string()
                ),
                "use at least \"1s\"".into(),
            );
        }
    }
    if ttls.spot >= ttls.ephemeral {
        problems.keyed(
            "spot_ttl",
            format!(
                "spot_ttl ({}) must be shorter than ephemeral_ttl ({}): spot peers are reaped first",
                humantime::format_duration(ttls.spot),
                humantime::format_duration(ttls.ephemeral)
            ),
            "lower spot_ttl or raise ephemeral_ttl (defaults \"2m\" and \"10m\")".into(),
        );
    }
    ttls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_server_example_config_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/sdwan-registry.example.toml"
        ));
        let cfg = load(path).unwrap();
        assert_eq!(cfg.ttls.spot, Duration::from_secs(120));
        assert!(cfg.tls.is_some());
    }

    /// The problems as their lines (without the "N problems" heading).
    fn check(text: &str) -> Result<ServerConfig, String> {
        parse(Path::new("r.toml"), text).map_err(|e| e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))
    }

    #[test]
    fn the_store_is_sqlite_unless_store_names_etcd() {
        let base = "insecure = true\nstate_dir = \"/tmp/r\"\n";
        assert_eq!(check(base).expect("valid").store, StoreConfig::Sqlite);
        let c = check(&format!(
            "{base}[store]\nbackend = \"etcd\"\nendpoints = [\"https://192.0.2.1:2379\"]\nca_file = \"ca.pem\"\n\
             cert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"
        ))
        .expect("valid");
        assert_eq!(
            c.store,
            StoreConfig::Etcd(EtcdOptions {
                endpoints: vec!["https://192.0.2.1:2379".into()],
                key_prefix: DEFAULT_KEY_PREFIX.into(),
                tls: Some(EtcdTls {
                    ca: "ca.pem".into(),
                    identity: Some(("c.pem".into(), "k.pem".into())),
                }),
            })
        );
        let plain = check(&format!(
            "{base}[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nkey_prefix = \"/lab/\"\n"
        ))
        .expect("valid");
        assert!(
            matches!(plain.store, StoreConfig::Etcd(EtcdOptions { ref key_prefix, tls: None, .. }) if key_prefix == "/lab/")
        );
    }

    #[test]
    fn etcd_settings_are_checked_with_a_fix() {
        let base = "insecure = true\nstate_dir = \"/tmp/r\"\n[store]\n";
        let problems = |store: &str| check(&format!("{base}{store}")).expect_err(store);
        let e = problems("backend = \"etcd\"\n");
        assert!(e.contains("endpoints") && e.contains("client URLs"), "{e}");
        let e = problems("backend = \"etcd\"\nendpoints = [\"https://192.0.2.1:2379\"]\n");
        assert!(
            e.contains("not a usable etcd client URL") && e.contains("ca_file"),
            "{e}"
        );
        let e = problems("backend = \"etcd\"\nendpoints = [\"http://192.0.2.1:2379\"]\ncert_file = \"c.pem\"\n");
        assert!(e.contains("key_file is missing"), "{e}");
        let e = problems("backend = \"etcd\"\nendpoints = [\"http://192.0.2.1:2379\"]\nkey_prefix = \"reg\"\n");
        assert!(e.contains("key_prefix") && e.contains("start and end with /"), "{e}");
        let e = problems("backend = \"mysql\"\n");
        assert!(e.contains("unknown store backend"), "{e}");
        let e = problems("endpoints = [\"http://192.0.2.1:2379\"]\n");
        assert!(e.contains("backend is sqlite"), "{e}");
    }

    #[test]
    fn insecure_is_explicit() {
        let c = check("listen = \"127.0.0.1:8080\"\nstate_dir = \"/tmp/r\"\ninsecure = true\n").expect("valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        let e = check("state_dir = \"/tmp/r\"\n").expect_err("no TLS, not insecure");
        assert!(e.contains("no TLS certificate") && e.contains("insecure = true"), "{e}");
        assert_eq!(c.tls, None);
        let text = "insecure = false\ntls_cert = \"/etc/r/c.pem\"\ntls_key = \"k.pem\"\n";
        let c = parse(Path::new("/etc/sdwan-registry/r.toml"), text).expect("TLS");
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/etc/r/c.pem".into(),
                key: "/etc/sdwan-registry/k.pem".into()
            })
        );
        assert!(check("tls_cert = \"\"\ntls_key = \"k\"\n")
            .expect_err("empty")
            .contains("name files"));
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
        assert_eq!(Ttls::default().prefix_hold_down, Duration::from_secs(600));
        let c = check(&format!("{base}prefix_hold_down = \"30m\"\n")).expect("valid");
        assert_eq!(c.ttls.prefix_hold_down, Duration::from_secs(1800));
        let c = check(&format!("{base}prefix_hold_down = \"0s\"\n")).expect("0: no hold-down");
        assert_eq!(c.ttls.prefix_hold_down, Duration::ZERO);
    }

    #[test]
    fn limits_parse_and_validate() {
        let base = "insecure = true\n";
        let c = check(base).expect("defaults");
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.metrics_token_file, None);
        let c = check(&format!(
            "{base}max_connections = 10\nheader_read_timeout = \"200ms\"\nmax_connection_age = \"1m\"\n\
             request_timeout = \"2s\"\nwatches_per_token = 2\nreport_min_interval = \"0s\"\n\
             metrics_token_file = \"m\"\n"
        ))
        .expect("valid");
        assert_eq!(c.limits.http.max_connections, 10);
        assert_eq!(c.limits.http.header_read_timeout, Duration::from_millis(200));
        assert_eq!(c.limits.http.max_connection_age, Duration::from_secs(60));
        assert_eq!(c.limits.api.request_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.api.watches_per_token, 2);
        assert_eq!(c.limits.api.report_min_interval, Duration::ZERO);
        assert_eq!(c.metrics_token_file, Some(PathBuf::from("m")));
        let e = check(&format!("{base}max_connections = 0\n")).expect_err("zero");
        assert!(e.contains("max_connections = 0 is out of range"), "{e}");
        let e = check(&format!("{base}header_read_timeout = \"1ms\"\n")).expect_err("too short");
        assert!(e.contains("header_read_timeout") && e.contains("100ms"), "{e}");
        let e = check(&format!("{base}metrics_token_file = \"\"\n")).expect_err("empty");
        assert!(e.contains("metrics_token_file"), "{e}");
    }

    #[test]
    fn relative_files_come_from_the_credentials_directory_under_systemd() {
        let text = "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nmetrics_token_file = \"m\"\n";
        let path = Path::new("/etc/sdwan-registry/registry.toml");
        let by_hand = parse(path, text).expect("valid");
        assert_eq!(
            by_hand.tls,
            Some(TlsFiles {
                cert: "/etc/sdwan-registry/cert.pem".into(),
                key: "/etc/sdwan-registry/key.pem".into()
            })
        );
        let creds = Path::new("/run/credentials/sdwan-registry.service");
        let unit = parse_in(path, text, Some(creds)).expect("valid");
        assert_eq!(
            unit.tls,
            Some(TlsFiles {
                cert: creds.join("cert.pem"),
                key: creds.join("key.pem")
            })
        );
        assert_eq!(unit.metrics_token_file, Some(creds.join("m")));
        let absolute = "tls_cert = \"/srv/c.pem\"\ntls_key = \"/srv/k.pem\"\n";
        let unit = parse_in(path, absolute, Some(creds)).expect("valid");
        assert_eq!(unit.tls.expect("tls").cert, PathBuf::from("/srv/c.pem"));
    }

    /// The example configuration names the files the unit passes as credentials, by the credential names.
    #[test]
    fn example_config_matches_the_unit() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let unit = std::fs::read_to_string(root.join("systemd/sdwan-registry.service")).expect("unit");
        let example = root.join("config/sdwan-registry.example.toml");
        let creds = Path::new("/run/credentials/sdwan-registry.service");
        let cfg = parse_in(
            &example,
            &std::fs::read_to_string(&example).expect("example"),
            Some(creds),
        )
        .expect("valid");
        let tls = cfg.tls.expect("the example serves HTTPS");
        for (file, source) in [
            (&tls.cert, DEFAULT_PATH.replace("registry.toml", "cert.pem")),
            (&tls.key, DEFAULT_PATH.replace("registry.toml", "key.pem")),
        ] {
            let name = file.strip_prefix(creds).expect("a credential").display().to_string();
            let line = format!("LoadCredential={name}:{source}");
            assert!(unit.lines().any(|l| l == line), "the unit has no {line:?}");
        }
        let by_hand = load(&example).expect("valid").tls.expect("HTTPS");
        assert_eq!(by_hand.cert, root.join("config/cert.pem"));
        assert!(
            unit.contains(&format!("--config {DEFAULT_PATH}")),
            "the unit reads another file"
        );
    }

    /// Every problem at once, each with its line, its key and a fix, in file order, like sdwand's.
    #[test]
    fn problems_come_all_at_once_with_line_key_and_fix() {
        let text = "insecure = true\nspot_ttl = \"20m\"\nmax_connections = 0\nstate_dir = \"\"\n";
        let e = parse(Path::new("/etc/sdwan-registry/registry.toml"), text)
            .expect_err("three problems")
            .to_string();
        assert_eq!(
            e,
            "3 problems in configuration\n  \
             /etc/sdwan-registry/registry.toml:2: spot_ttl (20m) must be shorter than ephemeral_ttl (10m): spot peers \
             are reaped first (fix: lower spot_ttl or raise ephemeral_ttl (defaults \"2m\" and \"10m\"))\n  \
             /etc/sdwan-registry/registry.toml:3: max_connections = 0 is out of range (fix: use 1 to 1000000; the \
             default is max_connections = 32768)\n  \
             /etc/sdwan-registry/registry.toml:4: state_dir: must not be empty (fix: the store's directory, e.g. \
             state_dir = \"/var/lib/sdwan-registry\")"
        );
    }

    /// What serde refuses names the key and says what to write; the reference is an installed file.
    #[test]
    fn serde_problems_name_the_key_and_a_fix() {
        let e = check("insecure = true\nlisten = \"0.0.0.0\"\n").expect_err("no port");
        assert!(
            e.starts_with("r.toml:2: listen: invalid socket address syntax (fix: an address and a port, e.g. listen = \"[::]:7443\""),
            "{e}"
        );
        let e = check("insecure = true\nspot_ttl = \"1m\"\nspot_ttl = \"1m\"\n").expect_err("duplicate");
        assert!(e.starts_with("r.toml:3: spot_ttl: duplicate key (fix: keep one"), "{e}");
        let e = check("insecure = true\nephemeral_tll = \"10m\"\n").expect_err("typo");
        assert!(
            e.contains("ephemeral_tll") && e.contains(&format!("did you mean `ephemeral_ttl`? (see {REFERENCE}")),
            "{e}"
        );
        let e = check("insecure = true\nspot_ttl = 60\n").expect_err("a number");
        assert!(e.contains("spot_ttl = \"2m\""), "{e}");
        let e = check("tls_cert = \"c.pem\"\n").expect_err("half");
        assert!(
            e.starts_with("r.toml:1: tls_cert and tls_key must be set together: tls_key is missing"),
            "{e}"
        );
    }

    /// `check-config` names the key of a file the start could not read.
    #[test]
    fn check_names_the_key_of_an_unreadable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.toml");
        std::fs::write(dir.path().join("cert.pem"), "x").expect("write");
        std::fs::write(
            &path,
            "state_dir = \"/tmp/r\"\ntls_cert = \"cert.pem\"\ntls_key = \"keys.pem\"\n",
        )
        .expect("write");
        let e = super::check(&path).expect_err("no key file");
        assert_eq!((e.0.len(), e.0[0].line, e.0[0].key.as_str()), (1, 3, "tls_key"), "{e}");
        assert!(e.0[0].message.contains("keys.pem: cannot read"), "{e}");
        std::fs::write(dir.path().join("keys.pem"), "x").expect("write");
        assert!(super::check(&path).is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        let e = check("insecure = true\nlisten = \"nowhere\"\n").expect_err("bad address");
        assert!(e.starts_with("r.toml:2:"), "{e}");
        let e = check("insecure = true\n\nlsten = \"[::]:1\"\n").expect_err("unknown key");
        assert!(e.starts_with("r.toml:3:"), "{e}");
    }
}
