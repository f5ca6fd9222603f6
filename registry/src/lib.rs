//! `sdwan-registry`: membership of networks and peers, VIP records, and the k3s bootstrap / join
//! handshakes, behind a small HTTP/JSON API.
//!
//! # Layout
//!
//! - [`model`]: the records (accounts, networks, peers, VIPs, clusters, members, tokens).
//! - [`store`]: the transactional storage trait, the embedded SQLite backend (group commit) and the etcd
//!   backend (optimistic transactions; several replicas on one etcd follow each other's changes and elect
//!   the one that runs the reaper).
//! - [`token`]: bearer tokens (hashed at rest, compared in constant time) and random ids.
//! - [`service`]: what each request does, as functions over a store transaction (no I/O, no clock).
//! - The JSON request and response bodies are [`sdwand::vocab::wire`], shared with the clients.
//! - [`error`]: request errors, their codes, and the 401/403/404 rules.
//! - [`api`]: the axum routes and extractors.
//! - [`config`] and [`server`]: the configuration file and the serving loop of the binary.
//! - [`metrics`]: the Prometheus metrics of `GET /metrics`.
//! - [`migrate`]: `sdwan-registry migrate`, a SQLite registry copied into etcd and compared.
//! - [`reaper`]: the periodic removal of silent ephemeral and spot peers (on the elected replica only).
//!
//! The data plane never depends on the registry: it is needed for enrollment, joins and membership
//! changes only. This crate depends on `sdwand` (for the shared vocabulary and the hardened HTTP serving),
//! never the other way: what only the server needs is not linked into the daemon.
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod error;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod reaper;
pub mod server;
pub mod service;
pub mod store;
pub mod token;
