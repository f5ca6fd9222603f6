//! The bench's error type: each variant says what failed and, where it helps, what to do about it.

use std::io;
use std::process::ExitStatus;

use sdwand::wg::WgError;

/// A benchmark could not run (or its result could not be trusted).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The bench creates a network namespace and a TUN device.
    #[error("sdwand-bench must run as root (it creates a network namespace and a TUN device); try `sudo {0}`")]
    NotRoot(String),
    /// The options make no sense.
    #[error("{0}")]
    Usage(String),
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: io::Error,
    },
    /// A helper program (`ip`, `wg`) failed.
    #[error("`{command}` failed ({status})")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// `wireguard-go` did not start or serve its socket.
    #[error("wireguard-go for {iface}: {message}")]
    WireguardGo {
        /// Interface.
        iface: String,
        /// What happened.
        message: String,
    },
    /// sdwand's WireGuard layer failed.
    #[error(transparent)]
    Wg(#[from] WgError),
    /// The device did not hold what a trial should have left on it: the trial measured something else.
    #[error("after {case} ({side}): {detail}")]
    Verify {
        /// Benchmark case.
        case: String,
        /// `sdwand` or `wg`.
        side: &'static str,
        /// What differs.
        detail: String,
    },
    /// The lab (namespaces, daemons, probes) could not be built or driven.
    #[error("lab: {0}")]
    Lab(sdwan_lab::LabError),
    /// A failover trial did not reach the state it waits for (the VIP did not move, a node did not come
    /// back): a failure of the system under test or of the machine, never a slow figure.
    #[error("{case}, trial {trial}: {detail}")]
    Trial {
        /// Benchmark case.
        case: String,
        /// Trial number, from 1.
        trial: usize,
        /// What did not happen, with every peer's view of the VIP.
        detail: String,
    },
    /// The registry under benchmark answered something other than what the run expects.
    #[error("{case}: {detail}")]
    Registry {
        /// Benchmark case.
        case: String,
        /// The request and the answer.
        detail: String,
    },
    /// SIGINT or SIGTERM arrived; the bench stopped between trials and cleaned up.
    #[error("interrupted")]
    Interrupted,
}

impl From<sdwan_lab::LabError> for BenchError {
    /// A lab wait cancelled by the bench's Ctrl-C bridge is an interruption, not a lab failure.
    fn from(e: sdwan_lab::LabError) -> Self {
        match e {
            sdwan_lab::LabError::Cancelled => BenchError::Interrupted,
            e => BenchError::Lab(e),
        }
    }
}

impl BenchError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with [`BenchError`].
pub type Result<T> = std::result::Result<T, BenchError>;
