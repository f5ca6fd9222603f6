//! Configuration: the TOML schema, its defaults and its validation.
//!
//! Parsing is pure (text in, [`Config`] or every problem out) so it is unit-tested without a file system;
//! [`load`] adds the file read. Every [`ConfigError`] names the file, the line, the key and how to fix it,
//! and all problems of a file are reported at once. Private-key handling lives in [`crate::keyfile`].
//!
//! Layout, one job per file:
//! - `schema.rs`: the validated types callers read ([`Config`] and its sections) and their queries;
//! - `raw.rs`: the serde input types (`Raw*`), as TOML gives them, with spans;
//! - `validate/`: the validator (`Ctx`), one file per section (`interface.rs`, `members.rs`,
//!   `failover.rs`, `registry.rs`);
//! - the error types [`ConfigError`] and [`ConfigErrors`], and what the TOML parser refuses as one
//!   ([`crate::problem::toml_problem`]), are [`crate::problem`]'s, shared with `sdwan-registry`.
//!
//! This file keeps only [`load`] and [`parse`] and re-exports every public item, so callers name them
//! as `crate::config::X` and never reach into the files above.

use std::path::Path;

mod raw;
mod schema;
mod validate;

use crate::problem::toml_problem;
pub use crate::problem::{ConfigError, ConfigErrors};
use raw::RawConfig;
pub use schema::{
    host_net, BackendConfig, BackendKind, Config, DaemonConfig, FailoverConfig, FloatingConfig, HealthCheck,
    HealthConfig, InterfaceConfig, K3sConfig, Member, NetworkPrefixes, PeerMetrics, PodNetworkKind, RegistryConfig,
    VipConfig, DEFAULT_CNI_CONF_DIR, DEFAULT_FAILOVER_PORT, DEFAULT_K3S_CONFIG_PATH,
};
pub use validate::valid_ifname;
use validate::Ctx;

/// Where `sdwand` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sdwand/sdwand.toml";

/// Where every key of sdwand's configuration is documented on an installed system (the `sdwand` package's
/// example, next to its copy of the README in `/usr/share/doc/sdwand/`).
pub const SDWAND_REFERENCE: &str = "/usr/share/doc/sdwand/examples/sdwand.example.toml";

/// The same, for `[registry]` and `[k3s]`.
pub const SDWAND_REGISTRY_REFERENCE: &str = "/usr/share/doc/sdwand/examples/sdwand-registry.example.toml";

/// Reads and validates the file at `path`. Touches nothing else (the key file is not read here).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            path: path.to_owned(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
            hint: format!(
                "create it (from {SDWAND_REFERENCE}, or {SDWAND_REGISTRY_REFERENCE} for a node of a registry) or \
                 pass another path with --config; default is {DEFAULT_PATH}"
            ),
        }])),
    }
}

/// Validates `text` as the contents of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let reference = |key: &str| {
                if key.starts_with("registry") || key.starts_with("k3s") {
                    SDWAND_REGISTRY_REFERENCE.to_owned()
                } else {
                    SDWAND_REFERENCE.to_owned()
                }
            };
            return Err(ConfigErrors(vec![toml_problem(path, text, &e, &reference)]));
        }
    };
    Ctx::new(path, text).validate(raw)
}

#[cfg(test)]
mod tests;
