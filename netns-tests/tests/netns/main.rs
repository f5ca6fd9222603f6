//! Network-namespace integration tests of `sdwand`: real daemons, real `wireguard-go`, real netlink, each
//! test in a lab of its own (unique name, removed by a guard even when the test fails).
//!
//! They need root and a built daemon: `cargo build --workspace && cargo test -p sdwan-lab --test netns`.
//! Without root they fail with a message saying so; they never skip. At most two labs run at once
//! (`SDWAN_LAB_PARALLEL`), whatever the number of test threads.
//!
//! The `vip_*` tests run 5 peers: candidates p1..p3 of the VIP fd00:5d:f::1 and observers p4, p5. Each
//! asserts who holds the VIP (the address on the interfaces: the ground truth) and where an observer's
//! traffic to it lands (which node's echo responder answers the observer's probe). `vip_loss` takes a minute;
//! the whole suite a few minutes.

mod bad_config;
mod common;
mod docker;
mod down;
mod floating;
mod http_limits;
mod members;
mod mesh;
mod metrics_scrape;
mod pod_prefixes;
mod pods;
mod prometheus;
mod registry;
mod registry_ha;
mod registry_hostile_view;
mod repair;
mod restart;
mod vip_crash;
mod vip_datagrams;
mod vip_forged_ack;
mod vip_freeze;
mod vip_liveness_lie;
mod vip_local_spoof;
mod vip_loss;
mod vip_move;
mod vip_node_death;
mod vip_partition;
mod vip_quorum;
mod vip_registry_loss;
mod vip_restart;
mod vip_sigterm;
mod vip_squatted_port;
mod walkthrough;
mod wg_killed;
mod workload_routing;
