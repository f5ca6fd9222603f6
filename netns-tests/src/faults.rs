//! Faults to inject into a running lab, each one removable: node death and revival, daemon signals
//! (crash, freeze, thaw, planned stop), underlay partitions, random underlay loss and a peer cut off from
//! the registry, with nftables.
//!
//! nftables rules live in tables of their own in each peer's namespace (`inet sdwanlab_part`,
//! `inet sdwanlab_loss`, `inet sdwanlab_reg`), match only underlay UDP (the WireGuard traffic) or, for the
//! registry cut, only traffic to and from the registry's address, and vanish with the namespace,
//! so `down` needs no record of them. There is no `netem` on these machines: loss is
//! `numgen random mod 100 < N drop`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::cmd::{self, in_netns};
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::layout::Layout;

/// The nftables table of partitions.
const PARTITION_TABLE: &str = "sdwanlab_part";
/// The nftables table of random loss.
const LOSS_TABLE: &str = "sdwanlab_loss";
/// The nftables table that cuts one peer off from the registry.
const REGISTRY_CUT_TABLE: &str = "sdwanlab_reg";

/// Which way a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing passes between the two sets.
    Both,
    /// Packets from the first set to the second are dropped; the other way passes.
    OneWay,
}

/// The nft script that, in the namespace of one peer of set A, drops underlay UDP to (and with
/// [`Cut::Both`], from) the underlay addresses of set B. Adds to what is there.
pub fn partition_script(b_addrs: &[Ipv4Addr], cut: Cut) -> String {
    let set = b_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let t = PARTITION_TABLE;
    let mut s = format!(
        "add table inet {t}\n\
         add chain inet {t} out {{ type filter hook output priority 0; policy accept; }}\n\
         add chain inet {t} in {{ type filter hook input priority 0; policy accept; }}\n\
         add rule inet {t} out ip daddr {{ {set} }} meta l4proto udp counter drop\n"
    );
    if cut == Cut::Both {
        s.push_str(&format!(
            "add rule inet {t} in ip saddr {{ {set} }} meta l4proto udp counter drop\n"
        ));
    }
    s
}

/// The nft script that drops, silently, everything between a peer and the registry's underlay address
/// (TCP to it and its answers): the peer's requests hang as they would behind a broken path.
pub fn registry_cut_script() -> String {
    let t = REGISTRY_CUT_TABLE;
    let addr = crate::layout::REGISTRY_ADDR;
    format!(
        "add table inet {t}\n\
         add chain inet {t} out {{ type filter hook output priority 0; policy accept; }}\n\
         add chain inet {t} in {{ type filter hook input priority 0; policy accept; }}\n\
         add rule inet {t} out ip daddr {addr} counter drop\n\
         add rule inet {t} in ip saddr {addr} counter drop\n"
    )
}

/// The nft script that drops `percent` % of the UDP packets entering and leaving underlay interface
/// `underlay_if`, at random.
pub fn loss_script(underlay_if: &str, percent: u8) -> String {
    let t = LOSS_TABLE;
    format!(
        "add table inet {t}\n\
         add chain inet {t} in {{ type filter hook input priority -10; policy accept; }}\n\
         add chain inet {t} out {{ type filter hook output priority -10; policy accept; }}\n\
         add rule inet {t} in iifname \"{underlay_if}\" meta l4proto udp numgen random mod 100 < {percent} counter drop\n\
         add rule inet {t} out oifname \"{underlay_if}\" meta l4proto udp numgen random mod 100 < {percent} counter drop\n"
    )
}

/// The nft script that removes `table` whether or not it exists.
fn remove_script(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

/// The sum of the `counter packets N` in an `nft list table` listing.
pub fn counted_packets(listing: &str) -> u64 {
    listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

impl Lab {
    /// Runs an nft script in peer `i`'s namespace.
    pub(crate) fn nft(&self, i: usize, script: &str) -> Result<()> {
        let ns = self.netns(i)?;
        cmd::run_stdin(&mut in_netns(&ns, &["nft", "-f", "-"]), script).map(drop)
    }

    /// Packets dropped so far by the rules of `table` in every peer's namespace.
    fn nft_dropped(&self, table: &str) -> Result<u64> {
        let mut total = 0;
        for i in 1..=self.peer_count() {
            let ns = self.netns(i)?;
            let out =
                cmd::output(Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "table", "inet", table]))?;
            // A missing table (never added, or removed) counts nothing.
            if out.status.success() {
                total += counted_packets(&String::from_utf8_lossy(&out.stdout));
            }
        }
        Ok(total)
    }

    /// Sets peer `i`'s underlay link (its end of the veth) up or down.
    pub fn set_underlay(&self, i: usize, up: bool) -> Result<()> {
        let ns = self.netns(i)?;
        let ul = self.layout.underlay_if(i);
        cmd::ip_in(&ns, &["link", "set", &ul, if up { "up" } else { "down" }]).map(drop)
    }

    /// Node death: peer `i`'s underlay link (and its site LAN link, for a floating candidate) goes down, then its `sdwand` and the `wireguard-go` serving its
    /// interface are SIGKILLed (the interface, and any VIP on it, vanish with `wireguard-go`). Its echo
    /// responder stays, as a service would on a machine that comes back. Undo with [`Lab::revive_node`].
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        self.set_underlay(i, false)?;
        if self.floating_candidates().contains(&i) {
            self.set_lan(i, false)?;
        }
        self.stop_sdwand(i, libc::SIGKILL)?;
        self.kill_wireguard_go(i)?;
        Ok(())
    }

    /// Brings a node killed with [`Lab::kill_node`] back: underlay up, a new `sdwand` (which starts a new
    /// `wireguard-go`), and waits at most `timeout` for it to be ready. A floating candidate comes back as a
    /// rebooted machine would: without the gateway address its killed daemon left on its LAN interface.
    pub fn revive_node(&mut self, i: usize, timeout: Duration) -> Result<()> {
        self.set_underlay(i, true)?;
        if self.floating_candidates().contains(&i) {
            self.forget_gateway(i)?;
            self.set_lan(i, true)?;
        }
        self.start_sdwand(i)?;
        self.wait_ready(i, timeout)?;
        self.wg_pid(i)?;
        Ok(())
    }

    /// Daemon crash: SIGKILL to peer `i`'s `sdwand` (its `wireguard-go`, interface and addresses stay).
    pub fn kill_sdwand(&mut self, i: usize) -> Result<()> {
        self.stop_sdwand(i, libc::SIGKILL).map(drop)
    }

    /// SIGSTOP to peer `i`'s `sdwand`: it stops answering anything until [`Lab::thaw_sdwand`]. (`down`
    /// sends SIGCONT after SIGTERM, so a frozen daemon left behind by a failed test still exits.)
    pub fn freeze_sdwand(&self, i: usize) -> Result<()> {
        self.signal_sdwand(i, libc::SIGSTOP)
    }

    /// SIGCONT to peer `i`'s `sdwand`.
    pub fn thaw_sdwand(&self, i: usize) -> Result<()> {
        self.signal_sdwand(i, libc::SIGCONT)
    }

    /// Partitions the underlay between peers `a` and peers `b`: WireGuard UDP between their underlay
    /// addresses is dropped (with [`Cut::OneWay`] only from `a` to `b`). The rules go into the namespaces
    /// of `a`; partitions add up. Undo with [`Lab::heal_partitions`].
    pub fn partition(&self, a: &[usize], b: &[usize], cut: Cut) -> Result<()> {
        if a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x)) {
            return Err(LabError::InvalidOption(format!(
                "a partition needs two non-empty, disjoint sets of peers (got {a:?} and {b:?})"
            )));
        }
        for &j in b {
            self.peer(j)?;
        }
        let b_addrs: Vec<Ipv4Addr> = b.iter().map(|&j| Layout::underlay_addr(j)).collect();
        let script = partition_script(&b_addrs, cut);
        for &i in a {
            self.nft(i, &script)?;
        }
        Ok(())
    }

    /// Removes every partition (in every peer's namespace; idempotent).
    pub fn heal_partitions(&self) -> Result<()> {
        for i in 1..=self.peer_count() {
            self.nft(i, &remove_script(PARTITION_TABLE))?;
        }
        Ok(())
    }

    /// Packets dropped so far by the partitions.
    pub fn partition_dropped(&self) -> Result<u64> {
        self.nft_dropped(PARTITION_TABLE)
    }

    /// Random loss on every underlay link: in each peer's namespace, `percent` % of the UDP packets entering
    /// and of those leaving its underlay interface are dropped. A packet between two peers crosses two links,
    /// so it is lost with probability `1 - (1 - p)²` (19 % for 10 %). Replaces any loss set before.
    pub fn add_loss(&self, percent: u8) -> Result<()> {
        if percent > 100 {
            return Err(LabError::InvalidOption(format!("loss of {percent} %")));
        }
        for i in 1..=self.peer_count() {
            let script = format!(
                "{}{}",
                remove_script(LOSS_TABLE),
                loss_script(&self.layout.underlay_if(i), percent)
            );
            self.nft(i, &script)?;
        }
        Ok(())
    }

    /// Removes the random loss (idempotent).
    pub fn remove_loss(&self) -> Result<()> {
        for i in 1..=self.peer_count() {
            self.nft(i, &remove_script(LOSS_TABLE))?;
        }
        Ok(())
    }

    /// Packets dropped so far by the random loss (shows that it really bit).
    pub fn loss_dropped(&self) -> Result<u64> {
        self.nft_dropped(LOSS_TABLE)
    }

    /// Cuts peer `i` off from the registry: everything between its namespace and the registry's address is
    /// dropped without an answer, while the rest of the lab still reaches the registry. Undo with
    /// [`Lab::restore_registry`].
    pub fn cut_registry(&self, i: usize) -> Result<()> {
        self.nft(i, &registry_cut_script())
    }

    /// Removes peer `i`'s registry cut (idempotent).
    pub fn restore_registry(&self, i: usize) -> Result<()> {
        self.nft(i, &remove_script(REGISTRY_CUT_TABLE))
    }

    /// Packets dropped so far by the registry cuts (shows that the cut really bit).
    pub fn registry_cut_dropped(&self) -> Result<u64> {
        self.nft_dropped(REGISTRY_CUT_TABLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_scripts() {
        let b = [Layout::underlay_addr(2), Layout::underlay_addr(3)];
        let both = partition_script(&b, Cut::Both);
        assert!(
            both.contains("out ip daddr { 192.0.2.12, 192.0.2.13 } meta l4proto udp counter drop"),
            "{both}"
        );
        assert!(
            both.contains("in ip saddr { 192.0.2.12, 192.0.2.13 } meta l4proto udp counter drop"),
            "{both}"
        );
        let one = partition_script(&b, Cut::OneWay);
        assert!(one.contains("out ip daddr"), "{one}");
        assert!(!one.contains("in ip saddr"), "{one}");
    }

    #[test]
    fn loss_script_drops_both_ways_on_the_underlay_only() {
        let s = loss_script("t-u1", 10);
        assert!(
            s.contains("iifname \"t-u1\" meta l4proto udp numgen random mod 100 < 10 counter drop"),
            "{s}"
        );
        assert!(
            s.contains("oifname \"t-u1\" meta l4proto udp numgen random mod 100 < 10 counter drop"),
            "{s}"
        );
    }

    #[test]
    fn counts_dropped_packets() {
        let listing =
            "table inet sdwanlab_loss {\n chain in {\n  iifname \"x\" counter packets 12 bytes 900 drop\n }\n \
                       chain out {\n  oifname \"x\" counter packets 30 bytes 100 drop\n }\n}\n";
        assert_eq!(counted_packets(listing), 42);
        assert_eq!(counted_packets(""), 0);
    }
}
