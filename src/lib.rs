//! sdwand: the SD-WAN data-plane daemon.
//!
//! # Layout
//!
//! - [`cli`]: what the binaries share on their command lines: the version string (with the commit), man
//!   pages and shell completions.
//! - [`vocab`]: the shared vocabulary (epochs and term bounds, roles, lifecycles, a VIP's peer states) that
//!   every layer imports downwards.
//! - [`config`]: the TOML schema, defaults and validation (every error names file, line and key).
//! - [`problem`]: a configuration problem (file, line, key, fix) and its format, and the TOML parser's
//!   refusals as one; shared with `sdwan-registry`.
//! - [`keyfile`]: the node's private key file (created 0600 when missing, refused when too open).
//! - [`mesh`]: the node's desired state, composed from its owners, and the pure diff against the actual
//!   WireGuard device.
//! - [`wg`]: WireGuard device I/O through `wireguard-control` (kernel and userspace backends) and the
//!   supervisor of the userspace implementation.
//! - [`net`]: typed, idempotent rtnetlink operations (link, addresses, routes) and netlink events.
//! - [`reconcile`]: the driver that makes the device and the kernel match the desired state.
//! - [`vip`]: VIP failover: the sans-IO protocol machine, its wire format, and its runtime.
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`http_serve`]: hardened HTTP serving (connection cap, header and idle timeouts) for every endpoint.
//! - [`control`]: the local operator surface: the `sdwanctl` protocol, its unix socket, and its text output.
//! - [`daemon`]: the event loop that ties it together (signals, timers, systemd notify).
//! - [`client`]: sdwand's registry client: enrollment, watch, pinning, reports, the k3s handshake.
//!
//! The registry server is the `sdwan-registry` crate (`registry/`), which depends on this one; nothing here
//! depends on it.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod http_serve;
pub mod keyfile;
pub mod mesh;
pub mod metrics;
pub mod net;
pub mod problem;
pub mod reconcile;
pub mod statedir;
pub mod vip;
pub mod vocab;
pub mod wg;

/// Sets up logging for a daemon binary: to stderr, filtered by `RUST_LOG` (default `info`), with colours
/// only on a terminal and no timestamps under systemd (`JOURNAL_STREAM` set: the journal has its own).
/// Call once, first thing in `main`.
pub fn init_logging() {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if journald {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
}

/// The wall clock in Unix milliseconds (0 if it is before 1970): the time the registry stores and
/// `sdwanctl` shows ages against. Read once per request or decision, and passed down.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `e` and its sources on one line, `: `-separated (HTTP and TLS errors rarely say what went wrong at the
/// top level).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
