//! `sdwanctl`: asks a running sdwand over its control socket ([`sdwand::control`]) and prints the answer.
//!
//! `sdwanctl registry …` asks the registry's admin routes instead ([`sdwand::client::admin`]).
//! `sdwanctl docker-network` asks the daemon for this node's prefixes, then prints or runs the `docker` and
//! `iptables` commands that put containers on them ([`sdwand::control::docker`]).
//!
//! Exit codes: 0 done, 1 the daemon (or registry) answered with an error, 2 bad usage or no answer.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sdwand::cli::Invocation;
use sdwand::client::admin::{parse_pod_pool, AdminClient};
use sdwand::client::http::ClientError;
use sdwand::control::registry;
use sdwand::control::{self, docker, render, NamedAddr, Request, Response};
use sdwand::vocab::name::PeerName;
use sdwand::vocab::wire::{
    CreateEnrollmentTokenRequest, CreateFloatingRequest, CreateNetworkRequest, SetFloatingRequest, SetQuorumRequest,
};
use sdwand::vocab::{floating_key, ClusterState, PodPool, Role};
use serde::Serialize;

#[derive(Parser)]
// The binary's own name: clap would take the package's (`sdwand`) for --version and the completions.
#[command(name = "sdwanctl", version = sdwand::cli::VERSION, about = "Operate a running sdwand, or the registry")]
struct Cli {
    /// The daemon's control socket (daemon.control_socket).
    #[arg(long, global = true, default_value = control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon, its peers and its VIPs.
    Status,
    /// VIP failover.
    #[command(subcommand)]
    Vip(VipCommand),
    /// The registry (admin token): networks, clusters, VIPs, peers, manual moves, peer removal, site
    /// prefixes, floating prefixes, quorum mode, enrollment tokens, cluster state.
    Registry(RegistryArgs),
    /// Put Docker containers on this node's pod share: a bridge network without masquerade at the tunnel's
    /// MTU, and the DOCKER-USER rules that let the other nodes' traffic in (idempotent).
    DockerNetwork(DockerArgs),
}

#[derive(clap::Args)]
struct DockerArgs {
    /// The Docker network's name.
    #[arg(long, default_value = "sdwan")]
    name: String,
    /// The Linux bridge Docker creates for it (at most 15 characters).
    #[arg(long, default_value = "sdwan-docker")]
    bridge: String,
    /// Which pod shares to use: ipv4, ipv6 or all (every share the node has).
    #[arg(long, default_value = "all")]
    family: docker::Family,
    /// The Docker daemon to create the network on (sets DOCKER_HOST for `docker`, e.g. unix:///run/docker.sock).
    #[arg(long)]
    docker_host: Option<String>,
    /// Only print the commands (docker, iptables), change nothing.
    #[arg(long)]
    print: bool,
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// The registry's URL (https://…; http:// only with --insecure). Repeat it for each replica of an
    /// HA registry: a request goes to the first that answers.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// File holding the account's admin token.
    #[arg(long)]
    token_file: PathBuf,
    /// Accept a plain-HTTP URL (labs: the token travels in clear). Certificates are still checked.
    #[arg(long)]
    insecure: bool,
    /// Trust only these PEM CA certificates for https.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Every network of the account: id, overlay prefix, VIP pool, revision.
    Networks,
    /// Create a network of the account.
    CreateNetwork {
        /// Its name (1-64 letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// The IPv6 prefix peers' /128s come from (e.g. `fd00:5d::/32`).
        #[arg(long)]
        overlay: Ipv6Net,
        /// The IPv6 prefix VIPs come from, strictly inside the overlay (e.g. `fd00:5d:f::/64`).
        #[arg(long)]
        vip_pool: Ipv6Net,
        /// An IPv4 prefix each peer gets a /32 of, beside its /128 (e.g. `10.99.0.0/16`).
        #[arg(long)]
        overlay_v4: Option<Ipv4Net>,
        /// A pod pool and the length of each node's share, `PREFIX:NODE_LEN` (e.g. `10.42.0.0/16:24`,
        /// `fd00:42::/48:64`); at most one per address family. Each peer gets a share at enrollment.
        #[arg(long, value_parser = parse_pod_pool)]
        pod_pool: Vec<PodPool>,
        /// A range operators may assign site prefixes from (`sdwanctl registry site-prefixes`); repeatable.
        #[arg(long)]
        site_range: Vec<IpNet>,
    },
    /// Every cluster of the account: state, API endpoint, VIP holder, members.
    Clusters,
    /// Every VIP of the account: holder, epoch, candidates, pending move.
    Vips,
    /// Every peer of the account: /32 and prefixes, class, roles, cluster, last seen, live or stale.
    Peers,
    /// Ask a VIP's holder to hand it over to one of its candidates.
    Move {
        /// The VIP: its address or its id (see `sdwanctl registry vips`).
        vip: String,
        /// The target candidate's peer name (checked here against the peer name rule).
        #[arg(long)]
        to: PeerName,
    },
    /// Remove a peer with its tokens, cluster membership and VIP candidacy.
    RemovePeer {
        /// The peer: its name or its id (see `sdwanctl registry peers`).
        peer: String,
    },
    /// Set a peer's site prefixes (LANs behind it), replacing the ones it has; none (or --clear) removes
    /// them. Each must lie in one of the network's site ranges and overlap no other peer's prefixes.
    SitePrefixes {
        /// The peer: its name or its id (see `sdwanctl registry peers`).
        peer: String,
        /// The prefixes, IPv4 or IPv6 (e.g. `203.0.113.0/26`).
        prefixes: Vec<IpNet>,
        /// Remove every site prefix of the peer (the same as giving none, said explicitly).
        #[arg(long, conflicts_with = "prefixes")]
        clear: bool,
    },
    /// Floating prefixes (a LAN or range behind several gateways, moved between them by the VIP failover
    /// protocol): list, create, set, delete, move.
    #[command(subcommand)]
    Floating(FloatingCommand),
    /// Quorum mode of a VIP: on (with optional witnesses), or off with --off. In quorum mode a candidate
    /// claims, and a holder keeps holding, only while it hears a majority of the voters.
    VipQuorum {
        /// The VIP: its address or its id (see `sdwanctl registry vips`).
        vip: String,
        /// A witness (peer name or id): votes without being a candidate; repeatable.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// Turn quorum mode off.
        #[arg(long, conflicts_with = "witnesses")]
        off: bool,
    },
    /// Enrollment tokens: issue (with limits), list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Set a cluster's state: `active` takes it out of `error` (joins work again), `error` stops joins.
    ClusterState {
        /// The cluster's id (see `sdwanctl registry clusters`).
        cluster_id: String,
        /// `active` or `error`.
        state: ClusterState,
    },
}

#[derive(Subcommand)]
enum FloatingCommand {
    /// Every floating prefix of the account: gateway, holder, epoch, candidates, quorum, pending move.
    List,
    /// Create a floating prefix in a network: every member routes it to the candidate holding it.
    Create {
        /// The prefix, IPv4 or IPv6 (e.g. `203.0.113.0/24`); it overlaps nothing else the network routes.
        prefix: IpNet,
        /// The network: its name or its id (see `sdwanctl registry networks`).
        #[arg(long)]
        network: String,
        /// A candidate (peer name or id), best first; repeatable, at least one.
        #[arg(long = "candidate", required = true)]
        candidates: Vec<String>,
        /// An address of the prefix that the holder puts on its interface (the site's hosts' gateway).
        #[arg(long)]
        gateway: Option<IpAddr>,
        /// Quorum mode: claim and hold only while a majority of the voters (candidates and witnesses) is heard.
        #[arg(long)]
        quorum: bool,
        /// A witness (peer name or id): votes without being a candidate; repeatable; needs --quorum.
        #[arg(long = "witness", requires = "quorum")]
        witnesses: Vec<String>,
    },
    /// Change a floating prefix's candidates, quorum mode or witnesses; what is not given is kept.
    Set {
        /// The floating prefix: its prefix or its id (see `sdwanctl registry floating list`).
        floating: String,
        /// The new candidates (peer names or ids), best first; repeatable; replaces the list.
        #[arg(long = "candidate")]
        candidates: Vec<String>,
        /// Turn quorum mode on.
        #[arg(long, conflicts_with = "no_quorum")]
        quorum: bool,
        /// Turn quorum mode off (drops the witnesses).
        #[arg(long)]
        no_quorum: bool,
        /// The new witnesses (peer names or ids); repeatable; replaces the list.
        #[arg(long = "witness", conflicts_with = "no_quorum")]
        witnesses: Vec<String>,
        /// Remove every witness (quorum mode stays as it is).
        #[arg(long, conflicts_with_all = ["no_quorum", "witnesses"])]
        clear_witnesses: bool,
    },
    /// Delete a floating prefix: every daemon stops routing it.
    Delete {
        /// The floating prefix: its prefix or its id.
        floating: String,
    },
    /// Ask a floating prefix's holder to hand it over to one of its candidates.
    Move {
        /// The floating prefix: its prefix or its id.
        floating: String,
        /// The target candidate's peer name.
        #[arg(long)]
        to: PeerName,
    },
}

/// The change `sdwanctl registry floating set` asks for; nothing to change is a usage error.
fn set_floating_request(
    candidates: &[String],
    quorum: bool,
    no_quorum: bool,
    witnesses: &[String],
    clear_witnesses: bool,
) -> Result<SetFloatingRequest, String> {
    let req = SetFloatingRequest {
        candidates: (!candidates.is_empty()).then(|| candidates.to_vec()),
        quorum: (quorum || no_quorum).then_some(quorum),
        witnesses: if clear_witnesses {
            Some(Vec::new())
        } else {
            (!witnesses.is_empty()).then(|| witnesses.to_vec())
        },
    };
    if req == SetFloatingRequest::default() {
        return Err(
            "nothing to change: give --candidate, --quorum, --no-quorum, --witness or --clear-witnesses".to_owned(),
        );
    }
    Ok(req)
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Issue an enrollment token for a network (printed once). Prefer expiring, limited tokens.
    Create {
        /// The network's id.
        #[arg(long)]
        network: String,
        /// Expire after this long (e.g. `1h`, `7days`).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Enroll at most this many peers.
        #[arg(long)]
        max_uses: Option<u64>,
        /// The roles its peers may take, comma-separated (`agent`, `server`; `""` for none); default all.
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
    },
    /// Every enrollment token of the account: limits, uses, state (never the secret).
    List,
    /// Revoke an enrollment token: it answers 401 from then on; peers it enrolled keep working.
    Revoke {
        /// The token's id (see `sdwanctl registry tokens list`).
        token_id: String,
    },
}

#[derive(Subcommand)]
enum VipCommand {
    /// Every VIP with its holder, epoch and candidates.
    List,
    /// Hand a VIP or floating prefix this node holds over to another candidate.
    Move {
        /// The VIP (an IPv6 address) or the floating prefix (with its length, e.g. 203.0.113.0/24).
        #[arg(value_parser = parse_move_key)]
        vip: Ipv6Addr,
        /// The successor, by member name or overlay address (default: the best-ranked live, healthy one).
        #[arg(long)]
        to: Option<String>,
    },
}

/// The protocol key of `sdwanctl vip move`'s argument: a VIP is its own key, a floating prefix is named by
/// [`floating_key`]. A bare IPv4 address is refused: no VIP is IPv4, and a floating prefix needs its length.
fn parse_move_key(text: &str) -> Result<Ipv6Addr, String> {
    if let Ok(vip) = text.parse::<Ipv6Addr>() {
        return Ok(vip);
    }
    if let Ok(prefix) = text.parse::<IpNet>() {
        return Ok(floating_key(prefix));
    }
    Err(format!(
        "{text:?} is neither a VIP (an IPv6 address) nor a floating prefix with its length (e.g. 203.0.113.0/24)"
    ))
}

fn main() -> ExitCode {
    let cli: Cli = match sdwand::cli::parse() {
        Invocation::Run(cli) => cli,
        Invocation::Done(code) => return code,
    };
    let request = match cli.command {
        Command::Status => Request::Status,
        Command::Vip(VipCommand::List) => Request::VipList,
        Command::Vip(VipCommand::Move { vip, to }) => Request::VipMove { vip, to },
        Command::Registry(args) => return registry_main(&args, cli.json),
        Command::DockerNetwork(args) => return docker_main(&cli.socket, &args),
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(control::call(&cli.socket, &request))
                .map_err(|e| e.to_string())
        });
    let response = match answer {
        Ok(response) => response,
        Err(e) => {
            eprintln!("sdwanctl: {e}");
            return ExitCode::from(2);
        }
    };
    let output = match (&response, cli.json) {
        (Response::Status(s), false) => Ok(render::status(s)),
        (Response::Status(s), true) => pretty(s),
        (Response::Vips(v), false) => Ok(render::vips(v)),
        (Response::Vips(v), true) => pretty(v),
        (Response::Moved { vip, to }, false) => Ok(render::moved(*vip, to)),
        (Response::Moved { vip, to }, true) => pretty(&Moved { vip, to }),
        (Response::Error { code, message }, json) => {
            if let (true, Ok(json)) = (json, pretty(&Failed { code, message })) {
                print(&json);
            }
            eprintln!("sdwanctl: {message} ({code})");
            return ExitCode::from(1);
        }
    };
    match output {
        Ok(text) => print(&text),
        Err(e) => {
            eprintln!("sdwanctl: cannot encode the answer as JSON: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// `sdwanctl docker-network`: asks the daemon for this node's prefixes, then prints or applies the plan.
fn docker_main(socket: &std::path::Path, args: &DockerArgs) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(control::call(socket, &Request::Status))
                .map_err(|e| e.to_string())
        });
    let status = match answer {
        Ok(Response::Status(status)) => status,
        Ok(Response::Error { code, message }) => {
            eprintln!("sdwanctl: {message} ({code})");
            return ExitCode::from(1);
        }
        Ok(other) => {
            eprintln!("sdwanctl: unexpected answer to a status request: {other:?}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("sdwanctl: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(workload) = &status.workload else {
        eprintln!(
            "sdwanctl: sdwand has not started its data plane yet (or predates workload prefixes): see sdwanctl status"
        );
        return ExitCode::from(1);
    };
    let planned = docker::Network::plan(&args.name, &args.bridge, &status.interface, workload, args.family);
    let result = planned.and_then(|network| {
        if args.print {
            Ok(network.commands())
        } else {
            network
                .apply(args.docker_host.as_deref())
                .map(|done| done.iter().map(|l| format!("{l}\n")).collect())
        }
    });
    match result {
        Ok(text) => {
            print(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sdwanctl: {e}");
            ExitCode::from(1)
        }
    }
}

/// `sdwanctl registry …`: calls the registry and prints its answer.
fn registry_main(args: &RegistryArgs, json: bool) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Setup(format!("cannot start the async runtime: {e}")))
        .and_then(|rt| rt.block_on(registry_call(args, json)));
    match answer {
        Ok(text) => {
            print(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let (true, ClientError::Refused { code, message, .. }) = (json, &e) {
                if let Ok(json) = pretty(&Failed { code, message }) {
                    print(&json);
                }
            }
            eprintln!("sdwanctl: {e}");
            ExitCode::from(if matches!(e, ClientError::Refused { .. }) { 1 } else { 2 })
        }
    }
}

async fn registry_call(args: &RegistryArgs, json: bool) -> Result<String, ClientError> {
    let client = AdminClient::new(&args.url, &args.token_file, args.insecure, args.ca_file.as_deref())?;
    match &args.command {
        RegistryCommand::Networks => {
            let n = client.networks().await?;
            shown(json, &n, || registry::networks(&n))
        }
        RegistryCommand::CreateNetwork {
            name,
            overlay,
            vip_pool,
            overlay_v4,
            pod_pool,
            site_range,
        } => {
            let req = CreateNetworkRequest {
                name: name.clone(),
                overlay_prefix: *overlay,
                vip_pool: *vip_pool,
                overlay_prefix_v4: *overlay_v4,
                pod_pools: pod_pool.clone(),
                site_ranges: site_range.clone(),
            };
            let n = client.create_network(&req).await?;
            shown(json, &n, || registry::network_created(&n))
        }
        RegistryCommand::Clusters => {
            let c = client.clusters().await?;
            shown(json, &c, || registry::clusters(&c))
        }
        RegistryCommand::Vips => {
            let v = client.vips().await?;
            shown(json, &v, || registry::vips(&v))
        }
        RegistryCommand::Peers => {
            let p = client.peers().await?;
            shown(json, &p, || registry::peers(&p, sdwand::now_ms()))
        }
        RegistryCommand::Move { vip, to } => {
            let vip_id = client.resolve_vip(vip).await?;
            let v = client.move_vip(&vip_id, to).await?;
            shown(json, &v, || registry::moved(&v))
        }
        RegistryCommand::RemovePeer { peer } => {
            let peer_id = client.resolve_peer(peer).await?;
            client.remove_peer(&peer_id).await?;
            shown(json, &serde_json::json!({ "removed": peer_id }), || {
                registry::removed(peer, &peer_id)
            })
        }
        RegistryCommand::SitePrefixes { peer, prefixes, .. } => {
            let peer_id = client.resolve_peer(peer).await?;
            let p = client.set_site_prefixes(&peer_id, prefixes).await?;
            shown(json, &p, || registry::site_prefixes_set(&p))
        }
        RegistryCommand::Floating(command) => floating_call(&client, command, json).await,
        RegistryCommand::VipQuorum { vip, witnesses, off } => {
            let vip_id = client.resolve_vip(vip).await?;
            let req = SetQuorumRequest {
                enabled: !off,
                witnesses: witnesses.clone(),
            };
            let v = client.set_vip_quorum(&vip_id, &req).await?;
            shown(json, &v, || registry::vip_quorum(&v))
        }
        RegistryCommand::Tokens(TokensCommand::Create {
            network,
            expires_in,
            max_uses,
            roles,
        }) => {
            let req = CreateEnrollmentTokenRequest {
                expires_in_s: expires_in.map(|d| d.as_secs().max(1)),
                expires_at_ms: None,
                max_uses: *max_uses,
                roles: roles.as_deref().map(parse_roles).transpose()?,
            };
            let t = client.create_enrollment_token(network, &req).await?;
            shown(json, &t, || registry::token_created(&t, sdwand::now_ms()))
        }
        RegistryCommand::Tokens(TokensCommand::List) => {
            let t = client.enrollment_tokens().await?;
            shown(json, &t, || registry::tokens(&t, sdwand::now_ms()))
        }
        RegistryCommand::Tokens(TokensCommand::Revoke { token_id }) => {
            let t = client.revoke_enrollment_token(token_id).await?;
            shown(json, &t, || registry::token_revoked(&t))
        }
        RegistryCommand::ClusterState { cluster_id, state } => {
            let c = client.set_cluster_state(cluster_id, *state).await?;
            shown(json, &c, || registry::cluster_state(&c))
        }
    }
}

/// `sdwanctl registry floating …`.
async fn floating_call(client: &AdminClient, command: &FloatingCommand, json: bool) -> Result<String, ClientError> {
    match command {
        FloatingCommand::List => {
            let f = client.floating().await?;
            shown(json, &f, || registry::floating(&f))
        }
        FloatingCommand::Create {
            prefix,
            network,
            candidates,
            gateway,
            quorum,
            witnesses,
        } => {
            let network_id = client.resolve_network(network).await?;
            let req = CreateFloatingRequest {
                prefix: *prefix,
                gateway: *gateway,
                candidates: candidates.clone(),
                quorum: *quorum,
                witnesses: witnesses.clone(),
            };
            let f = client.create_floating(&network_id, &req).await?;
            shown(json, &f, || registry::floating_changed(&f, "created"))
        }
        FloatingCommand::Set {
            floating,
            candidates,
            quorum,
            no_quorum,
            witnesses,
            clear_witnesses,
        } => {
            let req = set_floating_request(candidates, *quorum, *no_quorum, witnesses, *clear_witnesses)
                .map_err(ClientError::Setup)?;
            let id = client.resolve_floating(floating).await?;
            let f = client.set_floating(&id, &req).await?;
            shown(json, &f, || registry::floating_changed(&f, "set"))
        }
        FloatingCommand::Delete { floating } => {
            let id = client.resolve_floating(floating).await?;
            client.delete_floating(&id).await?;
            shown(json, &serde_json::json!({ "deleted": id }), || {
                registry::floating_deleted(floating, &id)
            })
        }
        FloatingCommand::Move { floating, to } => {
            let id = client.resolve_floating(floating).await?;
            let f = client.move_floating(&id, to).await?;
            shown(json, &f, || registry::floating_moved(&f))
        }
    }
}

/// `--roles agent,server` (empty items ignored, so `--roles ""` is no role).
fn parse_roles(names: &[String]) -> Result<Vec<Role>, ClientError> {
    names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            n.trim()
                .parse()
                .map_err(|e| ClientError::Setup(format!("--roles: {e} (roles are agent and server)")))
        })
        .collect()
}

/// The data of [`Response::Moved`], for `--json`.
#[derive(Serialize)]
struct Moved<'a> {
    vip: &'a Ipv6Addr,
    to: &'a NamedAddr,
}

/// The data of [`Response::Error`], for `--json`.
#[derive(Serialize)]
struct Failed<'a> {
    code: &'a str,
    message: &'a str,
}

/// `value` as indented JSON (fields in declaration order) with a final newline.
/// An answer of `sdwanctl registry`: pretty JSON with `--json`, else what `render` writes.
fn shown(json: bool, value: &impl Serialize, render: impl FnOnce() -> String) -> Result<String, ClientError> {
    if json {
        pretty(value).map_err(|e| ClientError::Setup(format!("cannot encode the answer as JSON: {e}")))
    } else {
        Ok(render())
    }
}

fn pretty(value: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|json| json + "\n")
}

/// Writes `text` to stdout; a closed pipe (`sdwanctl … | head`) is not an error.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(args: &[&str]) -> Result<RegistryCommand, clap::Error> {
        let base = ["sdwanctl", "registry", "--url", "https://r", "--token-file", "t"];
        let cli = Cli::try_parse_from(base.iter().chain(args))?;
        match cli.command {
            Command::Registry(args) => Ok(args.command),
            _ => panic!("not a registry command"),
        }
    }

    #[test]
    fn vip_move_takes_a_vip_or_a_floating_prefix_by_its_key() {
        let key = |arg: &str| match Cli::try_parse_from(["sdwanctl", "vip", "move", arg]).map(|c| c.command) {
            Ok(Command::Vip(VipCommand::Move { vip, .. })) => Ok(vip),
            Ok(_) => panic!("not vip move"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(key("fd00:5d:f::1"), Ok("fd00:5d:f::1".parse().unwrap()));
        assert_eq!(key("203.0.113.0/24"), Ok("::ffff:203.0.113.0".parse().unwrap()));
        // A host address written with the prefix's length names the prefix.
        assert_eq!(key("203.0.113.7/24"), Ok("::ffff:203.0.113.0".parse().unwrap()));
        assert_eq!(key("2001:db8:7::/48"), Ok("2001:db8:7::".parse().unwrap()));
        let refused = key("203.0.113.1").expect_err("a bare IPv4 address");
        assert!(refused.contains("floating prefix with its length"), "{refused}");
        assert!(key("p1").is_err());
    }

    #[test]
    fn floating_create_takes_candidates_gateway_quorum_and_witnesses() {
        let parsed = registry(&[
            "floating",
            "create",
            "203.0.113.0/24",
            "--network",
            "branch",
            "--candidate",
            "gw1",
            "--candidate",
            "gw2",
            "--gateway",
            "203.0.113.1",
            "--quorum",
            "--witness",
            "w",
        ])
        .expect("parses");
        let RegistryCommand::Floating(FloatingCommand::Create {
            prefix,
            network,
            candidates,
            gateway,
            quorum,
            witnesses,
        }) = parsed
        else {
            panic!("not floating create");
        };
        assert_eq!(prefix.to_string(), "203.0.113.0/24");
        assert_eq!(
            (network.as_str(), candidates),
            ("branch", vec!["gw1".to_owned(), "gw2".to_owned()])
        );
        assert_eq!(gateway.map(|g| g.to_string()).as_deref(), Some("203.0.113.1"));
        assert!(quorum);
        assert_eq!(witnesses, ["w"]);
        // At least one candidate; witnesses need --quorum; the prefix must parse.
        for bad in [
            vec!["floating", "create", "203.0.113.0/24", "--network", "n"],
            vec![
                "floating",
                "create",
                "203.0.113.0/24",
                "--network",
                "n",
                "--candidate",
                "a",
                "--witness",
                "w",
            ],
            vec![
                "floating",
                "create",
                "203.0.113.0/33",
                "--network",
                "n",
                "--candidate",
                "a",
            ],
        ] {
            assert!(registry(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn floating_set_sends_only_what_is_given_and_refuses_nothing() {
        let Ok(RegistryCommand::Floating(FloatingCommand::Set {
            candidates,
            quorum,
            no_quorum,
            witnesses,
            clear_witnesses,
            ..
        })) = registry(&["floating", "set", "203.0.113.0/24", "--candidate", "gw2", "--quorum"])
        else {
            panic!("not floating set");
        };
        let req = set_floating_request(&candidates, quorum, no_quorum, &witnesses, clear_witnesses).expect("a change");
        assert_eq!(
            serde_json::to_value(&req).expect("json"),
            serde_json::json!({"candidates": ["gw2"], "quorum": true, "witnesses": null})
        );
        let off = set_floating_request(&[], false, true, &[], false).expect("off");
        assert_eq!((off.quorum, off.witnesses), (Some(false), None));
        let cleared = set_floating_request(&[], false, false, &[], true).expect("cleared");
        assert_eq!(cleared.witnesses, Some(vec![]));
        let e = set_floating_request(&[], false, false, &[], false).expect_err("nothing");
        assert!(e.contains("nothing to change"), "{e}");
        for bad in [
            vec!["floating", "set", "f", "--quorum", "--no-quorum"],
            vec!["floating", "set", "f", "--no-quorum", "--witness", "w"],
            vec!["floating", "set", "f", "--witness", "w", "--clear-witnesses"],
        ] {
            assert!(registry(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vip_quorum_is_on_with_witnesses_or_off() {
        let Ok(RegistryCommand::VipQuorum { vip, witnesses, off }) =
            registry(&["vip-quorum", "fd00:5d:f::1", "--witness", "w1", "--witness", "w2"])
        else {
            panic!("not vip-quorum");
        };
        assert_eq!(
            (vip.as_str(), witnesses, off),
            ("fd00:5d:f::1", vec!["w1".to_owned(), "w2".to_owned()], false)
        );
        assert!(matches!(
            registry(&["vip-quorum", "v-1", "--off"]),
            Ok(RegistryCommand::VipQuorum { off: true, .. })
        ));
        assert!(registry(&["vip-quorum", "v-1", "--off", "--witness", "w"]).is_err());
        assert!(registry(&["floating", "move", "f", "--to", "not a name"]).is_err());
    }
}
