//! A process running in the background inside a peer namespace (e.g. a continuous ping during a restart).
//! Its output goes to files in the lab's state directory, so it can never block on a full pipe.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::process::ProcId;
use crate::wait::wait_for;

/// A background process started with [`crate::Lab::spawn_in`]. Dropping it kills the process if it still
/// runs (and `down` kills it too, from the state file).
#[derive(Debug)]
pub struct Background {
    /// The child; `None` once reaped.
    pub(crate) child: Option<Child>,
    /// Identity for `down` and for messages.
    pub(crate) id: ProcId,
    /// What runs, for messages.
    pub(crate) label: String,
    /// Where its stdout goes.
    pub(crate) stdout: PathBuf,
    /// Where its stderr goes.
    pub(crate) stderr: PathBuf,
}

/// What a finished background process left.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Background {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.id.pid
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Its stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its stdout so far.
    pub fn stdout_so_far(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits, at most `timeout`, for it to exit. On timeout it is killed and the error says so.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let mut child = self.child.take().expect("a Background is reaped only once");
        let waited = wait_for(timeout, Duration::from_millis(20), || child.try_wait().ok().flatten());
        let status = match waited {
            Ok((status, _)) => status,
            Err(t) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Timeout {
                    what: format!("background `{}` (pid {}) to exit", self.label, self.id.pid),
                    waited: t.waited,
                    details: format!("output so far:\n{}", self.stdout_so_far()),
                });
            }
        };
        Ok(Finished {
            status,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
