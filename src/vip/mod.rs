//! VIP failover: the protocol core, its wire format, and the runtime that drives it.
//!
//! The core ([`Machine`], one per VIP) is sans-IO: it never touches a socket, a clock or a random source.
//! The caller feeds it datagrams, timer expiries and local events together with the current time, and
//! drains the resulting [`Action`]s with [`Machine::poll_action`] and the next wake-up with
//! [`Machine::poll_timeout`]. Time must be monotonic across calls. That is what makes the deterministic
//! simulation in `tests/vip_sim.rs` possible. The protocol itself is written down in `docs/protocol.md`.

use std::cmp::Ordering;
use std::fmt;
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

pub use machine::{Machine, MoveError};
pub use wire::{Body, Header, Heartbeat, Message, WireError};

/// The highest term any claim may carry. Terms are stored as signed 64-bit integers by the registry, and a
/// node never claims above this: a term that reached it is refused everywhere rather than saturated, so no
/// message can push the epoch to a value after which failover is impossible.
pub const MAX_TERM: u64 = i64::MAX as u64;

/// How far above the highest term a node has seen a term learned from someone else may be (a claim relayed
/// in an ack or a heartbeat, a registry floor). Honest terms grow by one per claim; a bounded step means no
/// single message, and no feasible stream of them, can exhaust the term space.
pub const MAX_TERM_STEP: u64 = 1 << 16;

/// How high a candidate's own claim (or a claim naming the receiving node) may be when it is more than
/// [`MAX_TERM_STEP`] above the terms the receiver has seen: a node that restarted without a floor catches up
/// with any term an honest network reaches (one per claim) in one message, yet a rogue candidate's jump
/// leaves half of the term space above it, so failover stays possible (exhausting that half by steps takes
/// 2⁴⁶ accepted messages).
pub const CATCH_UP_TERM: u64 = 1 << 62;

/// A claim's fencing token. Terms only grow; the claimant's rank is part of the epoch, so two candidates
/// can never claim the same epoch, and every peer orders any two claims the same way: higher term first,
/// then lower rank (the better-placed candidate) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Epoch {
    /// Claim round; a new claim takes the highest term seen plus one.
    pub term: u64,
    /// The claimant's rank (0 = first candidate) when it claimed.
    pub rank: u16,
}

impl Ord for Epoch {
    fn cmp(&self, other: &Self) -> Ordering {
        self.term.cmp(&other.term).then(other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Epoch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.rank)
    }
}

/// "`holder` holds the VIP at `epoch`". Claims are ordered by epoch (then by holder, so the order is
/// total even if two peers disagree on ranks while a candidate list changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Claim {
    /// The fencing token.
    pub epoch: Epoch,
    /// The claimant's overlay address.
    pub holder: Ipv6Addr,
}

/// A node's role for one VIP (also carried in heartbeats as the sender's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum PeerState {
    /// A candidate that has just started and does not claim until it has heard the others.
    Listening = 0,
    /// A candidate that does not hold the VIP.
    Standby = 1,
    /// The candidate that holds the VIP (also while it hands it over).
    Holding = 2,
    /// A former holder that keeps serving until its successor's claim is confirmed.
    Draining = 3,
    /// A peer that routes the VIP but is not a candidate.
    Follower = 4,
}

impl PeerState {
    fn from_u8(v: u8) -> Option<PeerState> {
        Some(match v {
            0 => PeerState::Listening,
            1 => PeerState::Standby,
            2 => PeerState::Holding,
            3 => PeerState::Draining,
            4 => PeerState::Follower,
            _ => return None,
        })
    }

    /// The lowercase name used in logs, metrics and `sdwanctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Listening => "listening",
            PeerState::Standby => "standby",
            PeerState::Holding => "holding",
            PeerState::Draining => "draining",
            PeerState::Follower => "follower",
        }
    }
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
    /// Put the VIP /128 on this node's interface.
    AddAddress,
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
    },
    /// Every peer acknowledged this node's claim.
    Confirmed {
        /// The epoch.
        epoch: Epoch,
        /// Time from the claim to the last acknowledgement.
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
