//! The lab's error type: one enum, each variant saying what failed and what to do about it.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while building, driving or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab name breaks the naming rule (it prefixes every namespace and interface name).
    #[error("invalid lab name {name:?}: {reason} (use 1-6 characters of [a-z0-9], e.g. \"demo\")")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A peer count outside 1..=200 (underlay addresses are 192.0.2.(10+i)).
    #[error("invalid peer count {0}: a lab has 1 to 200 peers")]
    InvalidPeerCount(usize),
    /// A lab option out of range (VIP candidates, heartbeat interval, …), with the rule it breaks.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A peer index that the lab does not have.
    #[error("lab {lab:?} has no peer {index} (peers are numbered 1..={count})")]
    NoSuchPeer {
        /// Lab name.
        lab: String,
        /// The index asked for.
        index: usize,
        /// How many peers the lab has.
        count: usize,
    },
    /// Namespaces and WireGuard need root.
    #[error("the lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces); run it with sudo")]
    NotRoot,
    /// A lab of that name (or a leftover of one) is already there.
    #[error("lab {name:?} already exists ({what}); remove it first with `sdwan-lab down --name {name}`")]
    Exists {
        /// Lab name.
        name: String,
        /// What was found.
        what: String,
    },
    /// No state file for that lab.
    #[error("no lab named {name:?} (no state file {path}); create one with `sdwan-lab up --name {name} --peers N`")]
    NotFound {
        /// Lab name.
        name: String,
        /// The state file that is missing.
        path: PathBuf,
    },
    /// A program the lab needs is missing.
    #[error("{0}")]
    MissingProgram(String),
    /// A command could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// File or system-call trouble, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the lab was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The state file or a document could not be (de)serialized.
    #[error("{context}: {message}")]
    Format {
        /// What the lab was doing.
        context: String,
        /// The parser's message.
        message: String,
    },
    /// A bounded wait ran out.
    #[error("{what}: not done within {}{}", humanize(*.waited), if .details.is_empty() { String::new() } else { format!("\n{}", .details) })]
    Timeout {
        /// What was waited for, in one line.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// What a reader needs to debug it (log tails, output so far); may be empty.
        details: String,
    },
    /// A process the lab started died on its own.
    #[error("{what} exited unexpectedly{}", match .log_tail { Some(t) => format!("; last log lines:\n{t}"), None => String::new() })]
    ProcessDied {
        /// Which process.
        what: String,
        /// The tail of its log, when it has one.
        log_tail: Option<String>,
    },
    /// A process is not (or no longer) in the state the operation needs.
    #[error("{0}")]
    Process(String),
    /// The operation was cancelled (Ctrl-C).
    #[error("cancelled")]
    Cancelled,
}

/// The lab's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

impl LabError {
    /// An [`LabError::Io`] with its context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// `1.5s`, `250ms`: short durations for messages.
pub fn humanize(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}
