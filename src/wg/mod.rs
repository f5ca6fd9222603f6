//! WireGuard device I/O through `wireguard-control`.
//!
//! [`Device`] reads a device into [`ActualDevice`] and applies a [`DevicePlan`]; both calls block (the
//! library does synchronous socket and netlink I/O), so async callers run them with
//! `tokio::task::block_in_place`. [`userspace::Supervisor`] starts and watches the userspace
//! implementation. No decisions live here.

use std::io;

use wireguard_control::{AllowedIp, Backend, DeviceUpdate, InterfaceName, PeerConfigBuilder};

use crate::mesh::{ActualDevice, ActualPeer, DevicePlan, PeerSpec};

pub mod uapi;
pub mod userspace;

/// Environment variable through which `wireguard-control` picks the userspace implementation it spawns
/// when it finds no socket. sdwand points it at a path that does not exist, so the library can never start
/// an empty, unsupervised `wireguard-go` behind sdwand's back; sdwand starts its own.
pub const IMPLICIT_SPAWN_VAR: &str = "WG_USERSPACE_IMPLEMENTATION";

/// The value sdwand gives [`IMPLICIT_SPAWN_VAR`].
pub const IMPLICIT_SPAWN_BLOCKED: &str = "/nonexistent/sdwand-starts-wireguard-go-itself";

/// Which WireGuard implementation drives the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendInUse {
    /// The Linux kernel module, over generic netlink.
    Kernel,
    /// A userspace implementation, over its UAPI socket.
    Userspace,
}

impl BackendInUse {
    /// Label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendInUse::Kernel => "kernel",
            BackendInUse::Userspace => "userspace",
        }
    }
}

/// A WireGuard operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// The interface name is not acceptable to WireGuard.
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    /// Reading the device failed.
    #[error("reading WireGuard device {iface} ({backend}): {source}")]
    Read {
        /// Interface.
        iface: String,
        /// Backend label.
        backend: &'static str,
        /// Cause.
        source: io::Error,
    },
    /// Applying a change failed; the device may be partly changed (updates are not atomic), so the
    /// caller must re-read it before the next plan.
    #[error("configuring WireGuard device {iface} ({backend}): {source}")]
    Apply {
        /// Interface.
        iface: String,
        /// Backend label.
        backend: &'static str,
        /// Cause.
        source: io::Error,
    },
    /// Starting or watching the userspace implementation failed.
    #[error("userspace WireGuard for {iface}: {message}")]
    Userspace {
        /// Interface.
        iface: String,
        /// What happened.
        message: String,
    },
}

/// A WireGuard device reached through one backend.
#[derive(Debug, Clone)]
pub struct Device {
    name: InterfaceName,
    ifname: String,
    backend: BackendInUse,
}

impl Device {
    /// The device `ifname` on `backend`.
    pub fn new(ifname: &str, backend: BackendInUse) -> Result<Self, WgError> {
        let name = ifname.parse().map_err(|_| WgError::InvalidName(ifname.to_owned()))?;
        Ok(Device {
            name,
            ifname: ifname.to_owned(),
            backend,
        })
    }

    /// The backend.
    pub fn backend(&self) -> BackendInUse {
        self.backend
    }

    fn lib_backend(&self) -> Backend {
        match self.backend {
            BackendInUse::Kernel => Backend::Kernel,
            BackendInUse::Userspace => Backend::Userspace,
        }
    }

    /// Reads the whole device. Blocking.
    pub fn read(&self) -> Result<ActualDevice, WgError> {
        let dev = wireguard_control::Device::get(&self.name, self.lib_backend()).map_err(|source| WgError::Read {
            iface: self.ifname.clone(),
            backend: self.backend.as_str(),
            source,
        })?;
        let peers = dev
            .peers
            .into_iter()
            .map(|p| {
                let c = p.config;
                let peer = ActualPeer {
                    allowed_ips: c
                        .allowed_ips
                        .iter()
                        .filter_map(|a| ipnet::IpNet::new(a.address, a.cidr).ok())
                        .collect(),
                    endpoint: c.endpoint,
                    keepalive: c.persistent_keepalive_interval.filter(|k| *k > 0),
                    last_handshake: p.stats.last_handshake_time,
                    rx_bytes: p.stats.rx_bytes,
                    tx_bytes: p.stats.tx_bytes,
                    public_key: c.public_key,
                };
                (peer.public_key.0, peer)
            })
            .collect();
        Ok(ActualDevice {
            private_key: dev.private_key,
            listen_port: dev.listen_port,
            peers,
        })
    }

    /// Applies `plan` in one request. Blocking. On error the device may be partly changed.
    pub fn apply(&self, plan: &DevicePlan) -> Result<(), WgError> {
        if plan.is_empty() {
            return Ok(());
        }
        let mut update = DeviceUpdate::new();
        if let Some(k) = &plan.private_key {
            update = update.set_private_key(k.clone());
        }
        if let Some(p) = plan.listen_port {
            update = update.set_listen_port(p);
        }
        for key in &plan.remove {
            update = update.remove_peer_by_key(key);
        }
        for spec in &plan.add {
            update = update.add_peer(new_peer(spec));
        }
        for u in &plan.update {
            let mut b = PeerConfigBuilder::new(&u.public_key);
            if let Some(e) = u.endpoint {
                b = b.set_endpoint(e);
            }
            if let Some(k) = u.keepalive {
                b = b.set_persistent_keepalive_interval(k);
            }
            if let Some(ips) = &u.allowed_ips {
                b = b.replace_allowed_ips().add_allowed_ips(&allowed(ips));
            }
            update = update.add_peer(b);
        }
        update
            .apply(&self.name, self.lib_backend())
            .map_err(|source| WgError::Apply {
                iface: self.ifname.clone(),
                backend: self.backend.as_str(),
                source,
            })
    }
}

fn allowed(ips: &std::collections::BTreeSet<ipnet::IpNet>) -> Vec<AllowedIp> {
    ips.iter()
        .map(|n| AllowedIp {
            address: n.addr(),
            cidr: n.prefix_len(),
        })
        .collect()
}

fn new_peer(spec: &PeerSpec) -> PeerConfigBuilder {
    let mut b = PeerConfigBuilder::new(&spec.public_key)
        .replace_allowed_ips()
        .add_allowed_ips(&allowed(&spec.allowed_ips));
    if let Some(e) = spec.endpoint {
        b = b.set_endpoint(e);
    }
    if let Some(k) = spec.keepalive {
        b = b.set_persistent_keepalive_interval(k);
    }
    b
}
