//! The daemon: load the configuration, pick the backend, reconcile, and keep reconciling on timers,
//! netlink events, implementation restarts and reload requests; drive VIP failover; on a stop request
//! hand held VIPs over, then exit.
//!
//! [`run`] is the whole daemon. It is told to reload or stop through [`Trigger`]s and installs no signal
//! handlers of its own: the `sdwand` binary turns SIGHUP, SIGTERM and SIGINT into triggers, a test sends
//! its own. `start` builds the running state, `event_loop` waits for events and handles each in one
//! method, `backend` picks and tears down the WireGuard implementation, `plane` applies the desired state
//! (owned by [`crate::mesh::Desired`]; `plane` keeps no copy of it). This module keeps what start and the
//! loop share: loading and reloading the configuration and applying it.
//!
//! Nothing outside the daemon's control stops it or blinds it silently: a metrics port that is taken is
//! retried (`endpoint`), a failover socket that cannot bind is retried every `RETRY` while the VIP
//! machines are told they cannot hear anyone, a kernel pass applies what it can, a crashing userspace
//! implementation is restarted with a growing delay, and once stopping no reload starts new machines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use wireguard_control::Key;

use crate::client::Link;
use crate::config::{self, Config, ConfigErrors};
use crate::keyfile::{self, KeyFileError};
use crate::metrics::{Metrics, NodeInfo};
use crate::net::NetError;
use crate::vip::runtime::VipRuntime;
use crate::wg::WgError;

mod backend;
mod control;
mod endpoint;
mod event_loop;
mod netwatch;
mod plane;
mod start;
use plane::Plane;

/// Netlink events are coalesced over this window before the kernel state is reconciled.
const NET_DEBOUNCE: Duration = Duration::from_millis(20);
/// Delay before retrying a failed reconcile or a failover socket that is not bound.
const RETRY: Duration = Duration::from_secs(1);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The private key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A WireGuard operation failed at start.
    #[error(transparent)]
    Wg(#[from] WgError),
    /// A netlink operation failed at start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The interface exists but sdwand does not own it.
    #[error("interface {ifname} exists and is not sdwand's to manage: {why} (fix: pick another interface.name, or remove that interface)")]
    NotOwned {
        /// Interface.
        ifname: String,
        /// What was found.
        why: String,
    },
    /// The kernel backend was requested but the kernel has no WireGuard.
    #[error("backend.kind = \"kernel\" but this kernel has no WireGuard ({0}); set backend.kind = \"auto\" or \"userspace\"")]
    NoKernelWireGuard(NetError),
    /// A reload changed settings that take effect only on restart.
    #[error("{path} changed {changed}; these settings take effect only on restart (systemctl restart sdwand)", path = .path.display())]
    RestartRequired {
        /// The configuration file.
        path: PathBuf,
        /// The changed settings with old and new values.
        changed: String,
    },
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The registry link could not start.
    #[error(transparent)]
    Registry(#[from] crate::client::StartError),
    /// The binary could not install its signal handlers.
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// A configuration with its key, checked together.
struct Loaded {
    /// The file as read.
    file: Config,
    /// What the daemon runs on: the file, or with `[registry]` the file plus the registry's view.
    config: Config,
    key: Key,
}

fn load(path: &Path, create_key: bool) -> Result<Loaded, DaemonError> {
    let file = config::load(path)?;
    let key = keyfile::load_node_key(&file, create_key)?;
    file.check_identity(&key.get_public())?;
    Ok(Loaded {
        config: file.clone(),
        file,
        key,
    })
}

/// The effective configuration of `loaded`'s file with the registry view of `link` (if any), checked
/// against the key.
fn effective(loaded: &Loaded, link: Option<&Link>) -> Result<Config, DaemonError> {
    let Some(link) = link else {
        return Ok(loaded.file.clone());
    };
    let cfg = link.effective(&loaded.file)?;
    cfg.check_identity(&loaded.key.get_public())?;
    Ok(cfg)
}

/// Applies `loaded.config` the way a reload does: desired state, VIP machines, one device pass over
/// only the peers the configuration changed (the whole device when the interface's own settings
/// changed, or when the plane has no snapshot to plan against), and one kernel pass. The periodic full
/// resync stays the safety net for anything changed behind sdwand's back.
async fn apply(loaded: &Loaded, link: Option<&Link>, plane: &mut Plane, vip: &mut VipRuntime) {
    publish_node(loaded, link, &plane.metrics);
    let changed = plane.set_config(&loaded.config, &loaded.key);
    vip.reload(&loaded.config, plane, std::time::Instant::now()).await;
    match changed {
        Some(peers) => plane.pass_peers(&peers),
        None => plane.pass_device(false),
    };
    plane.pass_net().await;
    plane.pass_workload(false).await;
    bind_vip(vip, plane).await;
}

/// Publishes this node's identity (`sdwand_node_info`) and `daemon.peer_metrics` from the configuration
/// in force: with `[registry]` the enrolled name and network, else the member carrying this node's key.
fn publish_node(loaded: &Loaded, link: Option<&Link>, metrics: &Metrics) {
    let cfg = &loaded.config;
    let public = loaded.key.get_public();
    let public_key = public.to_base64();
    let name = match link {
        Some(link) => Some(link.identity.name.as_str()),
        None => cfg
            .members
            .iter()
            .find(|m| m.public_key == public)
            .map(|m| m.name.as_str()),
    };
    let address = cfg.interface.address;
    metrics.set_node(&NodeInfo {
        name: name.unwrap_or_default(),
        address: (!address.is_unspecified()).then_some(address),
        interface: &cfg.interface.name,
        network: link.map_or("", |l| l.identity.network_id.as_str()),
        public_key: &public_key,
    });
    metrics.set_peer_metrics(loaded.file.daemon.peer_metrics);
}

/// Validates the configuration at `path` and its key file without changing anything, refusing what the
/// start refuses: the key file's mode and content, this node's address used by a member with another key
/// (also before the key file exists: the key the start creates matches no member), and with
/// `[registry]` what [`crate::client::check_start`] checks. Every problem it can find is listed at once.
/// Returns a summary: one line, then the notes (warnings the start logs, what it will do, and the settings
/// a reload cannot change).
pub fn check_config(path: &Path) -> Result<String, DaemonError> {
    let config = config::load(path)?;
    let mut problems = Vec::new();
    let key_note = match keyfile::load_node_key(&config, false) {
        Ok(key) => {
            if let Err(e) = config.check_identity(&key.get_public()) {
                problems.extend(e.0);
            }
            format!("public key {}", key.get_public().to_base64())
        }
        Err(KeyFileError::Missing { path }) => {
            if let Err(e) = config.check_identity(&wireguard_control::Key::generate_private().get_public()) {
                problems.extend(e.0.into_iter().map(|mut p| {
                    p.hint = format!(
                        "the key file {} does not exist yet and the key sdwand creates at start matches no \
                         member: install this node's key there, or give the member its own address",
                        path.display()
                    );
                    p
                }));
            }
            format!("key file {} will be created at start", path.display())
        }
        Err(e) => return Err(e.into()),
    };
    let notes = match crate::client::check_start(&config) {
        Ok(notes) => notes,
        Err(e) => {
            problems.extend(e.0);
            Vec::new()
        }
    };
    if !problems.is_empty() {
        return Err(config::ConfigErrors(problems).into());
    }
    let identity = match &config.registry {
        Some(r) => format!("address and members from the registry {}", r.urls_shown()),
        None => format!(
            "address {}, {} member(s)",
            config.interface.address,
            config.members.len()
        ),
    };
    let mut summary = format!(
        "{}: ok: interface {} {identity}, {key_note}",
        path.display(),
        config.interface.name,
    );
    for note in notes {
        summary.push_str("\n  ");
        summary.push_str(&note);
    }
    let restart_only: Vec<_> = config.restart_only_settings().into_iter().map(|(key, _)| key).collect();
    summary.push_str(&format!(
        "\n  a reload (SIGHUP) refuses changes to {}: restart sdwand for those",
        restart_only.join(", ")
    ));
    Ok(summary)
}

/// A request from outside the daemon: the binary's signal handlers send these, a test its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Read the configuration file again and apply it (SIGHUP).
    Reload,
    /// Stop, naming the cause for the log (e.g. "SIGTERM"): the first stop hands the VIPs held here over
    /// before the daemon exits, a second one exits at once.
    Stop(&'static str),
}

/// Runs the daemon with the configuration at `config_path` until a stop requested through `triggers`
/// completes. The sender of `triggers` going away counts as one stop request, so a caller can stop the
/// daemon gracefully by dropping it. Installs no signal handlers.
pub async fn run(config_path: PathBuf, triggers: mpsc::Receiver<Trigger>) -> Result<(), DaemonError> {
    if let Some(daemon) = start::start(config_path, triggers).await? {
        daemon.run().await;
    }
    Ok(())
}

/// Binds the failover socket to the interface of the last kernel pass, if it reached one, and executes
/// what the machines do about the change (the runtime logs a failure; the loop retries).
async fn bind_vip(vip: &mut VipRuntime, plane: &mut Plane) {
    if let Some(index) = plane.ifindex {
        vip.ensure_bound(index, std::time::Instant::now());
        vip.flush(plane).await;
    }
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Loads the new configuration for a reload; refuses it when a restart-only setting changed.
fn reload(path: &Path, current: &Loaded, link: Option<&Link>) -> Result<Loaded, DaemonError> {
    let mut new = load(path, false)?;
    let changed: Vec<String> = current
        .file
        .restart_only_settings()
        .into_iter()
        .zip(new.file.restart_only_settings())
        .filter(|(old, new)| old.1 != new.1)
        .map(|((key, old), (_, new))| format!("{key} ({old} -> {new})"))
        .collect();
    if !changed.is_empty() {
        return Err(DaemonError::RestartRequired {
            path: path.to_owned(),
            changed: changed.join(", "),
        });
    }
    new.config = effective(&new, link)?;
    Ok(new)
}

/// Raises each VIP's term floor to the highest epoch of the link's view (stored or fresh; the stored one
/// carries the floors of the last report answer), so a claim never reuses a term the registry knew, even
/// before the first report answers.
fn raise_floors(vip: &mut VipRuntime, link: &Link) {
    for v in &link.view.vips {
        if let Some(e) = v.epoch {
            vip.raise_term(v.address, e.term);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::state::{Identity, StateDir};

    /// A registry configuration in `dir` with `extra` lines in `[interface]`; its path.
    fn write_config(dir: &Path, interface_extra: &str) -> PathBuf {
        let d = dir.display();
        let path = dir.join("sdwand.toml");
        std::fs::write(
            &path,
            format!(
                "[interface]\nname = \"sdw0\"\nprivate_key_file = \"{d}/private.key\"\n{interface_extra}\n\
                 [daemon]\nstate_dir = \"{d}/state\"\n\
                 [registry]\nurl = \"https://reg.example:7443\"\nenrollment_token_file = \"{d}/token\"\n\
                 ca_file = \"{d}/ca.pem\"\n"
            ),
        )
        .unwrap();
        path
    }

    /// A state directory under `dir` holding the identity of peer n1 enrolled at fd00:5d::4.
    fn enrolled_state(dir: &Path) -> StateDir {
        let state = StateDir::new(&dir.join("state"));
        std::fs::create_dir_all(state.path()).unwrap();
        state
            .save_identity(&Identity {
                peer_id: "p".into(),
                name: "n1".into(),
                network_id: "net".into(),
                address: "fd00:5d::4".parse().unwrap(),
                overlay_prefix: "fd00:5d::/64".parse().unwrap(),
                peer_token: "t".into(),
                registry_url: "https://reg.example:7443".into(),
            })
            .unwrap();
        state
    }

    fn problem_keys(e: &DaemonError) -> Vec<String> {
        match e {
            DaemonError::Config(errors) => errors.0.iter().map(|p| p.key.clone()).collect(),
            other => panic!("not a configuration error: {other}"),
        }
    }

    #[test]
    fn check_config_refuses_what_the_start_refuses_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "");
        // No token file, no CA file: both listed.
        let e = check_config(&path).unwrap_err();
        assert_eq!(problem_keys(&e), ["registry.ca_file", "registry.enrollment_token_file"]);
        assert!(e.to_string().contains("2 problems"), "{e}");

        // A stored identity whose address the file contradicts.
        enrolled_state(dir.path());
        let key = dir.path().join("private.key");
        std::fs::write(&key, wireguard_control::Key::generate_private().to_base64()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let path = write_config(dir.path(), "address = \"fd00:5d::9\"");
        let e = check_config(&path).unwrap_err();
        assert_eq!(problem_keys(&e), ["registry.ca_file", "interface.address"]);
        assert!(e.to_string().contains("the registry assigned fd00:5d::4"), "{e}");
        // The line of `address = …` (4), not the [registry] header's.
        assert!(
            e.to_string()
                .contains(&format!("{}:4: interface.address:", path.display())),
            "{e}"
        );
    }

    #[test]
    fn check_config_warns_a_k3s_server_on_an_ipv6_pod_pool_without_an_ipv6_service_range() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let text = |services: &str| {
            format!(
                "[interface]\nname = \"sdw0\"\nprivate_key_file = \"{d}/private.key\"\n[daemon]\nstate_dir = \"{d}/state\"\n\
                 [registry]\nurl = \"https://reg.example:7443\"\n[k3s]\nrole = \"server\"\npod_network = \"sdwan\"\n{services}"
            )
        };
        let state = enrolled_state(dir.path());
        let mut view: crate::vocab::wire::MembersResponse =
            serde_json::from_str(r#"{"network_id": "net", "revision": 3, "members": [], "vips": []}"#).unwrap();
        view.pod_pools = vec![crate::vocab::PodPool {
            prefix: "fd00:42::/48".parse().unwrap(),
            node_len: 64,
        }];
        state.save_network(&view).unwrap();
        let notes = |services: &str| {
            let cfg = crate::config::parse(Path::new("t.toml"), &text(services)).unwrap();
            crate::client::check_start(&cfg).unwrap()
        };
        let without = notes("");
        assert!(
            without
                .iter()
                .any(|n| n.starts_with("warning:") && n.contains("service_cidrs")),
            "{without:?}"
        );
        let with = notes("service_cidrs = [\"203.0.113.0/24\", \"fd00:43::/112\"]\n");
        assert!(!with.iter().any(|n| n.contains("service_cidrs")), "{with:?}");
    }

    #[test]
    fn check_config_finds_a_member_on_this_nodes_address_before_the_key_exists() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let path = dir.path().join("sdwand.toml");
        std::fs::write(
            &path,
            format!(
                "[interface]\nname = \"sdw0\"\nprivate_key_file = \"{d}/private.key\"\naddress = \"fd00:5d::1\"\n\
                 overlay_prefix = \"fd00:5d::/64\"\n[daemon]\nstate_dir = \"{d}/state\"\n\
                 [[members]]\nname = \"b\"\npublic_key = \"adPRqhumKBYoYbd1vBEJ+TeHNve1uYH+o6EJ1DKP6y0=\"\n\
                 address = \"fd00:5d::1\"\n"
            ),
        )
        .unwrap();
        let e = check_config(&path).unwrap_err();
        assert_eq!(problem_keys(&e), ["members[0]"]);
        assert!(e.to_string().contains("uses this node's address fd00:5d::1"), "{e}");
    }
}
