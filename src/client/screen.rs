//! The screening of a registry view before it is kept: pinned members re-keyed taken out, then
//! [`view::validate`]; what was refused or dropped is counted and logged (repeats summarised). Pure apart
//! from the metrics and the logs; it never persists or applies anything.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::metrics::ClientMetrics;
use super::repeats::{Log, Repeats, SUMMARY_INTERVAL};
use super::view;
use crate::vocab::wire::MembersResponse;

/// The view to keep of `view`: members re-keyed against the pins taken out (logged, counted; their
/// addresses are returned with the view), then [`view::validate`]d. A refused view is logged at error with
/// every problem (once; the same refusal repeated is summarised) and counted by reason; `None` then.
pub(super) fn screen(
    view: MembersResponse,
    trust: &view::Trust<'_>,
    metrics: &ClientMetrics,
    logs: &mut ScreenLogs,
) -> Option<(MembersResponse, Vec<Ipv6Addr>)> {
    let revision = view.revision;
    let (view, refused) = view::refuse_rekeys(view, trust.pins);
    log_refused(&refused, metrics, &mut logs.rekeys);
    match view::validate(view, trust) {
        Ok((view, dropped)) => {
            if !dropped.is_empty() {
                for p in &dropped {
                    metrics.entries_dropped.with_label_values(&[p.rule.as_str()]).inc();
                }
                let list = join(&dropped);
                if logs.problems.failure(&list, Instant::now()) != Log::Quiet {
                    tracing::error!(
                        revision,
                        dropped = dropped.len(),
                        "registry view: entries dropped, the rest applied: {list}"
                    );
                }
            }
            Some((view, refused.iter().map(|r| r.address).collect()))
        }
        Err(problems) => {
            if let Some(first) = problems.first() {
                metrics.views_refused.with_label_values(&[first.rule.as_str()]).inc();
            }
            let list = join(&problems);
            match logs.problems.failure(&list, Instant::now()) {
                Log::First => tracing::error!(
                    revision,
                    "registry view refused, the last good view stays (it would re-route an established member, \
                     or is not this node's network): {list}"
                ),
                Log::Summary(n) => tracing::error!(revision, repeats = n, "registry views still refused: {list}"),
                Log::Quiet => {}
            }
            None
        }
    }
}

/// Counts re-keyed members and logs them: each new set in full, a set repeated view after view once per
/// [`SUMMARY_INTERVAL`].
fn log_refused(refused: &[view::Refused], metrics: &ClientMetrics, logs: &mut Repeats) {
    metrics.refused_rekeys.inc_by(refused.len() as u64);
    if refused.is_empty() {
        return;
    }
    let list = refused
        .iter()
        .map(|r| {
            format!(
                "{} ({}) pinned to {}, offered {}",
                r.name, r.address, r.pinned, r.offered
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if logs.failure(&list, Instant::now()) != Log::Quiet {
        tracing::error!(
            "registry view re-keys pinned addresses; members refused (fix: if a re-key is legitimate, remove \
             the address from pins.json and restart): {list}"
        );
    }
}

/// The log rate limiters of [`screen`]: repeated re-keys and repeated problems are summarised apart.
pub(super) struct ScreenLogs {
    rekeys: Repeats,
    problems: Repeats,
}

impl ScreenLogs {
    pub(super) fn new() -> ScreenLogs {
        ScreenLogs {
            rekeys: Repeats::new(SUMMARY_INTERVAL),
            problems: Repeats::new(SUMMARY_INTERVAL),
        }
    }
}

fn join(problems: &[view::Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
