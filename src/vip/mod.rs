//! VIP failover: the protocol core, its wire format, and the runtime that drives it.
//!
//! The core ([`Machine`], one per VIP) is sans-IO: it never touches a socket, a clock or a random source.
//! The caller feeds it datagrams, timer expiries and local events together with the current time, and
//! drains the resulting [`Action`]s with [`Machine::poll_action`] and the next wake-up with
//! [`Machine::poll_timeout`]. Time must be monotonic across calls. That is what makes the deterministic
//! simulation in `tests/vip_sim.rs` possible. The protocol itself is written down in `docs/protocol.md`.

use std::net::Ipv6Addr;
use std::time::Duration;

use serde::Serialize;

pub mod health;
mod machine;
mod replay;
pub(crate) mod runtime;
#[cfg(test)]
mod tests;
pub mod wire;

pub use crate::vocab::{Epoch, PeerState, CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP};
pub use machine::{Machine, MoveError};
pub use wire::{Body, Header, Heartbeat, Message, WireError};

/// "`holder` holds the VIP at `epoch`". Claims are ordered by epoch (then by holder, so the order is
/// total even if two peers disagree on ranks while a candidate list changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Claim {
    /// The fencing token.
    pub epoch: Epoch,
    /// The claimant's overlay address.
    pub holder: Ipv6Addr,
}

/// Why a holder hands the VIP over (carried in the handover, counted by the successor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HandoverReason {
    /// An operator asked (`sdwanctl vip move`).
    Manual = 0,
    /// The holder is shutting down.
    Shutdown = 1,
    /// The holder's health check failed.
    Health = 2,
    /// A higher-ranked candidate returned and preemption is on.
    Preempt = 3,
}

impl HandoverReason {
    fn from_u8(v: u8) -> Option<HandoverReason> {
        Some(match v {
            0 => HandoverReason::Manual,
            1 => HandoverReason::Shutdown,
            2 => HandoverReason::Health,
            3 => HandoverReason::Preempt,
            _ => return None,
        })
    }
}

/// Why a candidate claimed (the `reason` label of the failover counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimReason {
    /// No holder was known after listening.
    Initial,
    /// A restarted candidate that adopted the VIP address (it held the VIP when its daemon stopped) heard
    /// no live holder while listening and claims afresh, keeping the address throughout (see "Restart and
    /// adoption" in `docs/protocol.md`).
    Restart,
    /// The holder stopped sending heartbeats (or stopped holding).
    HolderDead,
    /// The holder handed over.
    Handover(HandoverReason),
    /// The holder renewed its claim with a fresh epoch: its rank changed with the candidate list, or a
    /// follower still routes by a higher claim of a holder that is gone (see "Trust model" in
    /// `docs/protocol.md`).
    Renew,
}

impl ClaimReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimReason::Initial => "initial",
            ClaimReason::Restart => "restart",
            ClaimReason::HolderDead => "holder_dead",
            ClaimReason::Handover(HandoverReason::Manual) => "manual",
            ClaimReason::Handover(HandoverReason::Shutdown) => "shutdown",
            ClaimReason::Handover(HandoverReason::Health) => "health",
            ClaimReason::Handover(HandoverReason::Preempt) => "preempt",
            ClaimReason::Renew => "renew",
        }
    }
}

/// Timers of one VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Heartbeat interval. Heartbeats go out twice per interval (see `docs/protocol.md`).
    pub interval: Duration,
    /// A candidate is dead after this many intervals without a heartbeat (direct or reported).
    pub dead_after: u32,
    /// `Some(delay)`: a holder hands the VIP back to a higher-ranked candidate that has been live and
    /// healthy for `delay`. `None`: no preemption.
    pub preempt: Option<Duration>,
}

impl Timers {
    /// How long a silent candidate with this interval stays live.
    pub fn dead_time(&self, interval: Duration) -> Duration {
        interval * self.dead_after
    }
    /// How long a starting candidate listens before it may claim.
    pub fn listen(&self) -> Duration {
        2 * self.dead_time(self.interval)
    }
    /// Longest wait between claim re-sends to a peer that has not acknowledged.
    pub fn retransmit_max(&self) -> Duration {
        Duration::from_secs(1).max(self.interval)
    }
    /// Period of the claim refresh to every peer.
    pub fn refresh(&self) -> Duration {
        Duration::from_secs(2).max(4 * self.interval)
    }
    /// How long a handover may take before the holder gives up and keeps the VIP.
    pub fn handover_timeout(&self) -> Duration {
        Duration::from_secs(1).max(20 * self.interval)
    }
    /// Longest time a former holder keeps serving while its successor's claim is being confirmed.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(2).max(40 * self.interval)
    }
    /// Quorum mode: how long a voter keeps its promise after receiving the heartbeat its vote echoes
    /// (`S`, one dead time: a voter that sees the holder dead may vote for another at once).
    pub fn vote_promise(&self) -> Duration {
        self.dead_time(self.interval)
    }
    /// Quorum mode: how long a candidate counts a vote after sending the heartbeat it echoes (`Lh`,
    /// fifteen sixteenths of the promise, so promises outlast leases on clocks that differ in rate by up to
    /// 3 %: see "Quorum mode" in `docs/protocol.md`).
    pub fn vote_lease(&self) -> Duration {
        self.vote_promise() * 15 / 16
    }
    /// Quorum mode: a holder steps down this long before its majority of votes runs out (`E`, a quarter
    /// interval), so the address is off the interface by then.
    pub fn lease_margin(&self) -> Duration {
        self.interval / 4
    }
    /// Quorum mode: the kernel lifetime of a holder's address (`Lk`): the vote lease rounded up to whole
    /// seconds (the kernel's unit), plus one second so that a renewal every
    /// [`lifetime_renewal`](Self::lifetime_renewal) never lets it lapse under a running holder.
    pub fn address_lifetime(&self) -> Duration {
        let lease = self.vote_lease();
        Duration::from_secs(lease.as_secs() + u64::from(lease.subsec_nanos() > 0) + 1)
    }
    /// Quorum mode: how often a holder renews its address's kernel lifetime (a quarter of it).
    pub fn lifetime_renewal(&self) -> Duration {
        self.address_lifetime() / 4
    }
}

/// Quorum mode of a VIP (see "Quorum mode" in `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quorum {
    /// Members that vote without being candidates (a candidate listed here counts once).
    pub witnesses: Vec<Ipv6Addr>,
}

/// Who takes part in one VIP, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The virtual address.
    pub vip: Ipv6Addr,
    /// This node's overlay address.
    pub me: Ipv6Addr,
    /// Candidates in promotion order (rank = index). At most [`wire::MAX_CANDIDATES`].
    pub candidates: Vec<Ipv6Addr>,
    /// Every other member of the network: claims are fanned out to them and acknowledged by them.
    pub peers: Vec<Ipv6Addr>,
    /// Timers.
    pub timers: Timers,
    /// `Some`: quorum mode (a candidate claims and holds only with the votes of a majority of the
    /// candidates and witnesses). `None`: no quorum, a partition may elect a holder on each side.
    pub quorum: Option<Quorum>,
}

/// How a machine finds the world when it starts (a restarted daemon adopts the data plane it left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopt {
    /// Nothing known.
    Nothing,
    /// The VIP address is on this node's interface: keep serving while listening, and resume holding if
    /// the others still name this node as holder.
    HeldHere,
    /// The device routes the VIP to this peer: keep that route until a claim says otherwise.
    RoutedTo(Ipv6Addr),
}

/// A local input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEvent {
    /// The (debounced) health check result changed.
    Health(bool),
    /// The daemon is stopping: hand the VIP over if held, then report [`Action::Stopped`].
    Shutdown,
    /// The candidate or member list changed.
    Update(Params),
    /// Whether the failover transport works (`true`: the socket is bound and receiving). A machine starts
    /// with the transport up; while it is down the node never claims, a node serving the VIP removes the
    /// address once it has been down for a dead time, and when it comes back a candidate listens for the
    /// full listen time again (see "Trust model" in `docs/protocol.md`).
    Transport(bool),
}

/// What the machine asks its driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Send `msg` to `to`'s overlay address.
    Send {
        /// Destination.
        to: Ipv6Addr,
        /// Datagram.
        msg: Message,
    },
    /// Put the VIP /128 on this node's interface (permanent until [`Action::AddressLifetime`] says
    /// otherwise).
    AddAddress,
    /// Quorum mode: the address this node put on its interface may live this long from now and no
    /// longer (`Some`: the kernel's valid and preferred lifetime, so the kernel removes it by itself if
    /// this node stops running; a holder asks again well before it runs out), or again for good (`None`,
    /// quorum mode turned off under a holder). Comes right after the [`Action::AddAddress`] of a claim,
    /// then every [`Timers::lifetime_renewal`] while holding. See "Quorum mode" in `docs/protocol.md`.
    AddressLifetime(Option<Duration>),
    /// Take the VIP /128 off this node's interface.
    RemoveAddress,
    /// Route the VIP through the WireGuard peer with this overlay address (`me` = deliver locally).
    Route(Ipv6Addr),
    /// Something worth a metric or a log line.
    Note(Note),
    /// The shutdown sequence is complete; the driver may exit.
    Stopped,
}

/// Observations for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// This node's role changed.
    Role {
        /// Before.
        from: PeerState,
        /// After.
        to: PeerState,
        /// Why, in a few words.
        why: &'static str,
        /// The claim in force afterwards.
        claim: Option<Claim>,
    },
    /// This node claimed the VIP.
    Claimed {
        /// Why.
        reason: ClaimReason,
        /// The new epoch.
        epoch: Epoch,
        /// Time from noticing the holder was gone (or from the handover request) to the claim.
        detection_to_claim: Duration,
        /// The client-visible outage this claim ended: from the last heartbeat this node heard from the
        /// previous holder (a dead holder) or from the handover request, to the claim (the address is
        /// added and the claim sent in the same step). `None` for a claim that replaced no holder
        /// (initial, restart, renew).
        outage: Option<Duration>,
    },
    /// Every peer acknowledged this node's claim.
    Confirmed {
        /// The epoch.
        epoch: Epoch,
        /// Time from the claim to the last acknowledgement.
        claim_to_confirmed: Duration,
    },
    /// Every peer that was live when this node claimed (or resumed) acknowledged the claim: candidates
    /// dead at that moment are not waited for, peers that are not candidates always are (their liveness
    /// is not known here). Noted once per hold, at once when no live peer is left to wait for.
    LiveConfirmed {
        /// The epoch.
        epoch: Epoch,
        /// Time from the claim to the last of those acknowledgements.
        claim_to_confirmed: Duration,
    },
    /// A heartbeat round trip to a candidate.
    Rtt {
        /// The candidate.
        peer: Ipv6Addr,
        /// Round-trip time.
        rtt: Duration,
    },
    /// A datagram was dropped (the metric label).
    Rejected(&'static str),
    /// A handover this node started did not complete; it keeps the VIP.
    HandoverFailed {
        /// The intended successor.
        to: Ipv6Addr,
    },
    /// Quorum mode: this holder's votes from a majority of the voters were about to run out, so it removed
    /// the address and stepped down.
    LeaseLost {
        /// The epoch it held.
        epoch: Epoch,
        /// How long it held.
        held: Duration,
    },
    /// A candidate this holder cannot hear answered its renewal (see [`ClaimReason::Renew`]) with a higher
    /// claim that followers route by: both hold, each reaching the followers but not the other (a
    /// partition between candidates). This holder waits `hold_off` before renewing above it again, instead
    /// of duelling at every refresh; the lower one steps down once they hear each other.
    RivalUnheard {
        /// The other holder.
        rival: Ipv6Addr,
        /// How long this holder waits before topping its claim again.
        hold_off: Duration,
    },
    /// The claim rule picked this node, but the highest term seen is already [`MAX_TERM`]: it cannot
    /// claim a higher epoch, so it does not claim. Noted once per machine (an operator must reset the
    /// VIP's terms: restart every daemon with a registry floor below it).
    TermExhausted {
        /// The highest term seen.
        term: u64,
    },
}

/// A candidate as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateStatus {
    /// Overlay address.
    pub address: Ipv6Addr,
    /// Promotion rank (0 = first).
    pub rank: usize,
    /// This node.
    pub me: bool,
    /// Heard within its dead time (directly or through another candidate); always true for this node.
    pub live: bool,
    /// Its last reported health.
    pub healthy: bool,
    /// Its last reported state.
    pub state: Option<PeerState>,
    /// Milliseconds since it was last heard from.
    pub last_heard_ms: Option<u64>,
    /// Last heartbeat round trip, microseconds.
    pub rtt_us: Option<u64>,
}

/// One VIP as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VipStatus {
    /// The virtual address.
    pub vip: Ipv6Addr,
    /// This node's role.
    pub role: PeerState,
    /// This node's health as last reported.
    pub healthy: bool,
    /// The highest claim seen.
    pub claim: Option<Claim>,
    /// Where this node routes the VIP.
    pub routed_to: Option<Ipv6Addr>,
    /// Candidates in rank order.
    pub candidates: Vec<CandidateStatus>,
    /// When holding: how many peers acknowledged the claim, of how many.
    pub confirmed: Option<(usize, usize)>,
    /// Whether the failover transport works (the last [`LocalEvent::Transport`]); while it is down this
    /// node does not claim.
    pub transport_up: bool,
}
