//! The async locker (tokio), over redis-rs async connections, and the async
//! drivers of the shared lock and watchdog logic (also used by
//! `client.rs`).

use std::fmt;
use std::future::{poll_fn, Future};
use std::ops::Deref;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, RedisResult, Value};
use tokio::task::JoinHandle;

use crate::cancel::CancelHandle;
use crate::commands;
use crate::core::{Action, LockOp, LockState};
use crate::error::{AckStep, Error, Result};
use crate::loss::{LossReason, LossSignal};
use crate::options::{Options, ReplicaAck};
use crate::wait_conn::{WaitConnections, WAIT_REPLY_MARGIN};
use crate::watchdog::{follow_relock, PanicReport, RenewPlan, Renewer, Step};

/// The output of [`race`].
pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures; the first to finish wins, the other is dropped.
pub(crate) async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    })
    .await
}

/// Sends `cmd` on a clone of the connection from a new task, if a tokio
/// runtime is running (else the lock expires by itself).
pub(crate) fn spawn_send<C>(mut conn: C, cmd: Cmd, after: Option<JoinHandle<()>>)
where
    C: ConnectionLike + Send + 'static,
{
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            if let Some(task) = after {
                let _ = task.await;
            }
            let _ = conn.req_packed_command(&cmd).await;
        });
    }
}

/// Releases a token whose grant the locker does not record, if the lock
/// future is dropped (or cancelled) while a command that may grant it is in
/// flight. The release goes on a clone of the connection the command went
/// on: commands on clones of one multiplexed connection are sent in order,
/// so the release reaches the server after the acquisition.
struct PendingRelease<C: ConnectionLike + Send + 'static> {
    armed: Option<(C, Cmd)>,
}

impl<C: ConnectionLike + Send + 'static> Drop for PendingRelease<C> {
    fn drop(&mut self) {
        if let Some((conn, cmd)) = self.armed.take() {
            spawn_send(conn, cmd, None);
        }
    }
}

/// Sends `cmd` on `conn` (within `limit`), releasing `release` if the
/// future is dropped or `cancel` fires first; `None` when cancelled.
/// With `ack`, the acknowledgement is pipelined after `cmd` and the reply
/// is the array of both replies.
async fn send_on<K>(
    conn: &mut K,
    cmd: &Cmd,
    ack: Option<&ReplicaAck>,
    release: Option<Cmd>,
    cancel: Option<&CancelHandle>,
    limit: Option<Duration>,
) -> Option<RedisResult<Value>>
where
    K: ConnectionLike + Clone + Send + 'static,
{
    let mut pending = PendingRelease {
        armed: release.map(|cmd| (conn.clone(), cmd)),
    };
    let request = async {
        let request = async {
            match ack {
                None => conn.req_packed_command(cmd).await,
                Some(ack) => {
                    let pipe = commands::acked(cmd, ack);
                    conn.req_packed_commands(&pipe, 0, 2)
                        .await
                        .map(Value::Array)
                }
            }
        };
        match limit {
            None => request.await,
            Some(limit) => match tokio::time::timeout(limit, request).await {
                Ok(reply) => reply,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no reply to a server-side wait in time",
                )
                .into()),
            },
        }
    };
    let reply = match cancel {
        None => request.await,
        Some(c) => match race(request, c.cancelled()).await {
            Either::Left(reply) => reply,
            // `pending` releases what the request may grant.
            Either::Right(()) => return None,
        },
    };
    pending.armed = None;
    Some(reply)
}

/// A server-side wait, on a connection of its own from `waits`.
pub(crate) async fn send_waiting(
    waits: &WaitConnections,
    cmd: &Cmd,
    ack: Option<&ReplicaAck>,
    wait: Duration,
    release: Option<Cmd>,
    cancel: Option<&CancelHandle>,
) -> Option<RedisResult<Value>> {
    let mut conn: MultiplexedConnection = match waits.take().await {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let wait = wait.saturating_add(ack.map_or(Duration::ZERO, ReplicaAck::timeout));
    let reply = send_on(
        &mut conn,
        cmd,
        ack,
        release,
        cancel,
        Some(wait.saturating_add(WAIT_REPLY_MARGIN)),
    )
    .await?;
    // A connection that failed or timed out may still carry the wait:
    // dropping it closes it, which takes the waiter out of the queue.
    if reply.is_ok() {
        waits.give_back(conn);
    }
    Some(reply)
}

/// Sends `cmd` (a lock command) with its acknowledgement on a wait
/// connection: the lock command's reply and the acknowledgement's.
pub(crate) async fn send_acked(
    waits: Option<&WaitConnections>,
    cmd: &Cmd,
    ack: &ReplicaAck,
) -> Result<(RedisResult<Value>, RedisResult<Value>)> {
    let waits = waits.ok_or(Error::AckNeedsOwnConnection)?;
    let reply = send_waiting(waits, cmd, Some(ack), Duration::ZERO, None, None)
        .await
        .unwrap_or_else(|| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "cancelled",
            )))
        });
    Ok(commands::split_acked(reply.map(pipeline_items)))
}

/// The replies of a pipeline sent through [`send_on`].
fn pipeline_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// An acknowledged release: `Ok` when released and acknowledged.
pub(crate) async fn send_acked_release(
    waits: Option<&WaitConnections>,
    cmd: &Cmd,
    ack: &ReplicaAck,
) -> Result<()> {
    let (reply, ack_reply) = send_acked(waits, cmd, ack).await?;
    commands::unlock_result(reply)?;
    commands::check_ack(ack, AckStep::Release, ack_reply)
}

/// The async driver of the shared [`LockOp`]: waits go on `waits` (the
/// op never asks for one without), everything else on `conn`.
pub(crate) async fn drive<C>(
    conn: &mut C,
    waits: Option<&WaitConnections>,
    state: &mut LockState,
    cancel: Option<&CancelHandle>,
) -> Result<bool>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    if state.options.replica_ack.is_some() && waits.is_none() {
        return Err(Error::AckNeedsOwnConnection);
    }
    let (mut op, mut action) = LockOp::start(state, Instant::now());
    loop {
        action = match action {
            Action::Send { cmd, blocking, ack } => {
                let release = op.unsettled_token().map(|t| state.release_cmd(t));
                let reply = match (blocking, ack, waits) {
                    (Some(_), _, Some(waits)) | (_, Some(_), Some(waits)) => {
                        let wait = blocking.unwrap_or(Duration::ZERO);
                        send_waiting(waits, &cmd, ack.as_ref(), wait, release, cancel).await
                    }
                    _ => send_on(conn, &cmd, None, release, cancel, None).await,
                };
                let Some(reply) = reply else {
                    return Err(Error::Cancelled);
                };
                match ack {
                    None => op.on_reply(state, reply, Instant::now()),
                    Some(ack) => {
                        let (reply, ack_reply) = commands::split_acked(reply.map(pipeline_items));
                        op.on_acked_reply(state, reply, ack_reply, &ack, Instant::now())
                    }
                }
            }
            Action::Sleep(d) => {
                let sleep = tokio::time::sleep(d);
                match cancel {
                    None => sleep.await,
                    Some(c) => {
                        if let Either::Right(()) = race(sleep, c.cancelled()).await {
                            return Err(Error::Cancelled);
                        }
                    }
                }
                op.on_slept(state, Instant::now())
            }
            Action::Done(result) => return result,
        }
    }
}

/// A distributed lock on one key, over an async redis-rs connection: the
/// [`Locker`](crate::Locker) API with `async` methods, sharing its logic.
///
/// `C` is a cheaply cloneable async connection: a
/// [`redis::aio::MultiplexedConnection`] or a
/// `redis::aio::ConnectionManager` (clones share one connection, which keeps
/// commands in order). Needs a tokio runtime.
///
/// Cancellation is safe: if a `lock()` future is dropped (or a
/// [`CancelHandle`] fires) while a command that may grant the lock is in
/// flight, the locker spawns a release of that token on a clone of the
/// connection, ordered after the acquisition, so no lock stays held by
/// nobody for longer than that release takes.
///
/// Shared connections are safe: the locker never blocks `C` with a
/// server-side wait. With [`with_wait_connections`](Self::with_wait_connections)
/// it waits in the server's FIFO queue on a connection of its own; without,
/// it polls (after [`Options::retry_count`] and the retry strategy).
///
/// ```no_run
/// # async fn run() -> Result<(), redis_fenced_lock::Error> {
/// use redis_fenced_lock::{AsyncLocker, Options};
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let conn = client.get_multiplexed_async_connection().await?;
/// let mut locker = AsyncLocker::new(conn, "lock.foo", Options::default());
/// if locker.lock().await? {
///     println!("fence {:?}", locker.fence());
///     locker.unlock().await?;
/// }
/// # Ok(()) }
/// ```
pub struct AsyncLocker<C = redis::aio::MultiplexedConnection> {
    conn: C,
    waits: Option<WaitConnections>,
    state: LockState,
}

impl<C> fmt::Debug for AsyncLocker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLocker")
            .field("state", &self.state)
            .field("waits", &self.waits)
            .finish_non_exhaustive()
    }
}

impl<C> AsyncLocker<C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    /// A locker on `key`; `options` are normalised. Nothing is sent yet.
    /// It polls for a busy lock until given
    /// [`with_wait_connections`](Self::with_wait_connections).
    pub fn new(conn: C, key: impl AsRef<[u8]>, options: Options) -> Self {
        AsyncLocker {
            conn,
            waits: None,
            state: LockState::new(key.as_ref().to_vec(), options, false),
        }
    }

    /// Waits for a busy lock in the server's FIFO queue
    /// ([`Options::wait_in_server`]), each wait on a connection of its own
    /// from `waits`, so that `C` stays free for everything else.
    pub fn with_wait_connections(mut self, waits: WaitConnections) -> Self {
        self.waits = Some(waits);
        self.state.can_wait = true;
        self
    }

    /// New + [`lock`](Self::lock): the locker holding the lock, or
    /// [`Error::NotObtained`].
    ///
    /// ```no_run
    /// # async fn run(conn: redis::aio::MultiplexedConnection) -> Result<(), redis_fenced_lock::Error> {
    /// use redis_fenced_lock::{AsyncLocker, Error, Options};
    ///
    /// match AsyncLocker::obtain(conn, "lock.foo", Options::default()).await {
    ///     Ok(mut locker) => locker.unlock().await?,
    ///     Err(Error::NotObtained) => println!("busy"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn obtain(conn: C, key: impl AsRef<[u8]>, options: Options) -> Result<Self> {
        let mut locker = AsyncLocker::new(conn, key, options);
        if locker.lock().await? {
            Ok(locker)
        } else {
            Err(Error::NotObtained)
        }
    }

    /// Obtains or renews the lock: see [`Locker::lock`](crate::Locker::lock).
    pub async fn lock(&mut self) -> Result<bool> {
        drive(&mut self.conn, self.waits.as_ref(), &mut self.state, None).await
    }

    /// Like [`lock`](Self::lock), but `cancel` ends it at once with
    /// [`Error::Cancelled`], also during a server-side wait (whose possible
    /// grant is then released in the background).
    ///
    /// ```no_run
    /// # async fn run(conn: redis::aio::MultiplexedConnection) -> Result<(), redis_fenced_lock::Error> {
    /// use std::time::Duration;
    /// use redis_fenced_lock::{AsyncLocker, CancelHandle, Options};
    ///
    /// let options = Options { retry_count: 100, ..Options::default() };
    /// let mut locker = AsyncLocker::new(conn, "lock.foo", options);
    /// let cancel = CancelHandle::with_timeout(Duration::from_secs(1));
    /// let locked = locker.lock_with_context(&cancel).await;
    /// # Ok(()) }
    /// ```
    pub async fn lock_with_context(&mut self, cancel: &CancelHandle) -> Result<bool> {
        drive(
            &mut self.conn,
            self.waits.as_ref(),
            &mut self.state,
            Some(cancel),
        )
        .await
    }

    /// Releases the lock if it is still ours: see
    /// [`Locker::unlock`](crate::Locker::unlock). Always clears the local
    /// state (as soon as the future is first polled).
    ///
    /// With [`Options::replica_ack`] the release is acknowledged on a wait
    /// connection: [`Error::NotAcknowledged`] when it was released on the
    /// master but not acknowledged in time.
    pub async fn unlock(&mut self) -> Result<()> {
        let ack = self.state.options.replica_ack;
        let Some(cmd) = self.state.take_unlock_cmd() else {
            return Err(Error::UnlockFailed);
        };
        match ack {
            None => commands::unlock_result(self.conn.req_packed_command(&cmd).await),
            Some(ack) => send_acked_release(self.waits.as_ref(), &cmd, &ack).await,
        }
    }

    /// The remaining time to live of our lock, asked from the server: see
    /// [`Locker::ttl`](crate::Locker::ttl).
    pub async fn ttl(&mut self) -> Result<Option<Duration>> {
        match self.state.check_cmd() {
            Some(cmd) => commands::ttl_result(self.conn.req_packed_command(&cmd).await),
            None => Ok(None),
        }
    }

    /// Obtains the lock and returns a guard that releases it when dropped;
    /// [`Error::NotObtained`] when someone else holds it.
    ///
    /// Dropping the guard cannot wait: it clears the local state and spawns
    /// the release on a clone of the connection (outside a tokio runtime,
    /// the lock expires after its time to live instead). Use
    /// [`AsyncLockGuard::unlock`] to wait for it and see its outcome.
    ///
    /// ```no_run
    /// # async fn run(conn: redis::aio::MultiplexedConnection) -> Result<(), redis_fenced_lock::Error> {
    /// let mut locker = redis_fenced_lock::AsyncLocker::new(conn, "lock.foo", Default::default());
    /// let guard = locker.guard().await?;
    /// println!("fence {:?}", guard.fence());
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn guard(&mut self) -> Result<AsyncLockGuard<'_, C>> {
        if !self.lock().await? {
            return Err(Error::NotObtained);
        }
        Ok(AsyncLockGuard::new(self, false))
    }

    /// Like [`guard`](Self::guard), plus a watchdog: a task renewing the
    /// lock every third of [`Options::lock_timeout`] over a clone of the
    /// connection (`LOCK.EXTEND`, which never re-creates a lapsed lock),
    /// aborted when the guard is dropped or unlocked, and reporting a loss
    /// through [`AsyncLockGuard::loss_signal`] (see [`LossSignal`] for when).
    ///
    /// ```no_run
    /// # async fn run(conn: redis::aio::MultiplexedConnection) -> Result<(), redis_fenced_lock::Error> {
    /// let mut locker = redis_fenced_lock::AsyncLocker::new(conn, "lock.report", Default::default());
    /// let guard = locker.guard_with_watchdog().await?;
    /// let lost = guard.loss_signal().unwrap();
    /// tokio::select! {
    ///     reason = lost.lost() => eprintln!("lock lost: {reason}"),
    ///     _ = async { /* the protected work */ } => {}
    /// }
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn guard_with_watchdog(&mut self) -> Result<AsyncLockGuard<'_, C>> {
        if !self.lock().await? {
            return Err(Error::NotObtained);
        }
        Ok(AsyncLockGuard::new(self, true))
    }
}

/// The accessors shared with [`Locker`](crate::Locker):
/// [`fence`](LockState::fence), [`token`](LockState::token),
/// [`is_locked`](LockState::is_locked), [`key`](LockState::key), …
impl<C> Deref for AsyncLocker<C> {
    type Target = LockState;

    fn deref(&self) -> &LockState {
        &self.state
    }
}

impl<C> AsyncLocker<C> {
    /// The connection.
    pub fn get_ref(&self) -> &C {
        &self.conn
    }

    /// The connection, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    /// The connection back. A lock still held is not released.
    pub fn into_inner(self) -> C {
        self.conn
    }
}

/// A watchdog task, the task running its loss signal's timer, and the
/// signal.
pub(crate) struct AsyncWatchdog {
    task: JoinHandle<()>,
    timer: JoinHandle<()>,
    signal: LossSignal,
}

impl AsyncWatchdog {
    pub(crate) fn spawn<C>(mut conn: C, waits: Option<WaitConnections>, plan: RenewPlan) -> Self
    where
        C: ConnectionLike + Send + 'static,
    {
        let signal = plan.signal();
        let mut renewer = Renewer::new(plan, signal.clone());
        let report = PanicReport(signal.clone());
        let task = tokio::spawn(async move {
            let _report = report;
            let mut step = renewer.start();
            loop {
                step = match step {
                    Step::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        renewer.on_slept(Instant::now())
                    }
                    Step::Send(cmd) => match renewer.pending_ack() {
                        None => {
                            let reply = conn.req_packed_command(&cmd).await;
                            renewer.on_reply(reply, Instant::now())
                        }
                        // On a wait connection, never on the shared one.
                        Some(ack) => match send_acked(waits.as_ref(), &cmd, &ack).await {
                            Ok((reply, ack_reply)) => {
                                renewer.on_acked_reply(reply, ack_reply, Instant::now())
                            }
                            Err(e) => renewer.on_reply(
                                Err(redis::RedisError::from((
                                    redis::ErrorKind::Client,
                                    "replica acknowledgement",
                                    e.to_string(),
                                ))),
                                Instant::now(),
                            ),
                        },
                    },
                    Step::Stop => return,
                }
            }
        });
        let timer_signal = signal.clone();
        let timer = tokio::spawn(async move {
            // `deadline()` reports the loss once it has passed.
            while let Some(d) = timer_signal.deadline() {
                tokio::time::sleep_until(d.into()).await;
            }
        });
        AsyncWatchdog {
            task,
            timer,
            signal,
        }
    }

    pub(crate) fn signal(&self) -> &LossSignal {
        &self.signal
    }

    /// Stops both tasks at once; the renewal task's handle, to order a
    /// release after it.
    pub(crate) fn abort(self) -> JoinHandle<()> {
        self.signal.close();
        self.timer.abort();
        self.task.abort();
        self.task
    }

    /// Aborts the tasks and waits until the renewal task has ended.
    pub(crate) async fn stop(self) {
        let _ = self.abort().await;
    }
}

/// Holds an [`AsyncLocker`]'s lock and releases it when dropped (in a
/// spawned task); optionally with a watchdog task renewing it, aborted on
/// drop. The async counterpart of [`LockGuard`](crate::LockGuard).
///
/// ```no_run
/// # async fn run(conn: redis::aio::MultiplexedConnection) -> Result<(), redis_fenced_lock::Error> {
/// let mut locker = redis_fenced_lock::AsyncLocker::new(conn, "lock.foo", Default::default());
/// {
///     let guard = locker.guard_with_watchdog().await?;
///     if guard.is_lost() { /* stop working */ }
/// } // watchdog aborted, release spawned
/// # Ok(()) }
/// ```
pub struct AsyncLockGuard<'a, C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    locker: &'a mut AsyncLocker<C>,
    watchdog: Option<AsyncWatchdog>,
}

impl<C> fmt::Debug for AsyncLockGuard<'_, C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLockGuard")
            .field("key", &self.locker.key())
            .field("fence", &self.locker.fence())
            .field("watchdog", &self.watchdog.is_some())
            .field("lost", &self.loss())
            .finish()
    }
}

impl<'a, C> AsyncLockGuard<'a, C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    fn new(locker: &'a mut AsyncLocker<C>, watchdog: bool) -> Self {
        let mut guard = AsyncLockGuard {
            locker,
            watchdog: None,
        };
        if watchdog {
            guard.start_watchdog();
        }
        guard
    }

    fn start_watchdog(&mut self) {
        if let Some(hold) = &self.locker.state.hold {
            let plan = RenewPlan::new(&self.locker.state, hold);
            let conn = self.locker.conn.clone();
            let waits = self.locker.waits.clone();
            self.watchdog = Some(AsyncWatchdog::spawn(conn, waits, plan));
        }
    }

    /// Renews the lock now: see [`LockGuard::lock`](crate::LockGuard::lock).
    /// The watchdog keeps running meanwhile, so a cancelled call leaves the
    /// hold watched.
    pub async fn lock(&mut self) -> Result<bool> {
        let before = self.locker.state.hold.clone();
        let result = self.locker.lock().await;
        let replace = match &self.watchdog {
            Some(w) => follow_relock(before.as_ref(), &self.locker.state, w.signal()),
            None => false,
        };
        if let Some(old) = self.watchdog.take_if(|_| replace) {
            old.abort();
            self.start_watchdog();
        }
        result
    }

    /// Stops the watchdog (waiting for it), then releases the lock and
    /// reports the outcome ([`AsyncLocker::unlock`]).
    pub async fn unlock(mut self) -> Result<()> {
        if let Some(w) = self.watchdog.take() {
            w.stop().await;
        }
        self.locker.unlock().await
    }

    /// The remaining time to live, asked from the server.
    pub async fn ttl(&mut self) -> Result<Option<Duration>> {
        self.locker.ttl().await
    }

    /// Whether the watchdog found the lock lost. Always false without a
    /// watchdog.
    pub fn is_lost(&self) -> bool {
        self.loss().is_some()
    }

    /// Why the watchdog found the lock lost, if it did.
    pub fn loss(&self) -> Option<LossReason> {
        self.watchdog.as_ref().and_then(|w| w.signal.reason())
    }

    /// The watchdog's loss signal; `None` without a watchdog.
    pub fn loss_signal(&self) -> Option<LossSignal> {
        self.watchdog.as_ref().map(|w| w.signal.clone())
    }
}

impl<C> Deref for AsyncLockGuard<'_, C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    type Target = AsyncLocker<C>;

    fn deref(&self) -> &AsyncLocker<C> {
        self.locker
    }
}

impl<C> Drop for AsyncLockGuard<'_, C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    fn drop(&mut self) {
        let watchdog = self.watchdog.take().map(AsyncWatchdog::abort);
        if let Some(cmd) = self.locker.state.take_unlock_cmd() {
            // After the watchdog task has ended, so no renewal follows it.
            spawn_send(self.locker.conn.clone(), cmd, watchdog);
        }
    }
}
