//! `sdwand`: the SD-WAN data-plane daemon. Parses arguments, turns SIGHUP into reloads and SIGTERM and
//! SIGINT into stops, and hands over to [`sdwand::daemon`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sdwand::cli::Invocation;
use sdwand::daemon::{DaemonError, Trigger};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(version = sdwand::cli::VERSION, about = "SD-WAN data-plane and VIP failover daemon")]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = sdwand::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate a configuration file and its key file without changing anything.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match sdwand::cli::parse() {
        Invocation::Run(cli) => cli,
        Invocation::Done(code) => return code,
    };
    sdwand::init_logging();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { path } => match sdwand::daemon::check_config(&path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run => {
            // Before any thread exists: keep wireguard-control from ever spawning an implementation itself.
            // SAFETY: single-threaded here; no other code reads the environment concurrently.
            unsafe { std::env::set_var(sdwand::wg::IMPLICIT_SPAWN_VAR, sdwand::wg::IMPLICIT_SPAWN_BLOCKED) };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sdwand: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(cli.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(
                    e @ (DaemonError::Config(_)
                    | DaemonError::Key(_)
                    | DaemonError::Registry(
                        sdwand::client::StartError::Config(_) | sdwand::client::StartError::State(_),
                    )),
                ) => {
                    tracing::error!("{e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs the daemon with SIGTERM and SIGINT as stop triggers and SIGHUP as the reload trigger.
async fn run(config: PathBuf) -> Result<(), DaemonError> {
    let (tx, rx) = mpsc::channel(4);
    let signals = forward_signals(tx).map_err(DaemonError::Signals)?;
    let result = sdwand::daemon::run(config, rx).await;
    signals.abort();
    result
}

/// Installs the signal handlers and forwards each signal to the daemon as a [`Trigger`].
fn forward_signals(tx: mpsc::Sender<Trigger>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let trigger = tokio::select! {
                _ = sigterm.recv() => Trigger::Stop("SIGTERM"),
                _ = sigint.recv() => Trigger::Stop("SIGINT"),
                _ = sighup.recv() => Trigger::Reload,
            };
            if tx.send(trigger).await.is_err() {
                break;
            }
        }
    }))
}
