//! Typed, idempotent rtnetlink operations: links, IPv6 addresses, IPv6 routes, and kernel notifications.
//!
//! This module owns the rtnetlink socket and the translation between kernel messages and sdwand's types.
//! It holds no decisions: it never chooses what should exist, it only reads and changes what the caller
//! names. Every "make it so" operation is idempotent and says whether it changed anything ([`Change`]):
//! "already there" (EEXIST) and "already gone" (ENODEV, EADDRNOTAVAIL, ESRCH) are answers, not errors.
//!
//! Routes sdwand installs carry the routing protocol [`ROUTE_PROTOCOL`], and the route functions only
//! list and delete routes with that protocol, so sdwand never removes a route someone else installed.

pub mod failover;

use std::{
    fmt, io,
    net::{IpAddr, Ipv6Addr},
};

use futures::{future, Stream, StreamExt, TryStreamExt};
use ipnet::Ipv6Net;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol},
    AddressFamily, RouteNetlinkMessage,
};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    AddressMessageBuilder, Handle, LinkUnspec, LinkWireguard, MulticastGroup, RouteMessageBuilder,
};

/// The `rtm_protocol` value that marks the routes sdwand installed, so it only ever lists and removes its
/// own routes. `ip -6 route` shows it as `proto 200`; to see a name, add the line `200 sdwand` to
/// `/etc/iproute2/rt_protos` (or a file in `/etc/iproute2/rt_protos.d/`). 200 is unassigned in the
/// kernel's `RTPROT_*` list (which uses up to 192, RTPROT_EIGRP).
pub const ROUTE_PROTOCOL: u8 = 200;

/// The kernel's main routing table (`RT_TABLE_MAIN`), the only table this module touches.
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

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

    /// Looks a link up by name; `None` when there is no such link (ENODEV).
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetError> {
        let mut replies = self.handle.link().get().match_name(name).execute();
        match replies.try_next().await {
            Ok(Some(message)) => Ok(Some(link_info(message))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failure(format!("looking up link {name}"), e)),
        }
    }

    /// Sets the administrative `IFF_UP` flag (`ip link set dev X up`). Setting it twice is harmless.
    pub async fn set_up(&self, index: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        match self.handle.link().change(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(failure(format!("setting {} up", self.who(index).await), e)),
        }
    }

    /// Sets the MTU (`ip link set dev X mtu N`). Setting the current value is harmless.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        match self.handle.link().change(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(failure(
                format!("setting the MTU of {} to {mtu}", self.who(index).await),
                e,
            )),
        }
    }

    /// Creates a kernel WireGuard link named `name` (`ip link add NAME type wireguard`), left down.
    ///
    /// `Unchanged` when a WireGuard link of that name exists; [`NetError::Conflict`] when a link of
    /// another kind has the name; [`NetError::NotSupported`] when the kernel has no WireGuard, so the
    /// caller can fall back to userspace.
    pub async fn add_wireguard_link(&self, name: &str) -> Result<Change, NetError> {
        let op = || format!("creating WireGuard link {name}");
        let message = LinkWireguard::new(name).build();
        match self.handle.link().add(message).execute().await {
            Ok(()) => {
                tracing::debug!(link = name, "created WireGuard link");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => Err(NetError::NotSupported {
                op: op(),
                error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            }),
            Err(e) if errno(&e) == Some(libc::EEXIST) => match self.link_by_name(name).await? {
                Some(link) if link.kind.as_deref() == Some("wireguard") => Ok(Change::Unchanged),
                Some(link) => Err(NetError::Conflict {
                    op: op(),
                    existing: format!(
                        "link {} (index {}) of kind {}",
                        link.name,
                        link.index,
                        link.kind.as_deref().unwrap_or("none")
                    ),
                }),
                // Deleted between the two requests: report the kernel's answer as is.
                None => Err(failure(op(), e)),
            },
            Err(e) => Err(failure(op(), e)),
        }
    }

    /// Deletes a link (`ip link del`). `Unchanged` when there is no link with that index (ENODEV).
    pub async fn delete_link(&self, index: u32) -> Result<Change, NetError> {
        let who = self.who(index).await;
        match self.handle.link().del(index).execute().await {
            Ok(()) => {
                tracing::debug!(link = %who, "deleted link");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(Change::Unchanged),
            Err(e) => Err(failure(format!("deleting link {who}"), e)),
        }
    }

    /// The IPv6 addresses of scope global on the link (link-local fe80::/10 and host-scope addresses are
    /// left out), in the kernel's order.
    pub async fn ipv6_addresses(&self, index: u32) -> Result<Vec<Ipv6Net>, NetError> {
        let all = self.ipv6_address_messages(index).await?;
        Ok(all
            .iter()
            .filter(|m| m.header.scope == AddressScope::Universe)
            .filter_map(address_of)
            .filter(|net| !is_link_local(net.addr()))
            .collect())
    }

    /// Adds an IPv6 address with `IFA_F_NODAD`, so it is usable at once (no duplicate address detection,
    /// never "tentative"). `Unchanged` when the address is already on the link with that prefix length;
    /// [`NetError::Conflict`] when it is there with another prefix length.
    ///
    /// The kernel adds a prefix route (proto kernel) for prefixes shorter than /128, as `ip addr add` does.
    pub async fn add_ipv6_address(&self, index: u32, addr: Ipv6Net) -> Result<Change, NetError> {
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V6(addr.addr()), addr.prefix_len());
        let message = request.message_mut();
        message.header.flags = AddressHeaderFlags::Nodad;
        message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        let op = |who: String| format!("adding address {addr} to {who}");
        match request.execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %addr, "added address");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let present = self.ipv6_address_messages(index).await?;
                let same_address: Vec<Ipv6Net> = present
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

    /// Removes an IPv6 address (address and prefix length must match). `Unchanged` when it is not there
    /// (EADDRNOTAVAIL). A missing link is an error (ENODEV), not `Unchanged`.
    pub async fn del_ipv6_address(&self, index: u32, addr: Ipv6Net) -> Result<Change, NetError> {
        let message = AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(addr.addr(), addr.prefix_len())
            .build();
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

    /// The destinations of the IPv6 routes in the main table whose output interface is `index` and whose
    /// protocol is [`ROUTE_PROTOCOL`]. Routes installed by anyone else are never listed.
    pub async fn owned_ipv6_routes(&self, index: u32) -> Result<Vec<Ipv6Net>, NetError> {
        let routes = self
            .ipv6_routes()
            .await
            .map_err(|e| failure("listing IPv6 routes".to_string(), e))?;
        Ok(routes
            .iter()
            .filter(|r| is_owned(r, index))
            .filter_map(destination_of)
            .collect())
    }

    /// Adds `dest dev <index> proto ROUTE_PROTOCOL` to the main table (host bits of `dest` are cleared).
    /// `Unchanged` when exactly that route exists. [`NetError::Conflict`] when another route to the same
    /// prefix with the same metric exists (another device or protocol): IPv6 refuses to add beside it.
    pub async fn add_ipv6_route(&self, index: u32, dest: Ipv6Net) -> Result<Change, NetError> {
        let dest = dest.trunc();
        let message = owned_route(index, dest);
        match self.handle.route().add(message).execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %dest, "added route");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let op = || format!("adding route {dest}");
                let routes = self.ipv6_routes().await.map_err(|e| failure(op(), e))?;
                let same_dest: Vec<&RouteMessage> = routes
                    .iter()
                    .filter(|r| route_table(r) == MAIN_TABLE && destination_of(r) == Some(dest))
                    .collect();
                if same_dest.iter().any(|r| is_owned(r, index)) {
                    Ok(Change::Unchanged)
                } else {
                    let who = self.who(index).await;
                    Err(NetError::Conflict {
                        op: format!("adding route {dest} dev {who}"),
                        existing: match same_dest.first() {
                            Some(r) => format!("route {dest} {}", describe_route(r)),
                            None => "another route".to_string(),
                        },
                    })
                }
            }
            Err(e) => Err(failure(format!("adding route {dest} dev {}", self.who(index).await), e)),
        }
    }

    /// Removes `dest dev <index> proto ROUTE_PROTOCOL` from the main table; a route to the same prefix on
    /// another device or with another protocol is left alone. `Unchanged` when there is none (ESRCH).
    pub async fn del_ipv6_route(&self, index: u32, dest: Ipv6Net) -> Result<Change, NetError> {
        let dest = dest.trunc();
        match self.handle.route().del(owned_route(index, dest)).execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %dest, "removed route");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(Change::Unchanged),
            Err(e) => Err(failure(
                format!("removing route {dest} dev {}", self.who(index).await),
                e,
            )),
        }
    }

    /// Dumps the IPv6 addresses of one link, every scope.
    async fn ipv6_address_messages(&self, index: u32) -> Result<Vec<AddressMessage>, NetError> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        request.message_mut().header.family = AddressFamily::Inet6;
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
        Ok(messages
            .into_iter()
            .filter(|m| m.header.family == AddressFamily::Inet6)
            .collect())
    }

    /// Dumps every IPv6 route of every table. Without NETLINK_GET_STRICT_CHK the kernel ignores the
    /// filters of a route dump, so callers filter the result.
    async fn ipv6_routes(&self) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
        let request = RouteMessageBuilder::<Ipv6Addr>::new().build();
        let routes: Vec<RouteMessage> = self.handle.route().get(request).execute().try_collect().await?;
        Ok(routes
            .into_iter()
            .filter(|r| r.header.address_family == AddressFamily::Inet6)
            .collect())
    }

    /// Names an interface for an error message: "sdwan0 (index 7)", or "index 7" when it cannot be found.
    async fn who(&self, index: u32) -> String {
        let mut replies = self.handle.link().get().match_index(index).execute();
        match replies.try_next().await {
            Ok(Some(message)) => format!("{} (index {index})", link_info(message).name),
            _ => format!("index {index}"),
        }
    }
}

/// What a kernel notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetEventKind {
    /// A link appeared, changed (flags, MTU, name, ...) or disappeared.
    Link,
    /// An IPv6 address was added, changed or removed.
    Address,
    /// An IPv6 route was added, changed or removed.
    Route,
    /// The socket's receive buffer overflowed and notifications were lost: resynchronise everything.
    Lost,
}

/// A change the kernel reported that may concern sdwand's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEvent {
    /// The interface concerned: the link, the address's link, or the route's output interface. `None`
    /// for multipath routes and for [`NetEventKind::Lost`].
    pub ifindex: Option<u32>,
    /// What changed.
    pub what: NetEventKind,
}

/// Subscribes to link, IPv6 address and IPv6 route notifications (`ip monitor link address route`, IPv6
/// only for addresses and routes), and spawns the connection driver on the current tokio runtime.
///
/// The stream ends only if the socket fails. Notifications carry no state: treat each as "look again".
/// The socket belongs to the network namespace of the calling thread. After the stream is dropped, the
/// driver task ends at the next notification the kernel sends.
pub fn subscribe() -> Result<impl Stream<Item = NetEvent> + Send + Unpin + 'static, NetError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| NetError::Connect {
        error: io::Error::other(e),
    })?;
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv6Route,
    ];
    let (connection, handle, messages) =
        rtnetlink::new_multicast_connection(&groups).map_err(|error| NetError::Connect { error })?;
    // No requests are sent on this connection; dropping the handle lets the driver end with the stream.
    drop(handle);
    runtime.spawn(connection);
    Ok(messages.filter_map(|(message, _)| future::ready(event_of(message))))
}

/// Translates one notification; `None` for what does not concern sdwand (IPv4, errors, other messages).
fn event_of(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<NetEvent> {
    use RouteNetlinkMessage as M;
    let event = |ifindex, what| Some(NetEvent { ifindex, what });
    match message.payload {
        NetlinkPayload::InnerMessage(M::NewLink(link) | M::DelLink(link)) => {
            event(Some(link.header.index), NetEventKind::Link)
        }
        NetlinkPayload::InnerMessage(M::NewAddress(a) | M::DelAddress(a))
            if a.header.family == AddressFamily::Inet6 =>
        {
            event(Some(a.header.index), NetEventKind::Address)
        }
        NetlinkPayload::InnerMessage(M::NewRoute(r) | M::DelRoute(r))
            if r.header.address_family == AddressFamily::Inet6 =>
        {
            event(output_interface(&r), NetEventKind::Route)
        }
        NetlinkPayload::Overrun(_) => event(None, NetEventKind::Lost),
        _ => None,
    }
}

/// The request message for sdwand's route to `dest` via link `index`.
fn owned_route(index: u32, dest: Ipv6Net) -> RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .output_interface(index)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .table_id(MAIN_TABLE)
        .build()
}

/// Whether a dumped route is one of sdwand's on link `index`.
fn is_owned(route: &RouteMessage, index: u32) -> bool {
    u8::from(route.header.protocol) == ROUTE_PROTOCOL
        && route_table(route) == MAIN_TABLE
        && output_interface(route) == Some(index)
}

/// The route's table: the `RTA_TABLE` attribute when present (tables above 255), else the header field.
fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// The route's single output interface (`RTA_OIF`); `None` for multipath routes.
fn output_interface(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// The route's destination prefix; a route without `RTA_DST` is the default route `::/0`.
fn destination_of(route: &RouteMessage) -> Option<Ipv6Net> {
    let addr = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet6(addr)) => Some(Some(*addr)),
            RouteAttribute::Destination(_) => Some(None),
            _ => None,
        })
        .unwrap_or(Some(Ipv6Addr::UNSPECIFIED))?;
    Ipv6Net::new(addr, route.header.destination_prefix_length).ok()
}

/// "dev 3 proto static": enough of a route to say what is in the way.
fn describe_route(route: &RouteMessage) -> String {
    let dev = output_interface(route).map_or("multipath".to_string(), |i| format!("dev index {i}"));
    format!("{dev} proto {} table {}", route.header.protocol, route_table(route))
}

/// The local address of an IPv6 address message (`IFA_LOCAL` when present, as for point-to-point
/// addresses, else `IFA_ADDRESS`) with its prefix length.
fn address_of(message: &AddressMessage) -> Option<Ipv6Net> {
    let pick = |local: bool| {
        message.attributes.iter().find_map(|a| match (a, local) {
            (AddressAttribute::Local(IpAddr::V6(ip)), true) | (AddressAttribute::Address(IpAddr::V6(ip)), false) => {
                Some(*ip)
            }
            _ => None,
        })
    };
    let addr = pick(true).or_else(|| pick(false))?;
    Ipv6Net::new(addr, message.header.prefix_len).ok()
}

/// Whether `addr` is in fe80::/10.
fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// Reads the fields sdwand uses out of a link message.
fn link_info(message: LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: message.header.index,
        name: String::new(),
        up: message.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        kind: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.into_iter().find_map(|i| match i {
                    NlLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    info
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
