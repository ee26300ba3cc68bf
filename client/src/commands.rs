//! The module's three commands, built once for both drivers, and the parsing
//! of their replies.

use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

use crate::error::{Error, Result};

/// `LOCK.ACQUIRE key token ms [WAIT wait_ms]`.
pub(crate) fn acquire(key: &str, token: &str, ttl_ms: u64, wait_ms: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("LOCK.ACQUIRE");
    cmd.arg(key).arg(token).arg(ttl_ms);
    if let Some(w) = wait_ms {
        cmd.arg("WAIT").arg(w);
    }
    cmd
}

/// `LOCK.RELEASE key token`.
pub(crate) fn release(key: &str, token: &str) -> Cmd {
    let mut cmd = redis::cmd("LOCK.RELEASE");
    cmd.arg(key).arg(token);
    cmd
}

/// `LOCK.CHECK key token`.
pub(crate) fn check(key: &str, token: &str) -> Cmd {
    let mut cmd = redis::cmd("LOCK.CHECK");
    cmd.arg(key).arg(token);
    cmd
}

fn unexpected(command: &'static str, v: &Value) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        command,
        format!("unexpected reply {v:?}"),
    ))
}

/// The reply to `LOCK.ACQUIRE`: `Some(fence)` when we hold the lock, `None`
/// when someone else does.
pub(crate) fn parse_acquire(v: Value) -> RedisResult<Option<u64>> {
    match v {
        Value::Int(n) if n >= 1 => Ok(Some(n as u64)),
        Value::Nil => Ok(None),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected("LOCK.ACQUIRE", &other)),
    }
}

/// The reply to `LOCK.RELEASE`: true when released.
pub(crate) fn parse_release(v: Value) -> RedisResult<bool> {
    match v {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected("LOCK.RELEASE", &other)),
    }
}

/// The reply to `LOCK.CHECK`: the remaining time to live when the token holds
/// the lock (`Duration::MAX` for a lock without expiry), `None` otherwise.
pub(crate) fn parse_check(v: Value) -> RedisResult<Option<Duration>> {
    match v {
        Value::Int(n) if n >= 1 => Ok(Some(Duration::from_millis(n as u64))),
        Value::Int(-1) => Ok(Some(Duration::MAX)),
        Value::Int(0) => Ok(None),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected("LOCK.CHECK", &other)),
    }
}

/// `unlock()`'s result from the reply to `LOCK.RELEASE`.
pub(crate) fn unlock_result(reply: RedisResult<Value>) -> Result<()> {
    match reply.and_then(parse_release)? {
        true => Ok(()),
        false => Err(Error::UnlockFailed),
    }
}

/// `ttl()`'s result from the reply to `LOCK.CHECK`.
pub(crate) fn ttl_result(reply: RedisResult<Value>) -> Result<Option<Duration>> {
    Ok(reply.and_then(parse_check)?)
}

/// A command's arguments as strings, for tests.
#[cfg(test)]
pub(crate) fn args(cmd: &Cmd) -> Vec<String> {
    cmd.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            _ => "<cursor>".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_commands() {
        assert_eq!(
            args(&acquire("k", "t", 5000, None)),
            ["LOCK.ACQUIRE", "k", "t", "5000"]
        );
        assert_eq!(
            args(&acquire("k", "t", 5000, Some(250))),
            ["LOCK.ACQUIRE", "k", "t", "5000", "WAIT", "250"]
        );
        assert_eq!(args(&release("k", "t")), ["LOCK.RELEASE", "k", "t"]);
        assert_eq!(args(&check("k", "t")), ["LOCK.CHECK", "k", "t"]);
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_acquire(Value::Int(7)).unwrap(), Some(7));
        assert_eq!(parse_acquire(Value::Nil).unwrap(), None);
        assert!(parse_acquire(Value::Okay).is_err());
        assert!(parse_release(Value::Int(1)).unwrap());
        assert!(!parse_release(Value::Int(0)).unwrap());
        assert_eq!(
            parse_check(Value::Int(1500)).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_check(Value::Int(-1)).unwrap(), Some(Duration::MAX));
        assert_eq!(parse_check(Value::Int(0)).unwrap(), None);
        assert!(matches!(
            unlock_result(Ok(Value::Int(0))),
            Err(Error::UnlockFailed)
        ));
    }
}
