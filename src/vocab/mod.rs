//! The shared vocabulary: the names the daemon, the registry and `sdwanctl` all use, at the bottom of the
//! crate so that every layer imports them downwards (see "Layers" in `ARCHITECTURE.md`).
//!
//! Types and constants only, with the small methods that belong to them (ordering, display, parsing).
//! It must not import any other module of the crate, nor hold behaviour of its own: the protocol lives in
//! [`crate::vip`], the registry's rules in the `sdwan-registry` crate.

/// Peer names: [`name::PeerName`], the one rule for what a node may be called.
pub mod name;
mod prefix;
mod role;
mod term;
pub mod wire;

pub use prefix::{floating_key, PodPool, PrefixKind, RoutedPrefix};
pub use role::{ClusterState, Lifecycle, PeerState, Role, UnknownName, MAX_CANDIDATES};
pub use term::{Epoch, CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP};
