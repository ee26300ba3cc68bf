//! The bsm/redislock-style API: a cheap, cloneable [`LockClient`] that
//! obtains [`Lock`]s on any key for any time to live; owned handles that
//! move into tasks. Runs the same core and async drivers as
//! [`AsyncLocker`](crate::AsyncLocker).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;

use crate::aio::{drive, send_acked, send_acked_release, spawn_send, AsyncWatchdog};
use crate::commands;
use crate::core::{Hold, LockState};
use crate::error::{AckStep, Error, Result};
use crate::loss::{LossReason, LossSignal};
use crate::options::{ceil_ms, Options, ReplicaAck, DEFAULT_SERVER_WAIT_SLICE};
use crate::retry::{NoRetry, Retry};
use crate::wait_conn::WaitConnections;
use crate::watchdog::RenewPlan;

/// How [`LockClient::obtain`] obtains a lock: retries, token, metadata.
///
/// ```
/// use std::time::{Duration, Instant};
/// use redis_fenced_lock::ObtainOptions;
/// use redis_fenced_lock::retry::{ExponentialBackoff, RetryExt};
///
/// let deadline = Instant::now() + Duration::from_secs(5);
/// let options = ObtainOptions::new()
///     .retry(ExponentialBackoff { min: Duration::from_millis(10), max: Duration::from_millis(500) }.until(deadline))
///     .metadata(format!("host=db-2 pid={}", std::process::id()));
/// ```
#[derive(Clone)]
pub struct ObtainOptions {
    retry: Arc<dyn Retry>,
    token: Option<Vec<u8>>,
    token_prefix: String,
    metadata: Option<Vec<u8>>,
    wait_in_server: bool,
    server_wait_slice: Duration,
    replica_ack: Option<ReplicaAck>,
}

impl fmt::Debug for ObtainOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("ObtainOptions")
            .field("retry", &self.retry)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("token_prefix", &self.token_prefix)
            .field(
                "metadata",
                &self.metadata.as_deref().map(String::from_utf8_lossy),
            )
            .field("wait_in_server", &self.wait_in_server)
            .field("server_wait_slice", &self.server_wait_slice)
            .field("replica_ack", &self.replica_ack)
            .finish()
    }
}

impl Default for ObtainOptions {
    fn default() -> Self {
        ObtainOptions {
            retry: Arc::new(NoRetry),
            token: None,
            token_prefix: String::new(),
            metadata: None,
            wait_in_server: true,
            server_wait_slice: DEFAULT_SERVER_WAIT_SLICE,
            replica_ack: None,
        }
    }
}

impl ObtainOptions {
    /// No retry, a random token, no metadata, server-side waiting when the
    /// client has wait connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// How to retry while someone else holds the lock (default
    /// [`NoRetry`]). Any [`Retry`]: see the [`retry`](crate::retry) module.
    pub fn retry(mut self, strategy: impl Retry + 'static) -> Self {
        self.retry = Arc::new(strategy);
        self
    }

    /// Use this token instead of a random one (bsm/redislock's
    /// `Options.Token`). Whoever knows it can release the lock: make it
    /// unguessable. Obtaining with the token that holds the lock renews it.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.token = Some(token.as_ref().to_vec());
        self
    }

    /// Prepended to random tokens, to see who holds a lock.
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.token_prefix = prefix.into();
        self
    }

    /// A small value stored with the lock (`META`, at most
    /// `lock.max-meta-length` bytes, 1024 by default), such as host and
    /// pid: `LOCK.INFO` shows it to operators, and [`Lock::metadata`] to
    /// the holder.
    pub fn metadata(mut self, metadata: impl AsRef<[u8]>) -> Self {
        self.metadata = Some(metadata.as_ref().to_vec());
        self
    }

    /// Wait in the server's FIFO queue instead of polling, when the client
    /// has wait connections (default true).
    pub fn wait_in_server(mut self, wait: bool) -> Self {
        self.wait_in_server = wait;
        self
    }

    /// Count the lock as obtained only once replicas acknowledged it (see
    /// [`ReplicaAck`]); its [`Lock::refresh`] and [`Lock::release`] are
    /// acknowledged too. Default: no acknowledgement. Needs
    /// [`LockClient::with_wait_connections`]: the `WAIT` goes on a
    /// connection of its own, never on the shared one
    /// ([`Error::AckNeedsOwnConnection`] without). Not acknowledged in
    /// time: [`Error::NotAcknowledged`], and the lock is released.
    pub fn replica_ack(mut self, ack: ReplicaAck) -> Self {
        self.replica_ack = Some(ack);
        self
    }

    /// The longest single server-side wait (default 400 ms); longer waits
    /// go in slices that keep their place in the queue.
    pub fn server_wait_slice(mut self, slice: Duration) -> Self {
        if !slice.is_zero() {
            self.server_wait_slice = slice;
        }
        self
    }
}

/// Obtains locks: the bsm/redislock `Client`. Cheap to clone (a clone of
/// the connection); share it, or clone it into tasks.
///
/// `C` is an async connection whose clones share one connection in order:
/// a [`redis::aio::MultiplexedConnection`], a `ConnectionManager`, or a
/// `redis::cluster_async::ClusterConnection`. Nothing ever blocks it: with
/// [`with_wait_connections`](Self::with_wait_connections) busy locks are
/// waited for in the server, each wait on a connection of its own;
/// without, they are polled after the retry strategy.
///
/// ```no_run
/// # async fn run() -> Result<(), redis_fenced_lock::Error> {
/// use std::time::Duration;
/// use redis_fenced_lock::{Error, LockClient, ObtainOptions};
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let locks = LockClient::new(client.get_multiplexed_async_connection().await?);
/// match locks.obtain("jobs:nightly", Duration::from_secs(30), &ObtainOptions::new()).await {
///     Ok(lock) => {
///         println!("fence {}", lock.fence());
///         lock.release().await?;
///     }
///     Err(Error::NotObtained) => println!("someone else holds it"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LockClient<C = redis::aio::MultiplexedConnection> {
    conn: C,
    waits: Option<WaitConnections>,
}

impl<C> fmt::Debug for LockClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockClient")
            .field("waits", &self.waits)
            .finish_non_exhaustive()
    }
}

impl<C> LockClient<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A client over `conn`; it polls for busy locks.
    pub fn new(conn: C) -> Self {
        LockClient { conn, waits: None }
    }

    /// Waits for busy locks in the server's FIFO queue, each wait on a
    /// connection of its own from `waits`.
    pub fn with_wait_connections(mut self, waits: WaitConnections) -> Self {
        self.waits = Some(waits);
        self
    }

    /// Obtains the lock `key` for `ttl` (bsm/redislock's `Obtain`), retrying
    /// after `options`; [`Error::NotObtained`] when someone else still
    /// holds it. Dropping the future midway (a timeout, `select!`) leaves
    /// no lock behind: a grant in flight is released.
    pub async fn obtain(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Duration,
        options: &ObtainOptions,
    ) -> Result<Lock<C>> {
        let mut state = LockState {
            key: key.as_ref().to_vec(),
            options: Options {
                lock_timeout: ttl,
                token_prefix: options.token_prefix.clone(),
                wait_in_server: options.wait_in_server,
                server_wait_slice: options.server_wait_slice,
                replica_ack: options.replica_ack,
                ..Options::default()
            }
            .normalize(),
            retry: options.retry.clone(),
            fixed_token: options.token.clone(),
            meta: options.metadata.clone(),
            hold: None,
            wait_supported: None,
            can_wait: self.waits.is_some(),
        };
        let mut conn = self.conn.clone();
        let obtained = drive(&mut conn, self.waits.as_ref(), &mut state, None).await?;
        match state.hold.take() {
            Some(hold) if obtained => Ok(Lock {
                conn,
                waits: self.waits.clone(),
                ack: options.replica_ack,
                key: state.key,
                metadata: state.meta,
                ttl: state.options.lock_timeout,
                hold,
            }),
            _ => Err(Error::NotObtained),
        }
    }
}

/// A lock this process holds: an owned handle (`'static` for a `'static`
/// connection), to move into a task. Dropping it does not release the lock
/// (it expires after its time to live); [`guard`](Self::guard) does.
pub struct Lock<C = redis::aio::MultiplexedConnection> {
    conn: C,
    waits: Option<WaitConnections>,
    ack: Option<ReplicaAck>,
    key: Vec<u8>,
    metadata: Option<Vec<u8>>,
    ttl: Duration,
    hold: Hold,
}

impl<C> fmt::Debug for Lock<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("fence", &self.hold.fence)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<C> Lock<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The token that holds the lock.
    pub fn token(&self) -> &[u8] {
        &self.hold.token
    }

    /// The fencing token: pass it to the protected resource, which should
    /// reject a fence lower than one it has seen.
    pub fn fence(&self) -> u64 {
        self.hold.fence
    }

    /// The metadata the lock was obtained with
    /// ([`ObtainOptions::metadata`]).
    pub fn metadata(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }

    /// The remaining time to live, asked from the server (`LOCK.CHECK`):
    /// `None` when the lock is no longer ours; `Duration::MAX` when an
    /// operator removed its expiry.
    pub async fn ttl(&self) -> Result<Option<Duration>> {
        let cmd = commands::check(&self.key, &self.hold.token);
        commands::ttl_result(self.conn.clone().req_packed_command(&cmd).await)
    }

    /// Extends the lock to expire `ttl` from now (`LOCK.EXTEND`);
    /// [`Error::NotHeld`] when it is no longer ours. It never re-creates a
    /// lock that lapsed. Later guards renew for this `ttl`. With
    /// [`ObtainOptions::replica_ack`], [`Error::NotAcknowledged`] when the
    /// renewal was not acknowledged in time (the lock is still held on the
    /// master, with the new time to live).
    pub async fn refresh(&mut self, ttl: Duration) -> Result<()> {
        let cmd = commands::extend(&self.key, &self.hold.token, ceil_ms(ttl));
        let sent = Instant::now();
        let (reply, ack_reply) = match &self.ack {
            None => (self.conn.clone().req_packed_command(&cmd).await, None),
            Some(ack) => {
                let (reply, ack_reply) = send_acked(self.waits.as_ref(), &cmd, ack).await?;
                (reply, Some((ack, ack_reply)))
            }
        };
        match reply.and_then(commands::parse_fence)? {
            Some(f) if f == self.hold.fence => {
                self.hold.sent = sent;
                self.ttl = ttl;
                match ack_reply {
                    Some((ack, r)) => commands::check_ack(ack, AckStep::Renew, r),
                    None => Ok(()),
                }
            }
            _ => Err(Error::NotHeld),
        }
    }

    /// Releases the lock (`LOCK.RELEASE`); [`Error::NotHeld`] when it was
    /// no longer ours, in which case nothing changed on the server. With
    /// [`ObtainOptions::replica_ack`], [`Error::NotAcknowledged`] when it was
    /// released on the master but the release was not acknowledged in time.
    pub async fn release(&self) -> Result<()> {
        let cmd = commands::release(&self.key, &self.hold.token);
        let result = match &self.ack {
            None => commands::unlock_result(self.conn.clone().req_packed_command(&cmd).await),
            Some(ack) => send_acked_release(self.waits.as_ref(), &cmd, ack).await,
        };
        match result {
            Err(Error::UnlockFailed) => Err(Error::NotHeld),
            other => other,
        }
    }

    /// A guard that releases the lock when dropped (in a spawned task).
    pub fn guard(self) -> LockHandleGuard<C> {
        LockHandleGuard {
            lock: self,
            watchdog: None,
            released: false,
        }
    }

    /// A guard that also renews the lock every third of its time to live
    /// (`LOCK.EXTEND`, on a clone of the connection) and reports a loss
    /// ([`LossSignal`]). Needs a tokio runtime.
    pub fn guard_with_watchdog(self) -> LockHandleGuard<C> {
        let plan = RenewPlan::of(&self.key, &self.hold, self.ttl).with_ack(self.ack);
        let watchdog = AsyncWatchdog::spawn(self.conn.clone(), self.waits.clone(), plan);
        LockHandleGuard {
            lock: self,
            watchdog: Some(watchdog),
            released: false,
        }
    }
}

/// Owns a [`Lock`] and releases it when dropped; optionally with a watchdog
/// renewing it. `'static` for a `'static` connection: moves into
/// `tokio::spawn`. Dereferences to the [`Lock`].
///
/// ```no_run
/// # async fn run(locks: redis_fenced_lock::LockClient) -> Result<(), redis_fenced_lock::Error> {
/// use std::time::Duration;
/// use redis_fenced_lock::ObtainOptions;
///
/// let lock = locks.obtain("jobs:nightly", Duration::from_secs(10), &ObtainOptions::new()).await?;
/// let guard = lock.guard_with_watchdog();
/// let worker = tokio::spawn(async move {
///     let lost = guard.loss_signal().unwrap();
///     tokio::select! {
///         reason = lost.lost() => eprintln!("lost: {reason}"),
///         _ = tokio::time::sleep(Duration::from_secs(25)) => {} // the work, under guard.fence()
///     }
///     guard.release().await
/// });
/// # let _ = worker.await;
/// # Ok(()) }
/// ```
pub struct LockHandleGuard<C = redis::aio::MultiplexedConnection>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    lock: Lock<C>,
    watchdog: Option<AsyncWatchdog>,
    released: bool,
}

impl<C> fmt::Debug for LockHandleGuard<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockHandleGuard")
            .field("lock", &self.lock)
            .field("watchdog", &self.watchdog.is_some())
            .field("lost", &self.loss())
            .finish()
    }
}

impl<C> LockHandleGuard<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Stops the watchdog (waiting for it), then releases the lock and
    /// reports the outcome ([`Lock::release`]).
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        if let Some(w) = self.watchdog.take() {
            w.stop().await;
        }
        self.lock.release().await
    }

    /// Whether the watchdog reports the lock lost. Always false without
    /// one.
    pub fn is_lost(&self) -> bool {
        self.loss().is_some()
    }

    /// Why the watchdog reports the lock lost, if it does.
    pub fn loss(&self) -> Option<LossReason> {
        self.watchdog.as_ref().and_then(|w| w.signal().reason())
    }

    /// The watchdog's loss signal; `None` without a watchdog.
    pub fn loss_signal(&self) -> Option<LossSignal> {
        self.watchdog.as_ref().map(|w| w.signal().clone())
    }
}

impl<C> Deref for LockHandleGuard<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Target = Lock<C>;

    fn deref(&self) -> &Lock<C> {
        &self.lock
    }
}

impl<C> Drop for LockHandleGuard<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        let watchdog = self.watchdog.take().map(AsyncWatchdog::abort);
        if !self.released {
            let cmd = commands::release(&self.lock.key, &self.lock.hold.token);
            // After the watchdog task has ended, so no renewal follows it.
            spawn_send(self.lock.conn.clone(), cmd, watchdog);
        }
    }
}
