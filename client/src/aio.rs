//! The async locker (tokio), over redis-rs async connections.

use std::fmt;
use std::future::{poll_fn, Future};
use std::ops::Deref;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::Cmd;
use tokio::task::JoinHandle;

use crate::cancel::CancelHandle;
use crate::commands;
use crate::core::{Action, Hold, LockOp, LockState};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::watchdog::{judge, renew_interval, LossReason, LossSignal, RenewPlan, Verdict};

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
fn spawn_send<C>(mut conn: C, cmd: Cmd, after: Option<JoinHandle<()>>)
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
/// flight. Commands on clones of one multiplexed connection are sent in
/// order, so the release reaches the server after the acquisition.
struct PendingRelease<C: ConnectionLike + Clone + Send + 'static> {
    conn: C,
    release: Option<Cmd>,
}

impl<C: ConnectionLike + Clone + Send + 'static> Drop for PendingRelease<C> {
    fn drop(&mut self) {
        if let Some(cmd) = self.release.take() {
            spawn_send(self.conn.clone(), cmd, None);
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
/// Server-side waiting (`Options::wait_in_server`) blocks the connection for
/// the wait: give a locker that waits a connection of its own.
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
    state: LockState,
}

impl<C> fmt::Debug for AsyncLocker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLocker")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<C> AsyncLocker<C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    /// A locker on `key`; `options` are normalised. Nothing is sent yet.
    pub fn new(conn: C, key: impl Into<String>, options: Options) -> Self {
        AsyncLocker {
            conn,
            state: LockState::new(key.into(), options),
        }
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
    pub async fn obtain(conn: C, key: impl Into<String>, options: Options) -> Result<Self> {
        let mut locker = AsyncLocker::new(conn, key, options);
        if locker.lock().await? {
            Ok(locker)
        } else {
            Err(Error::NotObtained)
        }
    }

    /// Obtains or renews the lock: see [`Locker::lock`](crate::Locker::lock).
    pub async fn lock(&mut self) -> Result<bool> {
        self.run(None).await
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
        self.run(Some(cancel)).await
    }

    /// The async driver of the shared [`LockOp`].
    async fn run(&mut self, cancel: Option<&CancelHandle>) -> Result<bool> {
        let mut pending = PendingRelease {
            conn: self.conn.clone(),
            release: None,
        };
        let (mut op, mut action) = LockOp::start(&mut self.state, Instant::now());
        loop {
            action = match action {
                Action::Send { cmd, .. } => {
                    pending.release = op.unsettled_token().map(|t| self.state.release_cmd(t));
                    let request = self.conn.req_packed_command(&cmd);
                    let reply = match cancel {
                        None => request.await,
                        Some(c) => match race(request, c.cancelled()).await {
                            Either::Left(reply) => reply,
                            // `pending` releases what the request may grant.
                            Either::Right(()) => return Err(Error::Cancelled),
                        },
                    };
                    pending.release = None;
                    op.on_reply(&mut self.state, reply, Instant::now())
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
                    op.on_slept(&mut self.state)
                }
                Action::Done(result) => return result,
            }
        }
    }

    /// Releases the lock if it is still ours: see
    /// [`Locker::unlock`](crate::Locker::unlock). Always clears the local
    /// state (as soon as the future is first polled).
    pub async fn unlock(&mut self) -> Result<()> {
        match self.state.take_unlock_cmd() {
            Some(cmd) => commands::unlock_result(self.conn.req_packed_command(&cmd).await),
            None => Err(Error::UnlockFailed),
        }
    }

    /// The remaining time to live of our lock, asked from the server: see
    /// [`Locker::ttl`](crate::Locker::ttl).
    pub async fn ttl(&mut self) -> Result<Option<Duration>> {
        match &self.state.hold {
            Some(hold) => {
                let cmd = self.state.check_cmd(&hold.token);
                commands::ttl_result(self.conn.req_packed_command(&cmd).await)
            }
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
    /// connection, aborted when the guard is dropped or unlocked, and
    /// reporting a loss through [`AsyncLockGuard::loss_signal`].
    ///
    /// Renewals share the connection: do not let lockers that wait in the
    /// server block it.
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

impl<C> AsyncLocker<C> {
    /// Whether this locker holds a lock, by its own record: see
    /// [`Locker::is_locked`](crate::Locker::is_locked).
    pub fn is_locked(&self) -> bool {
        self.state.hold.is_some()
    }

    /// The fencing token of the current hold: see
    /// [`Locker::fence`](crate::Locker::fence).
    pub fn fence(&self) -> Option<u64> {
        self.state.hold.as_ref().map(|h| h.fence)
    }

    /// The token of the current hold.
    pub fn token(&self) -> Option<&str> {
        self.state.hold.as_ref().map(|h| h.token.as_str())
    }

    /// The locked key.
    pub fn key(&self) -> &str {
        &self.state.key
    }

    /// The options, normalised.
    pub fn options(&self) -> &Options {
        &self.state.options
    }

    /// Whether the server supports server-side waiting, as learnt by this
    /// locker: `None` until it has tried.
    pub fn server_wait_supported(&self) -> Option<bool> {
        self.state.wait_supported
    }

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

/// A watchdog task and its loss signal.
struct AsyncWatchdog {
    task: JoinHandle<()>,
    signal: LossSignal,
}

impl AsyncWatchdog {
    fn spawn<C>(mut conn: C, plan: RenewPlan, signal: LossSignal) -> Self
    where
        C: ConnectionLike + Send + 'static,
    {
        let task_signal = signal.clone();
        let task = tokio::spawn(async move {
            let interval = renew_interval(plan.ttl);
            let mut last_renewed = Instant::now();
            loop {
                tokio::time::sleep(interval).await;
                let reply = conn.req_packed_command(&plan.renew).await;
                let now = Instant::now();
                match judge(reply, plan.fence, last_renewed, plan.ttl, now) {
                    Verdict::Renewed => last_renewed = now,
                    Verdict::Retry => {}
                    Verdict::Lost {
                        reason,
                        release_stray,
                    } => {
                        if release_stray {
                            let _ = conn.req_packed_command(&plan.release).await;
                        }
                        task_signal.set(reason);
                        return;
                    }
                }
            }
        });
        AsyncWatchdog { task, signal }
    }

    /// Aborts the task and waits until it has ended.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
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
            guard.start_watchdog(LossSignal::new());
        }
        guard
    }

    fn start_watchdog(&mut self, signal: LossSignal) {
        if let Some(hold) = &self.locker.state.hold {
            let plan = RenewPlan::new(&self.locker.state, hold);
            let conn = self.locker.conn.clone();
            self.watchdog = Some(AsyncWatchdog::spawn(conn, plan, signal));
        }
    }

    /// Renews the lock now: see [`LockGuard::lock`](crate::LockGuard::lock).
    pub async fn lock(&mut self) -> Result<bool> {
        let Some(watchdog) = self.watchdog.take() else {
            return self.locker.lock().await;
        };
        let before: Option<Hold> = self.locker.state.hold.clone();
        let signal = watchdog.signal.clone();
        watchdog.stop().await;
        let result = self.locker.lock().await;
        let signal = if self.locker.state.hold == before {
            signal
        } else {
            signal.set(if self.locker.state.hold.is_some() {
                LossReason::Expired
            } else {
                LossReason::HeldByOther
            });
            LossSignal::new()
        };
        if !signal.is_lost() {
            self.start_watchdog(signal);
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
        let watchdog = self.watchdog.take().map(|w| {
            w.task.abort();
            w.task
        });
        if let Some(cmd) = self.locker.state.take_unlock_cmd() {
            // After the watchdog task has ended, so no renewal follows it.
            spawn_send(self.locker.conn.clone(), cmd, watchdog);
        }
    }
}
