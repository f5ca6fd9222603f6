//! Unit tests of the VIP core: the wire format (`tests/wire.rs`) and the state machine, on a small
//! hand-wired cluster with a fake clock (`tests/cluster.rs`, `tests/machine.rs`, `tests/faults.rs`), and
//! the trust rules and the transport state (`tests/trust.rs`, `tests/transport.rs`), restarts of the
//! holder (`tests/restart.rs`) and quorum mode (`tests/quorum.rs`).

mod cluster;
mod faults;
mod machine;
mod quorum;
mod restart;
mod transport;
mod trust;
mod wire;

/// A splitmix64 generator for reproducible inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
