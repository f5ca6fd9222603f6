//! The schedule classes: what each seed does to the cluster and which invariants it checks afterwards.

use std::time::Duration;

use sdwand::vip::{ClaimReason, HandoverReason, PeerState, Timers, CATCH_UP_TERM, MAX_TERM_STEP};

use super::model::{Op, Rng, Setup, MS, T};
use super::world::{Rogue, World};

/// How often the convergence check samples the world after the faults stop.
const TICK: T = 10 * MS;
/// Nominal one-way delay plus jitter never exceeds this (see `World::new`).
const DELTA: T = 12 * MS;

/// What a seed runs (derived from the seed, so one number reproduces a schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Random faults, then invariant 2 (convergence within the bound).
    Chaos,
    /// Only loss ≤ 10 % per link and jitter: invariant 3 (no failover).
    Steady,
    /// The rank-0 holder leaves and returns: invariant 4 (preemption off: it never takes the VIP back;
    /// on: it does, after the delay, by handover).
    Return,
    /// The holder's daemon restarts (SIGTERM or crash, then start), often as the only live candidate:
    /// invariant 5 (then the VIP never goes unanswered for more than an interval).
    Restart,
    /// The candidates are cut off from each other while the followers reach them all: invariant 6 (the
    /// holders this makes do not duel through the followers' acknowledgements).
    Split,
}

impl Class {
    /// The class a seed belongs to: six tenths chaos, two tenths steady, and one twentieth each of
    /// return, restart and split, the last ones of every twenty (the twentieths before the split class
    /// existed were return seeds).
    pub fn of(seed: u64) -> Class {
        match (seed % 10, seed % 20) {
            (0..=5, _) => Class::Chaos,
            (6 | 7, _) => Class::Steady,
            (_, 19) => Class::Restart,
            (_, 18) => Class::Split,
            _ => Class::Return,
        }
    }
}

/// What one schedule did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Time from the end of faults until the world stayed converged (chaos only).
    pub converged_after: Option<T>,
    /// The bound it was checked against.
    pub bound: T,
    /// Claims over the whole run.
    pub claims: usize,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams the machines rejected (replayed, stale, …).
    pub rejected: u64,
    /// Operator moves accepted.
    pub moves: u64,
}

fn us(d: Duration) -> T {
    d.as_micros() as T
}

/// The convergence bound, counted from the end of the faults (or from the restart of a daemon whose
/// planned stop was still under way then, whichever is later). Derived in `docs/protocol.md`
/// ("Convergence bound"):
///
/// ```text
/// B = C + Dr + 2δ + h
/// C = max(Ho, L + h, R + 2δ)                              the last claim, preemption off
/// C = max(C_off, max(P + h + δ, L, Ho + δ + Dr) + h + 2δ)  the last claim, preemption on
///     Ho handover timeout   L listen (2·D)   h heartbeat period (interval/2)   δ max one-way delay
///     R claim refresh period   Dr drain timeout   P preempt delay
/// ```
pub fn bound(t: &Timers) -> T {
    let h = us(t.interval) / 2;
    let (ho, l, r, dr) = (
        us(t.handover_timeout()),
        us(t.listen()),
        us(t.refresh()),
        us(t.drain_timeout()),
    );
    let mut c = ho.max(l + h).max(r + 2 * DELTA);
    if let Some(p) = t.preempt {
        c = c.max((us(p) + h + DELTA).max(l).max(ho + DELTA + dr) + h + 2 * DELTA);
    }
    c + dr + 2 * DELTA + h
}

fn random_setup(rng: &mut Rng, defaults: bool) -> Setup {
    let mut timers = Timers {
        interval: Duration::from_millis(50),
        dead_after: 4,
        preempt: None,
    };
    if !defaults && rng.chance(0.3) {
        timers.interval = Duration::from_millis([20, 100][rng.pick(2)]);
        timers.dead_after = [3, 5][rng.pick(2)];
    }
    if rng.chance(0.4) {
        timers.preempt = Some(Duration::from_millis(rng.range(200, 2_000)));
    }
    Setup {
        candidates: rng.range(2, 5) as usize,
        followers: rng.range(0, 6) as usize,
        quorum: None,
        timers,
    }
}

/// Quorum mode on `setup`, drawn from `side` (so the schedule is the one the seed runs without it): 0–2
/// of the followers are witnesses, at least one with two candidates (two voters cannot lose one).
fn with_quorum(setup: &mut Setup, side: &mut Rng) {
    let least = usize::from(setup.candidates == 2);
    let witnesses = (side.range(0, 2) as usize).max(least);
    setup.followers = setup.followers.max(witnesses);
    setup.quorum = Some(witnesses);
}

/// Runs one schedule; `Err` says which invariant broke. With `quorum`, every seed runs a chaos schedule
/// in quorum mode (invariant Q after every input, then invariant 2).
pub fn run(seed: u64, trace: bool, quorum: bool) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let class = if quorum { Class::Chaos } else { Class::of(seed) };
    let mut setup = random_setup(&mut rng, class != Class::Chaos);
    if quorum {
        with_quorum(&mut setup, &mut Rng::new(seed ^ 0x0009_0a0a_0b0b_0c0c));
    }
    if trace {
        eprintln!("seed {seed}: {class:?} {setup:?}");
    }
    let mut out = match class {
        Class::Chaos => chaos(&setup, &mut rng, trace, seed),
        Class::Steady => steady(&setup, &mut rng, trace),
        Class::Return => comeback(&setup, &mut rng, trace),
        Class::Restart => restart(&setup, &mut rng, trace, seed),
        Class::Split => split(&setup, &mut rng, trace),
    }?;
    out.bound = bound(&setup.timers);
    out.seed = seed;
    Ok(out)
}

/// Without partitions every claim must top the one before it.
fn claims_grow(w: &World) -> Result<(), String> {
    match w.claims.windows(2).find(|p| p[1].epoch <= p[0].epoch) {
        Some(p) => Err(format!("claim {:?} after the higher {:?}", p[1], p[0])),
        None => Ok(()),
    }
}

fn summary(w: &World, out: &mut Outcome) {
    out.claims = w.claims.len();
    out.delivered = w.delivered;
    out.rejected = w.rejected.values().sum();
    out.moves = w.moves;
}

/// Random faults in `[0, t_f)`, then invariant 2. In three seeds of ten one member misbehaves (a
/// follower or a candidate, see `vip_sim/rogue.rs`), drawn from its own stream so the schedule is the
/// same as without it.
fn chaos(setup: &Setup, rng: &mut Rng, trace: bool, seed: u64) -> Result<Outcome, String> {
    let n = setup.nodes();
    let c = setup.candidates;
    let start: Vec<T> = (0..n).map(|_| rng.range(0, 300 * MS)).collect();
    let mut w = World::new(setup, rng, &start, trace);
    let mut side = Rng::new(seed ^ 0x000b_ad5e_ed0f_a11e);
    if side.chance(0.3) {
        let node = side.pick(n);
        w.set_rogue(Rogue::new(node, side.next()));
    }
    let t_f = rng.range(300 * MS, 6_000 * MS);
    let episodes = rng.range(1, 14);
    for _ in 0..episodes {
        let s = rng.range(0, t_f);
        let d = rng.range(20 * MS, 2_500 * MS);
        // An episode's end after `t_f` is left to `FaultsEnd`, which ends every fault at once.
        let e = if s + d < t_f { s + d } else { T::MAX };
        let i = rng.pick(n);
        let cand = rng.pick(c);
        match rng.pick(12) {
            0 => {
                w.at(s, Op::Crash(i));
                w.at(e, Op::Restart(i));
            }
            1 => {
                w.at(s, Op::Kill(i));
                w.at(e, Op::Revive(i));
            }
            2 => {
                w.at(s, Op::Shutdown(cand));
                w.at(e, Op::Restart(cand));
            }
            3 => w.at(s, Op::Freeze(i, d.min(1_500 * MS).min(t_f - s))),
            4 | 5 => {
                let side: Vec<usize> = (0..n).filter(|_| rng.chance(0.5)).collect();
                let one_way = rng.chance(0.4);
                let mut pairs = Vec::new();
                for a in 0..n {
                    for b in 0..n {
                        if side.contains(&a) && !side.contains(&b)
                            || !one_way && side.contains(&b) && !side.contains(&a)
                        {
                            pairs.push((a, b));
                        }
                    }
                }
                w.at(s, Op::Cut(pairs.clone()));
                w.at(e, Op::Mend(pairs));
            }
            6 => {
                let j = rng.pick(n);
                let pairs = if rng.chance(0.5) {
                    vec![(i, j)]
                } else {
                    vec![(i, j), (j, i)]
                };
                w.at(s, Op::Cut(pairs.clone()));
                w.at(e, Op::Mend(pairs));
            }
            7 => {
                let loss = [0.1, 0.3, 0.6][rng.pick(3)];
                let jitter = rng.range(0, 60 * MS);
                let dup = if rng.chance(0.3) { 0.02 } else { 0.0 };
                w.at(s, Op::Weather { loss, jitter, dup });
                w.at(e, Op::Calm);
            }
            8 => {
                w.at(s, Op::Health(cand, false));
                w.at(e, Op::Health(cand, true));
            }
            9 => {
                let on = if rng.chance(0.7) { None } else { Some(rng.pick(n)) };
                let to = if rng.chance(0.5) { None } else { Some(rng.pick(n)) };
                w.at(s, Op::Move(on, to));
            }
            _ => (0..rng.range(1, 5)).for_each(|k| w.at((s + k * 7 * MS).min(t_f - 1), Op::Replay)),
        }
    }
    let survivor = rng.pick(c);
    let mut keep_dead: Vec<usize> = (0..n).filter(|&i| i != survivor && rng.chance(0.1)).collect();
    // Quorum mode needs a majority of the voters up to converge: only non-voters stay dead.
    keep_dead.retain(|&i| !setup.voter(i));
    w.at(t_f, Op::FaultsEnd { keep_dead });
    let b = bound(&setup.timers);
    let settle = us(setup.timers.refresh());
    let mut last_bad: Option<(T, String)> = None;
    let mut t = t_f;
    // `last_restart` moves only while planned stops finish (within Ho + Dr of `t_f`).
    while t <= t_f.max(w.last_restart) + b + climb(&w, settle) + settle {
        w.run_until(t)?;
        if let Err(why) = w.converged() {
            last_bad = Some((t, why));
        }
        t += TICK;
    }
    let t_ref = t_f.max(w.last_restart);
    let mut out = Outcome {
        converged_after: Some(0),
        ..Outcome::default()
    };
    let b = b + climb(&w, settle);
    if let Some((t, why)) = last_bad {
        if t + TICK > t_ref + b {
            return Err(format!(
                "invariant 2: not converged {} ms after the faults stopped at {} ms (bound {} ms): {why}",
                (t - t_ref) / MS,
                t_ref / MS,
                b / MS
            ));
        }
        out.converged_after = Some((t + TICK).saturating_sub(t_ref));
    }
    summary(&w, &mut out);
    Ok(out)
}

/// How much longer than the bound convergence may take once a rogue pushed the terms past
/// `CATCH_UP_TERM` (`docs/protocol.md`, "Term bounds"): a node it left behind climbs one step per claim
/// of the holder's it receives, and a follower receives one at least every refresh period `r`.
fn climb(w: &World, r: T) -> T {
    let top = w.claims.iter().map(|c| c.epoch.term).max().unwrap_or(0);
    if top <= CATCH_UP_TERM {
        return 0;
    }
    ((top - CATCH_UP_TERM) / MAX_TERM_STEP + 2) * r
}

/// Boots a cluster on a network with loss ≤ `loss` per link and jitter; checks that rank 0 holds once
/// everyone has listened and settled.
fn boot(setup: &Setup, rng: &mut Rng, loss: f64, trace: bool) -> Result<(World, T), String> {
    let n = setup.nodes();
    let start: Vec<T> = (0..n).map(|_| rng.range(0, 100 * MS)).collect();
    let mut w = World::new(setup, rng, &start, trace);
    w.set_nominal_weather(loss, 8 * MS);
    let settled = 100 * MS + us(setup.timers.listen()) + us(setup.timers.refresh()) + 500 * MS;
    w.run_until(settled)?;
    let holder = w.converged().map_err(|e| format!("not converged after booting: {e}"))?;
    if holder != 0 || w.claims.len() != 1 {
        return Err(format!(
            "booting: rank 0 should make the only claim, got holder {holder} and claims {:?}",
            w.claims
        ));
    }
    Ok((w, settled))
}

/// Invariant 3: with loss ≤ 10 % per link and no other faults, no claim after the initial one. Half the
/// seeds also move the VIP by hand halfway through: then exactly the requested candidate claims (and, with
/// preemption on, rank 0 takes it back after the delay).
fn steady(setup: &Setup, rng: &mut Rng, trace: bool) -> Result<Outcome, String> {
    let (mut w, t0) = boot(setup, rng, 0.10, trace)?;
    let mid = t0 + 5_000 * MS;
    let to = rng.chance(0.5).then(|| 1 + rng.pick(setup.candidates - 1));
    if let Some(to) = to {
        w.at(mid, Op::Move(Some(0), Some(to)));
    }
    w.run_until(t0 + 10_000 * MS)?;
    let want: Vec<(usize, ClaimReason)> = match (to, setup.timers.preempt) {
        (None, _) => vec![],
        (Some(to), None) => vec![(to, ClaimReason::Handover(HandoverReason::Manual))],
        (Some(to), Some(_)) => vec![
            (to, ClaimReason::Handover(HandoverReason::Manual)),
            (0, ClaimReason::Handover(HandoverReason::Preempt)),
        ],
    };
    let got: Vec<(usize, ClaimReason)> = w.claims[1..].iter().map(|c| (c.node, c.reason)).collect();
    if got != want || w.moves != u64::from(to.is_some()) {
        return Err(format!(
            "invariant 3: under ≤ 10 % loss, move to {to:?}: wanted claims {want:?}, got {:?}",
            &w.claims[1..]
        ));
    }
    claims_grow(&w)?;
    let holder = w
        .converged()
        .map_err(|e| format!("invariant 3: not converged at the end: {e}"))?;
    let want_holder = want.last().map_or(0, |c| c.0);
    if holder != want_holder {
        return Err(format!("holder {holder} at the end, wanted {want_holder}"));
    }
    let mut out = Outcome::default();
    summary(&w, &mut out);
    Ok(out)
}

/// Invariant 4: rank 0 holds, leaves (crash, node death or planned stop) long enough for a failover, and
/// returns while the new holder lives.
fn comeback(setup: &Setup, rng: &mut Rng, trace: bool) -> Result<Outcome, String> {
    let (mut w, t1) = boot(setup, rng, 0.05, trace)?;
    let kind = rng.pick(3);
    let (leave, back) = match kind {
        0 => (Op::Crash(0), Op::Restart(0)),
        1 => (Op::Kill(0), Op::Revive(0)),
        _ => (Op::Shutdown(0), Op::Restart(0)),
    };
    // A planned stop ends within the handover and drain timeouts.
    let t = &setup.timers;
    let gone = if kind == 2 {
        us(t.handover_timeout()) + us(t.drain_timeout())
    } else {
        0
    };
    let t2 = t1 + gone + rng.range(800 * MS, 3_000 * MS);
    w.at(t1, leave);
    w.run_until(t2 - 1)?;
    let first = w.claims.len();
    let Some(new) = w.claims.last().filter(|_| first > 1).map(|c| c.node) else {
        return Err("rank 0 left but nobody claimed".into());
    };
    if w.role(0).is_some() {
        return Err("rank 0 still runs after leaving".into());
    }
    w.at(t2, back);
    let end = t2 + bound(t) + us(t.refresh());
    w.run_until(end)?;
    claims_grow(&w)?;
    let later = &w.claims[first..];
    let holder = w
        .converged()
        .map_err(|e| format!("invariant 4: not converged after rank 0 returned: {e}"))?;
    match t.preempt {
        None => {
            if !later.is_empty() || holder != new {
                return Err(format!(
                    "invariant 4: preemption is off but after rank 0 returned: claims {later:?}, holder {holder}"
                ));
            }
        }
        Some(p) => {
            let ok = matches!(later, [c] if c.node == 0
                && c.reason == ClaimReason::Handover(HandoverReason::Preempt)
                && c.t >= t2 + us(t.listen()).max(us(p)));
            if !ok || holder != 0 || w.role(new) != Some(PeerState::Standby) {
                return Err(format!(
                    "invariant 4: preemption after {p:?} expected once rank 0 returned at {} ms: claims {later:?}, \
                     holder {holder}",
                    t2 / MS
                ));
            }
        }
    }
    let mut out = Outcome::default();
    summary(&w, &mut out);
    Ok(out)
}

/// Invariant 5: rank 0 holds; in seven seeds of ten every other candidate dies first (it is the only live
/// candidate), otherwise some stay up. Then its daemon restarts one to three times at random moments (a
/// planned stop or a crash, started again 0–1 s later, sometimes while it still listens after the
/// previous restart), and in three seeds of ten its service is down after the first restart, which its
/// health check reports `fall` checks later. In three seeds of ten a follower is a rogue (forged acks
/// and handovers). When rank 0 is the only live candidate, from its first restart on, the VIP must
/// always be answered through it (its address on, every follower routing to it) but for gaps of at
/// most one interval, and only rank 0 claims; whatever the case, the world converges once the faults
/// end (safety is checked after every input as always).
fn restart(setup: &Setup, rng: &mut Rng, trace: bool, seed: u64) -> Result<Outcome, String> {
    let (mut w, t1) = boot(setup, rng, 0.05, trace)?;
    let c = setup.candidates;
    let n = setup.nodes();
    let mut side = Rng::new(seed ^ 0x0005_7a27_0f0d_a3e0);
    if n > c && side.chance(0.3) {
        w.set_rogue(Rogue::new(c + side.pick(n - c), side.next()));
    }
    let sole = rng.chance(0.7);
    let killed: Vec<usize> = (1..c).filter(|_| sole || rng.chance(0.5)).collect();
    for &i in &killed {
        w.at(t1, Op::Kill(i));
    }
    let t = &setup.timers;
    let interval = us(t.interval);
    // The others see the dead ones dead before the first restart.
    let mut at = t1 + us(t.dead_time(t.interval)) + rng.range(50 * MS, 1_000 * MS);
    let first = at;
    if rng.chance(0.3) {
        w.at(first, Op::Health(0, false));
    }
    for _ in 0..rng.range(1, 3) {
        w.at(at, if rng.chance(0.5) { Op::Shutdown(0) } else { Op::Crash(0) });
        let back = at + rng.range(0, 1_000 * MS);
        w.at(back, Op::Restart(0));
        at = back + rng.range(50 * MS, 1_500 * MS);
    }
    let quiet_until = at + us(t.listen()) + us(t.refresh());
    let claims_before = w.claims.len();
    w.run_until(first - 1)?;
    let (mut gap_since, mut worst): (Option<T>, T) = (None, 0);
    let mut now = first;
    while now <= quiet_until {
        w.run_until(now)?;
        if sole {
            match w.serving(0) {
                Ok(()) => gap_since = None,
                Err(why) => {
                    let since = *gap_since.get_or_insert(now);
                    worst = worst.max(now - since);
                    if now - since > interval {
                        return Err(format!(
                            "invariant 5: the restarted sole holder has not served the VIP for {} ms at {} ms: {why}",
                            (now - since) / MS,
                            now / MS
                        ));
                    }
                }
            }
        }
        now += MS;
    }
    if sole {
        if let Some(k) = w.claims[claims_before..].iter().find(|k| k.node != 0) {
            return Err(format!(
                "invariant 5: node {} claimed while rank 0 was the only candidate: {k:?}",
                k.node
            ));
        }
    }
    w.at(quiet_until, Op::FaultsEnd { keep_dead: killed });
    let end = quiet_until + bound(t) + us(t.refresh());
    w.run_until(end)?;
    let holder = w.converged().map_err(|e| {
        format!(
            "restart: not converged {} ms after the last restart: {e}",
            (end - at) / MS
        )
    })?;
    if sole && holder != 0 {
        return Err(format!("invariant 5: holder {holder} at the end, wanted rank 0"));
    }
    w.log(|| format!("restart: worst gap {} ms", worst / MS));
    let mut out = Outcome::default();
    summary(&w, &mut out);
    Ok(out)
}

/// Invariant 6: rank 0 holds; then every link between two candidates is cut, both ways, for 3–20 s, while
/// every follower still reaches every candidate (the lab saw this at start-up: the WireGuard session
/// between two gateways missing for ~10 s). Each candidate that cannot hear a holder claims, and without
/// quorum mode they all hold until they hear each other again. But they must not duel: a holder renews
/// above a follower's report at once only the first time, and once a rival has answered a renewal it
/// waits two refresh periods, doubling up to sixteen, before the next (`docs/protocol.md`, "Trust
/// model"). Renewals come in bursts (with several candidates, a holder may renew once per rival it has
/// not yet heard answer, an interval apart), and a node renews in at most `k + 2` bursts (gaps over half
/// a refresh period), `k` the waits that fit in the split (one more for the first renewal and one for a
/// datagram lost on the way), instead of at each refresh. Once the links are mended the world converges
/// within the bound.
fn split(setup: &Setup, rng: &mut Rng, trace: bool) -> Result<Outcome, String> {
    let (mut w, t1) = boot(setup, rng, 0.05, trace)?;
    let c = setup.candidates;
    let t = &setup.timers;
    let pairs: Vec<(usize, usize)> = (0..c)
        .flat_map(|a| (0..c).filter(move |&b| b != a).map(move |b| (a, b)))
        .collect();
    let length = rng.range(3_000 * MS, 20_000 * MS);
    let mend = t1 + length;
    w.at(t1, Op::Cut(pairs.clone()));
    w.at(mend, Op::Mend(pairs));
    w.run_until(mend)?;
    let r = us(t.refresh());
    let (mut waits, mut wait, mut spent) = (0, 2 * r, 0);
    while spent + wait <= length {
        spent += wait;
        waits += 1;
        wait = (wait * 2).min(16 * r);
    }
    let allowed = waits + 2;
    for i in 0..c {
        let renewals: Vec<T> = w
            .claims
            .iter()
            .filter(|k| k.node == i && k.reason == ClaimReason::Renew && k.t >= t1)
            .map(|k| k.t)
            .collect();
        let bursts = renewals.windows(2).filter(|p| p[1] - p[0] > r / 2).count() + usize::from(!renewals.is_empty());
        if bursts > allowed {
            return Err(format!(
                "invariant 6: node {i} renewed in {bursts} bursts in a {} ms split between the candidates (at \
                 most {allowed}), at {:?} ms",
                length / MS,
                renewals.iter().map(|t| t / MS).collect::<Vec<_>>()
            ));
        }
    }
    w.at(mend, Op::FaultsEnd { keep_dead: Vec::new() });
    let end = mend + bound(t) + us(t.refresh());
    w.run_until(end)?;
    w.converged().map_err(|e| {
        format!(
            "split: not converged {} ms after the links were mended: {e}",
            (end - mend) / MS
        )
    })?;
    let mut out = Outcome::default();
    summary(&w, &mut out);
    Ok(out)
}
