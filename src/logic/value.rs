//! The bytes a lock keeps in its Redis string.
//!
//! Layout: `MAGIC (4 bytes) | fence (u64, big endian) | token`.
//!
//! The value stays a plain Redis string so replicas, AOF and RDB files hold
//! locks without the module. The magic starts with `0xC1`, a byte that never
//! occurs in UTF-8 text, so a value written by `SET` (another library's
//! token, a counter, any text) is never taken for a lock; only a value
//! deliberately forged with this exact header could be.

use super::fence::MAX_FENCE;

/// First bytes of every lock value: an invalid UTF-8 byte, "LK", format 1.
pub const MAGIC: [u8; 4] = [0xC1, b'L', b'K', 0x01];

/// Bytes before the token.
pub const HEADER_LEN: usize = MAGIC.len() + 8;

/// A decoded lock value, borrowing the token from the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockValue<'a> {
    /// Fencing token handed out when this holder acquired the lock.
    pub fence: u64,
    /// The holder's token.
    pub token: &'a [u8],
}

/// Length of the value that `token` would be stored as.
pub fn encoded_len(token_len: usize) -> usize {
    HEADER_LEN + token_len
}

/// Writes the value for `fence` and `token` into `out`, which must be
/// exactly [`encoded_len`]`(token.len())` bytes long.
pub fn encode_into(out: &mut [u8], fence: u64, token: &[u8]) {
    debug_assert_eq!(out.len(), encoded_len(token.len()));
    let (magic, rest) = out.split_at_mut(MAGIC.len());
    let (fence_bytes, token_out) = rest.split_at_mut(8);
    magic.copy_from_slice(&MAGIC);
    fence_bytes.copy_from_slice(&fence.to_be_bytes());
    token_out.copy_from_slice(token);
}

/// The encoded value as a new vector.
pub fn encode(fence: u64, token: &[u8]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(token.len())];
    encode_into(&mut out, fence, token);
    out
}

/// Decodes a stored value; `None` when the value was not written by the
/// module (a foreign string: a lock held by an unknown owner).
pub fn decode(bytes: &[u8]) -> Option<LockValue<'_>> {
    let rest = bytes.strip_prefix(&MAGIC)?;
    let (fence, token) = rest.split_first_chunk::<8>()?;
    let fence = u64::from_be_bytes(*fence);
    if fence == 0 || fence > MAX_FENCE || token.is_empty() {
        return None;
    }
    Some(LockValue { fence, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = encode(1_700_000_000_000_000, b"tok:en\x00\xff");
        assert_eq!(v.len(), encoded_len(8));
        assert_eq!(
            decode(&v),
            Some(LockValue {
                fence: 1_700_000_000_000_000,
                token: b"tok:en\x00\xff"
            })
        );
    }

    #[test]
    fn foreign_values_are_not_locks() {
        for v in [
            &b""[..],
            b"ABCD",
            b"abcdefghijklmnopqrstuvwx",
            b"\xc1LK\x01",
            b"\xc1LK\x01\x00\x00\x00\x00\x00\x00\x00\x01",
            b"\xc1LK\x01\x00\x00\x00\x00\x00\x00\x00\x00token",
            b"\xc1LK\x02\x00\x00\x00\x00\x00\x00\x00\x01token",
            b"1:token",
        ] {
            assert_eq!(decode(v), None, "{v:?}");
        }
    }

    proptest::proptest! {
        /// Any stored bytes decode to a lock or to nothing, never a panic;
        /// what decodes re-encodes to the same bytes.
        #[test]
        fn decoding_any_bytes_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Some(v) = decode(&bytes) {
                proptest::prop_assert_eq!(encode(v.fence, v.token), bytes.clone());
            }
        }

        #[test]
        fn encoding_round_trips(fence in 1..=MAX_FENCE, token in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64)) {
            let v = encode(fence, &token);
            proptest::prop_assert_eq!(decode(&v), Some(LockValue { fence, token: &token }));
        }
    }
}
