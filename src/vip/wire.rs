//! The failover wire format: strict encoding and decoding of [`Message`]s.
//!
//! Every datagram is a fixed 56-byte header followed by a body whose length the header states and the
//! datagram must match exactly. All integers are big-endian. Decoding checks the magic, the version, the
//! kind, every length and every enumerated or constrained field, and never panics; a rejected datagram
//! yields a [`WireError`] whose [`WireError::reason`] is the metric label it is counted under.
//!
//! ```text
//! header   magic "SDWV" (4) | version u8 = 1 | kind u8 | body_len u16
//!          vip [16] | sender [16] | incarnation u64 | seq u64
//! epoch    term u64 | rank u16                              (term 0 = no claim; then holder must be ::)
//! claim    epoch | holder [16]
//! 1 heartbeat  state u8 | flags u8 (bit 0 healthy, bit 1 vote) | interval_ms u16 | view: claim
//!              sent_at_us u64 | echo_at_us u64 | echo_held_us u32 | n u8 | n × (candidate [16] | age_ms u16)
//!              [vote_incarnation u64: only with bit 1, which needs echo_at_us ≠ 0]
//! 2 claim      epoch | confirmed u16 | peers u16
//! 3 ack        view: claim                                  (never "no claim")
//! 4 handover   epoch | reason u8
//! ```

use std::net::Ipv6Addr;

use super::{Claim, Epoch, HandoverReason, PeerState};

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"SDWV";
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 56;
pub use crate::vocab::MAX_CANDIDATES;
/// Largest datagram this format produces.
pub const MAX_DATAGRAM: usize = HEADER_LEN + HEARTBEAT_FIXED + MAX_CANDIDATES * LIVENESS_ENTRY + VOTE_LEN;

const EPOCH_LEN: usize = 10;
const CLAIM_LEN: usize = EPOCH_LEN + 16;
const HEARTBEAT_FIXED: usize = 1 + 1 + 2 + CLAIM_LEN + 8 + 8 + 4 + 1;
const LIVENESS_ENTRY: usize = 16 + 2;
const VOTE_LEN: usize = 8;

/// Who sent a datagram, and where it sits in the sender's stream (replay protection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The VIP the datagram is about.
    pub vip: Ipv6Addr,
    /// The sender's overlay /128; the runtime checks it against the datagram's source.
    pub sender: Ipv6Addr,
    /// The sender's process incarnation; it grows on every start of the sender.
    pub incarnation: u64,
    /// Per-VIP sequence number within the incarnation; it grows with every datagram.
    pub seq: u64,
}

/// A heartbeat from one candidate to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sender's role.
    pub state: PeerState,
    /// Whether the sender's health check passes.
    pub healthy: bool,
    /// The sender's heartbeat interval in milliseconds (receivers time it out against this).
    pub interval_ms: u16,
    /// The highest claim the sender has seen.
    pub view: Option<Claim>,
    /// When the sender sent this, in microseconds on the sender's own monotonic clock.
    pub sent_at_us: u64,
    /// `sent_at_us` of the last heartbeat the sender received from the receiver (0 = none).
    pub echo_at_us: u64,
    /// How long the sender held that heartbeat before this one, in microseconds.
    pub echo_held_us: u32,
    /// How long ago, in milliseconds (saturating at `u16::MAX`), the sender last heard each candidate.
    pub liveness: Vec<(Ipv6Addr, u16)>,
    /// Quorum mode: `Some(incarnation)` is the sender's vote for the receiver, whose heartbeat of that
    /// incarnation with `sent_at_us == echo_at_us` it answers (flag bit 1; needs `echo_at_us != 0`).
    pub vote: Option<u64>,
}

/// The body of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Candidate-to-candidate liveness.
    Heartbeat(Heartbeat),
    /// "I hold the VIP at this epoch", from the holder to every peer.
    Claim {
        /// The claim's epoch (the holder is the sender).
        epoch: Epoch,
        /// How many peers have acknowledged this claim.
        confirmed: u16,
        /// How many peers the holder fans the claim out to.
        peers: u16,
    },
    /// "This is the claim I route the VIP by", from a peer to a claimant. It confirms the claimant's claim
    /// when it names it, and tells a stale claimant to step down when it names a higher one.
    Ack {
        /// The highest claim the acknowledging peer has seen (and routes by).
        view: Claim,
    },
    /// "Take the VIP over from my claim at this epoch", from the holder to its chosen successor.
    Handover {
        /// The holder's current epoch.
        epoch: Epoch,
        /// Why the holder hands over.
        reason: HandoverReason,
    },
}

/// One datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who and where.
    pub header: Header,
    /// What.
    pub body: Body,
}

/// Why a datagram was rejected by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header.
    #[error("datagram of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    /// Not our magic.
    #[error("bad magic")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported version {0} (this build speaks {VERSION})")]
    BadVersion(u8),
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    BadKind(u8),
    /// The datagram length does not match the header, or the body length does not match the kind.
    #[error("length mismatch: {0}")]
    BadLength(&'static str),
    /// A field holds a value the format does not allow.
    #[error("invalid field: {0}")]
    BadField(&'static str),
}

impl WireError {
    /// The metric label this rejection is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::TooShort(_) => "truncated",
            WireError::BadMagic => "bad_magic",
            WireError::BadVersion(_) => "bad_version",
            WireError::BadKind(_) => "bad_kind",
            WireError::BadLength(_) => "bad_length",
            WireError::BadField(_) => "bad_field",
        }
    }
}

impl Message {
    /// Appends the encoded datagram to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.body.kind());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.header.vip.octets());
        out.extend_from_slice(&self.header.sender.octets());
        out.extend_from_slice(&self.header.incarnation.to_be_bytes());
        out.extend_from_slice(&self.header.seq.to_be_bytes());
        match &self.body {
            Body::Heartbeat(hb) => {
                out.push(hb.state as u8);
                out.push(u8::from(hb.healthy) | u8::from(hb.vote.is_some()) << 1);
                out.extend_from_slice(&hb.interval_ms.to_be_bytes());
                put_claim(out, hb.view);
                out.extend_from_slice(&hb.sent_at_us.to_be_bytes());
                out.extend_from_slice(&hb.echo_at_us.to_be_bytes());
                out.extend_from_slice(&hb.echo_held_us.to_be_bytes());
                let n = hb.liveness.len().min(MAX_CANDIDATES);
                out.push(n as u8);
                for (addr, age) in &hb.liveness[..n] {
                    out.extend_from_slice(&addr.octets());
                    out.extend_from_slice(&age.to_be_bytes());
                }
                if let Some(incarnation) = hb.vote {
                    out.extend_from_slice(&incarnation.to_be_bytes());
                }
            }
            Body::Claim {
                epoch,
                confirmed,
                peers,
            } => {
                put_epoch(out, *epoch);
                out.extend_from_slice(&confirmed.to_be_bytes());
                out.extend_from_slice(&peers.to_be_bytes());
            }
            Body::Ack { view } => put_claim(out, Some(*view)),
            Body::Handover { epoch, reason } => {
                put_epoch(out, *epoch);
                out.push(*reason as u8);
            }
        }
        let body_len = (out.len() - start - HEADER_LEN) as u16;
        out[start + 6..start + 8].copy_from_slice(&body_len.to_be_bytes());
    }

    /// The encoded datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        self.encode(&mut out);
        out
    }

    /// Decodes one datagram, checking every length and field.
    pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::TooShort(buf.len()));
        }
        let mut r = Reader { buf, pos: 0 };
        if r.take::<4>()? != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let kind = r.u8()?;
        let body_len = usize::from(r.u16()?);
        if HEADER_LEN + body_len != buf.len() {
            return Err(WireError::BadLength(
                "datagram length differs from header length + body_len",
            ));
        }
        let header = Header {
            vip: r.addr()?,
            sender: r.addr()?,
            incarnation: r.u64()?,
            seq: r.u64()?,
        };
        if header.sender.is_unspecified() {
            return Err(WireError::BadField("sender is ::"));
        }
        let body = match kind {
            1 => {
                if body_len < HEARTBEAT_FIXED {
                    return Err(WireError::BadLength("heartbeat body too short"));
                }
                let state = PeerState::from_u8(r.u8()?).ok_or(WireError::BadField("heartbeat state"))?;
                let flags = r.u8()?;
                if flags & !3 != 0 {
                    return Err(WireError::BadField("heartbeat flags"));
                }
                let voted = flags & 2 != 0;
                let interval_ms = r.u16()?;
                if interval_ms == 0 {
                    return Err(WireError::BadField("heartbeat interval_ms is 0"));
                }
                let view = r.claim()?;
                let sent_at_us = r.u64()?;
                let echo_at_us = r.u64()?;
                let echo_held_us = r.u32()?;
                let n = usize::from(r.u8()?);
                if n > MAX_CANDIDATES {
                    return Err(WireError::BadField("heartbeat reports more than 32 candidates"));
                }
                if voted && echo_at_us == 0 {
                    return Err(WireError::BadField("heartbeat vote without an echo"));
                }
                if body_len != HEARTBEAT_FIXED + n * LIVENESS_ENTRY + if voted { VOTE_LEN } else { 0 } {
                    return Err(WireError::BadLength(
                        "heartbeat body does not match its candidate count",
                    ));
                }
                let mut liveness = Vec::with_capacity(n);
                for _ in 0..n {
                    liveness.push((r.addr()?, r.u16()?));
                }
                let vote = if voted { Some(r.u64()?) } else { None };
                Body::Heartbeat(Heartbeat {
                    state,
                    healthy: flags & 1 == 1,
                    interval_ms,
                    view,
                    sent_at_us,
                    echo_at_us,
                    echo_held_us,
                    liveness,
                    vote,
                })
            }
            2 => {
                exact(body_len, EPOCH_LEN + 4, "claim body")?;
                let epoch = r.epoch()?.ok_or(WireError::BadField("claim epoch term is 0"))?;
                let confirmed = r.u16()?;
                let peers = r.u16()?;
                if confirmed > peers {
                    return Err(WireError::BadField("claim confirmed exceeds peers"));
                }
                Body::Claim {
                    epoch,
                    confirmed,
                    peers,
                }
            }
            3 => {
                exact(body_len, CLAIM_LEN, "ack body")?;
                let view = r.claim()?.ok_or(WireError::BadField("ack without a claim"))?;
                Body::Ack { view }
            }
            4 => {
                exact(body_len, EPOCH_LEN + 1, "handover body")?;
                let epoch = r.epoch()?.ok_or(WireError::BadField("handover epoch term is 0"))?;
                let reason = HandoverReason::from_u8(r.u8()?).ok_or(WireError::BadField("handover reason"))?;
                Body::Handover { epoch, reason }
            }
            other => return Err(WireError::BadKind(other)),
        };
        Ok(Message { header, body })
    }
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Heartbeat(_) => 1,
            Body::Claim { .. } => 2,
            Body::Ack { .. } => 3,
            Body::Handover { .. } => 4,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Heartbeat(_) => "heartbeat",
            Body::Claim { .. } => "claim",
            Body::Ack { .. } => "ack",
            Body::Handover { .. } => "handover",
        }
    }
}

fn exact(got: usize, want: usize, what: &'static str) -> Result<(), WireError> {
    if got == want {
        Ok(())
    } else {
        Err(WireError::BadLength(what))
    }
}

fn put_epoch(out: &mut Vec<u8>, epoch: Epoch) {
    out.extend_from_slice(&epoch.term.to_be_bytes());
    out.extend_from_slice(&epoch.rank.to_be_bytes());
}

fn put_claim(out: &mut Vec<u8>, claim: Option<Claim>) {
    match claim {
        Some(c) => {
            put_epoch(out, c.epoch);
            out.extend_from_slice(&c.holder.octets());
        }
        None => out.extend_from_slice(&[0; CLAIM_LEN]),
    }
}

/// A bounds-checked cursor; every read fails cleanly past the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + N)
            .ok_or(WireError::BadLength("field runs past the end"))?;
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn addr(&mut self) -> Result<Ipv6Addr, WireError> {
        Ok(Ipv6Addr::from(self.take::<16>()?))
    }
    /// An epoch; `None` when its term is 0 (then its rank must be 0 too).
    fn epoch(&mut self) -> Result<Option<Epoch>, WireError> {
        let term = self.u64()?;
        let rank = self.u16()?;
        match (term, rank) {
            (0, 0) => Ok(None),
            (0, _) => Err(WireError::BadField("epoch with term 0 and a rank")),
            _ if usize::from(rank) >= MAX_CANDIDATES => Err(WireError::BadField("epoch rank out of range")),
            _ => Ok(Some(Epoch { term, rank })),
        }
    }
    fn claim(&mut self) -> Result<Option<Claim>, WireError> {
        let epoch = self.epoch()?;
        let holder = self.addr()?;
        match (epoch, holder.is_unspecified()) {
            (None, true) => Ok(None),
            (Some(epoch), false) => Ok(Some(Claim { epoch, holder })),
            (None, false) => Err(WireError::BadField("claim without an epoch names a holder")),
            (Some(_), true) => Err(WireError::BadField("claim with an epoch has no holder")),
        }
    }
}
