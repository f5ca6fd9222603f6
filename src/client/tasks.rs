//! The link's two background tasks: the watch (long polls, paced, backing off with jitter) and the report
//! (liveness and VIP state, epoch floors back, k3s ready once per cluster). They talk to the daemon's loop
//! over channels only.

use super::*;

/// The watch task: long polls from `since`, sends every new view to the loop, backs off (with jitter) on
/// errors, and paces its requests: [`WATCH_GAP`] apart after a newer revision, [`MIN_WATCH_INTERVAL`] apart
/// after an answer that brought nothing newer.
pub(super) async fn watch(
    client: RegistryClient,
    network_id: String,
    mut since: u64,
    views: mpsc::Sender<MembersResponse>,
    metrics: ClientMetrics,
    removed: Removed,
) {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
    let mut failures = Repeats::new(SUMMARY_INTERVAL);
    let mut backwards = Repeats::new(SUMMARY_INTERVAL);
    let mut highest = since;
    let mut next_start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next_start).await;
        let started = tokio::time::Instant::now();
        next_start = started + MIN_WATCH_INTERVAL;
        match client.watch(&network_id, since, WATCH_WAIT).await {
            Ok(answer) => {
                metrics.outcome(Ok(()));
                backoff.reset();
                if let Some(n) = failures.success() {
                    tracing::info!(repeats = n, "registry watch works again");
                }
                if let Some(view) = answer.filter(|v| v.revision != since) {
                    if view.revision < since {
                        let log = backwards.failure("revision back", Instant::now());
                        if log != Log::Quiet {
                            tracing::warn!(
                                was = since,
                                now = view.revision,
                                repeats = ?(if let Log::Summary(n) = log { Some(n) } else { None }),
                                "the registry's revision went back (restored from a backup?); taking its view"
                            );
                        }
                    }
                    if view.revision > highest {
                        highest = view.revision;
                        next_start = started + WATCH_GAP;
                    }
                    since = view.revision;
                    if views.send(view).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                metrics.outcome(Err(&e));
                let delay = backoff.fail();
                log_failure(
                    &mut failures,
                    "registry watch failed",
                    &e,
                    Some(delay),
                    &removed,
                    &metrics,
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What the account of a refused peer token names: where the identity to delete is, and the peer's name.
#[derive(Clone)]
pub(super) struct Removed {
    /// The state directory's `registry/`.
    pub(super) state: std::path::PathBuf,
    /// This node's peer name.
    pub(super) name: String,
}

impl Removed {
    /// The one-line account of `e` for `sdwanctl status` and the log: for a refused peer token (401, 403),
    /// what most likely happened and how to enroll again; otherwise the error as it is.
    fn account(&self, e: &ClientError) -> String {
        match e {
            ClientError::Refused {
                status: status @ (401 | 403),
                code,
                ..
            } => format!(
                "the registry no longer accepts this node's peer token ({status} {code}): the peer \"{}\" was \
                 removed from the network (or its token revoked); fix: to enroll again, delete {} and restart \
                 sdwand with a valid registry.enrollment_token_file",
                self.name,
                self.state.display()
            ),
            _ => e.to_string(),
        }
    }
}

/// Logs a failed call of a task whose failures repeat: refusals and bad answers at error (the first, then
/// one summary per [`SUMMARY_INTERVAL`]); unreachability is logged by [`ClientMetrics::outcome`]. Every
/// failure becomes the link's problem in `sdwanctl status`.
fn log_failure(
    failures: &mut Repeats,
    what: &str,
    e: &ClientError,
    retry_in: Option<Duration>,
    removed: &Removed,
    metrics: &ClientMetrics,
) {
    let account = removed.account(e);
    metrics.set_problem(Some(format!("{what}: {account}")));
    let key = match e {
        ClientError::Refused { status, code, .. } => format!("refused {status} {code}"),
        ClientError::Decode { .. } => "decode".to_owned(),
        ClientError::TooLarge { .. } => "too large".to_owned(),
        ClientError::Unreachable { .. } | ClientError::Setup(_) => return,
    };
    let retry = retry_in.map_or_else(String::new, |d| {
        format!("; retrying in {}", humantime::format_duration(d))
    });
    match failures.failure(&key, Instant::now()) {
        Log::First => tracing::error!("{what}: {account}{retry}"),
        Log::Summary(n) => tracing::error!("{what} again, {n} times since the last line: {account}"),
        Log::Quiet => {}
    }
}

/// The report task: posts each queued report, hands the epoch floors back, reports k3s ready once per
/// cluster.
pub(super) async fn report(
    client: RegistryClient,
    mut jobs: mpsc::Receiver<ReportJob>,
    floors: mpsc::Sender<Vec<VipEpochView>>,
    metrics: ClientMetrics,
    removed: Removed,
) {
    let mut ready_reported: Option<String> = None;
    let mut failures = Repeats::new(SUMMARY_INTERVAL);
    while let Some(job) = jobs.recv().await {
        match client.report(&job.report).await {
            Ok(resp) => {
                metrics.outcome(Ok(()));
                if let Some(n) = failures.success() {
                    tracing::info!(repeats = n, "registry reports accepted again");
                }
                if floors.send(resp.epochs).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                metrics.outcome(Err(&e));
                log_failure(&mut failures, "registry report failed", &e, None, &removed, &metrics);
            }
        }
        let Some(cluster) = job.cluster_ready.filter(|c| ready_reported.as_ref() != Some(c)) else {
            continue;
        };
        match client.cluster_report(&cluster, K3sStatus::Ready).await {
            Ok(state) => {
                tracing::info!(cluster = %cluster, state = %state.state, "reported k3s ready to the registry");
                ready_reported = Some(cluster);
            }
            Err(e) => {
                tracing::warn!(cluster = %cluster, "reporting k3s ready failed (retrying with the next report): {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_peer_token_says_how_to_enroll_again() {
        let removed = Removed {
            state: "/var/lib/sdwand/registry".into(),
            name: "node-4".into(),
        };
        let e = ClientError::Refused {
            url: "https://r/v1/networks/n/watch".into(),
            status: 401,
            code: "unauthorized".into(),
            message: "a valid bearer token is required".into(),
        };
        let text = removed.account(&e);
        assert!(text.starts_with("the registry no longer accepts this node's peer token (401 unauthorized)"));
        assert!(
            text.contains("fix: to enroll again, delete /var/lib/sdwand/registry and restart sdwand"),
            "{text}"
        );
        let e = ClientError::Unreachable {
            url: "https://r".into(),
            reason: "timeout".into(),
        };
        assert_eq!(removed.account(&e), "https://r: registry unreachable: timeout");
    }
}
