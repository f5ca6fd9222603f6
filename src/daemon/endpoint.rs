//! The metrics endpoint, fail-soft: a port that is taken (another process squatting
//! `daemon.metrics_listen`) or a server that stops does not stop the daemon. The failure is logged at
//! error once per distinct reason, naming the setting, shown by `sdwanctl status`, and the bind is
//! retried every [`RETRY`] until it succeeds.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::control::EndpointView;
use crate::metrics::{self, Metrics};

/// The setting of the endpoint every node serves.
pub(super) const METRICS_LISTEN: &str = "daemon.metrics_listen";
/// The setting of the optional second endpoint on the overlay address.
pub(super) const METRICS_OVERLAY_PORT: &str = "daemon.metrics_overlay_port";

/// Delay between attempts to bind the endpoint.
pub(super) const RETRY: Duration = Duration::from_secs(5);

/// Binds and serves the endpoint on a task of its own, retrying every `retry` while it cannot; the
/// receiver tells its current state.
pub(super) async fn spawn(
    metrics: Metrics,
    listen: SocketAddr,
    setting: &'static str,
    retry: Duration,
) -> watch::Receiver<EndpointView> {
    // The first attempt before returning, so a free port serves before the registry link starts.
    let first = metrics::bind(listen, setting).await;
    let (tx, rx) = watch::channel(EndpointView {
        listen,
        serving: first.is_ok(),
        error: first.as_ref().err().map(ToString::to_string),
    });
    tokio::spawn(run(metrics, listen, setting, first, tx, retry));
    rx
}

async fn run(
    metrics: Metrics,
    listen: SocketAddr,
    setting: &'static str,
    mut attempt: std::io::Result<tokio::net::TcpListener>,
    state: watch::Sender<EndpointView>,
    retry: Duration,
) {
    let mut last_error: Option<String> = None;
    loop {
        let error = match attempt {
            Ok(listener) => {
                tracing::info!(%listen, "metrics endpoint at /metrics");
                last_error = None;
                state.send_replace(EndpointView {
                    listen,
                    serving: true,
                    error: None,
                });
                match metrics.clone().serve(listener).await {
                    Ok(()) => "the metrics server stopped".to_owned(),
                    Err(e) => format!("the metrics server stopped: {e}"),
                }
            }
            Err(e) => e.to_string(),
        };
        if last_error.as_deref() == Some(error.as_str()) {
            tracing::debug!(%error, "metrics endpoint still down");
        } else {
            tracing::error!(%error, setting, retry_in = ?retry, "metrics endpoint down; the daemon runs on without it and retries");
        }
        state.send_replace(EndpointView {
            listen,
            serving: false,
            error: Some(error.clone()),
        });
        last_error = Some(error);
        tokio::time::sleep(retry).await;
        attempt = metrics::bind(listen, setting).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_squatted_port_is_reported_and_taken_once_free() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = squatter.local_addr().unwrap();
        let retry = Duration::from_millis(20);
        let mut state = spawn(Metrics::new(), listen, METRICS_LISTEN, retry).await;
        let down = state.borrow_and_update().clone();
        assert!(!down.serving);
        let error = down.error.expect("the reason is reported");
        assert!(error.contains("change daemon.metrics_listen"), "{error}");
        drop(squatter);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.borrow().serving {
            assert!(Instant::now() < deadline, "the endpoint was not bound again");
            tokio::time::timeout(Duration::from_secs(5), state.changed())
                .await
                .expect("a state change within two retries")
                .unwrap();
        }
        assert_eq!(state.borrow().error, None);
        let body = http_get(listen).await;
        assert!(body.contains("sdwand_build_info"), "{body}");
    }

    /// `GET /metrics` over a plain TCP stream.
    async fn http_get(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}
