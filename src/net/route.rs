//! IPv6 and IPv4 route operations in the main table, limited to sdwand's own routes: those carrying
//! [`ROUTE_PROTOCOL`]. It lists, adds and removes only those, so it never removes a route someone else
//! installed, and reports one in the way as a [`NetError::Conflict`]. It also answers which link and MTU
//! the main table sends a destination through ([`Netlink::path_mtu_toward`]), for the MTU derivation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteType,
};
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
        Ok(self
            .owned_routes_of(index, AddressFamily::Inet6)
            .await?
            .into_iter()
            .filter_map(|n| match n {
                IpNet::V6(n) => Some(n),
                IpNet::V4(_) => None,
            })
            .collect())
    }

    /// [`Netlink::owned_ipv6_routes`] for both families: sdwand's IPv6 and IPv4 routes through `index`.
    pub async fn owned_routes(&self, index: u32) -> Result<Vec<IpNet>, NetError> {
        let mut routes = self.owned_routes_of(index, AddressFamily::Inet6).await?;
        routes.extend(self.owned_routes_of(index, AddressFamily::Inet).await?);
        Ok(routes)
    }

    async fn owned_routes_of(&self, index: u32, family: AddressFamily) -> Result<Vec<IpNet>, NetError> {
        let routes = self
            .routes(family)
            .await
            .map_err(|e| failure(format!("listing {} routes", family_name(family)), e))?;
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
        self.add_route(index, IpNet::V6(dest), None).await
    }

    /// Removes `dest dev <index> proto ROUTE_PROTOCOL` from the main table; a route to the same prefix on
    /// another device or with another protocol is left alone. `Unchanged` when there is none (ESRCH).
    pub async fn del_ipv6_route(&self, index: u32, dest: Ipv6Net) -> Result<Change, NetError> {
        self.del_route(index, IpNet::V6(dest)).await
    }

    /// [`Netlink::add_ipv6_route`] for a destination of either family (IPv4 refuses a second route to the
    /// same prefix with the same metric in the same way), with `metric` (`None`: the kernel's default).
    pub async fn add_route(&self, index: u32, dest: IpNet, metric: Option<u32>) -> Result<Change, NetError> {
        let dest = dest.trunc();
        let family = family_of(&dest);
        let mut message = owned_route(index, dest);
        if let Some(m) = metric {
            message.attributes.push(RouteAttribute::Priority(m));
        }
        match self.handle.route().add(message).execute().await {
            Ok(()) => {
                tracing::debug!(ifindex = index, %dest, "added route");
                Ok(Change::Applied)
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let op = || format!("adding route {dest}");
                let routes = self.routes(family).await.map_err(|e| failure(op(), e))?;
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

    /// [`Netlink::del_ipv6_route`] for a destination of either family.
    pub async fn del_route(&self, index: u32, dest: IpNet) -> Result<Change, NetError> {
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

    /// The output link of the main table's most specific unicast route toward `dest` (longest prefix,
    /// then lowest metric), and its MTU: the route's own `mtu` metric when it has one, else the link's.
    /// `None` when no single-link route covers `dest`. A policy-routing rule or another table is not
    /// considered: this is the plain `ip route get` of a host without policy routing.
    pub async fn path_mtu_toward(&self, dest: IpAddr) -> Result<Option<(u32, u32)>, NetError> {
        let family = match dest {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let routes = self
            .routes(family)
            .await
            .map_err(|e| failure(format!("listing {} routes toward {dest}", family_name(family)), e))?;
        let best = routes
            .iter()
            .filter(|r| route_table(r) == MAIN_TABLE && r.header.kind == RouteType::Unicast)
            .filter_map(|r| Some((r, destination_of(r)?, output_interface(r)?)))
            .filter(|(_, net, _)| net.contains(&dest))
            .max_by_key(|(r, net, _)| (net.prefix_len(), std::cmp::Reverse(priority(r))));
        let Some((route, _, index)) = best else { return Ok(None) };
        if let Some(mtu) = route_mtu(route) {
            return Ok(Some((index, mtu)));
        }
        Ok(self.link_by_index(index).await?.map(|l| (index, l.mtu)))
    }

    /// Dumps every route of `family` in every table. Without NETLINK_GET_STRICT_CHK the kernel ignores the
    /// filters of a route dump, so callers filter the result.
    async fn routes(&self, family: AddressFamily) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
        let request = match family {
            AddressFamily::Inet => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            _ => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let routes: Vec<RouteMessage> = self.handle.route().get(request).execute().try_collect().await?;
        Ok(routes
            .into_iter()
            .filter(|r| r.header.address_family == family)
            .collect())
    }
}

fn family_of(net: &IpNet) -> AddressFamily {
    match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn family_name(family: AddressFamily) -> &'static str {
    if family == AddressFamily::Inet {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The route's metric (`RTA_PRIORITY`, 0 when absent).
fn priority(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// The route's own MTU metric (`ip route ... mtu N`), if set.
fn route_mtu(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Metrics(metrics) => metrics.iter().find_map(|m| match m {
            RouteMetric::Mtu(mtu) if *mtu > 0 => Some(*mtu),
            _ => None,
        }),
        _ => None,
    })
}

/// The request message for sdwand's route to `dest` via link `index`.
pub(super) fn owned_route(index: u32, dest: IpNet) -> RouteMessage {
    match dest {
        IpNet::V6(dest) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .table_id(MAIN_TABLE)
            .build(),
        IpNet::V4(dest) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .output_interface(index)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .table_id(MAIN_TABLE)
            .build(),
    }
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

/// The route's destination prefix; a route without `RTA_DST` is the default route (`::/0`, `0.0.0.0/0`).
pub(super) fn destination_of(route: &RouteMessage) -> Option<IpNet> {
    let len = route.header.destination_prefix_length;
    let dest = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    });
    match (route.header.address_family, dest) {
        (_, Some(RouteAddress::Inet6(addr))) => Ipv6Net::new(*addr, len).ok().map(IpNet::V6),
        (_, Some(RouteAddress::Inet(addr))) => Ipv4Net::new(*addr, len).ok().map(IpNet::V4),
        (_, Some(_)) => None,
        (AddressFamily::Inet6, None) => Ipv6Net::new(Ipv6Addr::UNSPECIFIED, len).ok().map(IpNet::V6),
        (AddressFamily::Inet, None) => Ipv4Net::new(Ipv4Addr::UNSPECIFIED, len).ok().map(IpNet::V4),
        _ => None,
    }
}

/// "dev 3 proto static": enough of a route to say what is in the way.
pub(super) fn describe_route(route: &RouteMessage) -> String {
    let dev = output_interface(route).map_or("multipath".to_string(), |i| format!("dev index {i}"));
    format!("{dev} proto {} table {}", route.header.protocol, route_table(route))
}
