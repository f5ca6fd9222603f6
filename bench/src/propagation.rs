//! The `propagation` benchmark: how long a membership change takes to reach every daemon's WireGuard device.
//!
//! A lab of `--peers` real `sdwand` daemons enrolled through the lab's `sdwan-registry` (no VIP, no k3s).
//! Each trial makes two membership changes over the registry's HTTP API, from inside its namespace:
//!
//! - **enroll**: `POST /v1/peers/enroll` of a new peer (a fresh WireGuard key, an endpoint on the lab's
//!   underlay; no daemon behind it: what is measured is the others' view), then
//! - **remove**: `DELETE /v1/peers/{id}` of that peer with the admin token,
//!
//! and measures, for each, the time from just before the request is sent to the moment the last of the
//! peers' devices shows the new state (the key present, then gone), read over each device's UAPI socket.
//! Devices are polled by [`POLLERS`] threads, each sweeping the devices it has not yet seen change; a
//! device's time is when the sweep saw it, so every figure is late by at most one sweep (the report's
//! `resolution_ms`).
//!
//! With `--pods` the network has pod pools ([`POD_POOLS`], hold-down 0 so that the pool never runs dry);
//! each daemon and each trial's new node get a share of each pool at enrollment. Besides the key, a
//! daemon counts as done with the new node only when both of its shares are in the node's allowed IPs on
//! the device *and* routed through the WireGuard interface in the daemon's kernel table (its routes with
//! sdwand's protocol, dumped over an rtnetlink socket opened in the daemon's namespace); on removal, when
//! both routes are gone too. Only then does the next trial start, so a share handed out again is never
//! mistaken for a route left over.
//!
//! With `--registry-backend etcd` the lab's registry stores in a 3-member etcd cluster, and with
//! `--registry-replicas R` it runs R replicas on it (the lab's options, passed through). The changes then go
//! through the replicas in turn: trial t enrolls through replica ((t − 1) mod R) + 1 and removes through
//! the next one, so each replica takes enrollments and removals alike. Each daemon watches the replica it
//! picked at random at start (the report counts them per replica), so a change reaches some daemons through
//! the replica it was made on and the others through another replica's etcd watch; the last device, which
//! the figure waits for, is usually one of those.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sdwan_lab::{Lab, LabGuard, RegistryBackend, UpOptions};
use sdwand::net::Netlink;
use serde::Serialize;
use wireguard_control::{Device, Key};

use crate::error::{BenchError, Result};
use crate::failover::neigh::NeighLimits;
use crate::report::Machine;
use crate::stats::{fmt_ms, Figures};

/// Options of `sdwand-bench propagation`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Peers of the lab (2 to 199; one underlay address stays free for the synthetic peer's endpoint).
    #[arg(long, default_value_t = 50)]
    pub peers: usize,
    /// Trials (each one enrollment and one removal).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Give the network pod pools and measure also until the new node's pod shares are routed (allowed
    /// IPs and kernel routes) on every daemon (at most 63 peers: the IPv4 pool has 64 shares).
    #[arg(long)]
    pub pods: bool,
    /// Where the lab's registry stores: `sqlite` (its state directory) or `etcd` (a 3-member etcd cluster
    /// the lab starts in namespaces of its own).
    #[arg(long, default_value = "sqlite")]
    pub registry_backend: RegistryBackend,
    /// Registry replicas (1 to 5; more than 1 needs `--registry-backend etcd`): the changes go through them
    /// in turn, and every daemon gets every replica's URL.
    #[arg(long, default_value_t = 1)]
    pub registry_replicas: usize,
    /// Print the report as JSON (with every trial's values) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The pod pools of `--pods`: `198.51.100.0/24` in /30s (64 shares) and `fd00:42::/48` in /64s.
pub const POD_POOLS: [(&str, u8); 2] = [("198.51.100.0/24", 30), ("fd00:42::/48", 64)];
/// Shares of the IPv4 pool: the lab's peers plus one trial's node must fit.
const POD_SHARES_V4: usize = 64;

/// Threads polling the devices.
const POLLERS: usize = 5;
/// Longest a change may take to reach every device before the trial fails.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long `Lab::up` may take (peers enroll one after the other).
const UP_TIMEOUT: Duration = Duration::from_secs(180);
/// The target (issue 4: the median; issue 12, on etcd: the p99), reported, never asserted.
const TARGET_MS: f64 = 1000.0;

/// The run's figures.
#[derive(Debug, Serialize)]
pub struct PropagationReport {
    /// The command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Daemons in the lab.
    pub peers: usize,
    /// Trials run.
    pub trials: usize,
    /// Where the registry stored: `sqlite` or `etcd`.
    pub registry_backend: String,
    /// Registry replicas.
    pub registry_replicas: usize,
    /// Daemons per replica they called after the lab came up (`sdwand_registry_replica_info`), replica 1
    /// first; daemons whose metrics named none are not counted.
    pub daemons_per_replica: Vec<usize>,
    /// How long the lab took to come up, seconds.
    pub lab_up_s: f64,
    /// Enrollment → on every device, milliseconds.
    pub enroll: Figures,
    /// Removal → gone from every device, milliseconds.
    pub remove: Figures,
    /// With `--pods`: enrollment → both pod shares in the allowed IPs and kernel routes of every daemon.
    pub enroll_routed: Option<Figures>,
    /// With `--pods`: removal → both routes gone from every daemon's kernel table.
    pub remove_unrouted: Option<Figures>,
    /// How late a device's time can be: the longest sweep over the devices seen in the run, milliseconds.
    pub resolution_ms: f64,
    /// Every trial's enrollment figure, milliseconds, in order.
    pub enroll_ms: Vec<f64>,
    /// Every trial's removal figure, milliseconds, in order.
    pub remove_ms: Vec<f64>,
    /// With several replicas: enrollment → on every device, per replica it went through (replica 1 first).
    pub enroll_per_replica: Vec<Figures>,
    /// With several replicas: removal → gone from every device, per replica it went through.
    pub remove_per_replica: Vec<Figures>,
    /// With `--pods`: every trial's enrollment → routed figure, milliseconds, in order.
    pub enroll_routed_ms: Vec<f64>,
    /// With `--pods`: every trial's removal → unrouted figure, milliseconds, in order.
    pub remove_unrouted_ms: Vec<f64>,
}

impl PropagationReport {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let spread: Vec<String> = self
            .daemons_per_replica
            .iter()
            .enumerate()
            .map(|(r, n)| format!("{n} on replica {}", r + 1))
            .collect();
        let mut out = format!(
            "membership propagation to {} sdwand daemons ({} trials; lab up in {:.1} s)\n\
             registry on {}, {} replica(s); daemons' watches: {}\n{}\n\n",
            self.peers,
            self.trials,
            self.lab_up_s,
            self.registry_backend,
            self.registry_replicas,
            spread.join(", "),
            self.machine.line()
        );
        out.push_str(&format!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "change → applied on every device", "min", "median", "p90", "p95", "p99", "max"
        ));
        let via = |what: &str, r: usize| format!("  {what} through replica {}", r + 1);
        let mut rows = vec![("enroll (POST /v1/peers/enroll)".to_owned(), &self.enroll)];
        rows.extend(
            self.enroll_per_replica
                .iter()
                .enumerate()
                .map(|(r, f)| (via("enroll", r), f)),
        );
        if let Some(routed) = &self.enroll_routed {
            rows.push(("enroll → pod shares routed".to_owned(), routed));
        }
        rows.push(("remove (DELETE /v1/peers/{id})".to_owned(), &self.remove));
        rows.extend(
            self.remove_per_replica
                .iter()
                .enumerate()
                .map(|(r, f)| (via("remove", r), f)),
        );
        if let Some(unrouted) = &self.remove_unrouted {
            rows.push(("remove → pod routes gone".to_owned(), unrouted));
        }
        for (what, f) in rows {
            out.push_str(&format!(
                "{what:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                fmt_ms(f.min),
                fmt_ms(f.median),
                fmt_ms(f.p90),
                fmt_ms(f.p95),
                fmt_ms(f.p99),
                fmt_ms(f.max)
            ));
        }
        let verdict = |x: f64| if x <= TARGET_MS { "met" } else { "missed" };
        out.push_str(&format!(
            "\ntarget ≤ {} on all peers: median enroll {}, remove {}; p99 enroll {}, remove {}; device reads late \
             by ≤ {} (one sweep)\n",
            fmt_ms(TARGET_MS),
            verdict(self.enroll.median),
            verdict(self.remove.median),
            verdict(self.enroll.p99),
            verdict(self.remove.p99),
            fmt_ms(self.resolution_ms)
        ));
        out
    }
}

/// Runs the benchmark. `interrupted` is checked between trials and during the waits.
pub fn run(opts: &Options, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<PropagationReport> {
    if !(2..sdwan_lab::layout::MAX_PEERS).contains(&opts.peers) || opts.trials == 0 {
        return Err(BenchError::Usage(format!(
            "--peers must be 2 to {} and --trials at least 1",
            sdwan_lab::layout::MAX_PEERS - 1
        )));
    }
    if opts.pods && opts.peers >= POD_SHARES_V4 {
        return Err(BenchError::Usage(format!(
            "--pods: at most {} peers (the IPv4 pod pool has {POD_SHARES_V4} shares)",
            POD_SHARES_V4 - 1
        )));
    }
    // Declared before the lab, so the limits are restored after the lab is gone.
    let _neigh = NeighLimits::ensure(opts.peers + 1)?;
    let name = format!("pg{}", std::process::id() % 10_000);
    let backend = match opts.registry_backend {
        RegistryBackend::Sqlite => "sqlite",
        RegistryBackend::Etcd => "etcd",
    };
    eprintln!(
        "propagation: building lab {name} ({} peers with a registry on {backend}, {} replica(s); if the bench \
         is killed, remove it with `sdwan-lab down --name {name}`) …",
        opts.peers, opts.registry_replicas
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let mut up = UpOptions::new(&name, opts.peers);
    up.registry_backend = opts.registry_backend;
    up.registry_replicas = opts.registry_replicas;
    up.handshake_timeout = UP_TIMEOUT;
    up.cancel = Some(cancel.clone());
    // Nobody is reaped during the run.
    up.ephemeral_ttl = Duration::from_secs(3600);
    if opts.pods {
        up.pod_pools = POD_POOLS
            .iter()
            .map(|(prefix, node_len)| {
                serde_json::from_value(serde_json::json!({"prefix": prefix, "node_len": node_len}))
                    .expect("a valid pod pool")
            })
            .collect();
        // A trial waits until the removed node's routes are gone everywhere before the next one starts.
        up.prefix_hold_down = Some(Duration::ZERO);
    }
    let t0 = Instant::now();
    let mut lab = LabGuard::up(up)?;
    let lab_up = t0.elapsed();
    let replicas = lab.lab()?.replica_count()?;
    let daemons_per_replica = daemons_per_replica(lab.lab()?, replicas);
    eprintln!(
        "propagation: lab up in {:.1} s; daemons per replica {daemons_per_replica:?}",
        lab_up.as_secs_f64()
    );
    let routes = if opts.pods {
        Some(Routes::open(lab.lab()?)?)
    } else {
        None
    };
    let (mut enroll_ms, mut remove_ms) = (Vec::new(), Vec::new());
    let (mut routed_ms, mut unrouted_ms) = (Vec::new(), Vec::new());
    let (mut enroll_by, mut remove_by) = (vec![Vec::new(); replicas], vec![Vec::new(); replicas]);
    let mut resolution = Duration::ZERO;
    for t in 1..=opts.trials {
        if interrupted() {
            cancel.store(true, Ordering::SeqCst);
            return Err(BenchError::Interrupted);
        }
        let lab: &Lab = lab.lab()?;
        // Replica indexes from 0 here, from 1 in the lab.
        let (enroll_via, remove_via) = ((t - 1) % replicas, t % replicas);
        let enrolled = trial_enroll(lab, t, enroll_via + 1, routes.as_ref(), interrupted)?;
        resolution = resolution.max(enrolled.took.sweep);
        let removed = trial_remove(lab, t, remove_via + 1, &enrolled, routes.as_ref(), interrupted)?;
        resolution = resolution.max(removed.sweep);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let routed = if routes.is_some() {
            let shares: Vec<String> = enrolled.shares.iter().map(ToString::to_string).collect();
            format!(
                " (pod shares {} routed {}, routes gone {})",
                shares.join(" "),
                fmt_ms(ms(enrolled.took.routed)),
                fmt_ms(ms(removed.routed))
            )
        } else {
            String::new()
        };
        eprintln!(
            "propagation: trial {t}/{}: enroll {} (replica {}), remove {} (replica {}){routed}",
            opts.trials,
            fmt_ms(ms(enrolled.took.key)),
            enroll_via + 1,
            fmt_ms(ms(removed.key)),
            remove_via + 1
        );
        enroll_ms.push(ms(enrolled.took.key));
        remove_ms.push(ms(removed.key));
        enroll_by[enroll_via].push(ms(enrolled.took.key));
        remove_by[remove_via].push(ms(removed.key));
        if routes.is_some() {
            routed_ms.push(ms(enrolled.took.routed));
            unrouted_ms.push(ms(removed.routed));
        }
    }
    drop(routes);
    let down = lab.down()?;
    for w in down.warnings {
        eprintln!("lab {name} down: {w}");
    }
    Ok(PropagationReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::probe(),
        peers: opts.peers,
        trials: opts.trials,
        registry_backend: backend.to_owned(),
        registry_replicas: replicas,
        daemons_per_replica,
        lab_up_s: lab_up.as_secs_f64(),
        enroll: Figures::of(enroll_ms.iter().copied()),
        remove: Figures::of(remove_ms.iter().copied()),
        enroll_routed: opts.pods.then(|| Figures::of(routed_ms.iter().copied())),
        remove_unrouted: opts.pods.then(|| Figures::of(unrouted_ms.iter().copied())),
        resolution_ms: resolution.as_secs_f64() * 1e3,
        enroll_ms,
        remove_ms,
        enroll_per_replica: per_replica(enroll_by),
        remove_per_replica: per_replica(remove_by),
        enroll_routed_ms: routed_ms,
        remove_unrouted_ms: unrouted_ms,
    })
}

/// Per replica, the figures of the changes made through it; none with one replica (the totals say it all).
fn per_replica(by: Vec<Vec<f64>>) -> Vec<Figures> {
    if by.len() < 2 {
        return Vec::new();
    }
    by.into_iter().map(Figures::of).collect()
}

/// How many daemons call each of the `replicas` now, from their `sdwand_registry_replica_info` (a daemon
/// whose metrics do not answer or name no replica is not counted).
fn daemons_per_replica(lab: &Lab, replicas: usize) -> Vec<usize> {
    let urls: Vec<String> = (1..=replicas).map(sdwan_lab::Layout::replica_url).collect();
    let mut counts = vec![0; replicas];
    for i in 1..=lab.peer_count() {
        let Ok(text) = lab.metrics(i) else { continue };
        let series = sdwan_lab::metrics::samples(&text, "sdwand_registry_replica_info", &[]);
        if let [(labels, v)] = series.as_slice() {
            if let Some(r) = urls.iter().position(|u| *v == 1.0 && labels.get("url") == Some(u)) {
                counts[r] += 1;
            }
        }
    }
    counts
}

/// The peer a trial enrolled, and how long that took to reach every device.
struct Enrolled {
    /// Its public key, base64.
    key: String,
    /// Its id in the registry.
    peer_id: String,
    /// Its pod shares (with `--pods`).
    shares: Vec<IpNet>,
    /// Enrollment request → on every device (and routed).
    took: Took,
}

/// How long a change took to reach every daemon.
#[derive(Debug, Clone, Copy)]
struct Took {
    /// Until the key was on (or gone from) the last device.
    key: Duration,
    /// Until the pod shares were routed on (or unrouted from) the last daemon; `key` without shares.
    routed: Duration,
    /// The longest sweep of the wait.
    sweep: Duration,
}

/// Enrolls a new peer over registry replica `replica`'s API and waits until it is on every device (and,
/// with `routes`, its pod shares routed on every daemon).
fn trial_enroll(
    lab: &Lab,
    t: usize,
    replica: usize,
    routes: Option<&Routes>,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<Enrolled> {
    let key = Key::generate_private().get_public().to_base64();
    let endpoint = format!("{}:51820", sdwan_lab::Layout::underlay_addr(lab.peer_count() + 1));
    let body = serde_json::json!({
        "name": format!("bench-{t}"),
        "public_key": key,
        "endpoint": endpoint,
        "lifecycle": "persistent",
    });
    let token = lab.enrollment_token()?;
    let start = Instant::now();
    let answer = lab.replica_call(replica, "POST", "/v1/peers/enroll", Some(&token), Some(&body))?;
    if answer.status != 201 && answer.status != 200 {
        return Err(trial_error(
            t,
            format!("enrollment answered {}: {}", answer.status, answer.body.trim()),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&answer.body).map_err(|e| {
        trial_error(
            t,
            format!("enrollment answer is not JSON ({e}): {}", answer.body.trim()),
        )
    })?;
    let peer_id = v["peer_id"]
        .as_str()
        .ok_or_else(|| trial_error(t, format!("no peer_id in {}", answer.body.trim())))?
        .to_owned();
    let shares = if routes.is_some() {
        let shares = shares_of(&v, &peer_id);
        if shares.len() != POD_POOLS.len() {
            return Err(trial_error(
                t,
                format!("the new node got pod shares {shares:?}, not one of each pool {POD_POOLS:?}"),
            ));
        }
        shares
    } else {
        Vec::new()
    };
    let want = Want {
        key: &key,
        present: true,
        shares: &shares,
    };
    let took = wait_all(lab, &want, routes, start, interrupted).map_err(|e| trial_error(t, e))?;
    Ok(Enrolled {
        key,
        peer_id,
        shares,
        took,
    })
}

/// The `prefixes` of member `peer_id` in an enrollment answer.
fn shares_of(answer: &serde_json::Value, peer_id: &str) -> Vec<IpNet> {
    answer["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["peer_id"].as_str() == Some(peer_id))
        .filter_map(|m| m["prefixes"].as_array())
        .flatten()
        .filter_map(|p| p["prefix"].as_str()?.parse().ok())
        .collect()
}

/// Removes the trial's peer over registry replica `replica`'s API; returns the time until it is gone from
/// every device (and its routes from every daemon).
fn trial_remove(
    lab: &Lab,
    t: usize,
    replica: usize,
    peer: &Enrolled,
    routes: Option<&Routes>,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<Took> {
    let admin = lab.admin_token()?;
    let start = Instant::now();
    let answer = lab.replica_call(
        replica,
        "DELETE",
        &format!("/v1/peers/{}", peer.peer_id),
        Some(&admin),
        None,
    )?;
    if answer.status != 204 {
        return Err(trial_error(
            t,
            format!("removal answered {}: {}", answer.status, answer.body.trim()),
        ));
    }
    let want = Want {
        key: &peer.key,
        present: false,
        shares: &peer.shares,
    };
    wait_all(lab, &want, routes, start, interrupted).map_err(|e| trial_error(t, e))
}

fn trial_error(trial: usize, message: String) -> BenchError {
    BenchError::Trial {
        case: "propagation".to_owned(),
        trial,
        detail: message,
    }
}

/// What a wait waits for on every daemon.
struct Want<'a> {
    /// The peer's key, base64.
    key: &'a str,
    /// Whether it should be there (with its shares routed) or gone (with its routes).
    present: bool,
    /// Its pod shares.
    shares: &'a [IpNet],
}

/// Waits until every daemon shows `want`; the time from `start` to the last device with the key in the
/// wanted state, to the last daemon with the routes in it, and the longest sweep of any poller.
fn wait_all(
    lab: &Lab,
    want: &Want<'_>,
    routes: Option<&Routes>,
    start: Instant,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> std::result::Result<Took, String> {
    let peers: Vec<usize> = (1..=lab.peer_count()).collect();
    let chunks: Vec<Vec<usize>> = peers
        .chunks(peers.len().div_ceil(POLLERS))
        .map(<[usize]>::to_vec)
        .collect();
    let results: Vec<std::result::Result<Took, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|mine| s.spawn(move || poll_daemons(lab, &mine, want, routes, start, interrupted)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a poller panicked".to_owned())))
            .collect()
    });
    let mut all = Took {
        key: Duration::ZERO,
        routed: Duration::ZERO,
        sweep: Duration::ZERO,
    };
    for r in results {
        let t = r?;
        all.key = all.key.max(t.key);
        all.routed = all.routed.max(t.routed);
        all.sweep = all.sweep.max(t.sweep);
    }
    Ok(all)
}

/// One poller: sweeps `mine` until every daemon shows `want`, at most [`DEADLINE`] after `start`. A
/// daemon's key time is the first sweep that saw the key in the wanted state; its routed time the first
/// sweep that saw that and the routes (allowed IPs and kernel routes) in the wanted state.
fn poll_daemons(
    lab: &Lab,
    mine: &[usize],
    want: &Want<'_>,
    routes: Option<&Routes>,
    start: Instant,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> std::result::Result<Took, String> {
    // (peer, whether its key is already seen in the wanted state)
    let mut left: Vec<(usize, bool)> = mine.iter().map(|&i| (i, false)).collect();
    let mut took = Took {
        key: Duration::ZERO,
        routed: Duration::ZERO,
        sweep: Duration::ZERO,
    };
    while !left.is_empty() {
        if start.elapsed() > DEADLINE || interrupted() {
            return Err(format!(
                "peers {:?} did not {} the new peer{} within {DEADLINE:?}",
                left.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                if want.present { "get" } else { "drop" },
                if want.shares.is_empty() {
                    ""
                } else {
                    " and its pod routes"
                }
            ));
        }
        let sweep = Instant::now();
        let mut still = Vec::with_capacity(left.len());
        for &(i, key_seen) in &left {
            let device = lab.device(i).map_err(|e| format!("p{i}: {e}"))?;
            let (key_ok, allowed_ok) = device_state(&device, want);
            let now = start.elapsed();
            if key_ok && !key_seen {
                took.key = took.key.max(now);
            }
            let key_seen = key_seen || key_ok;
            let routed = key_ok
                && allowed_ok
                && match routes {
                    Some(r) if !want.shares.is_empty() => {
                        let table = r.of(i).map_err(|e| format!("p{i}: {e}"))?;
                        want.shares.iter().all(|s| table.contains(s) == want.present)
                    }
                    _ => true,
                };
            if routed {
                took.routed = took.routed.max(now);
            } else {
                still.push((i, key_seen));
            }
        }
        took.sweep = took.sweep.max(sweep.elapsed());
        left = still;
        if !left.is_empty() {
            sleep(Duration::from_millis(2));
        }
    }
    Ok(took)
}

/// Whether `device` has the key in the wanted state, and whether the peer's allowed IPs hold every share
/// (when it should be present; trivially true when it should be gone).
fn device_state(device: &Device, want: &Want<'_>) -> (bool, bool) {
    let peer = device
        .peers
        .iter()
        .find(|p| p.config.public_key.to_base64() == want.key);
    match (peer, want.present) {
        (Some(p), true) => {
            let allowed: Vec<IpNet> = p
                .config
                .allowed_ips
                .iter()
                .filter_map(|a| IpNet::new(a.address, a.cidr).ok())
                .collect();
            (true, want.shares.iter().all(|s| allowed.contains(s)))
        }
        (None, false) => (true, true),
        _ => (false, false),
    }
}

/// An rtnetlink socket in every daemon's namespace and the index of its WireGuard interface there.
struct Routes {
    /// Drives the sockets (one worker thread; the pollers block on it).
    runtime: tokio::runtime::Runtime,
    /// Per peer, in order: the socket and the interface index.
    links: Vec<(Netlink, u32)>,
}

impl Routes {
    /// Opens one socket per peer, each from a thread inside the peer's namespace.
    fn open(lab: &Lab) -> Result<Routes> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| BenchError::io("starting a tokio runtime", e))?;
        let mut links = Vec::with_capacity(lab.peer_count());
        for i in 1..=lab.peer_count() {
            let handle = runtime.handle().clone();
            let nl = sdwan_lab::netns::run_in(&lab.netns(i)?, "opening an rtnetlink socket", move || {
                let _in_runtime = handle.enter();
                Netlink::connect().map_err(std::io::Error::other)
            })?;
            let iface = lab.wg_if(i)?;
            let link = runtime
                .block_on(nl.link_by_name(&iface))
                .map_err(|e| BenchError::Usage(format!("p{i}: reading link {iface}: {e}")))?
                .ok_or_else(|| BenchError::Usage(format!("p{i} has no link {iface}")))?;
            links.push((nl, link.index));
        }
        Ok(Routes { runtime, links })
    }

    /// Peer `i`'s routes through its WireGuard interface with sdwand's protocol.
    fn of(&self, i: usize) -> std::result::Result<Vec<IpNet>, String> {
        let (nl, index) = &self.links[i - 1];
        self.runtime
            .block_on(nl.owned_routes(*index))
            .map_err(|e| e.to_string())
    }
}
