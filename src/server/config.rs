//! Module configuration: `CONFIG SET lock.max-ttl 60000`, `lock.max-ttl
//! 60000` in redis.conf, or `loadmodule liblock.so max-ttl 60000`.
//!
//! Redis checks `CONFIG SET` and redis.conf against each setting's range;
//! load arguments are checked against the same table by
//! [`crate::logic::settings`] before they take effect.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::logic::args::Limits;
use crate::logic::settings::{parse_load_args, LoadArgError, Setting};

/// `lock.max-ttl`: the largest lock time-to-live a client may ask for.
pub static MAX_TTL: AtomicI64 = AtomicI64::new(MAX_TTL_SETTING.default);
/// `lock.max-token-length`: the longest accepted token, in bytes.
pub static MAX_TOKEN_LENGTH: AtomicI64 = AtomicI64::new(MAX_TOKEN_LENGTH_SETTING.default);
/// `lock.max-meta-length`: the longest accepted `META` value, in bytes.
pub static MAX_META_LENGTH: AtomicI64 = AtomicI64::new(MAX_META_LENGTH_SETTING.default);
/// `lock.max-waiters`: the most clients that may wait for one lock.
pub static MAX_WAITERS: AtomicI64 = AtomicI64::new(MAX_WAITERS_SETTING.default);
/// `lock.fence-margin`: after a start or a promotion, no fence is issued
/// below the clock plus this many milliseconds.
pub static FENCE_MARGIN: AtomicI64 = AtomicI64::new(FENCE_MARGIN_SETTING.default);
/// `lock.debug-fence-clock-offset`: moves the clock used for fences (not
/// for expiry) by this many milliseconds. For tests of clock skew only.
pub static FENCE_CLOCK_OFFSET: AtomicI64 = AtomicI64::new(FENCE_CLOCK_OFFSET_SETTING.default);

pub const MAX_TTL_SETTING: Setting = Setting {
    name: "max-ttl",
    min: 1,
    // Ten years: keeps `now + ttl` far from overflowing.
    max: 315_360_000_000,
    // One day.
    default: 86_400_000,
    unit: "milliseconds",
};
pub const MAX_TOKEN_LENGTH_SETTING: Setting = Setting {
    name: "max-token-length",
    min: 1,
    // A token larger than this is not a token.
    max: 65_536,
    default: 256,
    unit: "bytes",
};
pub const MAX_META_LENGTH_SETTING: Setting = Setting {
    name: "max-meta-length",
    // 0 turns `META` off.
    min: 0,
    max: 65_536,
    // Room for a host name, a process id and a job name.
    default: 1_024,
    unit: "bytes",
};
pub const MAX_WAITERS_SETTING: Setting = Setting {
    name: "max-waiters",
    min: 0,
    max: 100_000_000,
    default: 100_000,
    unit: "clients per lock",
};
pub const FENCE_MARGIN_SETTING: Setting = Setting {
    name: "fence-margin",
    min: 0,
    // One day.
    max: 86_400_000,
    // Far above any clock difference NTP leaves between servers.
    default: 10_000,
    unit: "milliseconds",
};
pub const FENCE_CLOCK_OFFSET_SETTING: Setting = Setting {
    name: "debug-fence-clock-offset",
    min: -86_400_000,
    max: 86_400_000,
    default: 0,
    unit: "milliseconds",
};

/// Every setting, with the value it sets.
const SETTINGS: [(Setting, &AtomicI64); 6] = [
    (MAX_TTL_SETTING, &MAX_TTL),
    (MAX_TOKEN_LENGTH_SETTING, &MAX_TOKEN_LENGTH),
    (MAX_META_LENGTH_SETTING, &MAX_META_LENGTH),
    (MAX_WAITERS_SETTING, &MAX_WAITERS),
    (FENCE_MARGIN_SETTING, &FENCE_MARGIN),
    (FENCE_CLOCK_OFFSET_SETTING, &FENCE_CLOCK_OFFSET),
];

/// Checks the load arguments and applies them; on error nothing changes.
pub fn apply_load_args<B: AsRef<[u8]>>(args: &[B]) -> Result<(), LoadArgError> {
    let settings = SETTINGS.map(|(s, _)| s);
    for (index, value) in parse_load_args(&settings, args)? {
        if let Some((_, target)) = SETTINGS.get(index) {
            target.store(value, Relaxed);
        }
    }
    Ok(())
}

fn get(setting: &Setting, value: &AtomicI64) -> i64 {
    value.load(Relaxed).clamp(setting.min, setting.max)
}

/// The limits in force now.
pub fn limits() -> Limits {
    Limits {
        max_ttl_ms: get(&MAX_TTL_SETTING, &MAX_TTL) as u64,
        max_token_len: get(&MAX_TOKEN_LENGTH_SETTING, &MAX_TOKEN_LENGTH) as usize,
        max_meta_len: get(&MAX_META_LENGTH_SETTING, &MAX_META_LENGTH) as usize,
    }
}

/// The waiter cap in force now.
pub fn max_waiters() -> usize {
    get(&MAX_WAITERS_SETTING, &MAX_WAITERS) as usize
}

/// `lock.fence-margin` in milliseconds.
pub fn fence_margin_ms() -> u64 {
    get(&FENCE_MARGIN_SETTING, &FENCE_MARGIN) as u64
}

/// `lock.debug-fence-clock-offset` in milliseconds.
pub fn fence_clock_offset_ms() -> i64 {
    get(&FENCE_CLOCK_OFFSET_SETTING, &FENCE_CLOCK_OFFSET)
}
