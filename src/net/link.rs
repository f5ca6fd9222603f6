//! Link operations: look a link up, set it up, set its MTU, create and delete a WireGuard link, and name
//! a link for an error message. It must not touch addresses or routes.

use std::io;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage};
use rtnetlink::{LinkUnspec, LinkWireguard};

use super::{errno, failure, Change, LinkInfo, NetError, Netlink};

impl Netlink {
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

    /// Looks a link up by index; `None` when there is no such link (ENODEV).
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetError> {
        let mut replies = self.handle.link().get().match_index(index).execute();
        match replies.try_next().await {
            Ok(Some(message)) => Ok(Some(link_info(message))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(failure(format!("looking up link index {index}"), e)),
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

    /// Names an interface for an error message: "sdwan0 (index 7)", or "index 7" when it cannot be found.
    pub(super) async fn who(&self, index: u32) -> String {
        let mut replies = self.handle.link().get().match_index(index).execute();
        match replies.try_next().await {
            Ok(Some(message)) => format!("{} (index {index})", link_info(message).name),
            _ => format!("index {index}"),
        }
    }
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
