//! The server's fencing state: the last fence it issued, and the floor it
//! raises that to on start and on promotion (see [`crate::logic::fence`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::api;
use super::config::{fence_clock_offset_ms, fence_margin_ms};
use crate::logic::fence::{clock, floor, next_fence};

/// The last fence this server issued (main thread only).
static LAST_FENCE: AtomicU64 = AtomicU64::new(0);

fn now_us() -> u64 {
    clock(api::now_us(), fence_clock_offset_ms())
}

/// The fence for a new holder of a key whose previous holder had `previous`.
/// Call [`issued`] once the lock is written.
pub fn next(previous: Option<u64>) -> u64 {
    next_fence(previous, LAST_FENCE.load(Relaxed), now_us())
}

/// Records a fence as issued.
pub fn issued(fence: u64) {
    LAST_FENCE.store(fence, Relaxed);
}

/// After a start or a promotion: no fence below the clock plus the margin,
/// whatever the previous master issued while its clock ran ahead.
pub fn raise_floor() {
    let floor = floor(now_us(), fence_margin_ms());
    if floor > LAST_FENCE.load(Relaxed) {
        LAST_FENCE.store(floor, Relaxed);
    }
}
