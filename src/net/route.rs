//! IPv6 route operations in the main table, limited to sdwand's own routes: those carrying
//! [`ROUTE_PROTOCOL`]. It lists, adds and removes only those, so it never removes a route someone else
//! installed, and reports one in the way as a [`NetError::Conflict`].

use std::net::Ipv6Addr;

use futures::TryStreamExt;
use ipnet::Ipv6Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use netlink_packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use super::{errno, failure, Change, NetError, Netlink};

/// The `rtm_protocol` value that marks the routes sdwand installed, so it only ever lists and removes its
/// own routes. `ip -6 route` shows it as `proto 200`; to see a name, add the line `200 sdwand` to
/// `/etc/iproute2/rt_protos` (or a file in `/etc/iproute2/rt_protos.d/`). 200 is unassigned in the
/// kernel's `RTPROT_*` list (which uses up to 192, RTPROT_EIGRP).
pub const ROUTE_PROTOCOL: u8 = 200;

/// The kernel's main routing table (`RT_TABLE_MAIN`), the only table this module touches.
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

impl Netlink {
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
}

/// The request message for sdwand's route to `dest` via link `index`.
pub(super) fn owned_route(index: u32, dest: Ipv6Net) -> RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .output_interface(index)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .table_id(MAIN_TABLE)
        .build()
}

/// Whether a dumped route is one of sdwand's on link `index`.
pub(super) fn is_owned(route: &RouteMessage, index: u32) -> bool {
    u8::from(route.header.protocol) == ROUTE_PROTOCOL
        && route_table(route) == MAIN_TABLE
        && output_interface(route) == Some(index)
}

/// The route's table: the `RTA_TABLE` attribute when present (tables above 255), else the header field.
pub(super) fn route_table(route: &RouteMessage) -> u32 {
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
pub(super) fn output_interface(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

/// The route's destination prefix; a route without `RTA_DST` is the default route `::/0`.
pub(super) fn destination_of(route: &RouteMessage) -> Option<Ipv6Net> {
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
pub(super) fn describe_route(route: &RouteMessage) -> String {
    let dev = output_interface(route).map_or("multipath".to_string(), |i| format!("dev index {i}"));
    format!("{dev} proto {} table {}", route.header.protocol, route_table(route))
}
