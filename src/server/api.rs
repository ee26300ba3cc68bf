//! Small wrappers over the raw module API used on the hot path.
//!
//! The function pointers are filled by `RedisModule_Init`; [`missing`]
//! checks at load time that every one used here exists, so the calls below
//! cannot meet a null pointer.

use std::ffi::{c_char, c_int, CStr};
use std::slice;
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::raw;

pub type Ctx = *mut raw::RedisModuleCtx;
pub type RStr = *mut raw::RedisModuleString;

/// Calls a module API function that [`missing`] has checked at load.
macro_rules! call {
    ($f:ident($($arg:expr),* $(,)?)) => {
        // SAFETY: checked non-null at load (see `missing`).
        unsafe { (raw::$f.unwrap_unchecked())($($arg),*) }
    };
}
pub(crate) use call;

/// The API functions this module needs that the server does not offer.
pub fn missing() -> Vec<&'static str> {
    macro_rules! check {
        ($($f:ident),* $(,)?) => {{
            let mut v = Vec::new();
            // SAFETY: read on the main thread at load, after RedisModule_Init.
            $(if unsafe { raw::$f }.is_none() { v.push(stringify!($f)); })*
            v
        }};
    }
    check!(
        RedisModule_StringPtrLen,
        RedisModule_ReplyWithLongLong,
        RedisModule_ReplyWithNull,
        RedisModule_ReplyWithError,
        RedisModule_WrongArity,
        RedisModule_OpenKey,
        RedisModule_CloseKey,
        RedisModule_KeyType,
        RedisModule_ValueLength,
        RedisModule_StringDMA,
        RedisModule_StringTruncate,
        RedisModule_SetAbsExpire,
        RedisModule_GetAbsExpire,
        RedisModule_DeleteKey,
        RedisModule_Replicate,
        RedisModule_SignalModifiedKey,
        RedisModule_NotifyKeyspaceEvent,
        RedisModule_SetModuleOptions,
        RedisModule_CreateCommand,
        RedisModule_GetCommand,
        RedisModule_SetCommandInfo,
        RedisModule_RegisterInfoFunc,
        RedisModule_InfoAddSection,
        RedisModule_InfoAddFieldULongLong,
        RedisModule_GetSelectedDb,
        RedisModule_GetContextFlags,
        RedisModule_ReplyWithMap,
        RedisModule_ReplyWithSimpleString,
        RedisModule_ReplyWithStringBuffer,
        RedisModule_RegisterCommandFilter,
        RedisModule_CommandFilterArgsCount,
        RedisModule_CommandFilterArgGet,
        RedisModule_BlockClient,
        RedisModule_UnblockClient,
        RedisModule_SetDisconnectCallback,
        RedisModule_GetBlockedClientPrivateData,
        RedisModule_GetBlockedClientHandle,
        RedisModule_CreateTimer,
        RedisModule_StopTimer,
        RedisModule_CreateString,
        RedisModule_FreeString,
        RedisModule_SelectDb,
        RedisModule_SubscribeToKeyspaceEvents,
        RedisModule_SubscribeToServerEvent,
        RedisModule_Call,
        RedisModule_FreeCallReply,
        RedisModule_AvoidReplicaTraffic,
        RedisModule_InfoAddFieldCString,
    )
}

/// The bytes of a module string (binary-safe).
pub fn bytes<'a>(s: RStr) -> &'a [u8] {
    let mut len = 0usize;
    let ptr = call!(RedisModule_StringPtrLen(s, &mut len));
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: Redis returns the string's buffer and length; the argument
    // vector outlives the command call that borrows it.
    unsafe { slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

/// The command's arguments as raw module strings.
pub fn argv<'a>(argv: *mut RStr, argc: c_int) -> &'a [RStr] {
    match usize::try_from(argc) {
        Ok(n) if !argv.is_null() && n > 0 => {
            // SAFETY: Redis passes `argc` valid pointers.
            unsafe { slice::from_raw_parts(argv, n) }
        }
        _ => &[],
    }
}

pub fn reply_i64(ctx: Ctx, v: i64) -> c_int {
    call!(RedisModule_ReplyWithLongLong(ctx, v))
}

/// Starts a map reply of `len` pairs (an array of 2×len on RESP2).
pub fn reply_map(ctx: Ctx, len: i64) -> c_int {
    call!(RedisModule_ReplyWithMap(ctx, len as std::ffi::c_long))
}

pub fn reply_str(ctx: Ctx, s: &CStr) -> c_int {
    call!(RedisModule_ReplyWithSimpleString(ctx, s.as_ptr()))
}

/// Replies with a bulk string of arbitrary bytes.
pub fn reply_bytes(ctx: Ctx, bytes: &[u8]) -> c_int {
    call!(RedisModule_ReplyWithStringBuffer(
        ctx,
        bytes.as_ptr().cast(),
        bytes.len()
    ))
}

pub fn reply_null(ctx: Ctx) -> c_int {
    call!(RedisModule_ReplyWithNull(ctx))
}

/// Replies with an error; `msg` is `"ERR ..."`-style text without NULs.
pub fn reply_error(ctx: Ctx, msg: &str) -> c_int {
    let mut buf = Vec::with_capacity(msg.len() + 1);
    buf.extend(msg.bytes().filter(|b| *b != 0));
    buf.push(0);
    call!(RedisModule_ReplyWithError(
        ctx,
        buf.as_ptr().cast::<c_char>()
    ))
}

/// Replies with a static error.
pub fn reply_error_static(ctx: Ctx, msg: &CStr) -> c_int {
    call!(RedisModule_ReplyWithError(ctx, msg.as_ptr()))
}

pub fn wrong_arity(ctx: Ctx) -> c_int {
    call!(RedisModule_WrongArity(ctx))
}

/// Invalidates `WATCH`es on the key (only called on real changes).
pub fn signal_modified(ctx: Ctx, key: RStr) {
    call!(RedisModule_SignalModifiedKey(ctx, key));
}

/// Fires a keyspace notification like the plain commands would.
pub fn notify(ctx: Ctx, class: c_int, event: &CStr, key: RStr) {
    call!(RedisModule_NotifyKeyspaceEvent(
        ctx,
        class,
        event.as_ptr(),
        key
    ));
}

/// A module string owned by the module, freed on drop.
pub struct OwnedString(RStr);

impl OwnedString {
    pub fn new(bytes: &[u8]) -> OwnedString {
        OwnedString(call!(RedisModule_CreateString(
            std::ptr::null_mut(),
            bytes.as_ptr().cast::<c_char>(),
            bytes.len()
        )))
    }

    pub fn ptr(&self) -> RStr {
        self.0
    }
}

impl Drop for OwnedString {
    fn drop(&mut self) {
        call!(RedisModule_FreeString(std::ptr::null_mut(), self.0));
    }
}

/// `PXAT`, created at load and kept: replication shares it instead of
/// allocating a copy per call.
static PXAT: AtomicPtr<raw::RedisModuleString> = AtomicPtr::new(std::ptr::null_mut());

/// Creates the shared strings; called once at load.
pub fn init_shared_strings() {
    let pxat = OwnedString::new(b"PXAT");
    PXAT.store(pxat.0, Relaxed);
    std::mem::forget(pxat);
}

/// Propagates `SET key value PXAT abs_ms` to replicas and the AOF.
pub fn replicate_set(ctx: Ctx, key: RStr, value: &[u8], abs_ms: i64) {
    call!(RedisModule_Replicate(
        ctx,
        c"SET".as_ptr(),
        c"sbsl".as_ptr(),
        key,
        value.as_ptr().cast::<c_char>(),
        value.len(),
        PXAT.load(Relaxed),
        abs_ms as std::ffi::c_longlong,
    ));
}

/// Propagates `PEXPIREAT key abs_ms`.
pub fn replicate_pexpireat(ctx: Ctx, key: RStr, abs_ms: i64) {
    call!(RedisModule_Replicate(
        ctx,
        c"PEXPIREAT".as_ptr(),
        c"sl".as_ptr(),
        key,
        abs_ms as std::ffi::c_longlong,
    ));
}

/// Propagates `DEL key`.
pub fn replicate_del(ctx: Ctx, key: RStr) {
    call!(RedisModule_Replicate(
        ctx,
        c"DEL".as_ptr(),
        c"s".as_ptr(),
        key
    ));
}

/// In a cluster: whether this node serves the key's slot now (not migrated
/// away, not migrating without the key). The server's own routing check
/// answers: a module call on a key of a slot served elsewhere is refused.
pub fn slot_is_local(ctx: Ctx, key: RStr) -> bool {
    let reply = call!(RedisModule_Call(
        ctx,
        c"EXISTS".as_ptr(),
        c"s".as_ptr(),
        key
    ));
    if reply.is_null() {
        return false;
    }
    call!(RedisModule_FreeCallReply(reply));
    true
}

/// The database the calling client has selected.
pub fn selected_db(ctx: Ctx) -> i32 {
    call!(RedisModule_GetSelectedDb(ctx))
}

/// The context flags (`REDISMODULE_CTX_FLAGS_*`).
pub fn context_flags(ctx: Ctx) -> u32 {
    call!(RedisModule_GetContextFlags(ctx)) as u32
}

/// Whether a timer or a server event may write to the keyspace now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteGate {
    /// A master, not loading, writes not paused.
    Open,
    /// Writes are paused (`CLIENT PAUSE`, `FAILOVER`, `CLUSTER FAILOVER`)
    /// or the dataset is loading: try again shortly. During a pause Redis
    /// keeps expired keys in place, and writing over one aborts the server.
    Later,
    /// A replica: its data comes from its master only.
    Never,
}

/// Commands are held back by Redis while writes are paused; timers and
/// events are not, so they ask here before writing.
pub fn write_gate(ctx: Ctx) -> WriteGate {
    let flags = context_flags(ctx);
    if flags & raw::REDISMODULE_CTX_FLAGS_MASTER == 0 {
        WriteGate::Never
    } else if flags & raw::REDISMODULE_CTX_FLAGS_LOADING != 0 || writes_paused(ctx) {
        WriteGate::Later
    } else {
        WriteGate::Open
    }
}

/// Whether writes are paused. Redis ends a pause when its cached clock
/// passes the pause's end, and that clock is refreshed only by commands and
/// by its 100 ms cron: a call through the server refreshes it, so deferred
/// work resumes within a millisecond of the pause's end, not up to 100 ms
/// later. This runs only while a pause is seen.
fn writes_paused(ctx: Ctx) -> bool {
    if call!(RedisModule_AvoidReplicaTraffic()) == 0 {
        return false;
    }
    let reply = call!(RedisModule_Call(ctx, c"PING".as_ptr(), c"".as_ptr()));
    if !reply.is_null() {
        call!(RedisModule_FreeCallReply(reply));
    }
    call!(RedisModule_AvoidReplicaTraffic()) != 0
}

/// Wall-clock time in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
