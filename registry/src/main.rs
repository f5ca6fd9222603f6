//! `sdwan-registry`: the registry server. Parses arguments and hands over to [`sdwan_registry::server`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sdwan_registry::{config, server};
use sdwand::cli::Invocation;

#[derive(Parser)]
#[command(version = sdwand::cli::VERSION, about = "SD-WAN registry: membership, VIP records, k3s bootstrap and join")]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default): HTTPS with tls_cert/tls_key, plain HTTP with insecure = true.
    Run,
    /// Check the configuration and the TLS certificate and key it names, then exit (0: usable).
    CheckConfig,
    /// Create an account and print its admin token (shown once; only its hash is stored).
    InitAccount {
        /// The account's name (1-64 letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match sdwand::cli::parse() {
        Invocation::Run(cli) => cli,
        Invocation::Done(code) => return code,
    };
    sdwand::init_logging();
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sdwan-registry: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdwan-registry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => match config.tls.as_ref().map(server::tls::acceptor).transpose() {
            Ok(_) => {
                println!("{}: ok", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sdwan-registry: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run => match runtime.block_on(server::run(&config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::InitAccount { name, json } => {
            let now = sdwand::now_ms();
            match runtime.block_on(server::init_account(&config, &name, now)) {
                Ok(a) if json => match serde_json::to_string_pretty(&a) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("sdwan-registry: {e}");
                        ExitCode::FAILURE
                    }
                },
                Ok(a) => {
                    println!(
                        "account_id: {}\nname: {}\nadmin_token: {}",
                        a.account_id, a.name, a.admin_token
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sdwan-registry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
