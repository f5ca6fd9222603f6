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
//! - `error.rs`: [`ConfigError`] and [`ConfigErrors`].
//!
//! This file keeps only [`load`] and [`parse`] and re-exports every public item, so callers name them
//! as `crate::config::X` and never reach into the files above.

use std::path::Path;

mod error;
mod raw;
mod schema;
mod validate;

pub use error::{ConfigError, ConfigErrors};
use raw::RawConfig;
pub use schema::{
    host_net, BackendConfig, BackendKind, Config, DaemonConfig, FailoverConfig, HealthCheck, HealthConfig,
    InterfaceConfig, K3sConfig, Member, PeerMetrics, RegistryConfig, VipConfig, DEFAULT_FAILOVER_PORT,
    DEFAULT_K3S_CONFIG_PATH,
};
pub use validate::valid_ifname;
use validate::{line_of, Ctx};

/// Where `sdwand` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sdwand/sdwand.toml";

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
    Ctx::new(path, text).validate(raw)
}

#[cfg(test)]
mod tests;
