//! Command registration with flags, arity, key specs and docs.

use std::ffi::{c_int, CStr};
use std::ptr;

use redis_module::commands::{get_redis_key_spec, BeginSearch, FindKeys, KeySpec, KeySpecFlags};
use redis_module::raw;

use super::api::{call, Ctx};

type Handler = extern "C" fn(Ctx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// One command's registration.
pub struct Command {
    pub name: &'static CStr,
    pub handler: Handler,
    pub flags: &'static CStr,
    /// Redis arity: positive = exact, negative = at least.
    pub arity: c_int,
    pub key_flags: KeySpecFlags,
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
}

const INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
};

/// Creates the command (key at position 1: first=last=step=1) and sets its
/// info: arity (Redis then rejects wrong arity itself), a key spec (for ACL
/// `%R~`/`%W~` and cluster routing), summary and complexity.
pub fn register(ctx: Ctx, cmd: &Command) -> Result<(), String> {
    let name = cmd.name.to_string_lossy();
    let ok = raw::REDISMODULE_OK as c_int;
    if call!(RedisModule_CreateCommand(
        ctx,
        cmd.name.as_ptr(),
        Some(cmd.handler),
        cmd.flags.as_ptr(),
        1,
        1,
        1
    )) != ok
    {
        return Err(format!("could not create command {name}"));
    }
    let command = call!(RedisModule_GetCommand(ctx, cmd.name.as_ptr()));
    if command.is_null() {
        return Err(format!("could not find command {name} after creating it"));
    }
    let key_specs = get_redis_key_spec(vec![KeySpec::new(
        None,
        KeySpecFlags::from_bits_retain(cmd.key_flags.bits()),
        BeginSearch::new_index(1),
        FindKeys::new_range(0, 1, 0),
    )]);
    let mut info = raw::RedisModuleCommandInfo {
        version: &INFO_VERSION,
        summary: cmd.summary.as_ptr(),
        complexity: cmd.complexity.as_ptr(),
        since: c"0.1.0".as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity: cmd.arity,
        key_specs: key_specs.as_ptr().cast_mut(),
        args: ptr::null_mut(),
    };
    if call!(RedisModule_SetCommandInfo(command, &mut info)) != ok {
        return Err(format!("could not set the info of command {name}"));
    }
    Ok(())
}
