//! Applies an nftables script with `nft -f -` (one transaction: the kernel takes the whole script or
//! nothing) and reads whether a table exists. It must not decide what the script says
//! ([`crate::mesh::firewall`] does).

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The longest an `nft` run may take before it is killed and reported as failed.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed `nft` run.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started (not installed: `apt install nftables`).
    #[error("running nft: {0} (is nftables installed? `apt install nftables`)")]
    Spawn(io::Error),
    /// `nft` refused the script; its message says which line.
    #[error("nft -f - refused the ruleset (exit {code}): {stderr}")]
    Refused {
        /// Its exit status (`-1` when killed by a signal).
        code: i32,
        /// What it printed.
        stderr: String,
    },
    /// `nft` did not finish within its time limit.
    #[error("nft did not finish within {NFT_TIMEOUT:?}")]
    Timeout,
}

/// Runs `nft -f -` with `script` on its standard input.
pub async fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(NftError::Spawn)?;
        }
        child.wait_with_output().await.map_err(NftError::Spawn)
    };
    let output = tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| NftError::Timeout)??;
    if output.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused {
            code: output.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
