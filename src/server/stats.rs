//! Counters for the `lock_stats` INFO section.
//!
//! Commands run on Redis's main thread only, so a relaxed load and store
//! (no locked read-modify-write) is enough; INFO reads them on that thread.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use redis_module::raw;

use super::api::call;

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    #[inline]
    pub fn incr(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Fresh acquisitions (the caller became the holder).
pub static ACQUIRED: Counter = Counter::new();
/// Renewals of a lock already held by the caller's token (LOCK.ACQUIRE
/// by the holder, or LOCK.EXTEND).
pub static RENEWED: Counter = Counter::new();
/// Acquisitions refused because someone else held the lock.
pub static REFUSED: Counter = Counter::new();
/// Releases that freed the caller's lock.
pub static RELEASED: Counter = Counter::new();
/// Releases that changed nothing (not the caller's lock).
pub static RELEASE_MISSED: Counter = Counter::new();
/// LOCK.EXTEND calls that renewed nothing (the token did not hold the lock).
pub static EXTEND_MISSED: Counter = Counter::new();
/// LOCK.CHECK calls.
pub static CHECKS: Counter = Counter::new();
/// Calls answered with an error (bad arguments, wrong type).
pub static ERRORS: Counter = Counter::new();

/// Clients that blocked with WAIT.
pub static WAITS: Counter = Counter::new();
/// Locks passed directly to a waiter.
pub static HANDOFFS: Counter = Counter::new();
/// Hand-offs made by the deadline timer when the holder's lock expired.
pub static EXPIRY_HANDOFFS: Counter = Counter::new();
/// Waits that ended with their timeout.
pub static WAIT_TIMEOUTS: Counter = Counter::new();
/// Waiters that disconnected while queued.
pub static WAIT_DISCONNECTS: Counter = Counter::new();
/// Grants whose waiter disconnected before the reply: taken back.
pub static GRANTS_UNDELIVERED: Counter = Counter::new();

/// Waiters sent to retry elsewhere: their key's cluster slot moved.
pub static WAIT_REDIRECTS: Counter = Counter::new();

const FIELDS: [(&CStr, &Counter); 15] = [
    (c"acquired", &ACQUIRED),
    (c"renewed", &RENEWED),
    (c"refused", &REFUSED),
    (c"released", &RELEASED),
    (c"release_missed", &RELEASE_MISSED),
    (c"extend_missed", &EXTEND_MISSED),
    (c"checks", &CHECKS),
    (c"errors", &ERRORS),
    (c"waits", &WAITS),
    (c"handoffs", &HANDOFFS),
    (c"expiry_handoffs", &EXPIRY_HANDOFFS),
    (c"wait_timeouts", &WAIT_TIMEOUTS),
    (c"wait_disconnects", &WAIT_DISCONNECTS),
    (c"grants_undelivered", &GRANTS_UNDELIVERED),
    (c"wait_redirects", &WAIT_REDIRECTS),
];

/// The INFO callback: the `lock_module` section (the version) and the
/// `lock_stats` section (counters).
pub extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: std::ffi::c_int) {
    call!(RedisModule_InfoAddSection(ctx, c"module".as_ptr()));
    call!(RedisModule_InfoAddFieldCString(
        ctx,
        c"version".as_ptr(),
        crate::VERSION.as_ptr()
    ));
    call!(RedisModule_InfoAddSection(ctx, c"stats".as_ptr()));
    for (name, counter) in FIELDS {
        call!(RedisModule_InfoAddFieldULongLong(
            ctx,
            name.as_ptr(),
            counter.get()
        ));
    }
    call!(RedisModule_InfoAddFieldULongLong(
        ctx,
        c"waiters".as_ptr(),
        super::waiters::total() as u64
    ));
}
