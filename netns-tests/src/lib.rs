//! sdwan-lab: a network-namespace lab of `sdwand` peers, shared by the netns integration tests, the
//! benchmarks and the quick start (`sdwan-lab demo`).
//!
//! A lab called NAME is a hub namespace `NAME-hub` with a bridge, and N peer namespaces `NAME-p1..NAME-pN`,
//! each with a veth underlay link into the bridge (192.0.2.(10+i)/24) and one `sdwand` that builds the
//! WireGuard interface `NAME-pI` (userspace `wireguard-go`) with the overlay address `fd00:5d::I`. State lives
//! in `/run/sdwan-lab/NAME/`. It needs root; it shells out to `ip` (iproute2).
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
//! - [`metrics`]: a daemon's Prometheus page, fetched inside its namespace.
//! - [`cmd`], [`ping`], [`background`]: running programs, ping summaries, background processes.
#![warn(missing_docs)]

pub mod background;
pub mod cmd;
pub mod doc;
pub mod down;
pub mod error;
pub mod faults;
pub mod guard;
pub mod lab;
pub mod layout;
pub mod metrics;
pub mod netns;
pub mod nodecfg;
pub mod ops;
pub mod ping;
pub mod probe;
pub mod process;
pub mod responder;
pub mod state;
pub mod vip;
pub mod wait;

pub use background::{Background, Finished};
pub use doc::{LabDoc, PeerDoc, VipDoc};
pub use down::DownReport;
pub use error::{LabError, Result};
pub use faults::Cut;
pub use guard::LabGuard;
pub use lab::{Lab, UpOptions};
pub use layout::Layout;
pub use nodecfg::NodeConfig;
pub use ops::Reload;
pub use ping::PingStats;
pub use probe::{ProbeHandle, ProbeOptions, ProbeReport};
pub use vip::VipView;
pub use wait::{wait_for, wait_until, WaitTimeout};
