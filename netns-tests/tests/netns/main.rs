//! Network-namespace integration tests of `sdwand`: real daemons, real `wireguard-go`, real netlink, each
//! test in a lab of its own (unique name, removed by a guard even when the test fails).
//!
//! They need root and a built daemon: `cargo build --workspace && cargo test -p sdwan-lab --test netns`.
//! Without root they fail with a message saying so; they never skip.

mod bad_config;
mod common;
mod down;
mod members;
mod mesh;
mod repair;
mod restart;
mod wg_killed;
