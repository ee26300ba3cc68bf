//! The crate's error type.

use std::fmt;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong.
///
/// One convention throughout: a call that would give you a lock fails with
/// [`Error::NotObtained`] when someone else holds it (after all retries);
/// a call on a lock you had fails with [`Error::NotHeld`] when it is no
/// longer yours ([`Error::UnlockFailed`] in the bsm/redis-lock-style
/// `unlock`). The one exception is bsm/redis-lock's own `lock()`, which
/// answers `Ok(false)` as the Go library does.
///
/// ```
/// use redis_fenced_lock::Error;
///
/// assert_eq!(Error::NotObtained.to_string(), "lock not obtained");
/// assert_eq!(Error::UnlockFailed.to_string(), "lock unlock failed");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The lock is held by someone else (after all retries): returned by
    /// [`Locker::obtain`](crate::Locker::obtain) and the `guard` methods.
    /// The Go library's `ErrLockNotObtained`.
    NotObtained,
    /// `unlock()` found the lock no longer ours (expired, deleted or taken by
    /// someone else), or we held none; nothing was changed on the server.
    /// The Go library's `ErrLockUnlockFailed`.
    UnlockFailed,
    /// The lock is no longer ours (expired, deleted, or taken by someone
    /// else): returned by [`Lock::refresh`](crate::Lock::refresh) and
    /// [`Lock::release`](crate::Lock::release). bsm/redislock's
    /// `ErrLockNotHeld`.
    NotHeld,
    /// A cancellation handle ended the wait
    /// ([`Locker::lock_with_context`](crate::Locker::lock_with_context)).
    Cancelled,
    /// The server does not know the `LOCK.*` commands: the module is not
    /// loaded. The message says how to load it, including the
    /// `enable-module-command yes` that `MODULE LOAD` needs on Redis 7+.
    ModuleNotLoaded {
        /// The server's reply, for example
        /// `unknown command 'LOCK.ACQUIRE', with args beginning with: …`.
        reply: String,
    },
    /// Fewer replicas than [`ReplicaAck`](crate::ReplicaAck) asks for
    /// acknowledged a write to the lock in time. After an acquisition the
    /// lock has been released (best effort); after a renewal it is still
    /// held on the master; after a release it is released on the master. In
    /// each case a failover could lose the unacknowledged write.
    NotAcknowledged {
        /// Which write was not acknowledged.
        step: AckStep,
        /// How many acknowledged (`WAIT`'s reply; for `WAITAOF`, the
        /// replicas plus one for the master's own fsync).
        acknowledged: u32,
        /// How many were asked for.
        wanted: u32,
    },
    /// Replica acknowledgement was asked of an async locker or lock client
    /// without [`WaitConnections`](crate::WaitConnections): the `WAIT`
    /// would block the shared connection for up to its timeout, so it is
    /// sent only on a connection of its own. Nothing was sent.
    AckNeedsOwnConnection,
    /// An error from Redis or the connection (I/O, timeouts, bad replies,
    /// server errors such as bad arguments).
    Redis(redis::RedisError),
}

impl Error {
    /// Whether this error is a connection or I/O failure (including timeouts),
    /// after which the lock's state on the server is unknown.
    pub fn is_io_error(&self) -> bool {
        matches!(self, Error::Redis(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotObtained => f.write_str("lock not obtained"),
            Error::UnlockFailed => f.write_str("lock unlock failed"),
            Error::NotHeld => f.write_str("lock not held"),
            Error::Cancelled => f.write_str("lock attempt cancelled"),
            // Says how, because the first thing a new user meets is Redis 7's
            // refusal of MODULE LOAD (enable-module-command is off by default).
            Error::ModuleNotLoaded { reply } => write!(
                f,
                "the lock module is not loaded on this Redis server (it answered: {reply}); \
                 load it at start with `loadmodule /path/to/liblock.so` in redis.conf \
                 (or `redis-server --loadmodule /path/to/liblock.so`), \
                 or at run time with `MODULE LOAD /path/to/liblock.so`, which Redis 7+ and Valkey \
                 allow only with `enable-module-command yes` (or `local`) in redis.conf"
            ),
            Error::NotAcknowledged {
                step,
                acknowledged,
                wanted,
            } => {
                write!(
                    f,
                    "lock {step} not acknowledged: {acknowledged} of {wanted} replica \
                     acknowledgement(s) arrived in time, so a failover could lose it; "
                )?;
                f.write_str(match step {
                    AckStep::Acquire => "the lock was released",
                    AckStep::Renew => {
                        "the lock is still held on the master, with its new time to live"
                    }
                    AckStep::Release => "the lock is released on the master",
                })
            }
            Error::AckNeedsOwnConnection => f.write_str(
                "replica acknowledgement needs wait connections (with_wait_connections): \
                 WAIT would block the shared connection; nothing was sent",
            ),
            Error::Redis(e) => write!(f, "redis error: {e}"),
        }
    }
}

/// Which write to a lock [`Error::NotAcknowledged`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStep {
    /// An acquisition (`LOCK.ACQUIRE` granting a new hold).
    Acquire,
    /// A renewal (`LOCK.EXTEND`, or `LOCK.ACQUIRE` by the holder).
    Renew,
    /// A release (`LOCK.RELEASE`).
    Release,
}

impl fmt::Display for AckStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckStep::Acquire => "acquisition",
            AckStep::Renew => "renewal",
            AckStep::Release => "release",
        })
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    /// Wraps a Redis error, recognising "unknown command 'LOCK.…'" as
    /// [`Error::ModuleNotLoaded`].
    fn from(e: redis::RedisError) -> Self {
        if is_unknown_lock_command(&e) {
            let detail = e.detail().unwrap_or_default();
            return Error::ModuleNotLoaded {
                reply: format!("{} {}", e.code().unwrap_or("ERR"), detail.trim_end()),
            };
        }
        Error::Redis(e)
    }
}

fn is_unknown_lock_command(e: &redis::RedisError) -> bool {
    let Some(detail) = e.detail() else {
        return false;
    };
    let detail = detail.to_ascii_lowercase();
    detail.contains("unknown command") && detail.contains("lock.")
}

/// Whether a server error answered to `LOCK.ACQUIRE … WAIT n` says that the
/// server does not know the `WAIT` option (a server from before server-side
/// waiting). Connection errors and "unknown command" are not.
pub(crate) fn is_wait_unsupported(e: &redis::RedisError) -> bool {
    if e.code().is_none() || is_unknown_lock_command(e) {
        return false;
    }
    let detail = e.detail().unwrap_or_default().to_ascii_lowercase();
    detail.contains("wait")
        || detail.contains("unknown option")
        || detail.contains("syntax")
        || detail.contains("wrong number of arguments")
}

/// Whether the server answered (with an error reply), so that the command
/// certainly had no effect.
pub(crate) fn is_server_reply(e: &redis::RedisError) -> bool {
    e.code().is_some()
}
