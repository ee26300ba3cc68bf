//! The `LOCK.*` command handlers: read the key, let [`crate::logic`]
//! decide, apply the decision, replicate it as plain commands, reply.

use std::ffi::c_int;

use redis_module::raw;

use super::api::{self, Ctx, RStr};
use super::config::{limits, max_waiters};
use super::fencing;
use super::key::{Key, Kind};
use super::stats;
use super::waiters::{self, BlockError};
use crate::logic::args::{parse_acquire, parse_extend, parse_token_only, ArgError};
use crate::logic::decide::{self, could_hold, Standing};
use crate::logic::value::{decode, encode_into, encoded_len, HEADER_LEN};

const WRONGTYPE: &std::ffi::CStr =
    c"WRONGTYPE Operation against a key holding the wrong kind of value";

/// The key holds a type other than a string.
pub struct WrongType;

/// Where `token` stands on the open key. Reads the value only when its
/// length fits a lock of this token.
fn standing_of(key: &Key, token: &[u8]) -> Result<Standing, WrongType> {
    match key.kind() {
        Kind::Empty => Ok(Standing::Free),
        Kind::String if could_hold(key.value_len(), token.len()) => {
            Ok(decide::standing(Some(key.value()), token))
        }
        Kind::String => Ok(Standing::Other),
        Kind::Other => Err(WrongType),
    }
}

fn arg_error(ctx: Ctx, e: ArgError) -> c_int {
    stats::ERRORS.incr();
    match e {
        ArgError::Arity => api::wrong_arity(ctx),
        e => api::reply_error(ctx, &e.to_string()),
    }
}

fn wrong_type(ctx: Ctx) -> c_int {
    stats::ERRORS.incr();
    api::reply_error_static(ctx, WRONGTYPE)
}

/// Makes `token` the holder of the open (free) key with a new fence and
/// `meta`, for `ttl_ms` from now; replicates `SET key value PXAT`. Returns
/// the fence.
/// All or nothing: if the value or its expiry cannot be written, the key
/// is removed again and nothing is replicated.
pub fn grant(
    ctx: Ctx,
    key: &mut Key,
    name: RStr,
    token: &[u8],
    meta: &[u8],
    ttl_ms: u64,
    previous: Option<u64>,
) -> Option<u64> {
    let fence = fencing::next(previous);
    let abs_ms = expiry_at(api::now_us(), ttl_ms);
    let written = key.set_value(encoded_len(token.len(), meta.len()), |buf| {
        encode_into(buf, fence, token, meta)
    }) && key.set_abs_expire(abs_ms);
    if !written {
        // The key was free before: never leave a lock without expiry.
        key.delete();
        return None;
    }
    fencing::issued(fence);
    api::replicate_set(ctx, name, key.value(), abs_ms);
    api::signal_modified(ctx, name);
    api::notify(ctx, raw::REDISMODULE_NOTIFY_STRING as c_int, c"set", name);
    api::notify(
        ctx,
        raw::REDISMODULE_NOTIFY_GENERIC as c_int,
        c"expire",
        name,
    );
    Some(fence)
}

/// Absolute expiry in Unix ms for a lock taken at `now_us` for `ttl_ms`.
fn expiry_at(now_us: u64, ttl_ms: u64) -> i64 {
    let ms = (now_us / 1000).saturating_add(ttl_ms);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn reply_fence(ctx: Ctx, fence: u64) -> c_int {
    api::reply_i64(ctx, i64::try_from(fence).unwrap_or(i64::MAX))
}

/// `LOCK.ACQUIRE key token milliseconds [META value] [WAIT timeout-ms]`
pub extern "C" fn acquire(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    let args = api::argv(argv, argc);
    let [_, name, rest @ ..] = args else {
        return arg_error(ctx, ArgError::Arity);
    };
    let req = match parse_acquire(rest.iter().map(|s| api::bytes(*s)), &limits()) {
        Ok(req) => req,
        Err(e) => return arg_error(ctx, e),
    };
    let mut key = Key::write(ctx, *name);
    let standing = match standing_of(&key, req.token) {
        Ok(s) => s,
        Err(WrongType) => return wrong_type(ctx),
    };
    // Only a free lock can be promised to waiters: ask the queue only then.
    let queued = standing == Standing::Free
        && waiters::waiting(api::selected_db(ctx), api::bytes(*name)) > 0;
    match decide::acquire(standing, queued) {
        decide::Acquire::Grant => {
            match grant(ctx, &mut key, *name, req.token, req.meta, req.ttl_ms, None) {
                Some(fence) => {
                    stats::ACQUIRED.incr();
                    reply_fence(ctx, fence)
                }
                None => {
                    stats::ERRORS.incr();
                    api::reply_error_static(ctx, c"ERR the lock could not be written")
                }
            }
        }
        decide::Acquire::Renew { fence } => {
            if !renew(ctx, &mut key, *name, req.ttl_ms) {
                stats::ERRORS.incr();
                return api::reply_error_static(ctx, c"ERR the lock could not be renewed");
            }
            stats::RENEWED.incr();
            reply_fence(ctx, fence)
        }
        decide::Acquire::Refuse => match req.wait_ms {
            Some(wait_ms) if waiters::can_block(ctx) => {
                let deadline = key.abs_expire();
                drop(key);
                let blocked = waiters::block(ctx, *name, &req, wait_ms, deadline, max_waiters());
                match blocked {
                    Ok(()) => raw::REDISMODULE_OK as c_int,
                    Err(BlockError::Full(max)) => {
                        stats::ERRORS.incr();
                        let msg = format!(
                            "ERR too many clients wait for this lock (lock.max-waiters is {max})"
                        );
                        api::reply_error(ctx, &msg)
                    }
                }
            }
            _ => {
                stats::REFUSED.incr();
                api::reply_null(ctx)
            }
        },
    }
}

/// `LOCK.EXTEND key token milliseconds`: renews the caller's own lock and
/// replies with its fence; null when the token does not hold it. Never
/// creates a lock, so a holder whose lock lapsed cannot take it back
/// unnoticed.
pub extern "C" fn extend(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    let args = api::argv(argv, argc);
    let [_, name, rest @ ..] = args else {
        return arg_error(ctx, ArgError::Arity);
    };
    let req = match parse_extend(rest.iter().map(|s| api::bytes(*s)), &limits()) {
        Ok(req) => req,
        Err(e) => return arg_error(ctx, e),
    };
    let mut key = Key::write(ctx, *name);
    match standing_of(&key, req.token) {
        Err(WrongType) => wrong_type(ctx),
        Ok(Standing::Holds { fence }) => {
            if !renew(ctx, &mut key, *name, req.ttl_ms) {
                stats::ERRORS.incr();
                return api::reply_error_static(ctx, c"ERR the lock could not be renewed");
            }
            stats::RENEWED.incr();
            reply_fence(ctx, fence)
        }
        Ok(_) => {
            stats::EXTEND_MISSED.incr();
            api::reply_null(ctx)
        }
    }
}

/// Resets the time to live of the caller's own lock; replicates
/// `PEXPIREAT key deadline`.
fn renew(ctx: Ctx, key: &mut Key, name: RStr, ttl_ms: u64) -> bool {
    let abs_ms = expiry_at(api::now_us(), ttl_ms);
    if !key.set_abs_expire(abs_ms) {
        return false;
    }
    api::replicate_pexpireat(ctx, name, abs_ms);
    waiters::deadline_moved(ctx, name, abs_ms);
    api::signal_modified(ctx, name);
    api::notify(
        ctx,
        raw::REDISMODULE_NOTIFY_GENERIC as c_int,
        c"expire",
        name,
    );
    true
}

/// Releases the open key if `token` holds it (and, when given, with this
/// fence): hands it to the next waiter or deletes it. True if released.
pub fn release_if_held(
    ctx: Ctx,
    key: &mut Key,
    name: RStr,
    token: &[u8],
    fence: Option<u64>,
) -> Result<bool, WrongType> {
    let held = match standing_of(key, token)? {
        Standing::Holds { fence: held } => fence.is_none_or(|f| f == held).then_some(held),
        _ => None,
    };
    let Some(held) = held else {
        return Ok(false);
    };
    if waiters::hand_off(ctx, key, name, Some(held)) {
        return Ok(true);
    }
    if !key.delete() {
        return Ok(false);
    }
    api::replicate_del(ctx, name);
    api::signal_modified(ctx, name);
    api::notify(ctx, raw::REDISMODULE_NOTIFY_GENERIC as c_int, c"del", name);
    Ok(true)
}

/// The `key token` arguments of LOCK.RELEASE and LOCK.CHECK.
fn key_and_token<'a>(argv: *mut RStr, argc: c_int) -> Result<(&'a RStr, &'a [u8]), ArgError> {
    let [_, name, rest @ ..] = api::argv(argv, argc) else {
        return Err(ArgError::Arity);
    };
    let token = parse_token_only(rest.iter().map(|s| api::bytes(*s)), &limits())?;
    Ok((name, token))
}

/// `LOCK.RELEASE key token`
pub extern "C" fn release(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    let (name, token) = match key_and_token(argv, argc) {
        Ok(parsed) => parsed,
        Err(e) => return arg_error(ctx, e),
    };
    let mut key = Key::write(ctx, *name);
    match release_if_held(ctx, &mut key, *name, token, None) {
        Err(WrongType) => wrong_type(ctx),
        Ok(true) => {
            stats::RELEASED.incr();
            api::reply_i64(ctx, 1)
        }
        Ok(false) => {
            stats::RELEASE_MISSED.incr();
            api::reply_i64(ctx, 0)
        }
    }
}

/// `LOCK.CHECK key token`
pub extern "C" fn check(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    let (name, token) = match key_and_token(argv, argc) {
        Ok(parsed) => parsed,
        Err(e) => return arg_error(ctx, e),
    };
    stats::CHECKS.incr();
    let key = Key::read(ctx, *name);
    match standing_of(&key, token) {
        Err(WrongType) => wrong_type(ctx),
        Ok(Standing::Holds { .. }) => {
            let remaining = match key.abs_expire() {
                None => -1,
                Some(at) => at.saturating_sub((api::now_us() / 1000) as i64).max(1),
            };
            api::reply_i64(ctx, remaining)
        }
        Ok(_) => api::reply_i64(ctx, 0),
    }
}

/// `LOCK.INFO key`: for operators; never reveals the token.
pub extern "C" fn info(ctx: Ctx, argv: *mut RStr, argc: c_int) -> c_int {
    let args = api::argv(argv, argc);
    let [_, name] = args else {
        return arg_error(ctx, ArgError::Arity);
    };
    let key = Key::read(ctx, *name);
    let (held, lock) = match key.kind() {
        Kind::Other => return wrong_type(ctx),
        Kind::Empty => (false, None),
        // Only a value long enough to be a lock is read.
        Kind::String if key.value_len() > HEADER_LEN => (true, decode(key.value())),
        Kind::String => (true, None),
    };
    let ttl = match held.then(|| key.abs_expire()) {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) => at.saturating_sub((api::now_us() / 1000) as i64).max(1),
    };
    let waiting = waiters::waiting(api::selected_db(ctx), api::bytes(*name));
    api::reply_map(ctx, 6);
    api::reply_str(ctx, c"held");
    api::reply_i64(ctx, i64::from(held));
    api::reply_str(ctx, c"foreign");
    api::reply_i64(ctx, i64::from(held && lock.is_none()));
    api::reply_str(ctx, c"ttl");
    api::reply_i64(ctx, ttl);
    api::reply_str(ctx, c"fence");
    match lock {
        Some(lock) => reply_fence(ctx, lock.fence),
        None => api::reply_null(ctx),
    };
    api::reply_str(ctx, c"waiters");
    api::reply_i64(ctx, i64::try_from(waiting).unwrap_or(i64::MAX));
    api::reply_str(ctx, c"meta");
    match lock.filter(|lock| !lock.meta.is_empty()) {
        Some(lock) => api::reply_bytes(ctx, lock.meta),
        None => api::reply_null(ctx),
    }
}
