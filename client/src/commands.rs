//! The module's commands, built once for both drivers, and the parsing of
//! their replies. Keys, tokens and metadata are bytes: all binary-safe.

use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};

use crate::error::{AckStep, Error, Result};
use crate::options::{ceil_ms, ReplicaAck};

/// `LOCK.ACQUIRE key token ms [META meta] [WAIT wait_ms]`.
pub(crate) fn acquire(
    key: &[u8],
    token: &[u8],
    ttl_ms: u64,
    meta: Option<&[u8]>,
    wait_ms: Option<u64>,
) -> Cmd {
    let mut cmd = redis::cmd("LOCK.ACQUIRE");
    cmd.arg(key).arg(token).arg(ttl_ms);
    if let Some(m) = meta {
        cmd.arg("META").arg(m);
    }
    if let Some(w) = wait_ms {
        cmd.arg("WAIT").arg(w);
    }
    cmd
}

/// `LOCK.EXTEND key token ms`: renews only a lock `token` still holds.
pub(crate) fn extend(key: &[u8], token: &[u8], ttl_ms: u64) -> Cmd {
    let mut cmd = redis::cmd("LOCK.EXTEND");
    cmd.arg(key).arg(token).arg(ttl_ms);
    cmd
}

/// `LOCK.RELEASE key token`.
pub(crate) fn release(key: &[u8], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("LOCK.RELEASE");
    cmd.arg(key).arg(token);
    cmd
}

/// `LOCK.CHECK key token`.
pub(crate) fn check(key: &[u8], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("LOCK.CHECK");
    cmd.arg(key).arg(token);
    cmd
}

/// `LOCK.INFO key`.
pub(crate) fn info(key: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("LOCK.INFO");
    cmd.arg(key);
    cmd
}

/// `WAIT replicas timeout` or `WAITAOF local replicas timeout`.
pub(crate) fn ack(ack: &ReplicaAck) -> Cmd {
    match *ack {
        ReplicaAck::Replicas { replicas, timeout } => {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(replicas).arg(ceil_ms(timeout));
            cmd
        }
        ReplicaAck::Aof {
            local,
            replicas,
            timeout,
        } => {
            let mut cmd = redis::cmd("WAITAOF");
            cmd.arg(u32::from(local))
                .arg(replicas)
                .arg(ceil_ms(timeout));
            cmd
        }
    }
}

/// `lock_cmd` followed by the acknowledgement, as one pipeline.
pub(crate) fn acked(lock_cmd: &Cmd, ack: &ReplicaAck) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.add_command(lock_cmd.clone())
        .add_command(self::ack(ack));
    pipe
}

/// Splits a pipeline's replies into the lock command's and the
/// acknowledgement's.
pub(crate) fn split_acked(
    reply: RedisResult<Vec<Value>>,
) -> (RedisResult<Value>, RedisResult<Value>) {
    match reply {
        Ok(mut v) if v.len() == 2 => {
            let ack = v.pop().unwrap_or(Value::Nil);
            let lock = v.pop().unwrap_or(Value::Nil);
            let ack = match ack {
                Value::ServerError(e) => Err(e.into()),
                other => Ok(other),
            };
            (Ok(lock), ack)
        }
        Ok(v) => {
            let e = unexpected("WAIT", &Value::Array(v));
            (Err(e.clone()), Err(e))
        }
        Err(e) => (Err(e.clone()), Err(e)),
    }
}

/// The outcome of the acknowledgement of `step`: `Ok` when enough
/// replicas acknowledged.
pub(crate) fn check_ack(ack: &ReplicaAck, step: AckStep, reply: RedisResult<Value>) -> Result<()> {
    let n = |v: &Value| match v {
        Value::Int(n) => Some((*n).clamp(0, u32::MAX as i64) as u32),
        _ => None,
    };
    // WAITAOF answers [local, replicas]: a required local fsync that is
    // missing fails even when more replicas than asked acknowledged.
    let (acknowledged, ok) = match (ack, reply?) {
        (ReplicaAck::Replicas { replicas, .. }, v) => match n(&v) {
            Some(a) => (a, a >= *replicas),
            None => return Err(unexpected("WAIT", &v).into()),
        },
        (
            ReplicaAck::Aof {
                local, replicas, ..
            },
            Value::Array(items),
        ) if items.len() == 2 => match (n(&items[0]), n(&items[1])) {
            (Some(l), Some(r)) => {
                let local_ok = !*local || l >= 1;
                let counted = r.min(*replicas).saturating_add(u32::from(*local && l >= 1));
                (counted, local_ok && r >= *replicas)
            }
            _ => return Err(unexpected("WAITAOF", &Value::Array(items)).into()),
        },
        (_, other) => return Err(unexpected("WAITAOF", &other).into()),
    };
    if !ok {
        return Err(Error::NotAcknowledged {
            step,
            acknowledged,
            wanted: ack.wanted(),
        });
    }
    Ok(())
}

fn unexpected(command: &'static str, v: &Value) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        command,
        format!("unexpected reply {v:?}"),
    ))
}

/// The reply to `LOCK.ACQUIRE` or `LOCK.EXTEND`: `Some(fence)` when we hold
/// the lock, `None` when we do not.
pub(crate) fn parse_fence(v: Value) -> RedisResult<Option<u64>> {
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

/// Whether `LOCK.INFO` says the key exists (someone holds it).
pub(crate) fn parse_info_held(v: Value) -> RedisResult<bool> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::ServerError(e) => return Err(e.into()),
        other => return Err(unexpected("LOCK.INFO", &other)),
    };
    for (k, v) in pairs {
        let is_held = matches!(&k, Value::BulkString(b) if b == b"held")
            || matches!(&k, Value::SimpleString(s) if s == "held");
        if is_held {
            return Ok(matches!(v, Value::Int(1)));
        }
    }
    Err(unexpected("LOCK.INFO", &Value::Nil))
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
            args(&acquire(b"k", b"t", 5000, None, None)),
            ["LOCK.ACQUIRE", "k", "t", "5000"]
        );
        assert_eq!(
            args(&acquire(b"k", b"t", 5000, Some(b"h:1"), Some(250))),
            [
                "LOCK.ACQUIRE",
                "k",
                "t",
                "5000",
                "META",
                "h:1",
                "WAIT",
                "250"
            ]
        );
        assert_eq!(
            args(&extend(b"k", b"t", 700)),
            ["LOCK.EXTEND", "k", "t", "700"]
        );
        assert_eq!(args(&release(b"k", b"t")), ["LOCK.RELEASE", "k", "t"]);
        assert_eq!(args(&check(b"k", b"t")), ["LOCK.CHECK", "k", "t"]);
        assert_eq!(args(&info(b"k")), ["LOCK.INFO", "k"]);
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_fence(Value::Int(7)).unwrap(), Some(7));
        assert_eq!(parse_fence(Value::Nil).unwrap(), None);
        assert!(parse_fence(Value::Okay).is_err());
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
        let info = |held| {
            Value::Array(vec![
                Value::BulkString(b"held".to_vec()),
                Value::Int(held),
                Value::BulkString(b"ttl".to_vec()),
                Value::Int(-2),
            ])
        };
        assert!(parse_info_held(info(1)).unwrap());
        assert!(!parse_info_held(info(0)).unwrap());
        assert!(parse_info_held(Value::Int(3)).is_err());
    }

    #[test]
    fn acknowledgements() {
        let ms = Duration::from_millis(250);
        let wait = ReplicaAck::replicas(2, ms);
        assert_eq!(args(&ack(&wait)), ["WAIT", "2", "250"]);
        let aof = ReplicaAck::Aof {
            local: true,
            replicas: 1,
            timeout: ms,
        };
        assert_eq!(args(&ack(&aof)), ["WAITAOF", "1", "1", "250"]);
        assert!(check_ack(&wait, AckStep::Acquire, Ok(Value::Int(2))).is_ok());
        assert!(matches!(
            check_ack(&wait, AckStep::Release, Ok(Value::Int(1))),
            Err(Error::NotAcknowledged {
                step: AckStep::Release,
                acknowledged: 1,
                wanted: 2
            })
        ));
        let aof_reply = |l, r| Ok(Value::Array(vec![Value::Int(l), Value::Int(r)]));
        assert!(check_ack(&aof, AckStep::Acquire, aof_reply(1, 1)).is_ok());
        // More replicas cannot make up for the master's own fsync.
        assert!(check_ack(&aof, AckStep::Acquire, aof_reply(0, 3)).is_err());
        assert!(check_ack(&wait, AckStep::Acquire, Ok(Value::Nil)).is_err());
    }
}
