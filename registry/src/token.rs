//! Bearer tokens and random ids.
//!
//! A token reads `sdw<k>_<key id>_<secret>`: `k` is the kind (`a` admin, `e` enrollment, `p` peer), the key id
//! is 8 random bytes in hex (the public lookup key), the secret 32 random bytes in hex. The registry stores
//! only the key id and SHA-256 of the secret; a presented token is found by its key id, and its secret's hash
//! is compared with the stored one in constant time, so neither the lookup nor the comparison times anything
//! derived from the secret. The kind prefix lets a human (and a secret scanner) tell tokens apart; the
//! stored kind, not the prefix, decides what a token may do.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::model::TokenKind;

/// The operating system's random source failed (it does not on any supported system; reported, not
/// panicked on).
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed: {0}")]
pub struct EntropyError(String);

/// A freshly issued token: the text handed out once, and what is stored.
#[derive(Debug)]
pub struct Issued {
    /// The full token, shown to its owner exactly once.
    pub text: String,
    /// The lookup key (stored).
    pub key_id: String,
    /// SHA-256 of the secret (stored).
    pub secret_hash: [u8; 32],
}

/// A token as presented by a caller, syntactically valid, not yet checked against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The kind its prefix claims.
    pub kind: TokenKind,
    /// The lookup key.
    pub key_id: String,
    secret: [u8; 32],
}

impl Presented {
    /// Whether this token's secret hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &[u8; 32]) -> bool {
        hash(&self.secret).ct_eq(stored).into()
    }
}

/// `n` random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], EntropyError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| EntropyError(e.to_string()))?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hash(secret: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn prefix(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Admin => "sdwa",
        TokenKind::Enrollment => "sdwe",
        TokenKind::Peer => "sdwp",
    }
}

/// Issues a new token of `kind`.
pub fn issue(kind: TokenKind) -> Result<Issued, EntropyError> {
    let key_id = hex(&random::<8>()?);
    let secret = random::<32>()?;
    Ok(Issued {
        text: format!("{}_{key_id}_{}", prefix(kind), hex(&secret)),
        key_id,
        secret_hash: hash(&secret),
    })
}

/// Parses a presented token; `None` when it is not of the token shape (the caller answers 401).
pub fn parse(text: &str) -> Option<Presented> {
    let mut parts = text.split('_');
    let kind = match parts.next()? {
        "sdwa" => TokenKind::Admin,
        "sdwe" => TokenKind::Enrollment,
        "sdwp" => TokenKind::Peer,
        _ => return None,
    };
    let key_id = parts.next()?;
    unhex::<8>(key_id)?;
    let secret = unhex::<32>(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some(Presented {
        kind,
        key_id: key_id.to_owned(),
        secret,
    })
}

/// A new random id in UUID (version 4) form.
pub fn new_id() -> Result<String, EntropyError> {
    let mut b = random::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// A k3s join token: 32 random bytes in hex (k3s accepts any string; this one needs no quoting anywhere).
pub fn new_join_secret() -> Result<String, EntropyError> {
    Ok(hex(&random::<32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_match_only_their_hash() {
        for kind in [TokenKind::Admin, TokenKind::Enrollment, TokenKind::Peer] {
            let issued = issue(kind).expect("entropy");
            let presented = parse(&issued.text).expect("parses");
            assert_eq!(presented.kind, kind);
            assert_eq!(presented.key_id, issued.key_id);
            assert!(presented.matches(&issued.secret_hash));
            let other = issue(kind).expect("entropy");
            assert!(!presented.matches(&other.secret_hash));
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = issue(TokenKind::Peer).expect("entropy").text;
        let bad = [
            String::new(),
            "sdwp".into(),
            "sdwx_0011223344556677_".into(),
            good.replacen("sdwp", "sdwq", 1),
            format!("{good}_extra"),
            good[..good.len() - 1].to_owned(),
            good.to_uppercase(),
            format!("{}é", &good[..good.len() - 2]),
        ];
        for text in bad {
            assert_eq!(parse(&text), None, "{text:?}");
        }
    }

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let a = new_id().expect("entropy");
        let b = new_id().expect("entropy");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }
}
