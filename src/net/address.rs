//! IPv6 and IPv4 address operations on one link: list the global ones, add one (IPv6 without duplicate
//! address detection), set one's lifetime and remove one, each idempotent. It must not touch links or routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::AddressMessageBuilder;

use super::{errno, failure, Change, NetError, Netlink};

impl Netlink {
    /// The IPv6 addresses of scope global on the link (link-local fe80::/10 and host-scope addresses are
    /// left out), in the kernel's order.
    pub async fn ipv6_addresses(&self, index: u32) -> Result<Vec<Ipv6Net>, NetError> {
        let all = self.address_messages(index, AddressFamily::Inet6).await?;
        Ok(all
            .iter()
            .filter(|m| m.header.scope == AddressScope::Universe)
            .filter_map(address_of)
            .filter_map(|net| match net {
                IpNet::V6(net) => Some(net),
                IpNet::V4(_) => None,
            })
            .filter(|net| !is_link_local(net.addr()))
            .collect())
    }

    /// Adds an IPv6 address with `IFA_F_NODAD`, so it is usable at once (no duplicate address detection,
    /// never "tentative"). `Unchanged` when the address is already on the link with that prefix length;
    /// [`NetError::Conflict`] when it is there with another prefix length.
    ///
    /// The kernel adds a prefix route (proto kernel) for prefixes shorter than /128, as `ip addr add` does.
    pub async fn add_ipv6_address(&self, index: u32, addr: Ipv6Net) -> Result<Change, NetError> {
        self.add_address(index, IpNet::V6(addr)).await
    }

    /// The IPv4 addresses of scope global on the link, in the kernel's order.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, NetError> {
        let all = self.address_messages(index, AddressFamily::Inet).await?;
        Ok(all
            .iter()
            .filter(|m| m.header.scope == AddressScope::Universe)
            .filter_map(address_of)
            .filter_map(|net| match net {
                IpNet::V4(net) => Some(net),
                IpNet::V6(_) => None,
            })
            .collect())
    }

    /// Adds an address of either family: [`Netlink::add_ipv6_address`]'s rules, and for IPv4 a plain add
    /// (IPv4 has no duplicate address detection).
    pub async fn add_address(&self, index: u32, addr: IpNet) -> Result<Change, NetError> {
        self.add_address_lasting(index, addr, None).await
    }

    /// [`Netlink::add_address`] with a valid and preferred lifetime (whole seconds, rounded up, at least
    /// one; `None`: forever) in the same message. An address already there is left as it is (`Unchanged`,
    /// its lifetime too).
    pub async fn add_address_lasting(
        &self,
        index: u32,
        addr: IpNet,
        lifetime: Option<Duration>,
    ) -> Result<Change, NetError> {
        let mut request = self.handle.address().add(index, addr.addr(), addr.prefix_len());
        let message = request.message_mut();
        if let IpNet::V6(_) = addr {
            message.header.flags = AddressHeaderFlags::Nodad;
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        if lifetime.is_some() {
            message.attributes.push(cache_info(lifetime));
        }
        let family = match addr {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        let op = |who: String| format!("adding address {addr} to {who}");
        match request.execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %addr, "added address");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let present = self.address_messages(index, family).await?;
                let same_address: Vec<IpNet> = present
                    .iter()
                    .filter_map(address_of)
                    .filter(|net| net.addr() == addr.addr())
                    .collect();
                match same_address.first() {
                    _ if same_address.contains(&addr) => Ok(Change::Unchanged),
                    Some(other) => Err(NetError::Conflict {
                        op: op(self.who(index).await),
                        existing: format!("address {other}"),
                    }),
                    None => Err(failure(op(self.who(index).await), e)),
                }
            }
            Err(e) => Err(failure(op(self.who(index).await), e)),
        }
    }

    /// Sets the valid and preferred lifetime of an address of either family to `lifetime` (whole
    /// seconds, rounded up, at least one; `None`: forever), adding the address if it is not there (a
    /// netlink replace, `ip addr replace … valid_lft N preferred_lft N`). The kernel removes an address
    /// whose valid lifetime ran out by itself, within about a second of it.
    pub async fn set_address_lifetime(
        &self,
        index: u32,
        addr: IpNet,
        lifetime: Option<Duration>,
    ) -> Result<(), NetError> {
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .replace();
        let message = request.message_mut();
        if let IpNet::V6(_) = addr {
            message.header.flags = AddressHeaderFlags::Nodad;
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        message.attributes.push(cache_info(lifetime));
        match request.execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %addr, ?lifetime, "set the address's lifetime");
                Ok(())
            }
            Err(e) => Err(failure(
                format!("setting the lifetime of address {addr} on {}", self.who(index).await),
                e,
            )),
        }
    }

    /// Removes an IPv6 address (address and prefix length must match). `Unchanged` when it is not there
    /// (EADDRNOTAVAIL). A missing link is an error (ENODEV), not `Unchanged`.
    pub async fn del_ipv6_address(&self, index: u32, addr: Ipv6Net) -> Result<Change, NetError> {
        self.del_address(index, IpNet::V6(addr)).await
    }

    /// [`Netlink::del_ipv6_address`] for an address of either family.
    pub async fn del_address(&self, index: u32, addr: IpNet) -> Result<Change, NetError> {
        let message = match addr {
            IpNet::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a.addr(), a.prefix_len())
                .build(),
            IpNet::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(a.addr(), a.prefix_len())
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %addr, "removed address");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(Change::Unchanged),
            Err(e) => Err(failure(
                format!("removing address {addr} from {}", self.who(index).await),
                e,
            )),
        }
    }

    /// Dumps the addresses of `family` of one link, every scope.
    async fn address_messages(&self, index: u32, family: AddressFamily) -> Result<Vec<AddressMessage>, NetError> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        request.message_mut().header.family = family;
        request.message_mut().header.index = index;
        let messages: Vec<AddressMessage> = match request.execute().try_collect().await {
            Ok(messages) => messages,
            Err(e) => {
                return Err(failure(
                    format!("listing the addresses of {}", self.who(index).await),
                    e,
                ))
            }
        };
        // The dump filter checks the index only; the family is checked here.
        Ok(messages.into_iter().filter(|m| m.header.family == family).collect())
    }
}

/// The local address of an address message (`IFA_LOCAL` when present, as for point-to-point addresses,
/// else `IFA_ADDRESS`) with its prefix length.
fn address_of(message: &AddressMessage) -> Option<IpNet> {
    let pick = |local: bool| {
        message.attributes.iter().find_map(|a| match (a, local) {
            (AddressAttribute::Local(ip), true) | (AddressAttribute::Address(ip), false) => Some(*ip),
            _ => None,
        })
    };
    let addr: IpAddr = pick(true).or_else(|| pick(false))?;
    IpNet::new(addr, message.header.prefix_len).ok()
}

/// Whether `addr` is in fe80::/10.
fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// The valid and preferred lifetime attribute for `lifetime`: whole seconds, rounded up, at least one;
/// `None`: forever.
fn cache_info(lifetime: Option<Duration>) -> AddressAttribute {
    let secs = lifetime.map_or(u32::MAX, |l| {
        let whole = l.as_secs() + u64::from(l.subsec_nanos() > 0);
        u32::try_from(whole.max(1)).unwrap_or(u32::MAX - 1)
    });
    let mut lifetimes = CacheInfo::default();
    lifetimes.ifa_preferred = secs;
    lifetimes.ifa_valid = secs;
    AddressAttribute::CacheInfo(lifetimes)
}
