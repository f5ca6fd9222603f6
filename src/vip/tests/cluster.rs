//! A hand-wired cluster for the machine tests: nodes `0..c` are candidates (rank = index), the rest
//! followers; datagrams take 1 ms; the clock jumps to the next delivery or wake-up.

use std::collections::VecDeque;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::super::*;

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Node `i`'s overlay address.
pub fn addr(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, i as u16 + 1)
}

/// The VIP.
pub const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xffff);

/// The default timers: interval 50 ms, dead after 4, no preemption.
pub fn timers() -> Timers {
    Timers {
        interval: ms(50),
        dead_after: 4,
        preempt: None,
    }
}

/// One node: its daemon (if running) and its interface.
pub struct Node {
    /// The daemon's machine, while it runs.
    pub m: Option<Machine>,
    /// The VIP /128 is on the interface.
    pub has_addr: bool,
    /// Where the interface routes the VIP.
    pub route: Option<Ipv6Addr>,
    /// The last incarnation started.
    pub incarnation: u64,
}

/// The nodes, the wire between them and the clock.
pub struct Cluster {
    /// When the cluster started.
    pub t0: Instant,
    /// The fake clock.
    pub now: Instant,
    /// How many of the nodes are candidates.
    pub candidates: usize,
    /// The nodes, candidates first.
    pub nodes: Vec<Node>,
    /// The timers every node uses.
    pub timers: Timers,
    /// Datagrams in flight: delivery time, from, to.
    wire: VecDeque<(Instant, usize, usize, Message)>,
    /// Nodes cut off the network.
    pub cut: Vec<bool>,
    /// Directed links that lose everything: (from, to).
    pub blocked: Vec<(usize, usize)>,
    /// Every action but `Send`: when, which node.
    pub log: Vec<(Duration, usize, Action)>,
    /// Quorum mode of every node (off unless [`Cluster::quorum`] started the cluster).
    pub quorum: Option<Quorum>,
}

impl Cluster {
    /// `candidates` + `followers` nodes, all started now, healthy, with nothing to adopt.
    pub fn new(candidates: usize, followers: usize, timers: Timers) -> Cluster {
        Cluster::build(candidates, followers, timers, None)
    }

    /// Like [`Cluster::new`] in quorum mode, the first `witnesses` followers being witnesses.
    pub fn quorum(candidates: usize, followers: usize, witnesses: usize, timers: Timers) -> Cluster {
        let quorum = Quorum {
            witnesses: (candidates..candidates + witnesses).map(addr).collect(),
        };
        Cluster::build(candidates, followers, timers, Some(quorum))
    }

    fn build(candidates: usize, followers: usize, timers: Timers, quorum: Option<Quorum>) -> Cluster {
        let t0 = Instant::now();
        let n = candidates + followers;
        let mut c = Cluster {
            t0,
            now: t0,
            candidates,
            nodes: (0..n)
                .map(|_| Node {
                    m: None,
                    has_addr: false,
                    route: None,
                    incarnation: 0,
                })
                .collect(),
            timers,
            wire: VecDeque::new(),
            cut: vec![false; n],
            blocked: Vec::new(),
            log: Vec::new(),
            quorum,
        };
        for i in 0..n {
            c.start(i, Adopt::Nothing, true);
        }
        c
    }

    /// A cluster that has booted: rank 0 holds and everyone routes to it.
    pub fn booted(candidates: usize, followers: usize, timers: Timers) -> Cluster {
        let mut c = Cluster::new(candidates, followers, timers);
        c.run(timers.listen() + ms(200));
        c.assert_converged(0);
        c
    }

    /// (Re)starts node `i`'s daemon.
    pub fn start(&mut self, i: usize, adopt: Adopt, healthy: bool) {
        let n = self.nodes.len();
        let params = Params {
            vip: VIP,
            me: addr(i),
            candidates: (0..self.candidates).map(addr).collect(),
            peers: (0..n).filter(|&j| j != i).map(addr).collect(),
            timers: self.timers,
            quorum: self.quorum.clone(),
        };
        self.nodes[i].incarnation += 1;
        self.nodes[i].m = Some(Machine::new(
            params,
            self.now,
            self.nodes[i].incarnation,
            healthy,
            adopt,
        ));
        self.drain(i);
    }

    /// The daemon crashes; the interface keeps its address and route.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].m = None;
    }

    /// The node dies: daemon and interface state gone.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = Node {
            m: None,
            has_addr: false,
            route: None,
            incarnation: self.nodes[i].incarnation,
        };
    }

    /// Node `i`'s machine.
    pub fn m(&self, i: usize) -> &Machine {
        self.nodes[i].m.as_ref().expect("the node's daemon runs")
    }

    /// Runs `f` on node `i`'s machine now and executes the resulting actions.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Machine, Instant) -> R) -> R {
        let now = self.now;
        let r = f(self.nodes[i].m.as_mut().expect("the node's daemon runs"), now);
        self.drain(i);
        r
    }

    /// Hands `msg` straight to node `i` (bypassing the network).
    pub fn inject(&mut self, i: usize, msg: Message) {
        self.with(i, |m, now| m.handle_datagram(now, msg));
    }

    fn drain(&mut self, i: usize) {
        while let Some(a) = self.nodes[i].m.as_mut().and_then(Machine::poll_action) {
            match a {
                Action::Send { to, msg } => {
                    let j = (0..self.nodes.len())
                        .find(|&j| addr(j) == to)
                        .expect("sends to a member");
                    if !self.cut[i] && !self.cut[j] && !self.blocked.contains(&(i, j)) {
                        self.wire.push_back((self.now + ms(1), i, j, msg));
                    }
                    continue;
                }
                Action::AddAddress => self.nodes[i].has_addr = true,
                Action::RemoveAddress => self.nodes[i].has_addr = false,
                Action::AddressLifetime(_) => {}
                Action::Route(to) => self.nodes[i].route = Some(to),
                Action::Stopped => {}
                Action::Note(_) => {}
            }
            self.log.push((self.now - self.t0, i, a));
        }
    }

    /// Runs the cluster for `d`, delivering datagrams and firing timers in time order.
    pub fn run(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..1_000_000 {
            let msg = self.wire.front().map(|w| w.0);
            let timer = self.nodes.iter().filter_map(|n| n.m.as_ref()?.poll_timeout()).min();
            let Some(t) = msg.into_iter().chain(timer).min().filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(t);
            if msg == Some(t) {
                let Some((_, from, to, msg)) = self.wire.pop_front() else {
                    unreachable!()
                };
                if self.nodes[to].m.is_some() && !self.cut[from] && !self.cut[to] {
                    self.inject(to, msg);
                }
                continue;
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i]
                    .m
                    .as_ref()
                    .and_then(Machine::poll_timeout)
                    .is_some_and(|w| w <= t)
                {
                    self.with(i, |m, now| m.handle_timeout(now));
                }
            }
        }
        panic!("runaway cluster");
    }

    /// Every claim: (when, node, reason, epoch).
    pub fn claims(&self) -> Vec<(Duration, usize, ClaimReason, Epoch)> {
        self.log
            .iter()
            .filter_map(|(t, i, a)| match a {
                Action::Note(Note::Claimed { reason, epoch, .. }) => Some((*t, *i, *reason, *epoch)),
                _ => None,
            })
            .collect()
    }

    /// Claims made from `since` (time since start) on, as (node, reason).
    pub fn claims_since(&self, since: Duration) -> Vec<(usize, ClaimReason)> {
        self.claims()
            .into_iter()
            .filter(|c| c.0 >= since)
            .map(|c| (c.1, c.2))
            .collect()
    }

    /// The non-send actions of node `i` from `since` on.
    pub fn actions(&self, i: usize, since: Duration) -> Vec<&Action> {
        self.log
            .iter()
            .filter(|(t, j, _)| *j == i && *t >= since)
            .map(|l| &l.2)
            .collect()
    }

    /// How many datagrams node `i` rejected for `why`.
    pub fn rejected(&self, i: usize, why: &'static str) -> usize {
        self.log
            .iter()
            .filter(|(_, j, a)| *j == i && *a == Action::Note(Note::Rejected(why)))
            .count()
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// `h` holds, has the only address, and every running node routes to it by the same claim.
    pub fn assert_converged(&self, h: usize) {
        let claim = self.m(h).claim();
        assert_eq!(self.m(h).role(), PeerState::Holding, "node {h} should hold");
        for (i, n) in self.nodes.iter().enumerate() {
            assert_eq!(n.has_addr, i == h, "node {i}'s address");
            if let Some(m) = &n.m {
                assert_eq!(m.claim(), claim, "node {i}'s claim");
                assert_eq!(n.route, Some(addr(h)), "node {i}'s route");
                assert_eq!(m.routed_to(), Some(addr(h)), "node {i}'s machine route");
            }
        }
    }
}
