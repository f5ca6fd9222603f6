//! Local health checks: is this node's service fit to hold a VIP?
//!
//! [`Hysteresis`] is the pure part: it debounces check results into a healthy/unhealthy state.
//! [`Checker`] runs one TCP connect or HTTP(S) `GET`; [`spawn`] runs it every interval and publishes the
//! debounced state on a watch channel. This module knows nothing about VIPs or the failover protocol (the
//! caller puts the VIP in the span); it never panics on a bad target, a dead service or an unreadable
//! certificate: those are failed checks, and their reason is logged.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::{HealthCheck, HealthConfig};

/// Debounces check results: `rise` passes in a row make an unhealthy node healthy, `fall` failures in a row
/// make a healthy node unhealthy. A node starts unhealthy, so it is healthy only after `rise` passes, unless
/// its start state is given ([`Hysteresis::starting`]: a restarted holder's check is assumed to pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    /// Passes in a row needed to become healthy (at least 1).
    rise: u32,
    /// Failures in a row needed to become unhealthy (at least 1).
    fall: u32,
    /// The debounced state.
    healthy: bool,
    /// Results in a row that disagree with `healthy`; always below `rise` or `fall`, whichever applies.
    streak: u32,
}

impl Hysteresis {
    /// An unhealthy start; a `rise` or `fall` of 0 counts as 1.
    pub fn new(rise: u32, fall: u32) -> Hysteresis {
        Hysteresis::starting(rise, fall, false)
    }

    /// A start in state `healthy`: from a healthy start, `fall` failures in a row make it unhealthy (and
    /// passes change nothing); from an unhealthy one, as [`Hysteresis::new`].
    pub fn starting(rise: u32, fall: u32, healthy: bool) -> Hysteresis {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy,
            streak: 0,
        }
    }

    /// The debounced state.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one check result; returns the new state when it changed.
    #[must_use]
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed { self.rise } else { self.fall };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The check did not finish within its timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The TCP connection was refused or failed.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// A CA, certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The reason.
        source: io::Error,
    },
    /// A CA, certificate or key file holds no usable PEM.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file (the certificate, for a client identity).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {}", crate::error_chain(.0))]
    Client(reqwest::Error),
    /// The request failed before a response arrived.
    #[error("request failed: {}", crate::error_chain(.0))]
    Request(reqwest::Error),
    /// The response was not 2xx.
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
}

impl HealthError {
    /// Whether the check could not even start (a file or client problem an operator must fix), as opposed
    /// to the service failing it.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            HealthError::Read { .. } | HealthError::Pem { .. } | HealthError::Client(_)
        )
    }
}

/// Runs one configured check. An HTTP(S) checker builds its client on first use and builds it again after
/// a failed build or a failed request, so certificate files that appear later (a service that starts
/// after sdwand) or are replaced (certificates rotate) are picked up.
#[derive(Debug)]
pub struct Checker {
    /// What is checked.
    check: HealthCheck,
    /// The HTTP(S) client, once built.
    client: Option<reqwest::Client>,
}

impl Checker {
    /// A checker for `check`; touches nothing yet.
    pub fn new(check: HealthCheck) -> Checker {
        Checker { check, client: None }
    }

    /// Runs the check once; a pass is `Ok`. The connection and request are bounded by `timeout`; building
    /// the client only reads local files.
    pub async fn check(&mut self, timeout: Duration) -> Result<(), HealthError> {
        let url = match &self.check {
            HealthCheck::Tcp { target } => {
                return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(HealthError::Connect(e)),
                    Err(_) => Err(HealthError::Timeout(timeout)),
                };
            }
            HealthCheck::Http { url } | HealthCheck::Https { url, .. } => url.clone(),
        };
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = build_client(&self.check)?;
                self.client = Some(c.clone());
                c
            }
        };
        match tokio::time::timeout(timeout, client.get(url).send()).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(HealthError::Status(response.status())),
            Ok(Err(e)) => {
                self.client = None;
                Err(HealthError::Request(e))
            }
            Err(_) => Err(HealthError::Timeout(timeout)),
        }
    }
}

/// The client for an HTTP(S) check: no proxy (the target is local), no redirects (a 3xx is a failure),
/// a new connection per check (so a pass proves the service still accepts them), and for HTTPS the CA
/// file instead of the system roots and the client identity, if configured.
fn build_client(check: &HealthCheck) -> Result<reqwest::Client, HealthError> {
    // reqwest is built without a bundled crypto provider; ring needs no cmake or nasm. Installing fails
    // only when a provider is installed already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("sdwand/", env!("CARGO_PKG_VERSION"), " health-check"));
    if let HealthCheck::Https {
        ca_file,
        client_cert,
        client_key,
        ..
    } = check
    {
        if let Some(path) = ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(path)?).map_err(|e| pem_error(path, &e))?;
            if certs.is_empty() {
                return Err(HealthError::Pem {
                    path: path.clone(),
                    reason: "holds no PEM certificate".into(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (client_cert, client_key) {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| HealthError::Pem {
                path: cert.clone(),
                reason: format!(
                    "with {}: not a client certificate and key ({})",
                    key.display(),
                    crate::error_chain(&e)
                ),
            })?;
            builder = builder.identity(identity);
        }
    }
    builder.build().map_err(HealthError::Client)
}

fn read(path: &Path) -> Result<Vec<u8>, HealthError> {
    std::fs::read(path).map_err(|source| HealthError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: &reqwest::Error) -> HealthError {
    HealthError::Pem {
        path: path.to_owned(),
        reason: format!("not PEM certificates ({})", crate::error_chain(e)),
    }
}

/// Starts checking `cfg.check` every `cfg.interval`. The receiver starts at `healthy` (normally `false`:
/// healthy only after `rise` passes; `true` assumes the check passes until `fall` failures in a row) and
/// changes only when the debounced state does; each change is logged once, with the target and the
/// reason. A setup problem (an unreadable CA file, say) is logged when it first appears or changes. The
/// task ends when every receiver is dropped.
pub fn spawn(cfg: HealthConfig, healthy: bool) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(healthy);
    (rx, tokio::spawn(run(cfg, healthy, tx)))
}

async fn run(cfg: HealthConfig, healthy: bool, tx: watch::Sender<bool>) {
    let target = cfg.check.target();
    let mut checker = Checker::new(cfg.check);
    let mut state = Hysteresis::starting(cfg.rise, cfg.fall, healthy);
    let mut setup_problem: Option<String> = None;
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            () = tx.closed() => return,
            result = async {
                ticker.tick().await;
                checker.check(cfg.timeout).await
            } => result,
        };
        match &result {
            Err(e) if e.is_setup() => {
                let message = e.to_string();
                if setup_problem.as_ref() != Some(&message) {
                    tracing::warn!(target = %target, error = %message, "health check cannot run");
                }
                setup_problem = Some(message);
            }
            other => {
                setup_problem = None;
                if let Err(e) = other {
                    tracing::debug!(target = %target, error = %e, "health check failed");
                }
            }
        }
        let Some(healthy) = state.record(result.is_ok()) else {
            continue;
        };
        let (old, new) = if healthy {
            ("unhealthy", "healthy")
        } else {
            ("healthy", "unhealthy")
        };
        match &result {
            Ok(()) => {
                tracing::info!(target = %target, old, new, reason = "check passes", rise = cfg.rise, "health changed")
            }
            Err(e) => tracing::warn!(target = %target, old, new, reason = %e, fall = cfg.fall, "health changed"),
        }
        tx.send_replace(healthy);
    }
}

#[cfg(test)]
mod tests;
