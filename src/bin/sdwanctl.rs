//! `sdwanctl`: asks a running sdwand over its control socket ([`sdwand::control`]) and prints the answer.
//!
//! Exit codes: 0 done, 1 the daemon answered with an error, 2 bad usage or no answer from the daemon.

use std::io::Write;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sdwand::control::{self, render, NamedAddr, Request, Response};
use serde::Serialize;

#[derive(Parser)]
#[command(version, about = "Operate a running sdwand")]
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
}

#[derive(Subcommand)]
enum VipCommand {
    /// Every VIP with its holder, epoch and candidates.
    List,
    /// Hand a VIP this node holds over to another candidate.
    Move {
        /// The VIP.
        vip: Ipv6Addr,
        /// The successor, by member name or overlay address (default: the best-ranked live, healthy one).
        #[arg(long)]
        to: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = match cli.command {
        Command::Status => Request::Status,
        Command::Vip(VipCommand::List) => Request::VipList,
        Command::Vip(VipCommand::Move { vip, to }) => Request::VipMove { vip, to },
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
fn pretty(value: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(|json| json + "\n")
}

/// Writes `text` to stdout; a closed pipe (`sdwanctl … | head`) is not an error.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
