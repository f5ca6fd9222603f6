//! Typed, idempotent rtnetlink operations: links, IPv6 and IPv4 addresses and routes, and kernel
//! notifications; beside them the two other kernel switches sdwand sets, IP forwarding
//! (`net/forwarding.rs`) and its nftables table (`net/nft.rs`).
//!
//! This module owns the rtnetlink socket and the translation between kernel messages and sdwand's types.
//! It holds no decisions: it never chooses what should exist, it only reads and changes what the caller
//! names. Every "make it so" operation is idempotent and says whether it changed anything ([`Change`]):
//! "already there" (EEXIST) and "already gone" (ENODEV, EADDRNOTAVAIL, ESRCH) are answers, not errors.
//!
//! Routes sdwand installs carry the routing protocol [`ROUTE_PROTOCOL`], and the route functions only
//! list and delete routes with that protocol, so sdwand never removes a route someone else installed.
//!
//! This file holds the connection ([`Netlink`]), the types every operation shares and the translation of
//! rtnetlink errors; the operations are split by object: `net/link.rs`, `net/address.rs`,
//! `net/route.rs`, and the notifications in `net/events.rs` ([`subscribe`]). `net/failover.rs` is the
//! failover socket; `net/garp.rs` and `net/ndisc.rs` announce a floating gateway address on its LAN
//! (gratuitous ARP, unsolicited neighbour advertisement).

mod address;
mod events;
pub mod failover;
pub mod forwarding;
pub mod garp;
mod link;
mod local;
pub mod ndisc;
pub mod nft;
mod route;

pub use events::{subscribe, NetEvent, NetEventKind};
pub use local::local_addresses;
pub use route::ROUTE_PROTOCOL;

use std::{fmt, io};

use rtnetlink::Handle;

/// What the kernel says about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index: stable for the life of the link, reused by the kernel after deletion.
    pub index: u32,
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// The administrative `IFF_UP` flag (`ip link set up`), not whether the link has a carrier.
    pub up: bool,
    /// MTU in bytes.
    pub mtu: u32,
    /// `IFLA_INFO_KIND` ("wireguard", "tun", "dummy", "veth", ...); `None` for links without one
    /// (loopback, most physical NICs).
    pub kind: Option<String>,
}

/// The result of an idempotent operation.
#[must_use = "tells whether the kernel changed; ignore it explicitly with `let _ =`"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The kernel state changed.
    Applied,
    /// The kernel was already in the requested state; nothing was done.
    Unchanged,
}

/// A failed netlink operation. Every message names the operation, the interface or prefix, and the
/// kernel's answer, e.g. "adding address fd00::1/128 to sdwan0 (index 7): Operation not permitted (os error 1)".
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The rtnetlink socket could not be opened (or there is no tokio runtime to drive it).
    #[error("opening an rtnetlink socket: {error}")]
    Connect {
        /// The underlying error.
        error: io::Error,
    },
    /// The kernel refused the operation.
    #[error("{op}: {error}")]
    Kernel {
        /// What was attempted, on which interface or prefix.
        op: String,
        /// The kernel's errno.
        error: io::Error,
    },
    /// The kernel cannot create the link type (no WireGuard module: EOPNOTSUPP, "Unknown device type").
    /// The caller may fall back to a userspace implementation.
    #[error("{op}: the kernel does not support this link type: {error}")]
    NotSupported {
        /// What was attempted.
        op: String,
        /// The kernel's errno (EOPNOTSUPP).
        error: io::Error,
    },
    /// The kernel already holds a different object where the requested one would go, so the operation
    /// is neither applied nor "unchanged" (a link of another kind with the requested name, or another
    /// route to the same prefix with the same metric, which IPv6 refuses to add beside).
    #[error("{op}: {existing} is in the way")]
    Conflict {
        /// What was attempted.
        op: String,
        /// What is there instead.
        existing: String,
    },
    /// The netlink exchange itself failed (connection driver gone, unexpected or undecodable reply).
    #[error("{op}: {detail}")]
    Netlink {
        /// What was attempted.
        op: String,
        /// What went wrong.
        detail: String,
    },
}

impl NetError {
    /// The kernel's errno, when the kernel refused the operation.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetError::Connect { error } | NetError::Kernel { error, .. } | NetError::NotSupported { error, .. } => {
                error.raw_os_error()
            }
            NetError::Conflict { .. } | NetError::Netlink { .. } => None,
        }
    }
}

/// A handle on an rtnetlink connection. Cheap to clone; the connection closes when the last clone drops.
#[derive(Debug, Clone)]
pub struct Netlink {
    /// Request side of the connection; its driver task runs on the runtime `connect` was called on.
    handle: Handle,
}

impl Netlink {
    /// Opens a connection and spawns its driver on the current tokio runtime.
    ///
    /// The socket belongs to the network namespace of the calling thread.
    pub fn connect() -> Result<Self, NetError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| NetError::Connect {
            error: io::Error::other(e),
        })?;
        let (connection, handle, messages) =
            rtnetlink::new_connection().map_err(|error| NetError::Connect { error })?;
        // No multicast groups are joined, so nothing unsolicited arrives; dropping the receiver lets the
        // driver end once every clone of the handle is gone.
        drop(messages);
        runtime.spawn(connection);
        Ok(Netlink { handle })
    }
}

/// The positive errno of a kernel refusal.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| code.get().abs()),
        _ => None,
    }
}

/// Wraps an rtnetlink error with the operation it interrupted.
fn failure(op: String, error: rtnetlink::Error) -> NetError {
    match error {
        rtnetlink::Error::NetlinkError(message) => NetError::Kernel {
            op,
            error: message.to_io(),
        },
        rtnetlink::Error::RequestFailed => NetError::Netlink {
            op,
            detail: "the netlink connection is closed (its driver task ended)".to_string(),
        },
        other => NetError::Netlink {
            op,
            detail: other.to_string(),
        },
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Applied => "applied",
            Change::Unchanged => "unchanged",
        })
    }
}
