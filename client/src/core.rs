//! The locking logic, once, for both drivers: a sans-I/O state machine.
//!
//! A driver (sync in `sync.rs`, async in `aio.rs` and `client.rs`) starts a
//! [`LockOp`], then carries out each [`Action`] it asks for (send a command,
//! sleep) and feeds the outcome back, until the op is done. The op updates
//! the [`LockState`] as it learns what the server holds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Cmd, RedisResult, Value};

use crate::commands;
use crate::error::{is_server_reply, is_wait_unsupported, AckStep, Error, Result};
use crate::options::{ceil_ms, Options, ReplicaAck};
use crate::retry::{OptionsRetry, Retry};
use crate::token::new_token;

/// The hold a locker believes it has.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub(crate) token: Vec<u8>,
    pub(crate) fence: u64,
    /// When the command that last granted or renewed it was sent: the
    /// server's deadline is at least this plus the time to live.
    pub(crate) sent: Instant,
}

impl Hold {
    /// The same hold (token and fence), renewed or not.
    pub(crate) fn same(a: Option<&Hold>, b: Option<&Hold>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.token == b.token && a.fence == b.fence,
            (None, None) => true,
            _ => false,
        }
    }
}

/// What a locker knows: its key, options, current hold, and whether its
/// server supports server-side waiting. Both lockers dereference to it, so
/// its accessors ([`fence`](Self::fence), [`token`](Self::token), …) are
/// theirs.
#[derive(Clone)]
pub struct LockState {
    pub(crate) key: Vec<u8>,
    pub(crate) options: Options,
    pub(crate) retry: Arc<dyn Retry>,
    /// A caller-chosen token instead of random ones.
    pub(crate) fixed_token: Option<Vec<u8>>,
    /// Stored with the lock when it is granted (`META`).
    pub(crate) meta: Option<Vec<u8>>,
    pub(crate) hold: Option<Hold>,
    /// `None` until a `WAIT` was tried.
    pub(crate) wait_supported: Option<bool>,
    /// Whether the driver has a connection that a server-side wait may block.
    pub(crate) can_wait: bool,
}

impl fmt::Debug for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token: whoever knows it can release the lock.
        f.debug_struct("LockState")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("fence", &self.fence())
            .field("options", &self.options)
            .field("wait_supported", &self.wait_supported)
            .finish_non_exhaustive()
    }
}

impl LockState {
    /// The state of a [`Locker`](crate::Locker) API locker: retries after `options`.
    pub(crate) fn new(key: Vec<u8>, options: Options, can_wait: bool) -> Self {
        let options = options.normalize();
        LockState {
            key,
            retry: Arc::new(OptionsRetry::new(&options)),
            options,
            fixed_token: None,
            meta: None,
            hold: None,
            wait_supported: None,
            can_wait,
        }
    }

    fn acquire_cmd(&self, token: &[u8], wait: Option<Duration>) -> Cmd {
        commands::acquire(
            &self.key,
            token,
            self.options.lock_timeout_ms(),
            self.meta.as_deref(),
            wait.map(ceil_ms),
        )
    }

    pub(crate) fn release_cmd(&self, token: &[u8]) -> Cmd {
        commands::release(&self.key, token)
    }

    pub(crate) fn check_cmd(&self) -> Option<Cmd> {
        let hold = self.hold.as_ref()?;
        Some(commands::check(&self.key, &hold.token))
    }

    /// Starts `unlock()`: the command to send, if we hold a token at all.
    /// Clears the hold either way (bsm/redis-lock always clears its token).
    pub(crate) fn take_unlock_cmd(&mut self) -> Option<Cmd> {
        let hold = self.hold.take()?;
        Some(self.release_cmd(&hold.token))
    }

    fn next_token(&self) -> Vec<u8> {
        match &self.fixed_token {
            Some(t) => t.clone(),
            None => new_token(&self.options.token_prefix).into_bytes(),
        }
    }

    /// When to stop waiting in the server (`Some(None)`: never), or `None`
    /// to poll instead.
    fn server_wait_deadline(&self, now: Instant) -> Option<Option<Instant>> {
        if !(self.can_wait && self.options.wait_in_server && self.wait_supported != Some(false)) {
            return None;
        }
        match self.retry.budget() {
            Some(b) if b.is_zero() => None,
            Some(b) => Some(now.checked_add(b)),
            None => Some(None),
        }
    }

    /// Whether this locker holds a lock, by its own record (bsm/redis-lock's
    /// `IsLocked`): true after a successful `lock()` until `unlock()` or a
    /// failed `lock()`. It does not ask the server; `ttl()` does.
    pub fn is_locked(&self) -> bool {
        self.hold.is_some()
    }

    /// The fencing token of the current hold: it strictly increases with each
    /// new holder of the key, and stays the same across renewals. Pass it to
    /// the protected resource, which should reject a fence lower than one it
    /// has seen.
    pub fn fence(&self) -> Option<u64> {
        self.hold.as_ref().map(|h| h.fence)
    }

    /// The token of the current hold (the prefix and 24 random characters).
    pub fn token(&self) -> Option<&str> {
        self.hold
            .as_ref()
            .and_then(|h| std::str::from_utf8(&h.token).ok())
    }

    /// The locked key; empty if it is not UTF-8 (see
    /// [`key_bytes`](Self::key_bytes)).
    pub fn key(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap_or_default()
    }

    /// The locked key, as given: any bytes.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The options, normalised.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether the server supports server-side waiting, as learnt by this
    /// locker: `None` until it has tried.
    pub fn server_wait_supported(&self) -> Option<bool> {
        self.wait_supported
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send `cmd` and pass the reply to [`LockOp::on_reply`]. `blocking`:
    /// the command waits in the server (`WAIT`) for at most `wait`.
    Send {
        cmd: Cmd,
        blocking: Option<Duration>,
        /// Pipeline this acknowledgement after `cmd` on the same connection
        /// and pass both replies to [`LockOp::on_acked_reply`].
        ack: Option<ReplicaAck>,
    },
    /// Sleep this long (unless cancelled), then call [`LockOp::on_slept`].
    Sleep(Duration),
    /// The op is over; this is `lock()`'s result.
    Done(Result<bool>),
}

impl Action {
    fn send(cmd: Cmd) -> Action {
        Action::Send {
            cmd,
            blocking: None,
            ack: None,
        }
    }

    /// A lock command, acknowledged when the options ask for it.
    fn send_lock(state: &LockState, cmd: Cmd, blocking: Option<Duration>) -> Action {
        Action::Send {
            cmd,
            blocking,
            ack: state.options.replica_ack,
        }
    }
}

#[derive(Debug)]
enum Mode {
    /// One try per command, `Sleep` between tries.
    Poll,
    /// Waiting in the server's queue until `deadline` (`None`: no end).
    Wait { deadline: Option<Instant> },
}

// The tokens of in-flight commands are read by the async driver only.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[derive(Debug)]
enum Phase {
    /// `LOCK.ACQUIRE` with the held token in flight (renewal).
    Refreshing {
        fence: u64,
        sent: Instant,
    },
    /// `LOCK.RELEASE` of a grant we will not keep in flight; then obtain afresh.
    DroppingStray {
        token: Vec<u8>,
    },
    /// `LOCK.ACQUIRE` with a new token in flight.
    Acquiring {
        token: Vec<u8>,
        retry: u32,
        mode: Mode,
        sent: Instant,
    },
    /// Sleeping before retry number `retry`.
    Sleeping {
        token: Vec<u8>,
        retry: u32,
    },
    /// Best-effort `LOCK.RELEASE` in flight after a failure; then `result`.
    Finishing {
        token: Vec<u8>,
        result: Result<bool>,
    },
    Done,
}

/// One run of `lock()`.
#[derive(Debug)]
pub(crate) struct LockOp {
    phase: Phase,
}

impl LockOp {
    /// Starts `lock()`: renews the hold if there is one, else obtains afresh.
    pub(crate) fn start(state: &mut LockState, now: Instant) -> (LockOp, Action) {
        let mut op = LockOp { phase: Phase::Done };
        let action = match &state.hold {
            Some(hold) => {
                let cmd = state.acquire_cmd(&hold.token, None);
                op.phase = Phase::Refreshing {
                    fence: hold.fence,
                    sent: now,
                };
                Action::send_lock(state, cmd, None)
            }
            None => op.obtain(state, now),
        };
        (op, action)
    }

    /// The token of a grant that may exist on the server while the locker does
    /// not record it: when the op is abandoned (cancelled, future dropped)
    /// with a command in flight, the driver must release this token.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn unsettled_token(&self) -> Option<&[u8]> {
        match &self.phase {
            Phase::DroppingStray { token }
            | Phase::Acquiring { token, .. }
            | Phase::Finishing { token, .. } => Some(token),
            _ => None,
        }
    }

    /// Obtains afresh with a new token (bsm/redis-lock's `create`).
    fn obtain(&mut self, state: &mut LockState, now: Instant) -> Action {
        state.hold = None;
        let token = state.next_token();
        match state.server_wait_deadline(now) {
            Some(deadline) => self.wait_slice(state, token, deadline, now),
            None => self.try_once(state, token, 0, now),
        }
    }

    fn try_once(&mut self, state: &LockState, token: Vec<u8>, retry: u32, now: Instant) -> Action {
        let cmd = state.acquire_cmd(&token, None);
        self.phase = Phase::Acquiring {
            token,
            retry,
            mode: Mode::Poll,
            sent: now,
        };
        Action::send_lock(state, cmd, None)
    }

    fn wait_slice(
        &mut self,
        state: &LockState,
        token: Vec<u8>,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Action {
        let slice = state.options.server_wait_slice;
        let slice = deadline.map_or(slice, |d| d.saturating_duration_since(now).min(slice));
        let cmd = state.acquire_cmd(&token, Some(slice));
        self.phase = Phase::Acquiring {
            token,
            retry: 0,
            mode: Mode::Wait { deadline },
            sent: now,
        };
        Action::send_lock(state, cmd, Some(slice))
    }

    fn finish(&mut self, state: &LockState, token: Vec<u8>, result: Result<bool>) -> Action {
        let cmd = state.release_cmd(&token);
        self.phase = Phase::Finishing { token, result };
        Action::send(cmd)
    }

    /// Feeds the reply to the command of the last [`Action::Send`].
    pub(crate) fn on_reply(
        &mut self,
        state: &mut LockState,
        reply: RedisResult<Value>,
        now: Instant,
    ) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Refreshing { fence, sent } => match reply.and_then(commands::parse_fence) {
                Ok(Some(f)) if f == fence => {
                    if let Some(hold) = &mut state.hold {
                        hold.sent = sent;
                    }
                    Action::Done(Ok(true))
                }
                Ok(Some(_)) => {
                    // The lock had lapsed and was granted to our token anew,
                    // with a new fence: our hold was lost in between. Like
                    // bsm/redis-lock, give that token up and obtain afresh.
                    let token = state.hold.take().map(|h| h.token).unwrap_or_default();
                    let cmd = state.release_cmd(&token);
                    self.phase = Phase::DroppingStray { token };
                    Action::send(cmd)
                }
                Ok(None) => self.obtain(state, now),
                // Like bsm/redis-lock: report the error, keep the hold.
                Err(e) => Action::Done(Err(e.into())),
            },
            Phase::DroppingStray { .. } => match reply {
                Err(e) if !is_server_reply(&e) => Action::Done(Err(e.into())),
                _ => self.obtain(state, now),
            },
            Phase::Acquiring {
                token,
                retry,
                mode,
                sent,
            } => {
                let waited = matches!(mode, Mode::Wait { .. });
                match reply.and_then(commands::parse_fence) {
                    Ok(granted) => {
                        if waited {
                            state.wait_supported = Some(true);
                        }
                        match granted {
                            Some(fence) => {
                                state.hold = Some(Hold { token, fence, sent });
                                Action::Done(Ok(true))
                            }
                            None => match mode {
                                Mode::Wait { deadline } if deadline.is_none_or(|d| now < d) => {
                                    self.wait_slice(state, token, deadline, now)
                                }
                                Mode::Wait { .. } => Action::Done(Ok(false)),
                                Mode::Poll => match state.retry.delay(retry) {
                                    Some(delay) => {
                                        self.phase = Phase::Sleeping {
                                            token,
                                            retry: retry + 1,
                                        };
                                        Action::Sleep(delay)
                                    }
                                    None => Action::Done(Ok(false)),
                                },
                            },
                        }
                    }
                    Err(e) if waited && is_wait_unsupported(&e) => {
                        // A server from before server-side waiting: poll.
                        state.wait_supported = Some(false);
                        self.try_once(state, token, 0, now)
                    }
                    // The server refused the command: nothing was granted.
                    Err(e) if is_server_reply(&e) => Action::Done(Err(e.into())),
                    // The command may have been carried out: release the token.
                    Err(e) => self.finish(state, token, Err(e.into())),
                }
            }
            Phase::Finishing { result, .. } => Action::Done(result),
            phase @ (Phase::Sleeping { .. } | Phase::Done) => {
                self.phase = phase;
                Action::Done(Err(Error::Redis(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "redis-fenced-lock: reply fed to a lock op that sent no command",
                )))))
            }
        }
    }

    /// Feeds the replies to an acknowledged [`Action::Send`]: the lock
    /// command's and the acknowledgement's. A grant that is not acknowledged
    /// is released and the op fails with [`Error::NotAcknowledged`]; a
    /// renewal that is not acknowledged fails with it too, keeping the hold
    /// (it is still valid on the master).
    pub(crate) fn on_acked_reply(
        &mut self,
        state: &mut LockState,
        reply: RedisResult<Value>,
        ack_reply: RedisResult<Value>,
        ack: &ReplicaAck,
        now: Instant,
    ) -> Action {
        let renewal = matches!(self.phase, Phase::Refreshing { .. });
        let before = state.hold.as_ref().map(|h| (h.token.clone(), h.fence));
        let action = self.on_reply(state, reply, now);
        let Action::Done(Ok(true)) = action else {
            return action;
        };
        let step = if renewal {
            AckStep::Renew
        } else {
            AckStep::Acquire
        };
        let Err(e) = commands::check_ack(ack, step, ack_reply) else {
            return action;
        };
        let after = state.hold.as_ref().map(|h| (h.token.clone(), h.fence));
        if renewal && before == after {
            return Action::Done(Err(e));
        }
        // A new grant that may not survive a failover: give it up.
        match state.hold.take() {
            Some(hold) => self.finish(state, hold.token, Err(e)),
            None => Action::Done(Err(e)),
        }
    }

    /// Continues after an [`Action::Sleep`].
    pub(crate) fn on_slept(&mut self, state: &mut LockState, now: Instant) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Sleeping { token, retry } => self.try_once(state, token, retry, now),
            phase => {
                self.phase = phase;
                Action::Done(Err(Error::Redis(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "redis-fenced-lock: lock op resumed without a sleep",
                )))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    fn state(retry_count: u32) -> LockState {
        LockState::new(
            b"k".to_vec(),
            Options {
                retry_count,
                retry_delay: Duration::from_millis(10),
                lock_timeout: Duration::from_millis(1000),
                ..Options::default()
            },
            true,
        )
    }

    fn fence_of(s: &LockState) -> Option<(String, u64)> {
        s.hold
            .as_ref()
            .map(|h| (String::from_utf8_lossy(&h.token).into_owned(), h.fence))
    }

    fn cmd_args(a: &Action) -> Vec<String> {
        match a {
            Action::Send { cmd, .. } => commands::args(cmd),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    fn server_err(detail: &str) -> RedisResult<Value> {
        Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "server",
            detail.to_owned(),
        )))
    }

    fn io_err() -> RedisResult<Value> {
        Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )))
    }

    #[test]
    fn fresh_lock_without_retries() {
        let mut s = state(0);
        let now = Instant::now();
        let (mut op, a) = LockOp::start(&mut s, now);
        let args = cmd_args(&a);
        assert_eq!(args[0], "LOCK.ACQUIRE");
        assert_eq!(args[3], "1000");
        assert_eq!(args.len(), 4, "no WAIT without retries");
        let token = args[2].clone();
        assert_eq!(op.unsettled_token(), Some(token.as_bytes()));
        let a = op.on_reply(&mut s, Ok(Value::Int(3)), now);
        assert!(matches!(a, Action::Done(Ok(true))));
        assert_eq!(fence_of(&s), Some((token, 3)));
        assert_eq!(op.unsettled_token(), None);
    }

    #[test]
    fn polls_retry_count_times_then_gives_up() {
        let mut s = state(2);
        s.options.wait_in_server = false;
        let now = Instant::now();
        let (mut op, a) = LockOp::start(&mut s, now);
        assert_eq!(cmd_args(&a).len(), 4);
        let mut sleeps = 0;
        let mut a = op.on_reply(&mut s, Ok(Value::Nil), now);
        loop {
            match a {
                Action::Sleep(d) => {
                    assert_eq!(d, Duration::from_millis(10));
                    sleeps += 1;
                    assert_eq!(op.unsettled_token(), None);
                    let send = op.on_slept(&mut s, now);
                    assert_eq!(cmd_args(&send).len(), 4);
                    a = op.on_reply(&mut s, Ok(Value::Nil), now);
                }
                Action::Done(r) => {
                    assert!(!r.unwrap());
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sleeps, 2);
        assert!(s.hold.is_none());
    }

    #[test]
    fn waits_in_server_in_slices_and_falls_back() {
        let mut s = state(10); // budget 100 ms
        s.options.server_wait_slice = Duration::from_millis(40);
        let now = Instant::now();
        let (mut op, a) = LockOp::start(&mut s, now);
        let args = cmd_args(&a);
        assert_eq!(&args[4..], ["WAIT", "40"]);
        // A slice ends without a grant: wait again with the remaining budget.
        let later = now + Duration::from_millis(70);
        let a = op.on_reply(&mut s, Ok(Value::Nil), later);
        assert_eq!(&cmd_args(&a)[4..], ["WAIT", "30"]);
        assert_eq!(s.wait_supported, Some(true));
        let a = op.on_reply(&mut s, Ok(Value::Nil), now + Duration::from_millis(100));
        assert!(matches!(a, Action::Done(Ok(false))));

        // A server without WAIT: remember it and poll.
        let mut s = state(1);
        let (mut op, _) = LockOp::start(&mut s, now);
        let a = op.on_reply(&mut s, server_err("unknown option 'WAIT'"), now);
        assert_eq!(cmd_args(&a).len(), 4);
        assert_eq!(s.wait_supported, Some(false));
        let a = op.on_reply(&mut s, Ok(Value::Nil), now);
        assert!(matches!(a, Action::Sleep(_)));
        let a = op.on_slept(&mut s, now);
        assert_eq!(cmd_args(&a).len(), 4);
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Int(1)), now),
            Action::Done(Ok(true))
        ));
        // Later locks poll straight away.
        s.hold = None;
        let (_, a) = LockOp::start(&mut s, now);
        assert_eq!(cmd_args(&a).len(), 4);
    }

    #[test]
    fn refresh_keeps_or_replaces_the_hold() {
        let now = Instant::now();
        let mut s = state(0);
        s.hold = Some(Hold {
            token: b"tok".to_vec(),
            fence: 5,
            sent: now,
        });
        let (mut op, a) = LockOp::start(&mut s, now);
        assert_eq!(cmd_args(&a)[2], "tok");
        assert_eq!(op.unsettled_token(), None);
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Int(5)), now),
            Action::Done(Ok(true))
        ));
        assert_eq!(s.hold.as_ref().unwrap().fence, 5);

        // Re-granted with a new fence: release it, obtain with a new token.
        let (mut op, _) = LockOp::start(&mut s, now);
        let a = op.on_reply(&mut s, Ok(Value::Int(9)), now);
        assert_eq!(cmd_args(&a), ["LOCK.RELEASE", "k", "tok"]);
        assert!(s.hold.is_none());
        let a = op.on_reply(&mut s, Ok(Value::Int(1)), now);
        let args = cmd_args(&a);
        assert_eq!(args[0], "LOCK.ACQUIRE");
        assert_ne!(args[2], "tok");
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Int(10)), now),
            Action::Done(Ok(true))
        ));
        assert_eq!(s.hold.as_ref().unwrap().fence, 10);

        // Someone else holds it: obtain afresh, fail, clear the hold.
        let (mut op, _) = LockOp::start(&mut s, now);
        let a = op.on_reply(&mut s, Ok(Value::Nil), now);
        assert_eq!(cmd_args(&a)[0], "LOCK.ACQUIRE");
        assert!(s.hold.is_none());
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Nil), now),
            Action::Done(Ok(false))
        ));
    }

    #[test]
    fn errors() {
        let now = Instant::now();
        // A refresh error keeps the hold.
        let mut s = state(0);
        s.hold = Some(Hold {
            token: b"tok".to_vec(),
            fence: 5,
            sent: now,
        });
        let (mut op, _) = LockOp::start(&mut s, now);
        assert!(matches!(
            op.on_reply(&mut s, io_err(), now),
            Action::Done(Err(Error::Redis(_)))
        ));
        assert!(s.hold.is_some());

        // A missing module is recognised.
        let mut s = state(0);
        let (mut op, _) = LockOp::start(&mut s, now);
        let a = op.on_reply(
            &mut s,
            server_err("unknown command 'LOCK.ACQUIRE', with args beginning with: 'k'"),
            now,
        );
        assert!(matches!(
            a,
            Action::Done(Err(Error::ModuleNotLoaded { .. }))
        ));

        // An I/O error on an acquisition releases the token, then reports.
        let (mut op, a) = LockOp::start(&mut s, now);
        let token = cmd_args(&a)[2].clone();
        let a = op.on_reply(&mut s, io_err(), now);
        assert_eq!(cmd_args(&a), ["LOCK.RELEASE", "k", token.as_str()]);
        assert_eq!(op.unsettled_token(), Some(token.as_bytes()));
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Int(0)), now),
            Action::Done(Err(Error::Redis(_)))
        ));
        assert!(s.hold.is_none());
    }

    #[test]
    fn an_unacknowledged_grant_is_released() {
        let now = Instant::now();
        let mut s = state(0);
        s.options.replica_ack = Some(ReplicaAck::replicas(1, Duration::from_millis(100)));
        let (mut op, a) = LockOp::start(&mut s, now);
        let Action::Send { ack: Some(ack), .. } = &a else {
            panic!("{a:?}")
        };
        let ack = *ack;
        let token = cmd_args(&a)[2].clone();
        let a = op.on_acked_reply(&mut s, Ok(Value::Int(3)), Ok(Value::Int(0)), &ack, now);
        assert_eq!(cmd_args(&a), ["LOCK.RELEASE", "k", token.as_str()]);
        assert!(s.hold.is_none());
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Int(1)), now),
            Action::Done(Err(Error::NotAcknowledged {
                step: AckStep::Acquire,
                acknowledged: 0,
                wanted: 1
            }))
        ));

        // Acknowledged: held. A renewal not acknowledged keeps the hold.
        let (mut op, _) = LockOp::start(&mut s, now);
        let a = op.on_acked_reply(&mut s, Ok(Value::Int(4)), Ok(Value::Int(1)), &ack, now);
        assert!(matches!(a, Action::Done(Ok(true))));
        let (mut op, _) = LockOp::start(&mut s, now);
        let a = op.on_acked_reply(&mut s, Ok(Value::Int(4)), Ok(Value::Int(0)), &ack, now);
        assert!(matches!(
            a,
            Action::Done(Err(Error::NotAcknowledged {
                step: AckStep::Renew,
                ..
            }))
        ));
        assert_eq!(s.hold.as_ref().map(|h| h.fence), Some(4));
    }
}
