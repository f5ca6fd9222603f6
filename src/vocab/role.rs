//! Roles and stages: what a peer is and does (k3s role, lifecycle, its state for a VIP) and a cluster's
//! stage, as the daemon, the registry and `sdwanctl` all name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most candidates a VIP may have: a heartbeat reports liveness for at most this many, the registry
/// refuses a join beyond it, and a configuration or registry view with more is refused.
pub const MAX_CANDIDATES: usize = 32;

/// How a peer's record is reaped when it goes silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Never removed automatically (shown stale instead).
    Persistent,
    /// Removed after a silence longer than its TTL.
    Ephemeral,
    /// Provider-side spot/preemptible: removed after a short silence.
    Spot,
}

/// A k3s role: what a peer may run, and what it joins a cluster as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A k3s server: a control-plane node and a candidate of the cluster's VIP.
    Server,
    /// A k3s agent: a worker.
    Agent,
}

/// A cluster's life stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// Created by a bootstrap handshake; the first server has not reported k3s ready yet.
    Bootstrapping,
    /// A server reported k3s ready.
    Active,
    /// A server reported k3s failed; joins are refused.
    Error,
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
    /// The state a heartbeat's byte names, if any.
    pub fn from_u8(v: u8) -> Option<PeerState> {
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

/// A name that is not one of an enum's known names (a newer schema, a corrupt row, a mistyped argument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    /// Which enum.
    pub what: &'static str,
    /// The text found.
    pub value: String,
}

/// `as_str`, [`FromStr`] and [`fmt::Display`] for an enum, from its stable names.
macro_rules! names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The stable name used on the wire, in the registry's store and in `sdwanctl`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName { what: $what, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(Lifecycle, "lifecycle class", { Persistent => "persistent", Ephemeral => "ephemeral", Spot => "spot" });
names!(Role, "role", { Server => "server", Agent => "agent" });
names!(ClusterState, "cluster state", { Bootstrapping => "bootstrapping", Active => "active", Error => "error" });
