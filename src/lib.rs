//! `lock`: a Redis module with native, token-checked, fenced distributed
//! lock commands (`LOCK.ACQUIRE`, `LOCK.RELEASE`, `LOCK.CHECK`).
//!
//! * [`logic`]: pure Rust (parsing, value encoding, fencing, decisions).
//! * `server` (private): the thin layer over the Redis module API.

pub mod logic;
mod server;

use std::ffi::c_int;

use redis_module::commands::KeySpecFlags;
use redis_module::configuration::ConfigurationFlags;
use redis_module::{raw, Context, RedisString, Status};

use server::api::{self, call};
use server::config::{
    DEFAULT_MAX_TOKEN_LENGTH, DEFAULT_MAX_TTL, DEFAULT_MAX_WAITERS, MAX_MAX_TOKEN_LENGTH,
    MAX_MAX_TTL, MAX_MAX_WAITERS, MAX_TOKEN_LENGTH, MAX_TTL, MAX_WAITERS,
};
use server::register::{register, Command};
use server::{commands, stats, waiters};

fn commands() -> [Command; 4] {
    [
        Command {
            name: c"lock.acquire",
            handler: commands::acquire,
            flags: c"write deny-oom fast",
            arity: -4,
            key_flags: KeySpecFlags::READ_WRITE | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE,
            summary: c"Acquires or renews a lock held by a token; replies with its fencing token",
            complexity: c"O(1)",
        },
        Command {
            name: c"lock.release",
            handler: commands::release,
            flags: c"write fast",
            arity: 3,
            key_flags: KeySpecFlags::READ_WRITE | KeySpecFlags::ACCESS | KeySpecFlags::DELETE,
            summary: c"Releases a lock if the token holds it",
            complexity: c"O(1)",
        },
        Command {
            name: c"lock.check",
            handler: commands::check,
            flags: c"readonly fast",
            arity: 3,
            key_flags: KeySpecFlags::READ_ONLY | KeySpecFlags::ACCESS,
            summary: c"Replies with the remaining milliseconds if the token holds the lock",
            complexity: c"O(1)",
        },
        Command {
            name: c"lock.info",
            handler: commands::info,
            flags: c"readonly fast",
            arity: 2,
            key_flags: KeySpecFlags::READ_ONLY,
            summary: c"Describes a lock for operators: held, TTL, fence, waiters (never the token)",
            complexity: c"O(1)",
        },
    ]
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
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
    if let Err(e) = subscribe(ctx) {
        ctx.log_warning(&format!("lock: {e}"));
        return Status::Err;
    }
    Status::Ok
}

/// Server events that free locks with waiters without a LOCK.* command and
/// without per-key events (other removals are found by the waiters' sweep).
fn subscribe(ctx: &Context) -> Result<(), &'static str> {
    let ok = raw::REDISMODULE_OK as c_int;
    for id in [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_SWAPDB,
    ] {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        if call!(RedisModule_SubscribeToServerEvent(
            ctx.ctx,
            event,
            Some(waiters::on_server_event)
        )) != ok
        {
            return Err("could not subscribe to flush and swapdb events");
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
    version: 1,
    allocator: (allocator!(), allocator!()),
    data_types: [],
    init: init,
    deinit: deinit,
    configurations: [
        i64: [
            ["max-ttl", &MAX_TTL, DEFAULT_MAX_TTL, 1, MAX_MAX_TTL, ConfigurationFlags::DEFAULT, None],
            ["max-token-length", &MAX_TOKEN_LENGTH, DEFAULT_MAX_TOKEN_LENGTH, 1, MAX_MAX_TOKEN_LENGTH, ConfigurationFlags::DEFAULT, None],
            ["max-waiters", &MAX_WAITERS, DEFAULT_MAX_WAITERS, 0, MAX_MAX_WAITERS, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
