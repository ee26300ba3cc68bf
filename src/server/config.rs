//! Module configuration: `loadmodule liblock.so max-ttl 60000` or
//! `CONFIG SET lock.max-ttl 60000`.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::logic::args::Limits;

/// `lock.max-ttl`: the largest lock time-to-live a client may ask for.
pub static MAX_TTL: AtomicI64 = AtomicI64::new(DEFAULT_MAX_TTL);
/// `lock.max-token-length`: the longest accepted token, in bytes.
pub static MAX_TOKEN_LENGTH: AtomicI64 = AtomicI64::new(DEFAULT_MAX_TOKEN_LENGTH);

/// `lock.max-waiters`: the most clients that may wait for one lock.
pub static MAX_WAITERS: AtomicI64 = AtomicI64::new(DEFAULT_MAX_WAITERS);

pub const DEFAULT_MAX_WAITERS: i64 = 100_000;
pub const MAX_MAX_WAITERS: i64 = 100_000_000;

/// One day.
pub const DEFAULT_MAX_TTL: i64 = 86_400_000;
/// Ten years: keeps `now + ttl` far from overflowing.
pub const MAX_MAX_TTL: i64 = 315_360_000_000;
pub const DEFAULT_MAX_TOKEN_LENGTH: i64 = 256;
/// A token larger than this is not a token.
pub const MAX_MAX_TOKEN_LENGTH: i64 = 65_536;

/// The limits in force now.
pub fn limits() -> Limits {
    Limits {
        max_ttl_ms: MAX_TTL.load(Relaxed).clamp(1, MAX_MAX_TTL) as u64,
        max_token_len: MAX_TOKEN_LENGTH
            .load(Relaxed)
            .clamp(1, MAX_MAX_TOKEN_LENGTH) as usize,
    }
}

/// The waiter cap in force now.
pub fn max_waiters() -> usize {
    MAX_WAITERS.load(Relaxed).clamp(0, MAX_MAX_WAITERS) as usize
}
