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
                log_failure(&mut failures, "registry watch failed", &e, Some(delay));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Logs a failed call of a task whose failures repeat: refusals and bad answers at error (the first, then
/// one summary per [`SUMMARY_INTERVAL`]); unreachability is logged by [`ClientMetrics::outcome`].
fn log_failure(failures: &mut Repeats, what: &str, e: &ClientError, retry_in: Option<Duration>) {
    let key = match e {
        ClientError::Refused { status, code, .. } => format!("refused {status} {code}"),
        ClientError::Decode { .. } => "decode".to_owned(),
        ClientError::TooLarge { .. } => "too large".to_owned(),
        ClientError::Unreachable { .. } | ClientError::Setup(_) => return,
    };
    match failures.failure(&key, Instant::now()) {
        Log::First => tracing::error!(retry_in = ?retry_in, "{what}: {e}"),
        Log::Summary(n) => tracing::error!(repeats = n, "{what} again, {n} times since the last line: {e}"),
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
                log_failure(&mut failures, "registry report failed", &e, None);
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
