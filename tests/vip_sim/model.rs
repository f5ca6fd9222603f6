//! The plain types of the simulation: time, the generator, the cluster's shape, links, fault operations
//! and claim records.

use std::net::Ipv6Addr;

use sdwand::vip::{ClaimReason, Epoch, Timers};

/// Microseconds of simulated time.
pub type T = u64;
/// One millisecond of simulated time.
pub const MS: T = 1_000;

/// A splitmix64 generator: tiny, seedable, good enough for schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// Uniform index below `n` (> 0).
    pub fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The cluster's shape and timers.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Candidates (nodes `0..candidates`, rank = index).
    pub candidates: usize,
    /// Followers (the nodes after the candidates).
    pub followers: usize,
    /// `Some(w)`: quorum mode, with the first `w` followers as witnesses.
    pub quorum: Option<usize>,
    /// Timers of every node.
    pub timers: Timers,
}

impl Setup {
    /// Total node count.
    pub fn nodes(&self) -> usize {
        self.candidates + self.followers
    }
    /// Whether node `i` votes in quorum mode (a candidate or a witness).
    pub fn voter(&self, i: usize) -> bool {
        self.quorum.is_some_and(|w| i < self.candidates + w)
    }
    /// Voters in quorum mode (0 without it).
    pub fn voters(&self) -> usize {
        self.quorum.map_or(0, |w| self.candidates + w)
    }
}

/// One directed link's conditions.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Per-datagram loss probability.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: T,
    /// Extra uniform random delay in `0..=jitter` (reorders datagrams).
    pub jitter: T,
    /// Probability that a datagram is delivered twice.
    pub dup: f64,
    /// Active partitions cutting this link.
    pub cut: u32,
}

/// A scheduled fault or operator action.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The daemon crashes (its interface keeps the address and routes).
    Crash(usize),
    /// A downed daemon starts again, adopting what its interface holds.
    Restart(usize),
    /// The node dies (daemon and interface state gone).
    Kill(usize),
    /// A dead node boots with an empty interface.
    Revive(usize),
    /// A planned stop of the daemon.
    Shutdown(usize),
    /// The node processes nothing for this long, then everything queued.
    Freeze(usize, T),
    /// The node's health check result.
    Health(usize, bool),
    /// An operator move requested on a node (`None` = the holder) to a node (`None` = next candidate).
    Move(Option<usize>, Option<usize>),
    /// Cut these directed links.
    Cut(Vec<(usize, usize)>),
    /// Mend these directed links.
    Mend(Vec<(usize, usize)>),
    /// Every link gets loss in `0..=loss`, jitter in `0..=jitter` and this duplication probability.
    Weather { loss: f64, jitter: T, dup: f64 },
    /// Back to the nominal network.
    Calm,
    /// Re-deliver a datagram sent earlier.
    Replay,
    /// All faults end: network nominal, every node up and healthy (some dead nodes stay dead if `keep_dead`).
    FaultsEnd { keep_dead: Vec<usize> },
}

/// A claim as recorded from `Note::Claimed`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRec {
    /// When.
    pub t: T,
    /// Who.
    pub node: usize,
    /// Why.
    pub reason: ClaimReason,
    /// At which epoch.
    pub epoch: Epoch,
}

/// A node's overlay address.
pub fn addr(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, i as u16 + 1)
}
