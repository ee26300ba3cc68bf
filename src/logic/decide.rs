//! What a stored value means for a caller's token, and what each command
//! does about it.

use super::value::{decode, encoded_len, META_HEADER_LEN};

/// Where a token stands on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The key does not exist: the lock is free.
    Free,
    /// The token holds the lock, acquired with this fence.
    Holds { fence: u64 },
    /// Someone else holds it: another token, or a value the module did not
    /// write (an unknown owner).
    Other,
}

/// Whether a stored string of `value_len` bytes could be a lock of a token
/// of `token_len` bytes, with or without metadata. When it cannot, the
/// value need not be read at all, which keeps refusals cheap and leaves
/// foreign values untouched.
pub fn could_hold(value_len: usize, token_len: usize) -> bool {
    value_len == encoded_len(token_len, 0) || value_len > META_HEADER_LEN + token_len
}

/// Where `token` stands given the key's stored string (`None`: no key).
pub fn standing(value: Option<&[u8]>, token: &[u8]) -> Standing {
    match value {
        None => Standing::Free,
        Some(bytes) => match decode(bytes) {
            Some(lock) if lock.token == token => Standing::Holds { fence: lock.fence },
            _ => Standing::Other,
        },
    }
}

/// The effect of `LOCK.ACQUIRE` without waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Take the free lock with a new fence.
    Grant,
    /// Reset the time-to-live of our own lock; the fence stays.
    Renew { fence: u64 },
    /// Someone else holds it: reply null, change nothing.
    Refuse,
}

/// Decides `LOCK.ACQUIRE`. `queued` is true when waiters are queued for the
/// key: a free lock then belongs to them, not to a newcomer.
pub fn acquire(standing: Standing, queued: bool) -> Acquire {
    match standing {
        Standing::Free if !queued => Acquire::Grant,
        Standing::Holds { fence } => Acquire::Renew { fence },
        Standing::Free | Standing::Other => Acquire::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::value::encode;

    #[test]
    fn standings() {
        let mine = encode(7, b"me", b"");
        let with_meta = encode(8, b"me", b"host");
        assert_eq!(
            standing(Some(&with_meta), b"me"),
            Standing::Holds { fence: 8 }
        );
        assert_eq!(standing(Some(&with_meta), b"me!"), Standing::Other);
        assert_eq!(standing(None, b"me"), Standing::Free);
        assert_eq!(standing(Some(&mine), b"me"), Standing::Holds { fence: 7 });
        assert_eq!(standing(Some(&mine), b"you"), Standing::Other);
        // Another library's lock holding the very same token is foreign.
        assert_eq!(standing(Some(b"me"), b"me"), Standing::Other);
        assert_eq!(standing(Some(b""), b"me"), Standing::Other);
    }

    #[test]
    fn length_shortcut_agrees_with_decoding() {
        let mine = encode(7, b"me", b"");
        assert!(could_hold(mine.len(), 2));
        assert!(!could_hold(mine.len(), 3));
        assert!(!could_hold(2, 2));
        let with_meta = encode(7, b"me", b"m");
        assert!(could_hold(with_meta.len(), 2));
        // Every length a lock of this token can have passes the shortcut.
        for meta_len in 0..40 {
            assert!(could_hold(encoded_len(5, meta_len), 5));
        }
    }

    #[test]
    fn acquire_decisions() {
        assert_eq!(acquire(Standing::Free, false), Acquire::Grant);
        assert_eq!(acquire(Standing::Free, true), Acquire::Refuse);
        assert_eq!(
            acquire(Standing::Holds { fence: 3 }, true),
            Acquire::Renew { fence: 3 }
        );
        assert_eq!(acquire(Standing::Other, false), Acquire::Refuse);
    }
}
