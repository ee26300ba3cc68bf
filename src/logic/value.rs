//! The bytes a lock keeps in its Redis string.
//!
//! Two layouts, told apart by the fourth byte:
//! - `MAGIC (4 bytes) | fence (u64, big endian) | token`: a lock without
//!   metadata, the common case, kept as small as possible;
//! - `MAGIC_META (4 bytes) | fence (u64) | token length (u32, big endian) |
//!   token | metadata`: a lock taken with `META`.
//!
//! The value stays a plain Redis string so replicas, AOF and RDB files hold
//! locks without the module. The magic starts with `0xC1`, a byte that never
//! occurs in UTF-8 text, so a value written by `SET` (another library's
//! token, a counter, any text) is never taken for a lock; only a value
//! deliberately forged with this exact header could be.

use super::fence::MAX_FENCE;

/// First bytes of a lock value without metadata: an invalid UTF-8 byte,
/// "LK", format 1.
pub const MAGIC: [u8; 4] = [0xC1, b'L', b'K', 0x01];

/// First bytes of a lock value with metadata: format 2.
pub const MAGIC_META: [u8; 4] = [0xC1, b'L', b'K', 0x02];

/// Bytes before the token in format 1.
pub const HEADER_LEN: usize = MAGIC.len() + 8;

/// Bytes before the token in format 2 (the token's length follows the fence).
pub const META_HEADER_LEN: usize = HEADER_LEN + 4;

/// A decoded lock value, borrowing from the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockValue<'a> {
    /// Fencing token handed out when this holder acquired the lock.
    pub fence: u64,
    /// The holder's token.
    pub token: &'a [u8],
    /// What the holder stored with `META` (empty without).
    pub meta: &'a [u8],
}

/// Length of the value that a lock of `token_len` and `meta_len` bytes
/// is stored as.
pub fn encoded_len(token_len: usize, meta_len: usize) -> usize {
    if meta_len == 0 {
        HEADER_LEN + token_len
    } else {
        META_HEADER_LEN + token_len + meta_len
    }
}

/// Writes the value for `fence`, `token` and `meta` into `out`, which must
/// be exactly [`encoded_len`]`(token.len(), meta.len())` bytes long. A token
/// longer than `u32::MAX` cannot be given metadata (limits keep tokens far
/// shorter); `out` is then left zeroed, which never decodes as a lock.
pub fn encode_into(out: &mut [u8], fence: u64, token: &[u8], meta: &[u8]) {
    debug_assert_eq!(out.len(), encoded_len(token.len(), meta.len()));
    let (magic, rest) = out.split_at_mut(MAGIC.len());
    let (fence_bytes, rest) = rest.split_at_mut(8);
    fence_bytes.copy_from_slice(&fence.to_be_bytes());
    if meta.is_empty() {
        magic.copy_from_slice(&MAGIC);
        rest.copy_from_slice(token);
        return;
    }
    let Ok(token_len) = u32::try_from(token.len()) else {
        out.fill(0);
        return;
    };
    magic.copy_from_slice(&MAGIC_META);
    let (len_bytes, rest) = rest.split_at_mut(4);
    len_bytes.copy_from_slice(&token_len.to_be_bytes());
    let (token_out, meta_out) = rest.split_at_mut(token.len());
    token_out.copy_from_slice(token);
    meta_out.copy_from_slice(meta);
}

/// The encoded value as a new vector.
pub fn encode(fence: u64, token: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(token.len(), meta.len())];
    encode_into(&mut out, fence, token, meta);
    out
}

/// Decodes a stored value; `None` when the value was not written by the
/// module (a foreign string: a lock held by an unknown owner).
pub fn decode(bytes: &[u8]) -> Option<LockValue<'_>> {
    let (magic, rest) = bytes.split_first_chunk::<4>()?;
    let (fence, rest) = rest.split_first_chunk::<8>()?;
    let fence = u64::from_be_bytes(*fence);
    let (token, meta) = match *magic {
        MAGIC => (rest, &[][..]),
        MAGIC_META => {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            let (token, meta) = (rest.get(..len)?, rest.get(len..)?);
            if meta.is_empty() {
                return None;
            }
            (token, meta)
        }
        _ => return None,
    };
    if fence == 0 || fence > MAX_FENCE || token.is_empty() {
        return None;
    }
    Some(LockValue { fence, token, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = encode(1_700_000_000_000_000, b"tok:en\x00\xff", b"");
        assert_eq!(v.len(), encoded_len(8, 0));
        assert_eq!(
            decode(&v),
            Some(LockValue {
                fence: 1_700_000_000_000_000,
                token: b"tok:en\x00\xff",
                meta: b"",
            })
        );
        let v = encode(9, b"tok", b"host=a pid=1\x00");
        assert_eq!(v.len(), encoded_len(3, 13));
        assert_eq!(v.len(), META_HEADER_LEN + 3 + 13);
        assert_eq!(
            decode(&v),
            Some(LockValue {
                fence: 9,
                token: b"tok",
                meta: b"host=a pid=1\x00",
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
            // Format 2 with a token length past the end, or no metadata.
            b"\xc1LK\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09tok",
            b"\xc1LK\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x03tok",
            b"\xc1LK\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00meta",
            b"\xc1LK\x03\x00\x00\x00\x00\x00\x00\x00\x01token",
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
                proptest::prop_assert_eq!(encode(v.fence, v.token, v.meta), bytes.clone());
            }
        }

        #[test]
        fn encoding_round_trips(
            fence in 1..=MAX_FENCE,
            token in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..64),
            meta in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let v = encode(fence, &token, &meta);
            proptest::prop_assert_eq!(decode(&v), Some(LockValue { fence, token: &token, meta: &meta }));
        }
    }
}
