//! Terms and epochs: the fencing tokens of VIP claims, and the bounds every node and the registry hold
//! them to (see "Term bounds" in `docs/protocol.md`).

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

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
