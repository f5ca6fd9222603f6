//! The wire format: every kind round-trips, every malformed datagram is rejected with the right error,
//! and no input makes the decoder panic.

use std::net::Ipv6Addr;

use super::super::wire::{HEADER_LEN, MAGIC, MAX_CANDIDATES, MAX_DATAGRAM, VERSION};
use super::super::*;
use super::Rng;

fn addr(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)
}

fn header() -> Header {
    Header {
        vip: addr(0xffff),
        sender: addr(1),
        incarnation: 0x0102_0304_0506_0708,
        seq: u64::MAX,
    }
}

fn claim(term: u64, rank: u16, holder: u16) -> Claim {
    Claim {
        epoch: Epoch { term, rank },
        holder: addr(holder),
    }
}

fn heartbeat(n: usize, view: Option<Claim>) -> Body {
    Body::Heartbeat(Heartbeat {
        state: PeerState::Draining,
        healthy: true,
        interval_ms: 50,
        view,
        sent_at_us: 123_456_789,
        echo_at_us: 987_654,
        echo_held_us: u32::MAX,
        liveness: (0..n).map(|i| (addr(i as u16 + 10), i as u16 * 1000)).collect(),
        vote: None,
    })
}

/// One datagram of every kind and shape.
fn samples() -> Vec<Message> {
    let mut bodies = vec![
        heartbeat(0, None),
        heartbeat(1, Some(claim(7, 3, 4))),
        heartbeat(MAX_CANDIDATES, Some(claim(u64::MAX, 31, 2))),
        Body::Claim {
            epoch: Epoch { term: 9, rank: 0 },
            confirmed: 3,
            peers: 3,
        },
        Body::Claim {
            epoch: Epoch { term: 1, rank: 31 },
            confirmed: 0,
            peers: u16::MAX,
        },
        Body::Ack { view: claim(2, 1, 2) },
    ];
    for reason in [
        HandoverReason::Manual,
        HandoverReason::Shutdown,
        HandoverReason::Health,
        HandoverReason::Preempt,
    ] {
        bodies.push(Body::Handover {
            epoch: Epoch { term: 4, rank: 2 },
            reason,
        });
    }
    for state in [
        PeerState::Listening,
        PeerState::Standby,
        PeerState::Holding,
        PeerState::Follower,
    ] {
        if let Body::Heartbeat(mut hb) = heartbeat(2, None) {
            hb.state = state;
            hb.healthy = false;
            bodies.push(Body::Heartbeat(hb));
        }
    }
    // Votes, with the largest candidate list too.
    for n in [0, MAX_CANDIDATES] {
        if let Body::Heartbeat(mut hb) = heartbeat(n, Some(claim(3, 1, 2))) {
            hb.vote = Some(u64::MAX - n as u64);
            bodies.push(Body::Heartbeat(hb));
        }
    }
    bodies
        .into_iter()
        .map(|body| Message { header: header(), body })
        .collect()
}

#[test]
fn every_kind_round_trips() {
    for msg in samples() {
        let bytes = msg.to_bytes();
        assert!(bytes.len() <= MAX_DATAGRAM, "{} bytes", bytes.len());
        assert_eq!(Message::decode(&bytes), Ok(msg.clone()), "{msg:?}");
    }
}

#[test]
fn layout_matches_the_documented_table() {
    let msg = Message {
        header: header(),
        body: Body::Handover {
            epoch: Epoch { term: 0x1122, rank: 5 },
            reason: HandoverReason::Preempt,
        },
    };
    let b = msg.to_bytes();
    assert_eq!(&b[..4], b"SDWV");
    assert_eq!((b[4], b[5]), (VERSION, 4));
    assert_eq!(u16::from_be_bytes([b[6], b[7]]), 11);
    assert_eq!(&b[8..24], &addr(0xffff).octets());
    assert_eq!(&b[24..40], &addr(1).octets());
    assert_eq!(&b[40..48], &0x0102_0304_0506_0708u64.to_be_bytes());
    assert_eq!(&b[48..56], &u64::MAX.to_be_bytes());
    assert_eq!(&b[56..64], &0x1122u64.to_be_bytes());
    assert_eq!(&b[64..67], &[0, 5, 3]);
    assert_eq!(b.len(), HEADER_LEN + 11);
    let hb = Message {
        header: header(),
        body: heartbeat(3, None),
    };
    assert_eq!(hb.to_bytes().len(), HEADER_LEN + 51 + 3 * 18);
    // A vote: flag bit 1, and the receiver's incarnation after the candidate list.
    let Body::Heartbeat(mut vote) = heartbeat(1, None) else {
        unreachable!()
    };
    vote.healthy = false;
    vote.vote = Some(0x0a0b);
    let b = Message {
        header: header(),
        body: Body::Heartbeat(vote),
    }
    .to_bytes();
    assert_eq!(b[HEADER_LEN + 1], 2);
    assert_eq!(b.len(), HEADER_LEN + 51 + 18 + 8);
    assert_eq!(&b[b.len() - 8..], &0x0a0bu64.to_be_bytes());
}

#[test]
fn encoding_caps_the_liveness_list() {
    let msg = Message {
        header: header(),
        body: heartbeat(MAX_CANDIDATES + 5, None),
    };
    let Ok(Message {
        body: Body::Heartbeat(hb),
        ..
    }) = Message::decode(&msg.to_bytes())
    else {
        panic!("an over-long liveness list must still encode to a valid heartbeat");
    };
    assert_eq!(hb.liveness.len(), MAX_CANDIDATES);
}

/// Encodes `body` after a valid header, then lets `edit` corrupt the bytes (offsets are absolute).
fn corrupt(body: Body, edit: impl FnOnce(&mut Vec<u8>)) -> Result<Message, WireError> {
    let mut b = Message { header: header(), body }.to_bytes();
    edit(&mut b);
    Message::decode(&b)
}

/// Sets the header's `body_len` to match the buffer, so a later check is reached.
fn fix_len(b: &mut [u8]) {
    let n = (b.len() - HEADER_LEN) as u16;
    b[6..8].copy_from_slice(&n.to_be_bytes());
}

const CLAIM_BODY: fn() -> Body = || Body::Claim {
    epoch: Epoch { term: 3, rank: 1 },
    confirmed: 1,
    peers: 2,
};
const B: usize = HEADER_LEN;

#[test]
fn malformed_headers_are_rejected() {
    assert_eq!(Message::decode(&[]), Err(WireError::TooShort(0)));
    assert_eq!(Message::decode(&[0; 55]), Err(WireError::TooShort(55)));
    assert_eq!(corrupt(CLAIM_BODY(), |b| b[0] = b'X'), Err(WireError::BadMagic));
    assert_eq!(corrupt(CLAIM_BODY(), |b| b[4] = 2), Err(WireError::BadVersion(2)));
    assert_eq!(corrupt(CLAIM_BODY(), |b| b[4] = 0), Err(WireError::BadVersion(0)));
    assert_eq!(corrupt(CLAIM_BODY(), |b| b[5] = 0), Err(WireError::BadKind(0)));
    assert_eq!(corrupt(CLAIM_BODY(), |b| b[5] = 5), Err(WireError::BadKind(5)));
    let len = |r: Result<Message, WireError>| matches!(r, Err(WireError::BadLength(_)));
    assert!(len(corrupt(CLAIM_BODY(), |b| b.push(0))), "trailing byte");
    assert!(len(corrupt(CLAIM_BODY(), |b| {
        b.pop();
    })));
    assert!(
        len(corrupt(CLAIM_BODY(), |b| b[7] += 1)),
        "body_len larger than the datagram"
    );
    assert_eq!(
        corrupt(CLAIM_BODY(), |b| b[24..40].fill(0)),
        Err(WireError::BadField("sender is ::"))
    );
    assert_eq!(WireError::TooShort(3).reason(), "truncated");
    assert_eq!(WireError::BadMagic.reason(), "bad_magic");
    assert_eq!(WireError::BadVersion(9).reason(), "bad_version");
    assert_eq!(WireError::BadKind(9).reason(), "bad_kind");
    assert_eq!(WireError::BadLength("x").reason(), "bad_length");
    assert_eq!(WireError::BadField("x").reason(), "bad_field");
}

#[test]
fn body_lengths_must_match_the_kind() {
    let len = |r: Result<Message, WireError>| matches!(r, Err(WireError::BadLength(_)));
    // The right datagram length for its header, but the wrong body length for its kind.
    for body in [
        CLAIM_BODY(),
        Body::Ack { view: claim(1, 0, 1) },
        Body::Handover {
            epoch: Epoch { term: 1, rank: 0 },
            reason: HandoverReason::Manual,
        },
    ] {
        assert!(len(corrupt(body.clone(), |b| {
            b.push(0);
            fix_len(b);
        })));
        assert!(len(corrupt(body, |b| {
            b.pop();
            fix_len(b);
        })));
    }
    assert!(len(corrupt(heartbeat(0, None), |b| {
        b.truncate(B + 10);
        fix_len(b);
    })));
    // The vote flag without the vote's incarnation after the list, or the incarnation without the flag.
    assert!(len(corrupt(heartbeat(2, None), |b| b[B + 1] = 3)));
    assert!(len(corrupt(heartbeat(2, None), |b| {
        b.extend_from_slice(&[0; 8]);
        fix_len(b);
    })));
    // The candidate count says 2 but 1 entry follows, or 3 follow.
    assert!(len(corrupt(heartbeat(2, None), |b| {
        b.truncate(b.len() - 18);
        fix_len(b);
    })));
    assert!(len(corrupt(heartbeat(2, None), |b| {
        b.extend_from_slice(&[1; 18]);
        fix_len(b);
    })));
}

#[test]
fn bad_fields_are_rejected() {
    let field = |r: Result<Message, WireError>, what: &str| match r {
        Err(WireError::BadField(f)) => assert!(f.contains(what), "{f:?} should mention {what:?}"),
        other => panic!("expected a bad field about {what:?}, got {other:?}"),
    };
    // Heartbeat: state, flags, interval, view, count.
    field(corrupt(heartbeat(0, None), |b| b[B] = 5), "state");
    field(corrupt(heartbeat(0, None), |b| b[B + 1] = 4), "flags");
    field(
        corrupt(heartbeat(0, None), |b| {
            b[B + 1] = 3;
            b[B + 38..B + 46].fill(0);
            b.extend_from_slice(&[0; 8]);
            fix_len(b);
        }),
        "vote without an echo",
    );
    field(corrupt(heartbeat(0, None), |b| b[B + 2..B + 4].fill(0)), "interval");
    field(corrupt(heartbeat(0, None), |b| b[B + 4 + 9] = 1), "term 0 and a rank");
    field(
        corrupt(heartbeat(0, None), |b| b[B + 14] = 1),
        "without an epoch names a holder",
    );
    field(
        corrupt(heartbeat(0, Some(claim(1, 0, 1))), |b| b[B + 14..B + 30].fill(0)),
        "has no holder",
    );
    field(corrupt(heartbeat(0, Some(claim(1, 0, 1))), |b| b[B + 13] = 32), "rank");
    field(
        corrupt(heartbeat(0, None), |b| {
            b[B + 50] = 33;
            b.extend_from_slice(&[1; 33 * 18]);
            fix_len(b);
        }),
        "more than 32",
    );
    // Claim: term 0, confirmed > peers, rank out of range.
    field(corrupt(CLAIM_BODY(), |b| b[B..B + 10].fill(0)), "claim epoch term is 0");
    field(corrupt(CLAIM_BODY(), |b| b[B + 11] = 9), "confirmed exceeds peers");
    field(corrupt(CLAIM_BODY(), |b| b[B + 9] = 40), "rank");
    // Ack: no claim.
    field(
        corrupt(Body::Ack { view: claim(1, 0, 1) }, |b| b[B..].fill(0)),
        "ack without a claim",
    );
    // Handover: term 0, reason.
    let handover = || Body::Handover {
        epoch: Epoch { term: 1, rank: 0 },
        reason: HandoverReason::Manual,
    };
    field(corrupt(handover(), |b| b[B + 7] = 0), "term is 0");
    field(corrupt(handover(), |b| b[B + 10] = 4), "reason");
}

/// Whatever decodes must re-encode to the very same bytes (the format has one encoding per message).
fn decode_checked(bytes: &[u8]) {
    if let Ok(m) = Message::decode(bytes) {
        assert_eq!(m.to_bytes(), bytes, "{m:?} decoded from bytes it does not encode to");
    }
}

#[test]
fn truncations_never_panic_and_are_rejected() {
    for msg in samples() {
        let bytes = msg.to_bytes();
        for n in 0..bytes.len() {
            assert!(Message::decode(&bytes[..n]).is_err(), "{n}-byte prefix of {msg:?}");
        }
    }
}

#[test]
fn random_bytes_and_bit_flips_never_panic() {
    let mut rng = Rng(0x5eed_1234);
    let mut ok = 0;
    for _ in 0..20_000 {
        let n = rng.below(MAX_DATAGRAM as u64 + 40) as usize;
        let mut b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        // A valid preamble lets random bodies reach the body decoders.
        if n >= HEADER_LEN && rng.below(2) == 0 {
            b[..4].copy_from_slice(&MAGIC);
            b[4] = VERSION;
            b[5] = 1 + rng.below(4) as u8;
            fix_len(&mut b);
        }
        decode_checked(&b);
    }
    for msg in samples() {
        let bytes = msg.to_bytes();
        for _ in 0..2_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            decode_checked(&b);
            ok += usize::from(Message::decode(&b).is_ok());
        }
    }
    assert!(ok > 0, "some bit flips (in addresses, counters) must still decode");
}
