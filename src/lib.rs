//! `lock`: a Redis module with native, token-checked, fenced distributed
//! lock commands (`LOCK.ACQUIRE`, `LOCK.EXTEND`, `LOCK.RELEASE`,
//! `LOCK.CHECK`, `LOCK.INFO`).
//!
//! * [`logic`]: pure Rust (parsing, value encoding, fencing, decisions).
//! * `server` (private): the thin layer over the Redis module API.

pub mod logic;
mod server;

use std::ffi::{c_int, CStr};

use redis_module::commands::KeySpecFlags;
use redis_module::configuration::ConfigurationFlags;
use redis_module::{raw, Context, RedisString, Status};

use server::api::{self, call};
use server::config::{
    apply_load_args, FENCE_CLOCK_OFFSET, FENCE_CLOCK_OFFSET_SETTING as OFFSET, FENCE_MARGIN,
    FENCE_MARGIN_SETTING as MARGIN, MAX_META_LENGTH, MAX_META_LENGTH_SETTING as META_LEN,
    MAX_TOKEN_LENGTH, MAX_TOKEN_LENGTH_SETTING as TOKEN_LEN, MAX_TTL, MAX_TTL_SETTING as TTL,
    MAX_WAITERS, MAX_WAITERS_SETTING as WAITERS,
};
use server::register::{register, Arg, ArgKind, Command};
use server::{commands, fencing, slots, stats, waiters};

/// The module's version, as Cargo has it (`INFO lock`).
pub const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version has a NUL byte"),
    };

/// The same version as one number for `MODULE LIST`, as Redis modules
/// encode it: major × 10000 + minor × 100 + patch (0.3.0 is 300).
const MODULE_VERSION: i32 = {
    const fn number(s: &str) -> i32 {
        let b = s.as_bytes();
        let mut n = 0;
        let mut i = 0;
        while i < b.len() {
            n = n * 10 + (b[i] - b'0') as i32;
            i += 1;
        }
        n
    }
    number(env!("CARGO_PKG_VERSION_MAJOR")) * 10_000
        + number(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + number(env!("CARGO_PKG_VERSION_PATCH"))
};

const KEY: Arg = Arg {
    name: c"key",
    kind: ArgKind::Key,
};
const TOKEN: Arg = Arg {
    name: c"token",
    kind: ArgKind::String,
};

const MILLISECONDS: Arg = Arg {
    name: c"milliseconds",
    kind: ArgKind::Integer,
};

fn commands() -> [Command; 5] {
    [
        Command {
            name: c"lock.acquire",
            handler: commands::acquire,
            // It can block (WAIT), so not `fast`: like BLPOP.
            flags: c"write deny-oom blocking",
            arity: -4,
            key_flags: KeySpecFlags::READ_WRITE | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE,
            summary: c"Acquires or renews a lock held by a token; replies with its fencing token",
            complexity: c"O(1)",
            since: c"0.1.0",
            args: &[
                KEY,
                TOKEN,
                MILLISECONDS,
                Arg {
                    name: c"META",
                    kind: ArgKind::StringOption(c"value"),
                },
                Arg {
                    name: c"WAIT",
                    kind: ArgKind::Option(c"timeout-ms"),
                },
            ],
        },
        Command {
            name: c"lock.extend",
            handler: commands::extend,
            // No deny-oom: renewing allocates nothing, and a holder must be
            // able to keep its lock while the server is short of memory.
            flags: c"write fast",
            arity: 4,
            key_flags: KeySpecFlags::READ_WRITE | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE,
            summary: c"Renews a lock only if the token still holds it; replies with its fencing token",
            complexity: c"O(1)",
            since: c"0.3.0",
            args: &[KEY, TOKEN, MILLISECONDS],
        },
        Command {
            name: c"lock.release",
            handler: commands::release,
            flags: c"write fast",
            arity: 3,
            key_flags: KeySpecFlags::READ_WRITE | KeySpecFlags::ACCESS | KeySpecFlags::DELETE,
            summary: c"Releases a lock if the token holds it",
            complexity: c"O(1)",
            since: c"0.1.0",
            args: &[KEY, TOKEN],
        },
        Command {
            name: c"lock.check",
            handler: commands::check,
            flags: c"readonly fast",
            arity: 3,
            key_flags: KeySpecFlags::READ_ONLY | KeySpecFlags::ACCESS,
            summary: c"Replies with the remaining milliseconds if the token holds the lock",
            complexity: c"O(1)",
            since: c"0.1.0",
            args: &[KEY, TOKEN],
        },
        Command {
            name: c"lock.info",
            handler: commands::info,
            flags: c"readonly fast",
            arity: 2,
            key_flags: KeySpecFlags::READ_ONLY,
            summary: c"Describes a lock for operators: held, TTL, fence, waiters, metadata (never the token)",
            complexity: c"O(1)",
            since: c"0.1.0",
            args: &[KEY],
        },
    ]
}

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    // Checked like CONFIG SET would check them; a bad one fails the load.
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    if let Err(e) = apply_load_args(&args) {
        ctx.log_warning(&format!("lock: {e}"));
        return Status::Err;
    }
    let missing = api::missing();
    if !missing.is_empty() {
        ctx.log_warning(&format!(
            "lock: this server lacks module API functions the module needs: {}",
            missing.join(", ")
        ));
        return Status::Err;
    }
    api::init_shared_strings();
    // A refused acquisition must not invalidate WATCH: signal only real changes.
    call!(RedisModule_SetModuleOptions(
        ctx.ctx,
        raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as c_int
    ));
    for cmd in commands() {
        if let Err(e) = register(ctx.ctx, &cmd) {
            ctx.log_warning(&format!("lock: {e}"));
            return Status::Err;
        }
    }
    call!(RedisModule_RegisterInfoFunc(ctx.ctx, Some(stats::info)));
    if let Err(e) = subscribe(ctx).and_then(|()| slots::watch(ctx.ctx)) {
        ctx.log_warning(&format!("lock: {e}"));
        return Status::Err;
    }
    // The fences issued before a restart are not known: start above them.
    fencing::raise_floor();
    Status::Ok
}

/// Server events: those that free locks with waiters without a LOCK.*
/// command and without per-key events (other removals are found by the
/// waiters' sweep), and role changes.
fn subscribe(ctx: &Context) -> Result<(), &'static str> {
    let ok = raw::REDISMODULE_OK as c_int;
    for id in [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
    ] {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        if call!(RedisModule_SubscribeToServerEvent(
            ctx.ctx,
            event,
            Some(waiters::on_server_event)
        )) != ok
        {
            return Err("could not subscribe to flush, swapdb and role change events");
        }
    }
    Ok(())
}

/// `MODULE UNLOAD` is refused while clients wait or timers are armed: their
/// callbacks live in this library.
fn deinit(ctx: &Context) -> Status {
    if waiters::busy() {
        ctx.log_warning("lock: cannot unload while clients wait for locks");
        return Status::Err;
    }
    Status::Ok
}

#[cfg(not(test))]
macro_rules! allocator {
    () => {
        redis_module::alloc::RedisAlloc
    };
}
// Unit tests run without Redis, so without its allocator.
#[cfg(test)]
macro_rules! allocator {
    () => {
        std::alloc::System
    };
}

redis_module::redis_module! {
    name: "lock",
    version: MODULE_VERSION,
    allocator: (allocator!(), allocator!()),
    data_types: [],
    init: init,
    deinit: deinit,
    configurations: [
        i64: [
            ["max-ttl", &MAX_TTL, TTL.default, TTL.min, TTL.max, ConfigurationFlags::DEFAULT, None],
            ["max-token-length", &MAX_TOKEN_LENGTH, TOKEN_LEN.default, TOKEN_LEN.min, TOKEN_LEN.max, ConfigurationFlags::DEFAULT, None],
            ["max-meta-length", &MAX_META_LENGTH, META_LEN.default, META_LEN.min, META_LEN.max, ConfigurationFlags::DEFAULT, None],
            ["max-waiters", &MAX_WAITERS, WAITERS.default, WAITERS.min, WAITERS.max, ConfigurationFlags::DEFAULT, None],
            ["fence-margin", &FENCE_MARGIN, MARGIN.default, MARGIN.min, MARGIN.max, ConfigurationFlags::DEFAULT, None],
            ["debug-fence-clock-offset", &FENCE_CLOCK_OFFSET, OFFSET.default, OFFSET.min, OFFSET.max, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        // Load arguments are checked and applied by `init`.
        module_args_as_configuration: false,
    ]
}
