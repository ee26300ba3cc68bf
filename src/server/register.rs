//! Command registration with flags, arity, key specs and docs.

use std::ffi::{c_int, CStr};
use std::ptr;

use redis_module::commands::{get_redis_key_spec, BeginSearch, FindKeys, KeySpec, KeySpecFlags};
use redis_module::raw;

use super::api::{call, Ctx};

type Handler = extern "C" fn(Ctx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// What an argument is, for `COMMAND DOCS` (and so `redis-cli HELP`).
#[derive(Clone, Copy)]
pub enum ArgKind {
    Key,
    String,
    Integer,
    /// An optional `TOKEN value` pair with an integer value: the token,
    /// then its value's name.
    Option(&'static CStr),
    /// The same with a string value.
    StringOption(&'static CStr),
}

/// One documented argument.
#[derive(Clone, Copy)]
pub struct Arg {
    pub name: &'static CStr,
    pub kind: ArgKind,
}

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
    /// The module version that added the command.
    pub since: &'static CStr,
    /// Arguments after the command name.
    pub args: &'static [Arg],
}

fn blank_arg() -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name: ptr::null(),
        type_: 0,
        key_spec_index: -1,
        token: ptr::null(),
        summary: ptr::null(),
        since: ptr::null(),
        flags: 0,
        deprecated_since: ptr::null(),
        subargs: ptr::null_mut(),
        display_text: ptr::null(),
    }
}

/// The argument table for `RedisModule_SetCommandInfo`: each `Option`
/// becomes an optional block of its token and its value; every array ends
/// with a zeroed entry. `values` owns the blocks' inner arrays, which must
/// outlive the call (Redis copies them).
fn arg_table(
    args: &[Arg],
    values: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> Vec<raw::RedisModuleCommandArg> {
    let mut out: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
    for arg in args {
        let mut entry = blank_arg();
        entry.name = arg.name.as_ptr();
        match arg.kind {
            ArgKind::Key => {
                entry.type_ = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY;
                entry.key_spec_index = 0;
            }
            ArgKind::String => {
                entry.type_ = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING;
            }
            ArgKind::Integer => {
                entry.type_ = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER;
            }
            ArgKind::Option(value) | ArgKind::StringOption(value) => {
                let mut inner = blank_arg();
                inner.name = value.as_ptr();
                inner.type_ = match arg.kind {
                    ArgKind::StringOption(_) => {
                        raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING
                    }
                    _ => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                };
                let mut block = vec![inner, blank_arg()];
                entry.type_ = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK;
                entry.token = arg.name.as_ptr();
                entry.flags = raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int;
                entry.subargs = block.as_mut_ptr();
                // Moving the Vec into `values` keeps its heap buffer in place.
                values.push(block);
            }
        }
        out.push(entry);
    }
    out.push(blank_arg());
    out
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
        since: cmd.since.as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity: cmd.arity,
        key_specs: key_specs.as_ptr().cast_mut(),
        args: ptr::null_mut(),
    };
    let mut blocks = Vec::new();
    let mut args = arg_table(cmd.args, &mut blocks);
    info.args = args.as_mut_ptr();
    if call!(RedisModule_SetCommandInfo(command, &mut info)) != ok {
        return Err(format!("could not set the info of command {name}"));
    }
    Ok(())
}
