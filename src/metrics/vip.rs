//! The VIP failover metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::vocab::PeerState;

const ROLES: [PeerState; 5] = [
    PeerState::Listening,
    PeerState::Standby,
    PeerState::Holding,
    PeerState::Draining,
    PeerState::Follower,
];

/// Metrics of the VIP failover runtime. VIPs are labelled by address, peers by member name.
#[derive(Clone)]
pub struct VipMetrics {
    role: IntGaugeVec,
    holder: IntGaugeVec,
    epoch_term: IntGaugeVec,
    /// Claims made by this node, by VIP and reason.
    pub failovers: IntCounterVec,
    /// Time from noticing the holder gone (or a handover request) to this node's claim.
    pub detection_to_claim: HistogramVec,
    /// Time from this node's claim to the acknowledgement of the last peer that was live at the claim.
    pub claim_to_confirmed: HistogramVec,
    /// The client-visible outage a claim ended: from the last heartbeat heard from the dead holder (or
    /// the handover request) to the claim.
    pub outage: HistogramVec,
    /// Heartbeat round trips, by VIP and peer.
    pub rtt: HistogramVec,
    /// Datagrams dropped, by reason.
    pub rejected: IntCounterVec,
    /// Datagrams sent and received, by direction and kind.
    pub datagrams: IntCounterVec,
    peers_confirmed: IntGaugeVec,
    peers: IntGaugeVec,
    healthy: IntGaugeVec,
    single_candidate: IntGaugeVec,
    /// Handovers started by this node that did not complete, by VIP.
    pub handovers_failed: IntCounterVec,
    socket_bound: prometheus::IntGauge,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric")
}

/// Every `reason` of `sdwand_vip_failovers_total` ([`crate::vip::ClaimReason::as_str`]).
pub const CLAIM_REASONS: [&str; 8] = [
    "initial",
    "restart",
    "holder_dead",
    "manual",
    "shutdown",
    "health",
    "preempt",
    "renew",
];

/// Every `kind` of `sdwand_vip_datagrams_total` ([`crate::vip::wire::Body::name`]).
pub const DATAGRAM_KINDS: [&str; 4] = ["heartbeat", "claim", "ack", "handover"];

/// Reasons a datagram may be rejected, so every series exists from the start.
pub const REJECT_REASONS: [&str; 18] = [
    "truncated",
    "bad_magic",
    "bad_version",
    "bad_kind",
    "bad_length",
    "bad_field",
    "forged_sender",
    "not_member",
    "not_candidate",
    "bad_vote",
    "stale_vote",
    "unknown_vip",
    "replayed",
    "stale",
    "send_failed",
    "oversized",
    "bad_port",
    "own_address",
];

impl VipMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> VipMetrics {
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5,
        ];
        let m = VipMetrics {
            role: gauge(
                "sdwand_vip_role",
                "This node's role for the VIP: 1 for the current role, 0 for the others.",
                &["vip", "role"],
            ),
            holder: gauge(
                "sdwand_vip_holder",
                "The holder of the highest claim this node has seen (1; one series per VIP).",
                &["vip", "holder"],
            ),
            epoch_term: gauge(
                "sdwand_vip_epoch_term",
                "Term of the highest claim this node has seen.",
                &["vip"],
            ),
            failovers: counter(
                "sdwand_vip_failovers_total",
                "Claims made by this node, by reason (initial, restart, holder_dead, manual, shutdown, health, preempt).",
                &["vip", "reason"],
            ),
            detection_to_claim: histogram(
                "sdwand_vip_detection_to_claim_seconds",
                "Time from noticing the holder gone (or receiving a handover) to this node's claim.",
                &["vip"],
                latency.clone(),
            ),
            claim_to_confirmed: histogram(
                "sdwand_vip_claim_to_confirmed_seconds",
                "Time from this node's claim to the acknowledgement of the last peer that was live at the claim (candidates dead then are not waited for).",
                &["vip"],
                latency.clone(),
            ),
            outage: histogram(
                "sdwand_vip_outage_seconds",
                "Client-visible outage ended by this node's claim: from the last heartbeat heard from the dead holder (or the handover request) to the claim.",
                &["vip"],
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0],
            ),
            rtt: histogram(
                "sdwand_vip_heartbeat_rtt_seconds",
                "Heartbeat round-trip time to another candidate.",
                &["vip", "peer"],
                latency,
            ),
            rejected: counter(
                "sdwand_vip_datagrams_rejected_total",
                "Failover datagrams dropped, by reason.",
                &["reason"],
            ),
            datagrams: counter(
                "sdwand_vip_datagrams_total",
                "Failover datagrams sent and accepted, by direction and kind.",
                &["direction", "kind"],
            ),
            peers_confirmed: gauge(
                "sdwand_vip_peers_confirmed",
                "While holding: peers that acknowledged this node's claim (0 otherwise).",
                &["vip"],
            ),
            peers: gauge(
                "sdwand_vip_peers",
                "Peers a claim of this VIP is fanned out to.",
                &["vip"],
            ),
            healthy: gauge(
                "sdwand_vip_healthy",
                "Whether this node's health check for the VIP passes (1) or not (0).",
                &["vip"],
            ),
            single_candidate: gauge(
                "sdwand_vip_single_candidate",
                "1 when the VIP has a single candidate and so cannot fail over.",
                &["vip"],
            ),
            handovers_failed: counter(
                "sdwand_vip_handovers_failed_total",
                "Handovers this node started that timed out (it kept the VIP).",
                &["vip"],
            ),
            socket_bound: prometheus::IntGauge::new(
                "sdwand_vip_socket_bound",
                "Whether the failover socket is bound and receiving (1) or not (0: this node claims no VIP).",
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.role.clone()),
            Box::new(m.holder.clone()),
            Box::new(m.epoch_term.clone()),
            Box::new(m.failovers.clone()),
            Box::new(m.detection_to_claim.clone()),
            Box::new(m.claim_to_confirmed.clone()),
            Box::new(m.outage.clone()),
            Box::new(m.rtt.clone()),
            Box::new(m.rejected.clone()),
            Box::new(m.datagrams.clone()),
            Box::new(m.peers_confirmed.clone()),
            Box::new(m.peers.clone()),
            Box::new(m.healthy.clone()),
            Box::new(m.single_candidate.clone()),
            Box::new(m.handovers_failed.clone()),
            Box::new(m.socket_bound.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        for reason in REJECT_REASONS {
            m.rejected.with_label_values(&[reason]);
        }
        for direction in ["sent", "received"] {
            for kind in DATAGRAM_KINDS {
                m.datagrams.with_label_values(&[direction, kind]);
            }
        }
        m
    }

    /// Publishes the state of one VIP.
    pub fn set_vip(&self, vip: &str, state: &VipGauges) {
        for r in ROLES {
            self.role
                .with_label_values(&[vip, r.as_str()])
                .set(i64::from(r == state.role));
        }
        self.epoch_term.with_label_values(&[vip]).set(state.term as i64);
        self.peers_confirmed
            .with_label_values(&[vip])
            .set(state.confirmed as i64);
        self.peers.with_label_values(&[vip]).set(state.peers as i64);
        self.healthy.with_label_values(&[vip]).set(i64::from(state.healthy));
        self.single_candidate
            .with_label_values(&[vip])
            .set(i64::from(state.single_candidate));
        // Every series of the VIP exists from the first scrape, so rate() and increase() see the first event.
        for reason in CLAIM_REASONS {
            self.failovers.with_label_values(&[vip, reason]);
        }
        for h in [&self.detection_to_claim, &self.claim_to_confirmed, &self.outage] {
            h.with_label_values(&[vip]);
        }
        self.handovers_failed.with_label_values(&[vip]);
    }

    /// Publishes whether the failover socket is bound.
    pub fn set_socket_bound(&self, bound: bool) {
        self.socket_bound.set(i64::from(bound));
    }

    /// Whether the failover socket is published as bound.
    pub fn socket_bound(&self) -> bool {
        self.socket_bound.get() == 1
    }

    /// Publishes the holder this node believes in (replacing the previous one).
    pub fn set_holder(&self, vip: &str, old: Option<&str>, new: Option<&str>) {
        if let Some(old) = old {
            let _ = self.holder.remove_label_values(&[vip, old]);
        }
        if let Some(new) = new {
            self.holder.with_label_values(&[vip, new]).set(1);
        }
    }

    /// Removes every series of a VIP that is no longer configured.
    pub fn forget_vip(&self, vip: &str, holder: Option<&str>) {
        for r in ROLES {
            let _ = self.role.remove_label_values(&[vip, r.as_str()]);
        }
        self.set_holder(vip, holder, None);
        for h in [&self.detection_to_claim, &self.claim_to_confirmed, &self.outage] {
            let _ = h.remove_label_values(&[vip]);
        }
        for g in [
            &self.epoch_term,
            &self.peers_confirmed,
            &self.peers,
            &self.healthy,
            &self.single_candidate,
        ] {
            let _ = g.remove_label_values(&[vip]);
        }
    }
}

/// The gauges of one VIP.
#[derive(Debug, Clone, Copy)]
pub struct VipGauges {
    /// This node's role.
    pub role: PeerState,
    /// Term of the highest claim.
    pub term: u64,
    /// Peers that acknowledged this node's claim.
    pub confirmed: usize,
    /// Peers in the fan-out.
    pub peers: usize,
    /// Health.
    pub healthy: bool,
    /// Only one candidate.
    pub single_candidate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::{ClaimReason, HandoverReason};

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn every_claim_reason_is_pre_registered() {
        let reasons = [
            ClaimReason::Initial,
            ClaimReason::Restart,
            ClaimReason::HolderDead,
            ClaimReason::Renew,
            ClaimReason::Handover(HandoverReason::Manual),
            ClaimReason::Handover(HandoverReason::Shutdown),
            ClaimReason::Handover(HandoverReason::Health),
            ClaimReason::Handover(HandoverReason::Preempt),
        ];
        let mut names: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
        let mut listed = CLAIM_REASONS.to_vec();
        names.sort_unstable();
        listed.sort_unstable();
        assert_eq!(names, listed);
    }

    #[test]
    fn a_vips_series_exist_from_the_first_scrape_and_go_with_it() {
        let registry = Registry::new();
        let m = VipMetrics::register(&registry);
        m.set_vip(
            "fd00::f",
            &VipGauges {
                role: PeerState::Standby,
                term: 0,
                confirmed: 0,
                peers: 2,
                healthy: true,
                single_candidate: false,
            },
        );
        let text = render(&registry);
        for series in [
            "sdwand_vip_failovers_total{reason=\"renew\",vip=\"fd00::f\"} 0",
            "sdwand_vip_failovers_total{reason=\"holder_dead\",vip=\"fd00::f\"} 0",
            "sdwand_vip_detection_to_claim_seconds_count{vip=\"fd00::f\"} 0",
            "sdwand_vip_claim_to_confirmed_seconds_count{vip=\"fd00::f\"} 0",
            "sdwand_vip_outage_seconds_count{vip=\"fd00::f\"} 0",
            "sdwand_vip_outage_seconds_bucket{vip=\"fd00::f\",le=\"0.25\"} 0",
            "sdwand_vip_handovers_failed_total{vip=\"fd00::f\"} 0",
            "sdwand_vip_datagrams_total{direction=\"received\",kind=\"handover\"} 0",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        m.outage.with_label_values(&["fd00::f"]).observe(0.2);
        assert!(render(&registry).contains("sdwand_vip_outage_seconds_bucket{vip=\"fd00::f\",le=\"0.25\"} 1"));
        m.forget_vip("fd00::f", None);
        let text = render(&registry);
        assert!(
            !text.contains("sdwand_vip_outage_seconds_count{vip=\"fd00::f\"}"),
            "{text}"
        );
    }
}
