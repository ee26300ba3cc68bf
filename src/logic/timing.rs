//! When to look at a lock whose holder's deadline is near.
//!
//! Redis stores expiry in whole milliseconds and treats a key as expired
//! once `now > at`, that is from `(at + 1) ms` on. Module timers have
//! millisecond periods and the event loop rounds its sleep up to the next
//! millisecond, so a timer aimed exactly at `at + 1` fires up to ~2 ms late.
//! Aiming at the last whole millisecond before it, and re-checking every
//! loop iteration in that final millisecond, hands the lock on within a
//! fraction of a millisecond of the earliest possible moment.

/// How long past its deadline a lock may linger before the module assumes
/// the server is not expiring keys right now (`CLIENT PAUSE WRITE`) and
/// looks again only every [`OVERDUE_RETRY_MS`].
pub const OVERDUE_GRACE_US: u64 = 1_000;

/// Delay between looks at an overdue lock.
pub const OVERDUE_RETRY_MS: i64 = 10;

/// Milliseconds until the deadline timer of a lock expiring at `at_ms`
/// (Unix ms) should fire, at `now_us` (Unix µs). 0 means "on the next event
/// loop iteration".
pub fn deadline_delay_ms(at_ms: i64, now_us: u64) -> i64 {
    let Ok(at) = u64::try_from(at_ms) else {
        return 0;
    };
    let expires_us = at.saturating_add(1).saturating_mul(1_000);
    if now_us >= expires_us.saturating_add(OVERDUE_GRACE_US) {
        return OVERDUE_RETRY_MS;
    }
    i64::try_from(expires_us.saturating_sub(now_us) / 1_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aims_at_the_last_whole_millisecond_before_expiry() {
        // Expires from 1_001_000 µs on.
        assert_eq!(deadline_delay_ms(1_000, 900_000), 101);
        assert_eq!(deadline_delay_ms(1_000, 999_999), 1);
        assert_eq!(deadline_delay_ms(1_000, 1_000_000), 1);
        assert_eq!(deadline_delay_ms(1_000, 1_000_001), 0);
        assert_eq!(deadline_delay_ms(1_000, 1_000_999), 0);
    }

    #[test]
    fn checks_every_iteration_just_after_expiry() {
        assert_eq!(deadline_delay_ms(1_000, 1_001_000), 0);
        assert_eq!(deadline_delay_ms(1_000, 1_001_999), 0);
    }

    #[test]
    fn backs_off_when_the_server_does_not_expire() {
        assert_eq!(deadline_delay_ms(1_000, 1_002_000), OVERDUE_RETRY_MS);
        assert_eq!(deadline_delay_ms(1_000, u64::MAX), OVERDUE_RETRY_MS);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert_eq!(deadline_delay_ms(-5, 0), 0);
        assert!(deadline_delay_ms(i64::MAX, 0) > 0);
    }
}
