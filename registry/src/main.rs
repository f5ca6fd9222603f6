//! `sdwan-registry`: the registry server. Parses arguments and hands over to [`sdwan_registry::server`].

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sdwan_registry::{config, server, store};
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
        /// Write the admin token to this new file (mode 0600; an existing file is refused) instead of
        /// printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Copy a stopped SQLite registry into an empty etcd key prefix, compare the copy with the source and
    /// print what was copied (--config is not read).
    Migrate {
        /// The SQLite registry's state directory (its state_dir, holding registry.db).
        #[arg(long)]
        from: PathBuf,
        /// A registry configuration whose [store] names the etcd (backend = "etcd"), e.g. the one the
        /// replicas will run with.
        #[arg(long)]
        to: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match sdwand::cli::parse() {
        Invocation::Run(cli) => cli,
        Invocation::Done(code) => return code,
    };
    sdwand::init_logging();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Migrate { from, to } = &command {
        return migrate(from, to);
    }
    let loaded = match command {
        Command::CheckConfig => config::check(&cli.config),
        _ => config::load(&cli.config),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sdwan-registry: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = async_runtime() else {
        return ExitCode::FAILURE;
    };
    match command {
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
        // Handled before the configuration is read.
        Command::Migrate { .. } => ExitCode::FAILURE,
        Command::InitAccount { name, json, token_file } => {
            match init_account(&runtime, &config, &name, json, token_file.as_deref()) {
                Ok(text) => {
                    print!("{text}");
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

/// `migrate`: copies the SQLite registry in `from` to the etcd `[store]` of the configuration `to`.
fn migrate(from: &Path, to: &Path) -> ExitCode {
    let target = match config::load(to) {
        Ok(config) => match config.store {
            store::StoreConfig::Etcd(etcd) => etcd,
            store::StoreConfig::Sqlite => {
                eprintln!(
                    "sdwan-registry: --to {}: its [store] is not etcd (set backend = \"etcd\" and endpoints)",
                    to.display()
                );
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("sdwan-registry: --to: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = async_runtime() else {
        return ExitCode::FAILURE;
    };
    let started = std::time::Instant::now();
    match runtime.block_on(sdwan_registry::migrate::migrate(from, &target)) {
        Ok(copied) => {
            println!(
                "copied {} from {} to etcd {} {} and compared every record ({:.1} s)",
                copied,
                from.display(),
                target.endpoints.join(","),
                target.key_prefix,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sdwan-registry: migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `init-account`: creates the account and answers what to print. With `token_file`, the admin token goes
/// to that file, created new with mode 0600 before the account is (an existing file stops everything), and
/// is left out of the printed answer.
fn init_account(
    runtime: &tokio::runtime::Runtime,
    config: &config::ServerConfig,
    name: &str,
    json: bool,
    token_file: Option<&Path>,
) -> Result<String, String> {
    let mut file = token_file
        .map(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map(|f| (path, f))
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => format!(
                        "--token-file {}: the file exists; it is never overwritten (move it away or choose \
                         another path); no account was created",
                        path.display()
                    ),
                    _ => format!(
                        "--token-file {}: cannot create: {e}; no account was created",
                        path.display()
                    ),
                })
        })
        .transpose()?;
    let created = runtime.block_on(server::init_account(config, name, sdwand::now_ms()));
    let mut account = match created {
        Ok(a) => a,
        Err(e) => {
            if let Some((path, _)) = file.take() {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.to_string());
        }
    };
    if let Some((path, f)) = file.as_mut() {
        let written = writeln!(f, "{}", account.admin_token).and_then(|()| f.sync_all());
        if let Err(e) = written {
            return Err(format!(
                "account {} ({}) was created, but its admin token could not be written to {}: {e}; remove the \
                 account's state or create another account",
                account.account_id,
                account.name,
                path.display()
            ));
        }
        account.admin_token.clear();
        account.admin_token_file = Some(path.display().to_string());
    }
    if json {
        serde_json::to_string_pretty(&account)
            .map(|t| t + "\n")
            .map_err(|e| e.to_string())
    } else {
        let token = match &account.admin_token_file {
            Some(path) => format!("admin_token_file: {path}"),
            None => format!("admin_token: {}", account.admin_token),
        };
        Ok(format!(
            "account_id: {}\nname: {}\n{token}\n",
            account.account_id, account.name
        ))
    }
}

/// The multi-threaded tokio runtime the commands run on; `None` (the reason printed) when it cannot start.
fn async_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("sdwan-registry: cannot start the async runtime: {e}"))
        .ok()
}
