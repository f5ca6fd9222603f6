//! Kernel notifications: a subscription to link, IPv6 address and IPv6 route changes, translated to
//! [`NetEvent`]s that say only what changed and where ("look again"). It must not read or change state.

use std::io;

use futures::{future, Stream, StreamExt};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::MulticastGroup;

use super::route::output_interface;
use super::NetError;

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
