//! The reconciler: makes the WireGuard device and the kernel state of the interface match [`Desired`].
//!
//! The device side keeps a cached snapshot of what it last read or applied, so a change (one peer moved,
//! a member removed) is planned against the cache and costs one small request, not a dump of every peer.
//! A full resync re-reads the device; after any failed apply the cache is dropped, because a failed
//! update may have been applied in part.

use std::time::SystemTime;

use crate::mesh::{plan_device, plan_net, ActualDevice, ActualNet, Desired, DevicePlan, NetPlan};
use crate::net::{NetError, Netlink};
use crate::wg::{self, WgError};

/// What a device pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceOutcome {
    /// Peers added.
    pub added: usize,
    /// Peers updated in place.
    pub updated: usize,
    /// Peers removed.
    pub removed: usize,
    /// Private key or listen port set.
    pub interface_set: bool,
}

impl DeviceOutcome {
    fn of(plan: &DevicePlan) -> Self {
        DeviceOutcome {
            added: plan.add.len(),
            updated: plan.update.len(),
            removed: plan.remove.len(),
            interface_set: plan.private_key.is_some() || plan.listen_port.is_some(),
        }
    }

    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        *self != DeviceOutcome::default()
    }
}

/// Reconciles one WireGuard device. Blocking: call it off the async runtime's reactor.
#[derive(Debug)]
pub struct DeviceReconciler {
    device: wg::Device,
    /// The device as last read or applied; `None` forces a read before the next plan.
    cache: Option<ActualDevice>,
}

impl DeviceReconciler {
    /// A reconciler for `device` with an empty cache.
    pub fn new(device: wg::Device) -> Self {
        DeviceReconciler { device, cache: None }
    }

    /// The snapshot the next incremental pass plans against.
    pub fn snapshot(&self) -> Option<&ActualDevice> {
        self.cache.as_ref()
    }

    /// Forgets the snapshot (the device was recreated, or may have changed behind sdwand's back).
    pub fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Re-reads the device, then plans and applies.
    pub fn resync(&mut self, desired: &Desired, now: SystemTime) -> Result<DeviceOutcome, WgError> {
        self.cache = None;
        self.update(desired, now)
    }

    /// Plans against the snapshot (reading the device first if there is none) and applies.
    pub fn update(&mut self, desired: &Desired, now: SystemTime) -> Result<DeviceOutcome, WgError> {
        let mut actual = match self.cache.take() {
            Some(cached) => cached,
            None => self.device.read()?,
        };
        let plan = plan_device(desired, &actual, now);
        self.device.apply(&plan)?;
        plan.apply_to(&mut actual);
        self.cache = Some(actual);
        Ok(DeviceOutcome::of(&plan))
    }
}

/// Why a network pass failed.
#[derive(Debug, thiserror::Error)]
pub enum NetReconcileError {
    /// The interface does not exist (the WireGuard implementation is gone).
    #[error("interface {0} does not exist")]
    Missing(String),
    /// A netlink operation failed.
    #[error(transparent)]
    Netlink(#[from] NetError),
}

/// Reads the kernel state of `desired.ifname`, plans, and applies. Returns the interface index and the
/// applied plan.
pub async fn reconcile_net(netlink: &Netlink, desired: &Desired) -> Result<(u32, NetPlan), NetReconcileError> {
    let link = netlink
        .link_by_name(&desired.ifname)
        .await?
        .ok_or_else(|| NetReconcileError::Missing(desired.ifname.clone()))?;
    let actual = ActualNet {
        up: link.up,
        mtu: link.mtu,
        addresses: netlink.ipv6_addresses(link.index).await?.into_iter().collect(),
        owned_routes: netlink.owned_ipv6_routes(link.index).await?.into_iter().collect(),
    };
    let plan = plan_net(desired, &actual);
    if let Some(mtu) = plan.mtu {
        netlink.set_mtu(link.index, mtu).await?;
    }
    if plan.set_up {
        netlink.set_up(link.index).await?;
    }
    for a in &plan.del_addresses {
        let _ = netlink.del_ipv6_address(link.index, *a).await?;
    }
    for a in &plan.add_addresses {
        let _ = netlink.add_ipv6_address(link.index, *a).await?;
    }
    for r in &plan.del_routes {
        let _ = netlink.del_ipv6_route(link.index, *r).await?;
    }
    for r in &plan.add_routes {
        let _ = netlink.add_ipv6_route(link.index, *r).await?;
    }
    Ok((link.index, plan))
}
