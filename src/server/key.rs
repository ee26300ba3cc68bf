//! An open key, closed on drop.

use std::ffi::c_int;
use std::slice;

use redis_module::raw;

use super::api::{call, Ctx, RStr};

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Empty,
    String,
    Other,
}

/// A key opened through the module API. Opened for reading, a missing key
/// is a null handle: every method then answers as for an empty key.
pub struct Key {
    ptr: *mut raw::RedisModuleKey,
}

impl Key {
    /// Opens `name` for reading only.
    pub fn read(ctx: Ctx, name: RStr) -> Key {
        Key::open(ctx, name, raw::REDISMODULE_READ as c_int)
    }

    /// Opens `name` for reading and writing. Nothing is signalled unless
    /// the caller signals it (the module sets NO_IMPLICIT_SIGNAL_MODIFIED).
    pub fn write(ctx: Ctx, name: RStr) -> Key {
        Key::open(
            ctx,
            name,
            (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int,
        )
    }

    fn open(ctx: Ctx, name: RStr, mode: c_int) -> Key {
        let ptr = call!(RedisModule_OpenKey(ctx, name, mode)).cast::<raw::RedisModuleKey>();
        Key { ptr }
    }

    pub fn kind(&self) -> Kind {
        if self.ptr.is_null() {
            return Kind::Empty;
        }
        match call!(RedisModule_KeyType(self.ptr)) as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => Kind::Empty,
            raw::REDISMODULE_KEYTYPE_STRING => Kind::String,
            _ => Kind::Other,
        }
    }

    /// Length of the string value, read without touching the value.
    pub fn value_len(&self) -> usize {
        if self.ptr.is_null() {
            return 0;
        }
        call!(RedisModule_ValueLength(self.ptr))
    }

    /// The string value. Redis converts a compact (embstr/int) encoding to
    /// raw in place to hand out the buffer; bytes, TTL and WATCH state stay.
    pub fn value(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        let mut len = 0usize;
        let ptr = call!(RedisModule_StringDMA(
            self.ptr,
            &mut len,
            raw::REDISMODULE_READ as c_int
        ));
        if ptr.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: the buffer lives as long as the key is open and unchanged;
        // the borrow of `self` ensures no write happens meanwhile.
        unsafe { slice::from_raw_parts(ptr.cast::<u8>(), len) }
    }

    /// Replaces the value with `len` bytes that `fill` writes. The string
    /// is raw-encoded, so later reads hand out its buffer without
    /// re-encoding (a compact embstr value would be copied and re-stored on
    /// every read).
    pub fn set_value(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        if self.ptr.is_null()
            || call!(RedisModule_StringTruncate(self.ptr, len)) != raw::REDISMODULE_OK as c_int
        {
            return false;
        }
        let mut got = 0usize;
        let ptr = call!(RedisModule_StringDMA(
            self.ptr,
            &mut got,
            raw::REDISMODULE_WRITE as c_int
        ));
        if ptr.is_null() || got != len {
            return false;
        }
        // SAFETY: DMA write access to exactly `len` bytes.
        fill(unsafe { slice::from_raw_parts_mut(ptr.cast::<u8>(), len) });
        true
    }

    /// Sets the absolute expiry (Unix time in ms).
    pub fn set_abs_expire(&mut self, abs_ms: i64) -> bool {
        !self.ptr.is_null()
            && call!(RedisModule_SetAbsExpire(self.ptr, abs_ms)) == raw::REDISMODULE_OK as c_int
    }

    /// The absolute expiry (Unix ms), `None` when the key has none.
    pub fn abs_expire(&self) -> Option<i64> {
        if self.ptr.is_null() {
            return None;
        }
        let at = call!(RedisModule_GetAbsExpire(self.ptr));
        (at != raw::REDISMODULE_NO_EXPIRE as i64).then_some(at)
    }

    pub fn delete(&mut self) -> bool {
        !self.ptr.is_null()
            && call!(RedisModule_DeleteKey(self.ptr)) == raw::REDISMODULE_OK as c_int
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            call!(RedisModule_CloseKey(self.ptr));
        }
    }
}
