//! The serde input: the file as TOML gives it, every value still a string or integer with its span.
//!
//! No checks and no defaults here (`deny_unknown_fields` aside): the validator (`validate`) turns these
//! into the [`schema`](super::schema) types and reports every problem with its line.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) interface: Spanned<RawInterface>,
    pub(super) backend: Option<Spanned<RawBackend>>,
    pub(super) daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    pub(super) members: Vec<Spanned<RawMember>>,
    pub(super) failover: Option<Spanned<RawFailover>>,
    #[serde(default)]
    pub(super) vip: Vec<Spanned<RawVip>>,
    #[serde(default)]
    pub(super) floating: Vec<Spanned<RawFloating>>,
    pub(super) registry: Option<Spanned<RawRegistry>>,
    pub(super) k3s: Option<Spanned<RawK3s>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub(super) name: Spanned<String>,
    pub(super) private_key_file: Option<Spanned<String>>,
    pub(super) listen_port: Option<Spanned<i64>>,
    pub(super) mtu: Option<Spanned<i64>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) overlay_prefix: Option<Spanned<String>>,
    pub(super) persistent_keepalive: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) userspace_path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) metrics_listen: Option<Spanned<String>>,
    pub(super) resync_interval: Option<Spanned<String>>,
    pub(super) teardown_on_exit: Option<bool>,
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) peer_metrics: Option<Spanned<String>>,
    pub(super) metrics_overlay_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMember {
    pub(super) name: Spanned<String>,
    pub(super) public_key: Spanned<String>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) address: Spanned<String>,
    #[serde(default)]
    pub(super) routed_prefixes: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFailover {
    pub(super) port: Option<Spanned<i64>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) dead_after: Option<Spanned<i64>>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub(super) address: Spanned<String>,
    pub(super) candidates: Spanned<Vec<Spanned<String>>>,
    pub(super) health: Option<Spanned<RawHealth>>,
    pub(super) quorum: Option<bool>,
    pub(super) witnesses: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFloating {
    pub(super) prefix: Spanned<String>,
    pub(super) gateway: Option<Spanned<String>>,
    pub(super) interface: Option<Spanned<String>>,
    pub(super) candidates: Spanned<Vec<Spanned<String>>>,
    pub(super) health: Option<Spanned<RawHealth>>,
    pub(super) quorum: Option<bool>,
    pub(super) witnesses: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) kind: Spanned<String>,
    pub(super) target: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) client_cert: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) url: Option<Spanned<String>>,
    pub(super) urls: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) insecure: Option<bool>,
    pub(super) enrollment_token_file: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) lifecycle: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) report_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawK3s {
    pub(super) role: Option<Spanned<String>>,
    pub(super) bootstrap: Option<Spanned<bool>>,
    pub(super) target_cluster_id: Option<Spanned<String>>,
    pub(super) cluster_name: Option<Spanned<String>>,
    pub(super) config_path: Option<Spanned<String>>,
    pub(super) health: Option<Spanned<RawHealth>>,
    pub(super) pod_network: Option<Spanned<String>>,
    pub(super) cni_conf_dir: Option<Spanned<String>>,
    pub(super) cni_ipam_data_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) service_cidrs: Vec<Spanned<String>>,
}
