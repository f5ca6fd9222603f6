//! The failover socket: binding it to this node's overlay /128 on the interface (and again when the
//! interface is recreated), its state as the machines and `sdwanctl status` see it, and the checks a
//! received datagram passes before it reaches a machine (size, source port, not this node, the sender
//! it names, a configured VIP).
//!
//! Decides nothing about the protocol: an accepted datagram goes to its machine as it is.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::VipRuntime;
use crate::metrics::VipMetrics;
use crate::net::failover;
use crate::vip::wire::{Message, MAX_DATAGRAM};
use crate::vip::LocalEvent;

/// The failover socket's state, for `sdwanctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transport {
    /// The socket is bound and receiving.
    pub(crate) bound: bool,
    /// Why it is not (the last bind or receive error), when it is not.
    pub(crate) error: Option<String>,
}

impl VipRuntime {
    /// (Re)binds the socket when it is not bound, or when the interface is new or was recreated (a new
    /// index), and tells the machines when that changes whether they can hear the others. A failure is
    /// logged (once per distinct reason) and kept for [`VipRuntime::transport`]; the caller retries.
    pub(crate) fn ensure_bound(&mut self, ifindex: u32, now: Instant) {
        if self.slots.is_empty() || (self.socket.is_some() && self.bound_ifindex == Some(ifindex)) {
            return;
        }
        self.socket = None;
        self.bound_ifindex = None;
        let bound = failover::bind(self.me, self.port, &self.ifname, ifindex).and_then(UdpSocket::from_std);
        match bound {
            Ok(socket) => {
                self.socket = Some(socket);
                self.bound_ifindex = Some(ifindex);
                self.set_transport(now, Ok(()));
            }
            Err(e) => self.set_transport(now, Err(e.to_string())),
        }
    }

    /// Closes the socket because it cannot work any more (its interface is gone, it failed), and tells
    /// the machines; the caller binds it again with [`VipRuntime::ensure_bound`].
    pub(crate) fn unbind(&mut self, now: Instant, reason: String) {
        self.socket = None;
        self.bound_ifindex = None;
        self.set_transport(now, Err(reason));
    }

    /// Whether the socket should be bound and is not (the caller retries [`VipRuntime::ensure_bound`]).
    pub(crate) fn needs_bind(&self) -> bool {
        !self.slots.is_empty() && self.socket.is_none()
    }

    /// The failover socket's state.
    pub(crate) fn transport(&self) -> Transport {
        Transport {
            bound: self.socket.is_some(),
            error: self.unbound_reason.clone(),
        }
    }

    /// Records the socket's new state: logs it when it changed (or, while unbound, when the reason
    /// changed), publishes the gauge, and tells every machine.
    fn set_transport(&mut self, now: Instant, state: Result<(), String>) {
        let up = state.is_ok();
        match state {
            Ok(()) => {
                if !self.transport {
                    tracing::info!(address = %self.me, port = self.port, iface = %self.ifname, "failover socket bound");
                }
                self.unbound_reason = None;
            }
            Err(reason) => {
                if self.unbound_reason.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(%reason, "failover socket still not bound");
                } else {
                    tracing::error!(%reason, "failover socket not bound: this node hears no other candidate, so it claims no VIP (and a holder steps down) until it is; retrying");
                }
                self.unbound_reason = Some(reason);
            }
        }
        if up == self.transport {
            return;
        }
        self.transport = up;
        self.metrics.set_socket_bound(up);
        for s in self.slots.values_mut() {
            s.machine.handle_local(now, LocalEvent::Transport(up));
            s.dirty = true;
        }
    }

    /// Accepts a datagram of `len` bytes in the receive buffer, from `from`, and hands it to its VIP's
    /// machine; anything else is counted as rejected, with the reason, and dropped.
    pub(super) fn on_datagram(&mut self, len: usize, from: SocketAddr, now: Instant) {
        let reject = |m: &VipMetrics, reason: &'static str| {
            m.rejected.with_label_values(&[reason]).inc();
            tracing::debug!(%from, reason, "failover datagram rejected");
        };
        if len > MAX_DATAGRAM {
            return reject(&self.metrics, "oversized");
        }
        let SocketAddr::V6(from6) = from else {
            return reject(&self.metrics, "forged_sender");
        };
        // Every sdwand sends from the failover port: any other port is another process on a member.
        if from6.port() != self.port {
            return reject(&self.metrics, "bad_port");
        }
        let source = *from6.ip();
        // Nothing this node sends to itself is protocol traffic.
        if source == self.me {
            return reject(&self.metrics, "own_address");
        }
        let msg = match Message::decode(&self.buf[..len]) {
            Ok(msg) => msg,
            Err(e) => return reject(&self.metrics, e.reason()),
        };
        if source != msg.header.sender {
            return reject(&self.metrics, "forged_sender");
        }
        let Some(slot) = self.slots.get_mut(&msg.header.vip) else {
            return reject(&self.metrics, "unknown_vip");
        };
        slot.dirty = true;
        self.metrics
            .datagrams
            .with_label_values(&["received", msg.body.name()])
            .inc();
        slot.machine.handle_datagram(now, msg);
    }
}
