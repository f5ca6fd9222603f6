//! The reconciler: makes the WireGuard device and the kernel state of the interface match [`Desired`].
//!
//! The device side keeps a cached snapshot of what it last read or applied, so a change (one peer moved,
//! a member removed) is planned against the cache and costs one small request, not a dump of every peer.
//! When the caller knows which peers changed (a [`Desired`] method said so), [`DeviceReconciler::update_peers`]
//! plans only those against the cache: a VIP move costs two peers' diff, not a walk over every peer.
//! A full resync re-reads the device; after any failed apply the cache is dropped, because a failed
//! update may have been applied in part.
//!
//! The kernel pass applies every item of its plan even when some fail (a route someone else holds, an
//! address the kernel refuses): one conflict must not leave every later address and route unapplied,
//! nor keep the daemon from binding its failover socket and becoming ready. The failures are returned
//! with the pass.

use ipnet::IpNet;
use std::collections::BTreeSet;
use std::time::SystemTime;

use crate::mesh::{
    plan_device, plan_net, plan_peers, ActualDevice, ActualNet, Desired, DevicePlan, KeyBytes, Lifetime, NetPlan,
};
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
        let actual = match self.cache.take() {
            Some(cached) => cached,
            None => self.device.read()?,
        };
        let plan = plan_device(desired, &actual, now);
        self.apply(plan, actual)
    }

    /// Plans only the peers `changed` against the snapshot and applies: the path of a change whose peers
    /// are known (a VIP move). Without a snapshot (none yet, or dropped after a failure) it is a full
    /// [`update`](Self::update): a read and a plan over every peer.
    pub fn update_peers(
        &mut self,
        desired: &Desired,
        changed: &BTreeSet<KeyBytes>,
        now: SystemTime,
    ) -> Result<DeviceOutcome, WgError> {
        let Some(actual) = self.cache.take() else {
            return self.update(desired, now);
        };
        let plan = plan_peers(desired, &actual, changed, now);
        self.apply(plan, actual)
    }

    /// Applies `plan` (made against `actual`, taken out of the cache) and caches the result; on failure the
    /// cache stays empty (the device may have applied part of the request).
    fn apply(&mut self, plan: DevicePlan, mut actual: ActualDevice) -> Result<DeviceOutcome, WgError> {
        self.device.apply(&plan)?;
        plan.apply_to(&mut actual);
        self.cache = Some(actual);
        Ok(DeviceOutcome::of(&plan))
    }
}

/// Why a network pass could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum NetReconcileError {
    /// The interface does not exist (the WireGuard implementation is gone).
    #[error("interface {0} does not exist")]
    Missing(String),
    /// Reading the interface's state failed.
    #[error(transparent)]
    Netlink(#[from] NetError),
}

/// A kernel pass that reached the interface.
#[derive(Debug)]
pub struct NetPass {
    /// The interface index.
    pub index: u32,
    /// What the pass set out to change.
    pub plan: NetPlan,
    /// The items of the plan that failed; everything else was applied.
    pub failures: Vec<NetError>,
}

/// Reads the kernel state of `desired.ifname`, plans, and applies every item of the plan, collecting
/// the failures. An error only when the interface is missing or its state cannot be read.
pub async fn reconcile_net(netlink: &Netlink, desired: &Desired) -> Result<NetPass, NetReconcileError> {
    let link = netlink
        .link_by_name(&desired.ifname)
        .await?
        .ok_or_else(|| NetReconcileError::Missing(desired.ifname.clone()))?;
    let actual = ActualNet {
        up: link.up,
        mtu: link.mtu,
        addresses: netlink.ipv6_addresses(link.index).await?.into_iter().collect(),
        addresses_v4: netlink.ipv4_addresses(link.index).await?.into_iter().collect(),
        owned_routes: netlink.owned_routes(link.index).await?.into_iter().collect(),
    };
    let plan = plan_net(desired, &actual);
    let index = link.index;
    let mut failures = Vec::new();
    let mut keep = |r: Result<_, NetError>| {
        if let Err(e) = r {
            failures.push(e);
        }
    };
    if let Some(mtu) = plan.mtu {
        keep(netlink.set_mtu(index, mtu).await);
    }
    if plan.set_up {
        keep(netlink.set_up(index).await);
    }
    for a in &plan.del_addresses {
        keep(netlink.del_ipv6_address(index, *a).await.map(drop));
    }
    // A held address with a kernel lifetime (quorum mode) comes back with what is left of it, in the same
    // message: added without one, it would outlive a holder frozen before its next renewal.
    for a in &plan.add_addresses {
        let lifetime = match desired.lifetime_left(IpNet::V6(*a), std::time::Instant::now()) {
            Lifetime::Forever => None,
            Lifetime::Left(left) => Some(left),
            Lifetime::Over => {
                tracing::debug!(address = %a, "a held address's lifetime ran out: left off until renewed");
                continue;
            }
        };
        keep(
            netlink
                .add_address_lasting(index, IpNet::V6(*a), lifetime)
                .await
                .map(drop),
        );
    }
    for a in &plan.del_addresses_v4 {
        keep(netlink.del_address(index, IpNet::V4(*a)).await.map(drop));
    }
    for a in &plan.add_addresses_v4 {
        keep(netlink.add_address(index, IpNet::V4(*a)).await.map(drop));
    }
    for r in &plan.del_routes {
        keep(netlink.del_route(index, *r).await.map(drop));
    }
    for r in &plan.add_routes {
        keep(netlink.add_route(index, *r, desired.route_metric(r)).await.map(drop));
    }
    Ok(NetPass { index, plan, failures })
}
