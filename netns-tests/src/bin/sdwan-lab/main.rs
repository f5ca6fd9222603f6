//! `sdwan-lab`: build, inspect and remove network-namespace labs of `sdwand` peers, probe a lab's VIP, or run
//! the quick-start demo. `up`, `status` and `probe` print one JSON document on stdout (see
//! `sdwan_lab::LabDoc`, `sdwan_lab::ProbeReport`); everything else a human reads goes to stderr, except the
//! demo's report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::{Parser, Subcommand};
use sdwan_lab::{Lab, LabDoc, LabError, ProbeOptions, UpOptions};

mod demo;

#[derive(Debug, Parser)]
#[command(
    name = "sdwan-lab",
    version,
    about = "Network-namespace lab of sdwand peers (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a lab and wait until every pair of peers has a WireGuard handshake (and, with a VIP, until one
    /// peer holds it and every peer agrees); print its JSON document.
    Up {
        /// Lab name: 1-6 characters of [a-z0-9]; prefixes every namespace and interface.
        #[arg(long)]
        name: String,
        /// Number of peers (1-200).
        #[arg(long)]
        peers: usize,
        /// The first K peers become the candidates (in order) of the VIP fd00:5d:f::1; every peer gets the
        /// [failover] section, and every candidate an echo responder on [VIP]:9099. 0: no VIP. With the
        /// registry: p1 bootstraps the k3s cluster, p2..pK join it as servers, the others as agents.
        #[arg(long, default_value_t = 0)]
        vip_candidates: usize,
        /// Quorum mode for the VIP (turned on through the registry once the candidates joined) and the
        /// floating prefix (in every peer's [[floating]]), each with the last peer as a witness when its
        /// candidates are even.
        #[arg(long)]
        quorum: bool,
        /// VIP heartbeat interval (failover.interval), at least 10ms.
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        vip_interval: Duration,
        /// Seconds to wait for all handshakes (and the VIP).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// No registry: every peer gets a static [[members]] list (and [[vip]] list) instead of enrolling with
        /// the lab's sdwan-registry (namespace NAME-reg, 192.0.2.2:7443), and no k3s handshake happens.
        #[arg(long)]
        no_registry: bool,
        /// The registry's ephemeral_ttl: how long an ephemeral peer may be silent before it is reaped.
        #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
        ephemeral_ttl: Duration,
        /// Where the registry stores: sqlite (its state directory) or etcd (a 3-member etcd cluster the lab
        /// starts, members e1..e3 in namespaces NAME-e1..NAME-e3 at 192.0.2.3-5, client port 2379).
        #[arg(long, default_value = "sqlite")]
        registry_backend: sdwan_lab::RegistryBackend,
        /// Registry replicas (1-5; more than 1 needs --registry-backend etcd): replica 1 in NAME-reg at
        /// 192.0.2.2, replica R in NAME-regR at 192.0.2.(4+R), all on port 7443; every daemon's [registry]
        /// urls lists them all.
        #[arg(long, default_value_t = 1)]
        registry_replicas: usize,
        /// Pods per peer (at most 13, 16 peers): the network gets pod pools (198.51.100.0/24 in /28s and
        /// fd00:42::/48 in /64s), every peer `[k3s] pod_network = "sdwan"`, and the lab attaches N pod
        /// namespaces NAME-pIqJ per peer with the real CNI plugins (/usr/lib/cni) from the configuration
        /// the daemon wrote. 0: none.
        #[arg(long, default_value_t = 0)]
        pods: usize,
        /// The pod pools' families: ipv4, ipv6 or dual.
        #[arg(long, default_value = "dual")]
        pod_family: sdwan_lab::PodFamily,
        /// A site range of the registry's network (repeatable): where `sdwanctl registry site-prefixes`
        /// may assign a peer a LAN behind it. With --pods, IPv4 ranges come from 203.0.113.128/25 (the
        /// IPv4 overlay is 203.0.113.0/25); IPv6 ones e.g. from 2001:db8::/32.
        #[arg(long)]
        site_range: Vec<ipnet::IpNet>,
        /// An HA branch site behind the first K peers: a site namespace (NAME-p1s) on a LAN bridged to
        /// p1..pK, site host 203.0.113.10/24 with its default route via the gateway address 203.0.113.1,
        /// and the floating prefix 203.0.113.0/24 with candidates p1..pK in every peer's [[floating]]
        /// (with the default --floating-family ipv4). 0: none. Not with --pods or --site-range.
        #[arg(long, default_value_t = 0)]
        floating_candidates: usize,
        /// The floating site's families: ipv4 (203.0.113.0/24 as above), ipv6 (2001:db8:5::/64, gateway
        /// 2001:db8:5::1, site host 2001:db8:5::10/64 with its default route via the gateway) or dual (both,
        /// two [[floating]] entries with the same candidates).
        #[arg(long, default_value = "ipv4")]
        floating_family: sdwan_lab::FloatingFamily,
    },
    /// Print a lab's JSON document, with its PIDs and VIP holders re-read (a dead process is null).
    Status {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
    /// Remove a lab: processes, namespaces, sockets, state. Succeeds when there is nothing to remove.
    Down {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
    /// List the labs on this machine.
    List,
    /// Probe the lab's VIP echo responders from a peer's namespace and print the report as JSON: every
    /// request with who answered it and its round trip, lost requests, the longest outage.
    Probe {
        /// Lab name.
        #[arg(long)]
        name: String,
        /// The peer to probe from (`p4`), usually one that is not a candidate.
        #[arg(long)]
        from: String,
        /// How long to probe.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Time between requests.
        #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Answers later than this count as lost.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Where to send requests (default: the VIP's responder, [fd00:5d:f::1]:9099).
        #[arg(long)]
        target: Option<SocketAddr>,
    },
    /// Quick start: build a lab "demo", show the mesh, ping every peer from every other, then (with VIP
    /// candidates) kill the VIP holder's node while a client probes the VIP, and show the outage it saw.
    Demo {
        /// Number of peers.
        #[arg(long, default_value_t = 5)]
        peers: usize,
        /// VIP candidates (the first K peers); 0: mesh only.
        #[arg(long, default_value_t = 3)]
        vip_candidates: usize,
    },
    /// (internal) The echo responder the lab runs in each VIP candidate's namespace.
    #[command(hide = true)]
    Responder {
        /// Address to bind (with IPV6_FREEBIND: it need not exist yet).
        #[arg(long)]
        bind: SocketAddr,
        /// Node name every answer carries.
        #[arg(long)]
        node: String,
        /// The lab's state directory: the responder exits once it is gone.
        #[arg(long)]
        lab_dir: PathBuf,
    },
}

/// Set by SIGINT / SIGTERM; the lab's bounded waits check it.
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(flag) = CANCEL.get() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// Installs the Ctrl-C / SIGTERM handler and returns the flag it sets.
fn cancel_flag() -> Arc<AtomicBool> {
    let flag = CANCEL.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only does an atomic load and an atomic store, which are async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
    flag
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            name,
            peers,
            vip_candidates,
            quorum,
            vip_interval,
            timeout,
            no_registry,
            ephemeral_ttl,
            registry_backend,
            registry_replicas,
            pods,
            pod_family,
            site_range,
            floating_candidates,
            floating_family,
        } => {
            let mut opts = UpOptions::new(&name, peers);
            opts.handshake_timeout = Duration::from_secs(timeout);
            opts.vip_candidates = vip_candidates;
            opts.quorum = quorum;
            opts.vip_interval = vip_interval;
            opts.registry = !no_registry;
            opts.ephemeral_ttl = ephemeral_ttl;
            opts.registry_backend = registry_backend;
            opts.registry_replicas = registry_replicas;
            opts.pods = pods;
            opts.pod_family = pod_family;
            opts.site_ranges = site_range;
            opts.floating_candidates = floating_candidates;
            opts.floating_family = floating_family;
            up(opts)
        }
        Command::Status { name } => Lab::load(&name)
            .and_then(|mut lab| lab.status())
            .map(|doc| print_doc(&doc)),
        Command::Down { name } => down(&name),
        Command::List => Lab::list().map(|names| names.iter().for_each(|n| println!("{n}"))),
        Command::Probe {
            name,
            from,
            duration,
            interval,
            timeout,
            target,
        } => probe(&name, &from, duration, interval, timeout, target),
        Command::Demo { peers, vip_candidates } => return demo::run(peers, vip_candidates, cancel_flag()),
        Command::Responder { bind, node, lab_dir } => sdwan_lab::responder::serve(bind, &node, &lab_dir)
            .map_err(|e| LabError::io(format!("responder on {bind}"), e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(LabError::Cancelled) => {
            eprintln!("sdwan-lab: cancelled");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("sdwan-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_doc(doc: &LabDoc) {
    println!(
        "{}",
        serde_json::to_string_pretty(doc).expect("a LabDoc always serializes")
    );
}

fn up(mut opts: UpOptions) -> sdwan_lab::Result<()> {
    let name = opts.name.clone();
    opts.cancel = Some(cancel_flag());
    let mut lab = Lab::up(opts)?;
    let doc = lab.status()?;
    print_doc(&doc);
    eprintln!("sdwan-lab: lab {name:?} is up; remove it with `sdwan-lab down --name {name}`");
    Ok(())
}

fn down(name: &str) -> sdwan_lab::Result<()> {
    let report = Lab::down(name)?;
    for w in &report.warnings {
        eprintln!("sdwan-lab: warning: {w}");
    }
    if report.removed_nothing() {
        eprintln!("sdwan-lab: nothing to remove for lab {name:?}");
    } else {
        eprintln!(
            "sdwan-lab: removed lab {name:?}: {} processes stopped, {} namespaces, {} stale sockets",
            report.stopped.len(),
            report.namespaces.len(),
            report.sockets.len()
        );
    }
    Ok(())
}

fn probe(
    name: &str,
    from: &str,
    duration: Duration,
    interval: Duration,
    timeout: Duration,
    target: Option<SocketAddr>,
) -> sdwan_lab::Result<()> {
    let lab = Lab::load(name)?;
    let i = lab.peer_index(from).ok_or_else(|| {
        LabError::InvalidOption(format!(
            "--from {from:?}: lab {name:?} has peers p1..p{}",
            lab.peer_count()
        ))
    })?;
    let mut opts = ProbeOptions::new(duration);
    opts.interval = interval;
    opts.timeout = timeout;
    if let Some(t) = target {
        opts.target = t;
    }
    let report = lab.probe(i, opts)?;
    eprintln!("sdwan-lab: {report}");
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("a ProbeReport always serializes")
    );
    Ok(())
}
