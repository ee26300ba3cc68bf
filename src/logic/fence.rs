//! Fencing tokens.
//!
//! A key's fence must strictly increase with each new holder, across
//! release, expiry, `DEL`, restarts and failovers, without keeping any state
//! for free keys. The rule:
//!
//! `fence = max(previous fence of this key + 1, now in µs since the Unix epoch, last fence issued by this server + 1)`
//!
//! * the key's previous fence is known while the key exists (renewal, hand-off);
//! * once the key is gone, the wall clock has moved on since that fence was
//!   issued, so the clock term exceeds it (assuming the clock is not stepped
//!   backwards: the documented limit);
//! * the last-issued term covers several acquisitions within one microsecond.

/// The largest fence: replies are signed 64-bit integers.
pub const MAX_FENCE: u64 = i64::MAX as u64;

/// The next fence for a key whose previous holder had `previous` (`None`
/// when the key is free), given the last fence this server issued and the
/// time `now_us`.
pub fn next_fence(previous: Option<u64>, last_issued: u64, now_us: u64) -> u64 {
    now_us
        .max(previous.map_or(0, |p| p.saturating_add(1)))
        .max(last_issued.saturating_add(1))
        .min(MAX_FENCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_clock() {
        assert_eq!(next_fence(None, 0, 1_000), 1_000);
        assert_eq!(next_fence(None, 1_000, 5_000), 5_000);
    }

    #[test]
    fn strictly_increases_within_one_microsecond() {
        let a = next_fence(None, 0, 1_000);
        let b = next_fence(None, a, 1_000);
        let c = next_fence(Some(b), b, 1_000);
        assert!(a < b && b < c);
    }

    #[test]
    fn exceeds_a_previous_fence_from_the_future() {
        // A fence written by a master whose clock ran ahead of ours.
        assert_eq!(next_fence(Some(9_000), 0, 1_000), 9_001);
    }

    #[test]
    fn never_overflows() {
        assert_eq!(next_fence(Some(MAX_FENCE), MAX_FENCE, u64::MAX), MAX_FENCE);
    }
}
