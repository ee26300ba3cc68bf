//! The locking logic, once, for both drivers: a sans-I/O state machine.
//!
//! A driver (sync in `sync.rs`, async in `aio.rs`) starts a [`LockOp`], then
//! carries out each [`Action`] it asks for (send a command, sleep) and feeds
//! the outcome back, until the op is done. The op updates the locker's
//! [`LockState`] as it learns what the server holds.

use std::time::{Duration, Instant};

use redis::{Cmd, RedisResult, Value};

use crate::commands;
use crate::error::{is_server_reply, is_wait_unsupported, Error, Result};
use crate::options::{ceil_ms, Options};
use crate::token::new_token;

/// The hold a locker believes it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    pub(crate) token: String,
    pub(crate) fence: u64,
}

/// What a locker knows: its key, options, current hold, and whether its
/// server supports server-side waiting.
#[derive(Clone, Debug)]
pub(crate) struct LockState {
    pub(crate) key: String,
    pub(crate) options: Options,
    pub(crate) hold: Option<Hold>,
    /// `None` until a `WAIT` was tried.
    pub(crate) wait_supported: Option<bool>,
}

impl LockState {
    pub(crate) fn new(key: String, options: Options) -> Self {
        LockState {
            key,
            options: options.normalize(),
            hold: None,
            wait_supported: None,
        }
    }

    fn acquire_cmd(&self, token: &str, wait: Option<Duration>) -> Cmd {
        commands::acquire(
            &self.key,
            token,
            self.options.lock_timeout_ms(),
            wait.map(ceil_ms),
        )
    }

    pub(crate) fn release_cmd(&self, token: &str) -> Cmd {
        commands::release(&self.key, token)
    }

    pub(crate) fn check_cmd(&self, token: &str) -> Cmd {
        commands::check(&self.key, token)
    }

    /// Starts `unlock()`: the command to send, if we hold a token at all.
    /// Clears the hold either way (bsm/redis-lock always clears its token).
    pub(crate) fn take_unlock_cmd(&mut self) -> Option<Cmd> {
        let hold = self.hold.take()?;
        Some(self.release_cmd(&hold.token))
    }

    fn server_wait(&self) -> bool {
        self.options.wait_in_server
            && self.wait_supported != Some(false)
            && self.options.retry_count > 0
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send `cmd` and pass the reply to [`LockOp::on_reply`]. `blocking`:
    /// the command waits in the server (`WAIT`), so it may take long.
    Send { cmd: Cmd, blocking: bool },
    /// Sleep this long (unless cancelled), then call [`LockOp::on_slept`].
    Sleep(Duration),
    /// The op is over; this is `lock()`'s result.
    Done(Result<bool>),
}

#[derive(Debug)]
enum Mode {
    /// One try per command, `Sleep` between tries.
    Poll,
    /// Waiting in the server's queue until `deadline`.
    Wait { deadline: Instant },
}

// The tokens of in-flight commands are read by the async driver only.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
#[derive(Debug)]
enum Phase {
    /// `LOCK.ACQUIRE` with the held token in flight (renewal).
    Refreshing {
        fence: u64,
    },
    /// `LOCK.RELEASE` of a grant we will not keep in flight; then obtain afresh.
    DroppingStray {
        token: String,
    },
    /// `LOCK.ACQUIRE` with a new token in flight.
    Acquiring {
        token: String,
        retry: u32,
        mode: Mode,
    },
    /// Sleeping before retry number `retry`.
    Sleeping {
        token: String,
        retry: u32,
    },
    /// Best-effort `LOCK.RELEASE` in flight after a failure; then `result`.
    Finishing {
        token: String,
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
                op.phase = Phase::Refreshing { fence: hold.fence };
                Action::Send {
                    cmd,
                    blocking: false,
                }
            }
            None => op.obtain(state, now),
        };
        (op, action)
    }

    /// The token of a grant that may exist on the server while the locker does
    /// not record it: when the op is abandoned (cancelled, future dropped)
    /// with a command in flight, the driver must release this token.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn unsettled_token(&self) -> Option<&str> {
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
        let token = new_token(&state.options.token_prefix);
        if state.server_wait() {
            let deadline = now + state.options.retry_budget();
            self.wait_slice(state, token, deadline, now)
        } else {
            self.try_once(state, token, 0)
        }
    }

    fn try_once(&mut self, state: &LockState, token: String, retry: u32) -> Action {
        let cmd = state.acquire_cmd(&token, None);
        self.phase = Phase::Acquiring {
            token,
            retry,
            mode: Mode::Poll,
        };
        Action::Send {
            cmd,
            blocking: false,
        }
    }

    fn wait_slice(
        &mut self,
        state: &LockState,
        token: String,
        deadline: Instant,
        now: Instant,
    ) -> Action {
        let slice = deadline
            .saturating_duration_since(now)
            .min(state.options.server_wait_slice);
        let cmd = state.acquire_cmd(&token, Some(slice));
        self.phase = Phase::Acquiring {
            token,
            retry: 0,
            mode: Mode::Wait { deadline },
        };
        Action::Send {
            cmd,
            blocking: true,
        }
    }

    fn finish(&mut self, state: &LockState, token: String, result: Result<bool>) -> Action {
        let cmd = state.release_cmd(&token);
        self.phase = Phase::Finishing { token, result };
        Action::Send {
            cmd,
            blocking: false,
        }
    }

    /// Feeds the reply to the command of the last [`Action::Send`].
    pub(crate) fn on_reply(
        &mut self,
        state: &mut LockState,
        reply: RedisResult<Value>,
        now: Instant,
    ) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Refreshing { fence } => match reply.and_then(commands::parse_acquire) {
                Ok(Some(f)) if f == fence => Action::Done(Ok(true)),
                Ok(Some(_)) => {
                    // The lock had lapsed and was granted to our token anew,
                    // with a new fence: our hold was lost in between. Like
                    // bsm/redis-lock, give that token up and obtain afresh.
                    let token = state.hold.take().map(|h| h.token).unwrap_or_default();
                    let cmd = state.release_cmd(&token);
                    self.phase = Phase::DroppingStray { token };
                    Action::Send {
                        cmd,
                        blocking: false,
                    }
                }
                Ok(None) => self.obtain(state, now),
                // Like bsm/redis-lock: report the error, keep the hold.
                Err(e) => Action::Done(Err(e.into())),
            },
            Phase::DroppingStray { .. } => match reply {
                Err(e) if !is_server_reply(&e) => Action::Done(Err(e.into())),
                _ => self.obtain(state, now),
            },
            Phase::Acquiring { token, retry, mode } => {
                let waited = matches!(mode, Mode::Wait { .. });
                match reply.and_then(commands::parse_acquire) {
                    Ok(granted) => {
                        if waited {
                            state.wait_supported = Some(true);
                        }
                        match granted {
                            Some(fence) => {
                                state.hold = Some(Hold { token, fence });
                                Action::Done(Ok(true))
                            }
                            None => match mode {
                                Mode::Wait { deadline } if now < deadline => {
                                    self.wait_slice(state, token, deadline, now)
                                }
                                Mode::Wait { .. } => Action::Done(Ok(false)),
                                Mode::Poll if retry < state.options.retry_count => {
                                    let delay = state
                                        .options
                                        .retry_strategy
                                        .delay(state.options.retry_delay, retry);
                                    self.phase = Phase::Sleeping {
                                        token,
                                        retry: retry + 1,
                                    };
                                    Action::Sleep(delay)
                                }
                                Mode::Poll => Action::Done(Ok(false)),
                            },
                        }
                    }
                    Err(e) if waited && is_wait_unsupported(&e) => {
                        // A server from before server-side waiting: poll.
                        state.wait_supported = Some(false);
                        self.try_once(state, token, 0)
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

    /// Continues after an [`Action::Sleep`].
    pub(crate) fn on_slept(&mut self, state: &mut LockState) -> Action {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Sleeping { token, retry } => self.try_once(state, token, retry),
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
            "k".into(),
            Options {
                retry_count,
                retry_delay: Duration::from_millis(10),
                lock_timeout: Duration::from_millis(1000),
                ..Options::default()
            },
        )
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
        assert_eq!(op.unsettled_token(), Some(token.as_str()));
        let a = op.on_reply(&mut s, Ok(Value::Int(3)), now);
        assert!(matches!(a, Action::Done(Ok(true))));
        assert_eq!(s.hold, Some(Hold { token, fence: 3 }));
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
                    let send = op.on_slept(&mut s);
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
        assert_eq!(s.hold, None);
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
        let a = op.on_slept(&mut s);
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
            token: "tok".into(),
            fence: 5,
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
        assert_eq!(s.hold, None);
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
        assert_eq!(s.hold, None);
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
            token: "tok".into(),
            fence: 5,
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
        assert_eq!(op.unsettled_token(), Some(token.as_str()));
        assert!(matches!(
            op.on_reply(&mut s, Ok(Value::Int(0)), now),
            Action::Done(Err(Error::Redis(_)))
        ));
        assert_eq!(s.hold, None);
    }
}
