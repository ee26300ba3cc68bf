//! Cluster slot hand-overs raise the fence floor.
//!
//! A node that starts serving a slot has not issued its fences before, and
//! its last fence may lie below those of the slot's previous owner (a node
//! promoted recently issues fences a margin above its clock). Like a
//! promotion, taking over slots therefore raises the floor (see
//! [`crate::logic::fence`]). Redis has no event for it, so in cluster mode
//! a command filter watches the commands that hand slots over. Outside a
//! cluster no filter is registered and no command pays for it.

use std::ffi::c_int;

use redis_module::raw;

use super::api::{self, call, Ctx};
use super::fencing;
use crate::logic::fence::hands_over_slots;

/// Registers the filter when the server runs in cluster mode.
pub fn watch(ctx: Ctx) -> Result<(), &'static str> {
    if api::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return Ok(());
    }
    let filter = call!(RedisModule_RegisterCommandFilter(
        ctx,
        Some(on_command),
        raw::REDISMODULE_CMDFILTER_NOSELF as c_int
    ));
    if filter.is_null() {
        return Err("could not register the cluster slot filter");
    }
    Ok(())
}

/// Runs before every command in cluster mode: a few comparisons unless the
/// command is `CLUSTER …`.
extern "C" fn on_command(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let argc = call!(RedisModule_CommandFilterArgsCount(fctx));
    if argc < 3 {
        return;
    }
    // The first five arguments tell: `CLUSTER SETSLOT slot NODE id` has
    // five, `CLUSTER ADDSLOTS …` any number.
    let mut args: [&[u8]; 5] = [&[]; 5];
    for (i, arg) in (0..argc).zip(args.iter_mut()) {
        let s = call!(RedisModule_CommandFilterArgGet(fctx, i));
        if s.is_null() {
            return;
        }
        *arg = api::bytes(s);
        if i == 0 && !arg.eq_ignore_ascii_case(b"cluster") {
            return;
        }
    }
    let n = usize::try_from(argc).unwrap_or(0).min(args.len());
    if hands_over_slots(&args[..n]) {
        // Before the command runs; raising the floor is always safe.
        fencing::raise_floor();
    }
}
