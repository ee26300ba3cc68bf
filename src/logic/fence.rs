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
//!
//! The last-issued term lives in the server's memory, so it is lost with a
//! restart or a failover, and another server's clock may run behind the one
//! that issued the previous fences. On start and on becoming a master the
//! server therefore raises it to [`floor`]: its clock plus a margin
//! (`lock.fence-margin`). Fences then keep increasing across a restart or a
//! failover as long as the clocks of the servers involved differ by less
//! than that margin.

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

/// The lowest last-issued fence a server may assume after a start or a
/// promotion: its clock plus `margin_ms`.
pub fn floor(now_us: u64, margin_ms: u64) -> u64 {
    now_us
        .saturating_add(margin_ms.saturating_mul(1_000))
        .min(MAX_FENCE)
}

/// Whether a command (its first arguments, name first; five are enough)
/// hands cluster slots to a node: `CLUSTER SETSLOT slot NODE id`,
/// `CLUSTER ADDSLOTS …`, `CLUSTER ADDSLOTSRANGE …`. A node that starts serving a slot must issue
/// fences above those its previous owner issued there, as after a
/// promotion; Redis has no event for it, so the module watches these
/// commands.
pub fn hands_over_slots(args: &[&[u8]]) -> bool {
    match args {
        [cluster, sub, rest @ ..] if cluster.eq_ignore_ascii_case(b"cluster") => {
            if sub.eq_ignore_ascii_case(b"addslots") || sub.eq_ignore_ascii_case(b"addslotsrange") {
                return true;
            }
            sub.eq_ignore_ascii_case(b"setslot")
                && matches!(rest, [_, how, _] if how.eq_ignore_ascii_case(b"node"))
        }
        _ => false,
    }
}

/// The fencing clock: the wall clock moved by `offset_ms` (a debug setting
/// that lets tests give two servers skewed clocks).
pub fn clock(now_us: u64, offset_ms: i64) -> u64 {
    let offset_us = offset_ms.saturating_mul(1_000);
    now_us.saturating_add_signed(offset_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promoted_server_with_a_slower_clock_stays_above_the_old_fences() {
        // The old master's clock ran 3 s ahead; the margin is 10 s.
        let old = next_fence(None, 0, 1_000_000_000 + 3_000_000);
        let floor = floor(1_000_000_000, 10_000);
        assert!(next_fence(None, floor, 1_000_000_000) > old);
        // Without a margin the fence would go backwards.
        assert!(next_fence(None, 0, 1_000_000_000) < old);
    }

    #[test]
    fn floor_and_clock_saturate() {
        assert_eq!(floor(u64::MAX, u64::MAX), MAX_FENCE);
        assert_eq!(clock(5_000, -10), 0);
        assert_eq!(clock(5_000, 2), 7_000);
        assert_eq!(clock(u64::MAX, i64::MAX), u64::MAX);
        assert_eq!(clock(0, i64::MIN), 0);
    }

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
    fn slot_handovers() {
        let yes: [&[&[u8]]; 4] = [
            &[b"CLUSTER", b"SETSLOT", b"42", b"NODE", b"abc"],
            &[b"cluster", b"setslot", b"42", b"node", b"abc"],
            &[b"CLUSTER", b"ADDSLOTS", b"1", b"2", b"3"],
            &[b"CLUSTER", b"ADDSLOTSRANGE", b"1", b"100"],
        ];
        for args in yes {
            assert!(hands_over_slots(args), "{args:?}");
        }
        let no: [&[&[u8]]; 7] = [
            &[b"CLUSTER", b"SETSLOT", b"42", b"IMPORTING", b"abc"],
            &[b"CLUSTER", b"SETSLOT", b"42", b"STABLE"],
            &[b"CLUSTER", b"SETSLOT", b"42", b"NODE"],
            &[b"CLUSTER", b"INFO"],
            &[b"CLUSTER"],
            &[b"SET", b"k", b"v"],
            &[],
        ];
        for args in no {
            assert!(!hands_over_slots(args), "{args:?}");
        }
    }

    #[test]
    fn never_overflows() {
        assert_eq!(next_fence(Some(MAX_FENCE), MAX_FENCE, u64::MAX), MAX_FENCE);
    }
}
