//! Seals: HMAC-SHA256 over a message's bytes with a shared secret, so a message can be told apart from one
//! anybody who may call `pg_logical_emit_message` could have written.
//!
//! waltrail seals the events it writes itself (exports) with a secret only it holds; a platform may seal its
//! context messages with a secret it shares with waltrail (`attribution.require_signed_context`).

use ring::hmac;

pub struct SealKey(hmac::Key);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    pub fn new(secret: &[u8]) -> Self {
        SealKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The seal of `data`, as lower-case hex (what pgcrypto's `encode(hmac(..., 'sha256'), 'hex')` gives).
    pub fn seal(&self, data: &[u8]) -> String {
        hex(hmac::sign(&self.0, data).as_ref())
    }

    /// Whether `seal_hex` is the seal of `data`; compared in constant time.
    pub fn verify(&self, data: &[u8], seal_hex: &str) -> bool {
        match unhex(seal_hex) {
            Some(tag) => hmac::verify(&self.0, data, &tag).is_ok(),
            None => false,
        }
    }
}

/// Lower-case hex (seals, chain hashes, keys). By table, not `format!` per byte: the chain writes two
/// hashes per item, and formatting made them most of the chain's cost.
pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(b.len() * 2);
    for x in b {
        out.push(DIGITS[(x >> 4) as usize]);
        out.push(DIGITS[(x & 0x0f) as usize]);
    }
    // Only ASCII digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Bytes from hex (either case); `None` for anything else, or for more than 64 bytes.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    unhex_upto(s.as_bytes(), 64)
}

/// Bytes from hex (either case); `None` for anything else, or for more than `max` bytes.
pub(crate) fn unhex_upto(s: &[u8], max: usize) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if s.len() % 2 != 0 || s.len() > 2 * max {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_match_pgcrypto_and_refuse_anything_else() {
        // SELECT encode(hmac('hello', 'key', 'sha256'), 'hex');
        let k = SealKey::new(b"key");
        let s = k.seal(b"hello");
        assert_eq!(
            s,
            "9307b3b915efb5171ff14d8cb55fbcc798c6c0ef1456d66ded1a6aa723a58b7b"
        );
        assert!(k.verify(b"hello", &s));
        assert!(k.verify(b"hello", &s.to_uppercase()));
        assert!(!k.verify(b"hello!", &s));
        assert!(!SealKey::new(b"other").verify(b"hello", &s));
        assert!(!k.verify(b"hello", "zz"));
        assert!(!k.verify(b"hello", ""));
        assert!(!k.verify(b"hello", "é1"));
    }
}
