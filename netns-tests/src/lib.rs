//! sdwan-lab: a network-namespace lab of `sdwand` peers, shared by the netns integration tests, the
//! benchmarks and the quick start (`sdwan-lab demo`).
//!
//! A lab called NAME is a hub namespace `NAME-hub` with a bridge, and N peer namespaces `NAME-p1..NAME-pN`,
//! each with a veth underlay link into the bridge (192.0.2.(10+i)/24) and one `sdwand` that builds the
//! WireGuard interface `NAME-pI` (userspace `wireguard-go`) with the overlay address `fd00:5d::I`. State lives
//! in `/run/sdwan-lab/NAME/`. It needs root; it shells out to `ip` (iproute2) and `nft`.
//!
//! With [`UpOptions::vip_candidates`] = K, peers p1..pK are the candidates of the VIP `fd00:5d:f::1`, every
//! candidate runs an echo responder bound to it, and the [`vip`], [`probe`] and [`faults`] helpers let a test
//! kill, freeze, cut or lossy-link the holder and see where a client's traffic to the VIP lands.
//!
//! ```no_run
//! use std::time::Duration;
//! use sdwan_lab::{LabGuard, UpOptions};
//!
//! let lab = LabGuard::up(UpOptions::new("ex1", 3))?; // waits until every pair has a handshake
//! let stats = lab.ping(1, sdwan_lab::Layout::overlay_addr(2).into(), 3, Duration::from_millis(200))?;
//! assert_eq!(stats.lost(), 0);
//! # Ok::<(), sdwan_lab::LabError>(())
//! // dropping the guard removes namespaces, interfaces, processes and state
//! ```
//!
//! A failover, seen from an observer:
//!
//! ```no_run
//! use std::time::Duration;
//! use sdwan_lab::{LabGuard, ProbeOptions, UpOptions};
//!
//! let mut opts = UpOptions::new("ex2", 5);
//! opts.vip_candidates = 3; // p1..p3; p4 and p5 only route the VIP
//! let mut lab = LabGuard::up(opts)?; // also waits until one peer holds the VIP and all agree
//! let holder = lab.wait_vip_settled(Duration::from_secs(10))?;
//! let probe = lab.start_probe(4, ProbeOptions::new(Duration::from_secs(5)))?; // every 5 ms
//! lab.kill_node(holder)?;
//! let new = lab.wait_vip_settled(Duration::from_secs(10))?;
//! let report = probe.finish()?;
//! println!("{report}"); // lost requests, longest outage, who answered when
//! assert_eq!(lab.holders()?, [new]); // ground truth: the address on the interfaces
//! # Ok::<(), sdwan_lab::LabError>(())
//! ```
//!
//! # Layout
//!
//! - [`layout`]: names and addresses, pure functions of the lab name and peer index; name validation.
//! - [`lab`]: [`Lab::up`], [`Lab::load`], [`Lab::status`], handshake waits.
//! - [`down`]: [`Lab::down`] by name, for whole, partial or absent labs.
//! - [`ops`]: operations on a running lab: exec, ping, background processes, daemon life cycle,
//!   `wireguard-go`, configuration rewrites.
//! - [`guard`]: [`LabGuard`], which takes a lab down on drop.
//! - [`nodecfg`]: the typed `sdwand.toml` of a peer.
//! - [`state`]: the state file `lab.json`.
//! - [`doc`]: the JSON document of `sdwan-lab up` / `status` (a stable contract).
//! - [`process`]: process identity (PID + start time) and pidfd signalling, so no recycled PID is hit.
//! - [`wait`]: bounded polling ([`wait_until`]), the only way to wait for a state.
//! - [`metrics`]: a daemon's Prometheus page, fetched inside its namespace; samples and sums.
//! - [`vip`]: the VIP's config sections, who holds it ([`Lab::holders`]), each daemon's view (role, believed
//!   holder, epoch, counters), [`Lab::wait_vip_settled`], `sdwanctl`.
//! - [`registry`]: the lab's `sdwan-registry` (namespace, account, network, enrollment token), its API, the
//!   peers' enrollment identities; starting, stopping and calling any replica.
//! - [`replicas`]: the registry's further replicas (`--registry-replicas`, etcd backend), each in its namespace.
//! - [`etcd`]: the 3-member etcd cluster of `--registry-backend etcd`: members' life cycle, the leader.
//! - [`pods`]: pods attached with the real CNI plugins from the configuration each daemon wrote (`--pods`).
//! - [`floating`]: the HA branch site of `--floating-candidates K` (a LAN behind K gateways, one floating
//!   prefix per family of `--floating-family`), its holders and the candidates' LAN links.
//! - [`sites`]: the network's site ranges, `sdwanctl registry` with the lab's admin token, a host on a LAN
//!   behind a peer.
//! - [`responder`]: the echo service behind the VIP (hidden `sdwan-lab responder`), tracked like the daemons.
//! - [`probe`]: the client that probes the VIP from an observer and reports outages and who answered.
//! - [`faults`]: node death and revival, daemon crash/freeze, nftables partitions and random loss.
//! - [`netns`]: work on a thread inside a namespace (probes, scrapes, crafted datagrams).
//! - [`forge`]: hostile failover traffic: crafted datagrams from a chosen address, port and user (root or
//!   `nobody`, with or without `IPV6_FREEBIND`), once or as a periodic stream, and a squatter holding a
//!   failover port.
//! - [`flood`]: slow and idle HTTP clients (slowloris) and a process's open-file count.
//! - [`local_etcd`]: a local etcd cluster (N members on 127.0.0.1) for the registry's tests and benchmarks:
//!   its leader, SIGKILL of a member (the lab's own cluster, in namespaces, is [`etcd`]).
//! - [`fake_registry`]: a stand-in registry that serves the daemons a view the test chose.
//! - [`cmd`], [`ping`], [`background`]: running programs, ping summaries, background processes.
//! - [`walkthrough`]: the README's walkthrough blocks and the steps of `docs/walkthrough.sh`.
#![warn(missing_docs)]

pub mod background;
pub mod cmd;
pub mod doc;
pub mod down;
pub mod error;
pub mod etcd;
pub mod fake_registry;
pub mod faults;
pub mod floating;
pub mod flood;
pub mod forge;
pub mod guard;
pub mod lab;
pub mod layout;
pub mod local_etcd;
pub mod metrics;
pub mod netns;
pub mod nodecfg;
pub mod ops;
pub mod ping;
pub mod pods;
pub mod probe;
pub mod process;
pub mod registry;
pub mod replicas;
pub mod responder;
pub mod sites;
pub mod state;
pub mod vip;
pub mod wait;
pub mod walkthrough;

pub use background::{Background, Finished};
pub use doc::{EtcdDoc, LabDoc, PeerDoc, ReplicaDoc, VipDoc};
pub use down::DownReport;
pub use error::{LabError, Result};
pub use fake_registry::FakeRegistry;
pub use faults::Cut;
pub use floating::FloatingFamily;
pub use forge::{SendOptions, Squatter, Stream, User};
pub use guard::LabGuard;
pub use lab::{Lab, UpOptions};
pub use layout::Layout;
pub use nodecfg::NodeConfig;
pub use ops::Reload;
pub use ping::PingStats;
pub use pods::{PodFamily, PodState};
pub use probe::{ProbeHandle, ProbeOptions, ProbeReport};
pub use registry::RegistryBackend;
pub use sites::SiteHost;
pub use vip::VipView;
pub use wait::{wait_for, wait_until, WaitTimeout};
