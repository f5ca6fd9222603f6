//! `sdwan-registry`: membership of networks and peers, VIP records, and the k3s bootstrap / join
//! handshakes, behind a small HTTP/JSON API.
//!
//! # Layout
//!
//! - [`model`]: the records (accounts, networks, peers, VIPs, clusters, members, tokens).
//! - [`store`]: the transactional storage trait and the embedded SQLite backend (group commit).
//! - [`token`]: bearer tokens (hashed at rest, compared in constant time) and random ids.
//!
//! The data plane never depends on the registry: it is needed for enrollment, joins and membership
//! changes only.

pub mod model;
pub mod store;
pub mod token;
