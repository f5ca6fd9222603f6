//! The WireGuard backend: which implementation serves the interface (kernel or userspace), the
//! userspace implementation's exit, and the teardown at exit.
//!
//! It owns the choice of backend and the interface's creation and removal; it must not configure the
//! device or the kernel's addresses and routes (that is [`super::plane`]) nor decide when to restart an
//! implementation (that is the event loop).

use crate::config::{BackendKind, Config};
use crate::net::{NetError, Netlink};
use crate::wg::userspace::{Origin, Supervisor};
use crate::wg::{self, BackendInUse};

use super::DaemonError;

/// The exit status of the supervised userspace implementation; never, without one.
pub(super) async fn exited(supervisor: &mut Option<Supervisor>) -> Option<std::process::ExitStatus> {
    match supervisor {
        Some(s) => s.exited().await,
        None => std::future::pending().await,
    }
}

/// Picks the backend per `[backend] kind` and makes sure the interface exists, adopting an existing one.
pub(super) async fn select_backend(
    cfg: &Config,
    netlink: &Netlink,
) -> Result<(BackendInUse, Option<Supervisor>), DaemonError> {
    let ifname = &cfg.interface.name;
    let existing = netlink.link_by_name(ifname).await?;
    let not_owned = |why: String| DaemonError::NotOwned {
        ifname: ifname.clone(),
        why,
    };
    let use_kernel = match (&existing, cfg.backend.kind) {
        (Some(link), want) => {
            let served = wg::uapi::server_pid(ifname).ok().flatten().is_some();
            match (link.kind.as_deref(), want) {
                (Some("wireguard"), BackendKind::Kernel | BackendKind::Auto) => true,
                (Some("tun"), BackendKind::Userspace | BackendKind::Auto) if served => false,
                (Some("tun"), _) if !served => {
                    return Err(not_owned(
                        "it is a TUN device that no WireGuard implementation serves".into(),
                    ))
                }
                (kind, want) => {
                    return Err(not_owned(format!(
                        "it is of kind {}, which backend.kind = {want:?} does not manage",
                        kind.unwrap_or("unknown")
                    )))
                }
            }
        }
        (None, BackendKind::Userspace) => false,
        (None, want) => match netlink.add_wireguard_link(ifname).await {
            Ok(_) => true,
            Err(e @ NetError::NotSupported { .. }) if want == BackendKind::Kernel => {
                return Err(DaemonError::NoKernelWireGuard(e))
            }
            Err(NetError::NotSupported { .. }) => {
                tracing::info!(iface = %ifname, "kernel WireGuard is not available; falling back to userspace");
                false
            }
            Err(e) => return Err(e.into()),
        },
    };
    if use_kernel {
        tracing::info!(iface = %ifname, adopted = existing.is_some(), "using kernel WireGuard");
        return Ok((BackendInUse::Kernel, None));
    }
    let s = Supervisor::adopt_or_start(ifname, &cfg.backend.userspace_path).await?;
    match s.origin() {
        Origin::Adopted => {
            tracing::info!(iface = %ifname, pid = s.pid(), "using userspace WireGuard: adopted the running implementation")
        }
        Origin::Spawned => {
            tracing::info!(iface = %ifname, pid = s.pid(), path = %cfg.backend.userspace_path.display(), "using userspace WireGuard: started it")
        }
    }
    Ok((BackendInUse::Userspace, Some(s)))
}

/// Removes the interface (and with it its addresses, routes and peers).
pub(super) async fn teardown(netlink: &Netlink, ifname: &str, backend: BackendInUse, supervisor: Option<Supervisor>) {
    match (backend, supervisor) {
        (BackendInUse::Userspace, Some(s)) => s.stop().await,
        _ => match netlink.link_by_name(ifname).await {
            Ok(Some(link)) => {
                if let Err(e) = netlink.delete_link(link.index).await {
                    tracing::error!(error = %e, "teardown: removing the interface failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "teardown: looking up the interface failed"),
        },
    }
    tracing::info!(iface = %ifname, "exiting; the data plane was torn down (daemon.teardown_on_exit = true)");
}
