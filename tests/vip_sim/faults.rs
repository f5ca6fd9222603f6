//! Applying fault operations to the world, and the convergence check.

use sdwand::vip::{LocalEvent, PeerState};

use super::{Ev, Link, Op, World, MS, T};

impl World {
    fn holder(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.role(i) == Some(PeerState::Holding))
    }

    pub(super) fn apply(&mut self, op: Op) -> Result<(), String> {
        self.log(|| format!("op {op:?}"));
        let n = self.nodes.len();
        match op {
            Op::Crash(i) => {
                let node = &mut self.nodes[i];
                node.machine = None;
                node.frozen_until = None;
                node.inbox.clear();
                node.stopping = None;
                node.timer_gen += 1;
                node.timer_at = None;
            }
            Op::Restart(i) => {
                if self.nodes[i].up && self.nodes[i].machine.is_none() {
                    self.start(i)?;
                }
            }
            Op::Kill(i) => {
                self.apply(Op::Crash(i))?;
                let node = &mut self.nodes[i];
                node.up = false;
                node.has_addr = false;
                node.route = None;
            }
            Op::Revive(i) => {
                if !self.nodes[i].up {
                    self.nodes[i].up = true;
                    self.start(i)?;
                }
            }
            Op::Shutdown(i) => {
                if self.nodes[i].frozen_until.is_none() && self.nodes[i].machine.is_some() {
                    self.nodes[i].stopping = Some(self.now);
                    self.input(i, |m, now| m.handle_local(now, LocalEvent::Shutdown))?;
                }
            }
            Op::Freeze(i, d) => {
                if self.nodes[i].machine.is_some() && self.nodes[i].frozen_until.is_none() {
                    self.nodes[i].frozen_until = Some(self.now + d);
                    self.push(self.now + d, Ev::Thaw(i));
                }
            }
            Op::Health(i, h) => {
                if self.nodes[i].healthy != h {
                    self.nodes[i].healthy = h;
                    if self.nodes[i].frozen_until.is_some() {
                        self.nodes[i].health_pending = true;
                    } else {
                        self.input(i, |m, now| m.handle_local(now, LocalEvent::Health(h)))?;
                    }
                }
            }
            Op::Move(on, to) => {
                let Some(i) = on.or_else(|| self.holder()) else {
                    return Ok(());
                };
                if self.nodes[i].frozen_until.is_some() {
                    return Ok(());
                }
                let to = to.map(|j| self.nodes[j].addr);
                let mut result = None;
                self.input(i, |m, now| result = Some(m.request_move(now, to)))?;
                if let Some(Ok(_)) = result {
                    self.moves += 1;
                }
                self.log(|| format!("n{i} move to {to:?}: {result:?}"));
            }
            Op::Cut(pairs) => pairs.iter().for_each(|&(a, b)| self.links[a * n + b].cut += 1),
            Op::Mend(pairs) => {
                for (a, b) in pairs {
                    let l = &mut self.links[a * n + b];
                    l.cut = l.cut.saturating_sub(1);
                }
            }
            Op::Weather { loss, jitter, dup } => {
                for k in 0..n * n {
                    let l = &mut self.links[k];
                    l.loss = loss * self.rng.unit();
                    l.jitter = self.rng.range(0, jitter);
                    l.dup = dup;
                }
            }
            Op::Calm => {
                for k in 0..n * n {
                    let cut = self.links[k].cut;
                    self.links[k] = Link { cut, ..self.nominal[k] };
                }
            }
            Op::Replay => {
                if !self.recent.is_empty() {
                    let (from, to, bytes) = self.recent[self.rng.pick(self.recent.len())].clone();
                    let t = self.now + self.links[from * n + to].delay;
                    self.push(t, Ev::Deliver { from, to, bytes });
                }
            }
            Op::FaultsEnd { keep_dead } => self.end_faults(&keep_dead)?,
        }
        Ok(())
    }

    fn end_faults(&mut self, keep_dead: &[usize]) -> Result<(), String> {
        self.links.clone_from(&self.nominal);
        self.auto_restart = true;
        for i in 0..self.nodes.len() {
            if self.nodes[i].frozen_until.is_some() {
                self.nodes[i].frozen_until = Some(self.now);
                self.thaw(i)?;
            }
            self.apply(Op::Health(i, true))?;
            if !self.nodes[i].up && !keep_dead.contains(&i) {
                self.apply(Op::Revive(i))?;
            }
            if self.nodes[i].up && self.nodes[i].machine.is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// `Ok(())` when node `h` has the VIP address and every follower that is up routes the VIP to it
    /// (the VIP answers through `h` from everywhere); otherwise what is wrong.
    pub fn serving(&self, h: usize) -> Result<(), String> {
        if !self.nodes[h].has_addr {
            return Err(format!("node {h} does not have the address"));
        }
        let to = Some(self.nodes[h].addr);
        match (self.setup.candidates..self.nodes.len()).find(|&i| self.nodes[i].up && self.nodes[i].route != to) {
            Some(i) => Err(format!("follower {i} routes the VIP to {:?}", self.nodes[i].route)),
            None => Ok(()),
        }
    }

    /// `Ok(holder)` when every live node routes the VIP to the same live holder by the same claim, the
    /// holder has the address and no other node does, and nobody drains; otherwise what is wrong.
    pub fn converged(&self) -> Result<usize, String> {
        let t = &self.setup.timers;
        let stop_within = (t.handover_timeout() + t.drain_timeout()).as_micros() as T;
        if let Some(i) =
            (0..self.nodes.len()).find(|&i| self.nodes[i].stopping.is_some_and(|s| self.now > s + stop_within))
        {
            return Err(format!(
                "node {i} was told to stop more than {} ms ago and still runs",
                stop_within / MS
            ));
        }
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].up).collect();
        let holders: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| self.role(i) == Some(PeerState::Holding))
            .collect();
        let [h] = holders[..] else {
            return Err(format!("holders {holders:?}"));
        };
        let hm = self.nodes[h].machine.as_ref().ok_or("holder without a daemon")?;
        let claim = hm.claim();
        let ha = self.nodes[h].addr;
        for &i in &live {
            let n = &self.nodes[i];
            let Some(m) = n.machine.as_ref() else {
                return Err(format!("node {i} is up without a daemon"));
            };
            if m.claim() != claim || n.route != Some(ha) {
                return Err(format!(
                    "node {i} has {:?} routed to {:?}; holder {h} has {claim:?}",
                    m.claim(),
                    n.route
                ));
            }
            if m.role() == PeerState::Draining {
                return Err(format!("node {i} still drains"));
            }
        }
        if let Some(i) = (0..self.nodes.len()).find(|&i| self.nodes[i].has_addr != (i == h)) {
            return Err(format!("node {i} address {} (holder {h})", self.nodes[i].has_addr));
        }
        Ok(h)
    }
}
