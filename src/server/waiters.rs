//! Server-side FIFO waiting (`LOCK.ACQUIRE ... WAIT timeout-ms`).
//!
//! A refused acquisition with `WAIT` blocks the client in the key's queue
//! ([`crate::logic::queue`]). The lock passes to the head waiter:
//! * on `LOCK.RELEASE`, inside that command (see [`hand_off`]);
//! * at the holder's deadline, from a timer armed for keys with waiters
//!   (Redis's own active expiry can be ~100 ms late);
//! * when the key goes by other means: after `FLUSHDB`, `FLUSHALL` or
//!   `SWAPDB`, from a 0 ms timer scheduled by the server event (events must
//!   not write to the keyspace themselves); after `DEL`, `UNLINK`,
//!   `RENAME`, `MOVE`, an early expiry or an eviction, from a sweep every
//!   [`SWEEP_MS`] (over at most [`SWEEP_BATCH`] keys per tick) that runs
//!   only while clients wait. The module subscribes to no keyspace events:
//!   every `SET ... PX`, `DEL` and expiry in the server would then pay for
//!   a call into the module.
//!
//! A waiter that times out or disconnects leaves the queue at once. Wait
//! timeouts are the module's own timers, not Redis's blocking timeout, so
//! a grant and a timeout can never both answer one waiter. A waiter
//! granted the lock that disconnects before its reply is sent does not
//! keep it: the lock is released or handed on.
//!
//! Timers and events write only when [`api::write_gate`] is open: while
//! writes are paused (`CLIENT PAUSE`, `FAILOVER`) the work waits and
//! resumes within [`RESUME_MS`] of the pause's end; on a replica it is
//! dropped. When the server becomes a replica, every waiter is answered
//! with an error at once.
//!
//! All of this runs on Redis's main thread; state lives in thread-locals,
//! and no borrow of it is held across a call into Redis (which may call
//! back into this module).

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::ptr;

use redis_module::raw;

use super::api::{self, call, Ctx, RStr, WriteGate};
use super::commands::grant;
use super::key::{Key, Kind};
use super::stats;
use crate::logic::args::Acquire;
use crate::logic::queue::Queues;
use crate::logic::timing::deadline_delay_ms;

type Bc = *mut raw::RedisModuleBlockedClient;

/// What a waiter asked for (its token is kept by the queue).
struct Wait {
    ttl_ms: u64,
    /// Its `META` value (empty: none; an empty box allocates nothing).
    meta: Box<[u8]>,
    /// The timer that ends the wait (none for `WAIT 0`).
    timer: Option<u64>,
}

/// What a woken waiter is told.
enum Outcome {
    /// It holds the lock now.
    Granted(Granted),
    /// The key's cluster slot is no longer served here: retry, and the
    /// cluster redirects.
    Moved,
    /// The server became a replica: retry on the master.
    Demoted,
}

/// The reply owed to a waiter that was granted the lock.
struct Granted {
    db: i32,
    key: Box<[u8]>,
    token: Box<[u8]>,
    fence: u64,
    delivered: bool,
}

/// How long a timed-out waiter's slot is kept for its return with the
/// same token (a client waiting in slices).
pub const PARK_MS: i64 = 1_000;

/// How often keys with waiters are checked for removal by other means.
pub const SWEEP_MS: i64 = 10;

/// Most keys one sweep tick looks at.
pub const SWEEP_BATCH: usize = 256;

/// How often deferred work looks again while writes are paused.
pub const RESUME_MS: i64 = 1;

#[derive(Default)]
struct Pending {
    /// Keys to serve from the next 0 ms timer.
    serve: Vec<(i32, Box<[u8]>)>,
    /// Grants whose reply never reached the waiter: take them back.
    revoke: Vec<Granted>,
    /// The timer for `serve` and `revoke` is armed.
    armed: bool,
    /// The sweep timer is armed.
    sweeping: bool,
    /// Keys the sweep has yet to look at in its current round.
    sweep_todo: Vec<(i32, Box<[u8]>)>,
}

thread_local! {
    static QUEUES: RefCell<Queues<usize, Wait>> = RefCell::new(Queues::default());
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

fn queues<R>(f: impl FnOnce(&mut Queues<usize, Wait>) -> R) -> R {
    QUEUES.with(|q| f(&mut q.borrow_mut()))
}

/// Live waiters on a key (0 quickly when nobody waits anywhere).
pub fn waiting(db: i32, key: &[u8]) -> usize {
    QUEUES.with(|q| match q.try_borrow() {
        Ok(q) if q.total() == 0 => 0,
        Ok(q) => q.waiting(db, key),
        Err(_) => 0,
    })
}

/// Whether timers or waiters still reference the module's code: it must
/// not be unloaded then.
pub fn busy() -> bool {
    total() > 0 || PENDING.with(|p| p.try_borrow().map_or(true, |p| p.armed || p.sweeping))
}

/// Live waiters on all keys.
pub fn total() -> usize {
    QUEUES.with(|q| q.try_borrow().map_or(0, |q| q.total()))
}

/// Why a client could not be queued.
pub enum BlockError {
    /// `lock.max-waiters` waiters are queued already.
    Full(usize),
}

/// Blocks the calling client in the key's queue for up to `wait_ms`
/// (0: without limit). `deadline` is the current holder's expiry (Unix ms).
pub fn block(
    ctx: Ctx,
    name: RStr,
    req: &Acquire,
    wait_ms: u64,
    deadline: Option<i64>,
    max_waiters: usize,
) -> Result<(), BlockError> {
    let db = api::selected_db(ctx);
    let key = api::bytes(name);
    if waiting(db, key) >= max_waiters {
        return Err(BlockError::Full(max_waiters));
    }
    // No Redis timeout: the module's timer ends the wait (Redis 7.0 can
    // drop the reply of a client woken as its own timeout fires). The
    // timeout callback still serves `CLIENT UNBLOCK`.
    let bc = call!(RedisModule_BlockClient(
        ctx,
        Some(reply_granted),
        Some(timed_out),
        Some(free_granted),
        0
    ));
    call!(RedisModule_SetDisconnectCallback(bc, Some(disconnected)));
    let timer = (wait_ms > 0).then(|| {
        call!(RedisModule_CreateTimer(
            ctx,
            i64::try_from(wait_ms).unwrap_or(i64::MAX),
            Some(wait_expired),
            bc.cast::<c_void>()
        ))
    });
    let now_ms = (api::now_us() / 1000) as i64;
    let wait = Wait {
        ttl_ms: req.ttl_ms,
        meta: req.meta.into(),
        timer,
    };
    if !queues(|q| q.push(db, key, bc as usize, req.token, wait, now_ms)) {
        // Cannot happen (a new handle); never leave a client blocked unqueued.
        stop_wait_timer(ctx, timer);
        call!(RedisModule_UnblockClient(bc, ptr::null_mut()));
        return Ok(());
    }
    stats::WAITS.incr();
    arm_sweep(ctx);
    if let Some(at) = deadline {
        arm_deadline(ctx, db, key, at);
    }
    Ok(())
}

/// Passes the free, open key to the first live waiter, with a fence above
/// `previous`. Returns false when nobody waits (the key is left as is).
pub fn hand_off(ctx: Ctx, key: &mut Key, name: RStr, previous: Option<u64>) -> bool {
    let db = api::selected_db(ctx);
    let key_bytes = api::bytes(name);
    if waiting(db, key_bytes) == 0 {
        return false;
    }
    let Some((bc, wait, timer)) = queues(|q| q.pop(db, key_bytes)) else {
        return false;
    };
    stop_timer(ctx, timer);
    stop_wait_timer(ctx, wait.data.timer);
    let bc = bc as Bc;
    let Some(fence) = grant(
        ctx,
        key,
        name,
        &wait.token,
        &wait.data.meta,
        wait.data.ttl_ms,
        previous,
    ) else {
        // Could not write the lock: the waiter gets a null reply and the
        // key stays as it was.
        call!(RedisModule_UnblockClient(bc, ptr::null_mut()));
        return false;
    };
    stats::HANDOFFS.incr();
    let granted = Outcome::Granted(Granted {
        db,
        key: key_bytes.into(),
        token: wait.token,
        fence,
        delivered: false,
    });
    wake(bc, granted);
    if let Some(at) = key.abs_expire() {
        arm_deadline(ctx, db, key_bytes, at);
    }
    true
}

fn wake(bc: Bc, outcome: Outcome) {
    call!(RedisModule_UnblockClient(
        bc,
        Box::into_raw(Box::new(outcome)).cast::<c_void>()
    ));
}

/// Wakes every waiter of a key with an error that sends it elsewhere.
fn send_away(ctx: Ctx, db: i32, key: &[u8], why: fn() -> Outcome) {
    while let Some((bc, wait, timer)) = queues(|q| q.pop(db, key)) {
        stop_timer(ctx, timer);
        stop_wait_timer(ctx, wait.data.timer);
        stats::WAIT_REDIRECTS.incr();
        wake(bc as Bc, why());
    }
}

/// The server became a replica: no waiter can be granted here any more.
/// Each is told at once (like Redis's own blocked clients), and pending
/// writes are dropped: the new master owns the data.
///
/// On Redis 7.0, 8.0 and Valkey 8.1 the server has already answered every
/// blocked client `-UNBLOCKED …` and marked its connection to close before
/// it fires this event (`disconnectAllBlockedClients` in
/// `replicationSetMaster`); each waiter left the queue then through its
/// disconnect callback. So the queue is normally empty here (in a cluster
/// too: `tests/cluster.rs` counts every waiter of a demoted master as a
/// disconnect); this covers any waiter the server did not answer.
fn demote(ctx: Ctx) {
    let why: fn() -> Outcome = if in_cluster(ctx) {
        || Outcome::Moved
    } else {
        || Outcome::Demoted
    };
    let keys = QUEUES.with(|q| q.try_borrow().map(|q| q.keys()).unwrap_or_default());
    for (db, key) in keys {
        send_away(ctx, db, &key, why);
    }
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        p.serve.clear();
        p.revoke.clear();
        p.sweep_todo.clear();
    });
}

/// Reply callback of a woken waiter: its fence, or a retry error.
extern "C" fn reply_granted(ctx: Ctx, _argv: *mut RStr, _argc: c_int) -> c_int {
    let outcome = call!(RedisModule_GetBlockedClientPrivateData(ctx)).cast::<Outcome>();
    // SAFETY: set by `wake` from a Box; Redis frees it after this call.
    match unsafe { outcome.as_mut() } {
        Some(Outcome::Granted(g)) => {
            g.delivered = true;
            api::reply_i64(ctx, i64::try_from(g.fence).unwrap_or(i64::MAX))
        }
        Some(Outcome::Moved) => api::reply_error_static(
            ctx,
            c"TRYAGAIN the lock's slot is no longer served by this node; retry the command",
        ),
        Some(Outcome::Demoted) => api::reply_error_static(
            ctx,
            c"UNBLOCKED this server became a replica while the client waited for the lock; retry on the master",
        ),
        None => api::reply_null(ctx),
    }
}

/// Frees a reply; a grant that never reached its client is taken back.
extern "C" fn free_granted(ctx: Ctx, privdata: *mut c_void) {
    if privdata.is_null() {
        return;
    }
    // SAFETY: created by `wake` with Box::into_raw.
    let outcome = unsafe { Box::from_raw(privdata.cast::<Outcome>()) };
    if let Outcome::Granted(granted) = *outcome {
        if !granted.delivered {
            stats::GRANTS_UNDELIVERED.incr();
            PENDING.with(|p| p.borrow_mut().revoke.push(granted));
            arm_pending(ctx);
        }
    }
}

/// The wait ran out (the module's timer): leave the queue, keeping the
/// slot for [`PARK_MS`] in case the client waits again with the same token;
/// the reply callback then answers null. A waiter already granted is not
/// queued, and its timer was stopped with the grant.
extern "C" fn wait_expired(ctx: Ctx, data: *mut c_void) {
    let bc = data.cast::<raw::RedisModuleBlockedClient>();
    let until_ms = (api::now_us() / 1000) as i64 + PARK_MS;
    // Redis frees a firing timer after its callback: stopping it from
    // inside would free it twice.
    if leave_queue(ctx, bc, Some(until_ms), false) {
        stats::WAIT_TIMEOUTS.incr();
        call!(RedisModule_UnblockClient(bc, ptr::null_mut()));
    }
}

/// Redis's timeout callback: only `CLIENT UNBLOCK` reaches it (the block
/// itself has no timeout). Ends the wait like a timeout.
extern "C" fn timed_out(ctx: Ctx, _argv: *mut RStr, _argc: c_int) -> c_int {
    let bc = call!(RedisModule_GetBlockedClientHandle(ctx));
    let until_ms = (api::now_us() / 1000) as i64 + PARK_MS;
    if leave(ctx, bc, Some(until_ms)) {
        stats::WAIT_TIMEOUTS.incr();
        call!(RedisModule_UnblockClient(bc, ptr::null_mut()));
    }
    api::reply_null(ctx)
}

/// The waiting client went away: leave the queue.
extern "C" fn disconnected(ctx: Ctx, bc: Bc) {
    if leave(ctx, bc, None) {
        stats::WAIT_DISCONNECTS.incr();
        call!(RedisModule_UnblockClient(bc, ptr::null_mut()));
    }
}

/// Removes a still-queued waiter, parking its slot until `park_until`;
/// false if it was not queued (granted already).
fn leave(ctx: Ctx, bc: Bc, park_until: Option<i64>) -> bool {
    leave_queue(ctx, bc, park_until, true)
}

fn leave_queue(ctx: Ctx, bc: Bc, park_until: Option<i64>, stop_wait: bool) -> bool {
    let left = queues(|q| match park_until {
        Some(until) => q.park(bc as usize, until),
        None => q.remove(bc as usize),
    });
    match left {
        Some((waiter, timer)) => {
            stop_timer(ctx, timer);
            if stop_wait {
                stop_wait_timer(ctx, waiter.data.timer);
            }
            true
        }
        None => false,
    }
}

/// `FLUSHDB`, `FLUSHALL` and `SWAPDB` fire no per-key events: serve every
/// key with waiters. A role change answers or re-arms what depends on it.
pub extern "C" fn on_server_event(
    ctx: Ctx,
    eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if eid.id == raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED {
        if subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_REPLICA {
            demote(ctx);
        } else {
            super::fencing::raise_floor();
        }
        return;
    }
    let flush_started = eid.id == raw::REDISMODULE_EVENT_FLUSHDB
        && subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END;
    if flush_started {
        return;
    }
    let keys = QUEUES.with(|q| q.try_borrow().map(|q| q.keys()).unwrap_or_default());
    if !keys.is_empty() {
        schedule(ctx, keys);
    }
}

fn schedule(ctx: Ctx, keys: Vec<(i32, Box<[u8]>)>) {
    PENDING.with(|p| p.borrow_mut().serve.extend(keys));
    arm_pending(ctx);
}

fn arm_pending(ctx: Ctx) {
    arm_pending_in(ctx, 0);
}

fn arm_pending_in(ctx: Ctx, delay_ms: i64) {
    let arm = PENDING.with(|p| !std::mem::replace(&mut p.borrow_mut().armed, true));
    if arm {
        call!(RedisModule_CreateTimer(
            ctx,
            delay_ms,
            Some(run_pending),
            ptr::null_mut()
        ));
    }
}

/// Keeps a key's service for when writes are allowed again.
fn defer(ctx: Ctx, db: i32, key: &[u8]) {
    PENDING.with(|p| p.borrow_mut().serve.push((db, key.into())));
    arm_pending_in(ctx, RESUME_MS);
}

/// The pending timer: serves scheduled keys and takes back undelivered
/// grants; waits while writes are paused, drops the work on a replica.
extern "C" fn run_pending(ctx: Ctx, _data: *mut c_void) {
    PENDING.with(|p| p.borrow_mut().armed = false);
    match api::write_gate(ctx) {
        WriteGate::Open => {}
        WriteGate::Later => return arm_pending_in(ctx, RESUME_MS),
        WriteGate::Never => {
            return PENDING.with(|p| {
                let mut p = p.borrow_mut();
                p.serve.clear();
                p.revoke.clear();
            });
        }
    }
    let (revoked, served) = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        (std::mem::take(&mut p.revoke), std::mem::take(&mut p.serve))
    });
    for granted in revoked {
        revoke(ctx, granted);
    }
    for (db, key) in served {
        serve(ctx, db, &key, Cause::Scheduled);
    }
}

fn arm_sweep(ctx: Ctx) {
    let arm = PENDING.with(|p| !std::mem::replace(&mut p.borrow_mut().sweeping, true));
    if arm {
        call!(RedisModule_CreateTimer(
            ctx,
            SWEEP_MS,
            Some(sweep),
            ptr::null_mut()
        ));
    }
}

/// Serves up to [`SWEEP_BATCH`] keys with waiters (one lookup each), going
/// round all of them over successive ticks; re-arms while any wait. The
/// work per tick stays bounded however many keys have waiters.
extern "C" fn sweep(ctx: Ctx, _data: *mut c_void) {
    PENDING.with(|p| p.borrow_mut().sweeping = false);
    if api::write_gate(ctx) != WriteGate::Open {
        if total() > 0 {
            arm_sweep(ctx);
        }
        return;
    }
    let batch = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.sweep_todo.is_empty() {
            p.sweep_todo = QUEUES.with(|q| q.borrow().keys());
        }
        let from = p.sweep_todo.len().saturating_sub(SWEEP_BATCH);
        p.sweep_todo.split_off(from)
    });
    for (db, key) in &batch {
        serve(ctx, *db, key, Cause::Sweep);
    }
    if total() > 0 {
        arm_sweep(ctx);
    }
}

/// Why a key with waiters is looked at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Its holder's deadline timer fired.
    Deadline,
    /// The sweep for keys removed by other means.
    Sweep,
    /// A server event, or work deferred by a pause.
    Scheduled,
}

/// Grants a free key to its head waiter, or arms the deadline timer of a
/// held one. Only where writes are allowed: otherwise the key waits.
fn serve(ctx: Ctx, db: i32, key_bytes: &[u8], cause: Cause) {
    if waiting(db, key_bytes) == 0 {
        return;
    }
    match api::write_gate(ctx) {
        WriteGate::Open => {}
        WriteGate::Later => return defer(ctx, db, key_bytes),
        WriteGate::Never => return,
    }
    if call!(RedisModule_SelectDb(ctx, db)) != raw::REDISMODULE_OK as c_int {
        return;
    }
    let name = api::OwnedString::new(key_bytes);
    // Opening for write expires a key past its deadline (and replicates the DEL).
    let mut key = Key::write(ctx, name.ptr());
    match key.kind() {
        // In a cluster a key gone by other means may have migrated with its
        // slot: grant only where the slot is still served.
        Kind::Empty if in_cluster(ctx) && !api::slot_is_local(ctx, name.ptr()) => {
            send_away(ctx, db, key_bytes, || Outcome::Moved);
        }
        Kind::Empty => {
            if hand_off(ctx, &mut key, name.ptr(), None) && cause == Cause::Deadline {
                stats::EXPIRY_HANDOFFS.incr();
            }
        }
        Kind::String | Kind::Other => {
            if let Some(at) = key.abs_expire() {
                arm_deadline(ctx, db, key_bytes, at);
            }
        }
    }
}

/// Takes back a grant whose reply was never delivered, if the lock is still
/// that grant's: hands it on or releases it.
fn revoke(ctx: Ctx, granted: Granted) {
    if api::write_gate(ctx) != WriteGate::Open
        || call!(RedisModule_SelectDb(ctx, granted.db)) != raw::REDISMODULE_OK as c_int
    {
        return;
    }
    let name = api::OwnedString::new(&granted.key);
    let mut key = Key::write(ctx, name.ptr());
    // Another type now (the key was replaced): nothing of ours to take back.
    let _ = super::commands::release_if_held(
        ctx,
        &mut key,
        name.ptr(),
        &granted.token,
        Some(granted.fence),
    );
}

/// Data of a deadline timer.
struct Deadline {
    db: i32,
    key: Box<[u8]>,
    at: i64,
}

/// A renewal moved a held lock's expiry to `at` (Unix ms): move the
/// deadline timer of its waiters with it.
pub fn deadline_moved(ctx: Ctx, name: RStr, at: i64) {
    if total() > 0 {
        arm_deadline(ctx, api::selected_db(ctx), api::bytes(name), at);
    }
}

/// Arms (or moves) the key's deadline timer to fire just after `at` (Unix ms).
fn arm_deadline(ctx: Ctx, db: i32, key: &[u8], at: i64) {
    if waiting(db, key) == 0 {
        return;
    }
    let armed = QUEUES.with(|q| q.borrow().timer(db, key));
    if armed.is_some_and(|(_, armed_at)| armed_at == at) {
        return;
    }
    let delay = deadline_delay_ms(at, api::now_us());
    let data = Box::into_raw(Box::new(Deadline {
        db,
        key: key.into(),
        at,
    }));
    let id = call!(RedisModule_CreateTimer(
        ctx,
        delay,
        Some(deadline_reached),
        data.cast::<c_void>()
    ));
    let old = queues(|q| q.set_timer(db, key, Some((id, at))));
    stop_timer(ctx, old);
}

extern "C" fn deadline_reached(ctx: Ctx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: created by `arm_deadline`; a fired timer hands its data back.
    let deadline = unsafe { Box::from_raw(data.cast::<Deadline>()) };
    let (db, key) = (deadline.db, &deadline.key);
    let ours = QUEUES
        .with(|q| q.borrow().timer(db, key))
        .is_some_and(|(_, at)| at == deadline.at);
    if ours {
        queues(|q| q.set_timer(db, key, None));
    }
    serve(ctx, db, key, Cause::Deadline);
}

fn stop_timer(ctx: Ctx, timer: Option<u64>) {
    let Some(id) = timer else { return };
    let mut data: *mut c_void = ptr::null_mut();
    if call!(RedisModule_StopTimer(ctx, id, &mut data)) == raw::REDISMODULE_OK as c_int
        && !data.is_null()
    {
        // SAFETY: the timer's data, created by `arm_deadline`.
        drop(unsafe { Box::from_raw(data.cast::<Deadline>()) });
    }
}

/// Stops a waiter's timeout timer (its data is the blocked client handle,
/// owned by Redis: nothing to free).
fn stop_wait_timer(ctx: Ctx, timer: Option<u64>) {
    if let Some(id) = timer {
        let mut data: *mut c_void = ptr::null_mut();
        call!(RedisModule_StopTimer(ctx, id, &mut data));
    }
}

fn in_cluster(ctx: Ctx) -> bool {
    api::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0
}

/// Whether the calling context may block: not in MULTI or a script, and
/// on a master (a writable replica never grants to waiters).
pub fn can_block(ctx: Ctx) -> bool {
    let deny = raw::REDISMODULE_CTX_FLAGS_MULTI
        | raw::REDISMODULE_CTX_FLAGS_LUA
        | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
    let flags = api::context_flags(ctx);
    flags & deny == 0 && flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}
