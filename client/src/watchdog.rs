//! Watchdog renewal: keeps a lock alive while its guard lives, and reports
//! when it is lost. The verdict on each renewal is shared by the sync
//! (thread) and async (task) watchdogs.

use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Cmd, ConnectionLike, RedisResult, Value};

use crate::commands;
use crate::core::{Hold, LockState};
use crate::signal::Signal;

/// Why a watchdog reports its lock lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// Someone else holds the lock now (a renewal was refused).
    HeldByOther,
    /// The lock had expired or been deleted before a renewal reached it.
    Expired,
    /// Renewals failed (connection errors) until a whole lock timeout had
    /// passed since the last successful one; the last error.
    Unreachable(String),
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::HeldByOther => f.write_str("the lock is held by someone else"),
            LossReason::Expired => f.write_str("the lock expired or was deleted"),
            LossReason::Unreachable(e) => write!(f, "the lock could not be renewed in time: {e}"),
        }
    }
}

/// Reports that a guarded lock was lost: a cheap, cloneable handle that
/// other threads or tasks can poll, block on or await.
///
/// Get it from a guard with a watchdog
/// ([`LockGuard::loss_signal`](crate::LockGuard::loss_signal)) and check it
/// before each step of the protected work, or hand it to whatever should stop
/// when the lock is gone.
///
/// ```no_run
/// # fn main() -> Result<(), redis_fenced_lock::Error> {
/// # let client = redis::Client::open("redis://127.0.0.1/")?;
/// use redis_fenced_lock::{Locker, Options};
///
/// let mut locker = Locker::new(client.get_connection()?, "jobs.nightly", Options::default());
/// let guard = locker.guard_with_watchdog(client.get_connection()?)?;
/// let lost = guard.loss_signal().expect("a guard with a watchdog");
/// for step in 0..100 {
///     if let Some(reason) = lost.reason() {
///         eprintln!("stopping at step {step}: {reason}");
///         break;
///     }
///     // ... one step of work ...
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LossSignal {
    signal: Signal<LossReason>,
}

impl fmt::Debug for LossSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossSignal")
            .field("lost", &self.reason())
            .finish()
    }
}

impl LossSignal {
    pub(crate) fn new() -> Self {
        LossSignal {
            signal: Signal::new(),
        }
    }

    pub(crate) fn set(&self, reason: LossReason) {
        self.signal.set(reason);
    }

    /// Whether the lock was lost.
    pub fn is_lost(&self) -> bool {
        self.signal.get().is_some()
    }

    /// Why the lock was lost, if it was.
    pub fn reason(&self) -> Option<LossReason> {
        self.signal.get()
    }

    /// Blocks until the lock is lost or `timeout` passes; the reason if lost.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<LossReason> {
        self.signal.wait_until(Instant::now().checked_add(timeout))
    }

    /// Resolves when the lock is lost (never, if it is released normally).
    /// Runtime-agnostic.
    pub async fn lost(&self) -> LossReason {
        self.signal.wait_async().await
    }
}

/// The renewal interval for a lock timeout: a third of it (at least 1 ms),
/// so that two renewals can fail before the lock would expire.
pub(crate) fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(1))
}

/// What to do after one renewal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still ours: the TTL is reset.
    Renewed,
    /// Lost; `release_stray`: the renewal re-created the lock with a new
    /// fence, which must be released.
    Lost {
        reason: LossReason,
        release_stray: bool,
    },
    /// An error; try again at the next tick.
    Retry,
}

/// Judges the reply to a renewal (`LOCK.ACQUIRE key token ttl`).
pub(crate) fn judge(
    reply: RedisResult<Value>,
    fence: u64,
    last_renewed: Instant,
    ttl: Duration,
    now: Instant,
) -> Verdict {
    match reply.and_then(commands::parse_acquire) {
        Ok(Some(f)) if f == fence => Verdict::Renewed,
        Ok(Some(_)) => Verdict::Lost {
            reason: LossReason::Expired,
            release_stray: true,
        },
        Ok(None) => Verdict::Lost {
            reason: LossReason::HeldByOther,
            release_stray: false,
        },
        Err(e) if now.duration_since(last_renewed) >= ttl => Verdict::Lost {
            reason: LossReason::Unreachable(crate::Error::from(e).to_string()),
            release_stray: false,
        },
        Err(_) => Verdict::Retry,
    }
}

/// What a watchdog renews.
#[derive(Clone, Debug)]
pub(crate) struct RenewPlan {
    pub(crate) renew: Cmd,
    pub(crate) release: Cmd,
    pub(crate) fence: u64,
    pub(crate) ttl: Duration,
}

impl RenewPlan {
    pub(crate) fn new(state: &LockState, hold: &Hold) -> Self {
        RenewPlan {
            renew: commands::acquire(
                &state.key,
                &hold.token,
                state.options.lock_timeout_ms(),
                None,
            ),
            release: state.release_cmd(&hold.token),
            fence: hold.fence,
            ttl: state.options.lock_timeout,
        }
    }
}

/// A connection a sync watchdog thread owns.
pub(crate) type WatchdogConn = Box<dyn ConnectionLike + Send>;

/// A background thread renewing one hold; stopped and joined on drop.
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<WatchdogConn>>,
    signal: LossSignal,
}

impl Watchdog {
    /// Starts renewing every third of the lock timeout.
    pub(crate) fn spawn(mut conn: WatchdogConn, plan: RenewPlan, signal: LossSignal) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread_signal = signal.clone();
        let thread = thread::Builder::new()
            .name("lock-watchdog".into())
            .spawn(move || {
                let interval = renew_interval(plan.ttl);
                let mut last_renewed = Instant::now();
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Stopped (message or guard gone).
                        _ => return conn,
                    }
                    let reply = conn.req_command(&plan.renew);
                    let now = Instant::now();
                    match judge(reply, plan.fence, last_renewed, plan.ttl, now) {
                        Verdict::Renewed => last_renewed = now,
                        Verdict::Retry => {}
                        Verdict::Lost {
                            reason,
                            release_stray,
                        } => {
                            if release_stray {
                                let _ = conn.req_command(&plan.release);
                            }
                            thread_signal.set(reason);
                            return conn;
                        }
                    }
                }
            })
            .expect("spawn the watchdog thread");
        Watchdog {
            stop: Some(stop),
            thread: Some(thread),
            signal,
        }
    }

    pub(crate) fn signal(&self) -> &LossSignal {
        &self.signal
    }

    /// Stops the thread and waits for it (at most one renewal in flight);
    /// returns its connection.
    pub(crate) fn stop(mut self) -> Option<WatchdogConn> {
        self.halt()
    }

    fn halt(&mut self) -> Option<WatchdogConn> {
        drop(self.stop.take());
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err() -> RedisResult<Value> {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "gone",
        )))
    }

    #[test]
    fn verdicts() {
        let ttl = Duration::from_millis(300);
        let t0 = Instant::now();
        assert_eq!(judge(Ok(Value::Int(4)), 4, t0, ttl, t0), Verdict::Renewed);
        assert_eq!(
            judge(Ok(Value::Int(5)), 4, t0, ttl, t0),
            Verdict::Lost {
                reason: LossReason::Expired,
                release_stray: true
            }
        );
        assert_eq!(
            judge(Ok(Value::Nil), 4, t0, ttl, t0),
            Verdict::Lost {
                reason: LossReason::HeldByOther,
                release_stray: false
            }
        );
        assert_eq!(judge(io_err(), 4, t0, ttl, t0), Verdict::Retry);
        assert!(matches!(
            judge(io_err(), 4, t0, ttl, t0 + ttl),
            Verdict::Lost {
                reason: LossReason::Unreachable(_),
                ..
            }
        ));
        assert_eq!(renew_interval(ttl), Duration::from_millis(100));
    }
}
