//! Kernel notifications, coalesced: a task drains the netlink event stream as fast as it arrives and
//! turns the events that may concern the interface into one pending flag ([`Notify`] keeps at most one
//! permit), so a flood of route or address changes elsewhere on the host (a BGP reload, an RA storm)
//! costs a filter per event and never a queue in the daemon loop.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::Notify;

use crate::net::NetEvent;

/// The coalesced notifications.
pub(super) struct NetWatch {
    /// The interface index events are filtered by; 0 while unknown (every event is relevant then).
    ours: Arc<AtomicU32>,
    pending: Arc<Notify>,
}

impl NetWatch {
    /// Starts draining `events`.
    pub(super) fn spawn(events: impl Stream<Item = NetEvent> + Send + Unpin + 'static) -> NetWatch {
        let ours = Arc::new(AtomicU32::new(0));
        let pending = Arc::new(Notify::new());
        tokio::spawn(drain(events, ours.clone(), pending.clone()));
        NetWatch { ours, pending }
    }

    /// Filters later events by the interface `index` (`None`: unknown, every event counts).
    pub(super) fn set_ifindex(&self, index: Option<u32>) {
        self.ours.store(index.unwrap_or(0), Ordering::Relaxed);
    }

    /// Resolves when at least one relevant event arrived since the last call. Cancel-safe.
    pub(super) async fn changed(&self) {
        self.pending.notified().await
    }
}

async fn drain(mut events: impl Stream<Item = NetEvent> + Unpin, ours: Arc<AtomicU32>, pending: Arc<Notify>) {
    while let Some(event) = events.next().await {
        let index = ours.load(Ordering::Relaxed);
        if relevant(&event, (index != 0).then_some(index)) {
            pending.notify_one();
        }
    }
    tracing::error!("the netlink event stream ended; kernel changes are seen at the next resync only");
}

/// Whether a netlink event may concern the interface (index `ours`, if known).
fn relevant(event: &NetEvent, ours: Option<u32>) -> bool {
    match (event.ifindex, ours) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::net::NetEventKind;

    fn event(ifindex: Option<u32>) -> NetEvent {
        NetEvent {
            ifindex,
            what: NetEventKind::Route,
        }
    }

    /// Wake-ups available right now (polled without waiting), at most 10.
    async fn immediate(watch: &NetWatch) -> usize {
        let mut n = 0;
        while n < 10 && tokio::time::timeout(Duration::ZERO, watch.changed()).await.is_ok() {
            n += 1;
        }
        n
    }

    /// Lets the drain task (same current-thread runtime) run until it waits for more events.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_flood_becomes_one_pending_flag_and_other_interfaces_are_ignored() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let watch = NetWatch::spawn(rx);
        watch.set_ifindex(Some(7));
        for _ in 0..100_000 {
            tx.unbounded_send(event(Some(3))).unwrap();
        }
        settle().await;
        assert_eq!(immediate(&watch).await, 0, "events on another interface woke the loop");

        for _ in 0..100_000 {
            tx.unbounded_send(event(Some(7))).unwrap();
        }
        settle().await;
        assert_eq!(immediate(&watch).await, 1, "a flood is one wake-up");

        // An event with no interface (multipath route, overrun) always counts.
        tx.unbounded_send(event(None)).unwrap();
        settle().await;
        assert_eq!(immediate(&watch).await, 1);
        // While the index is unknown, every event counts.
        watch.set_ifindex(None);
        tx.unbounded_send(event(Some(3))).unwrap();
        settle().await;
        assert_eq!(immediate(&watch).await, 1);
    }
}
