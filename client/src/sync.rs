//! The blocking locker, over any redis-rs connection.

use std::ops::Deref;
use std::thread;
use std::time::{Duration, Instant};

use redis::ConnectionLike;

use crate::cancel::CancelHandle;
use crate::commands;
use crate::core::{Action, LockOp, LockState};
use crate::error::{AckStep, Error, Result};
use crate::guard::LockGuard;
use crate::options::{Options, ReplicaAck};

/// Sends `cmd` and its acknowledgement as one pipeline on `conn` (a
/// cluster connection routes the pipeline by `cmd`'s key, to its master).
pub(crate) fn send_acked<C: ConnectionLike + ?Sized>(
    conn: &mut C,
    cmd: &redis::Cmd,
    ack: &ReplicaAck,
) -> (
    redis::RedisResult<redis::Value>,
    redis::RedisResult<redis::Value>,
) {
    let pipe = commands::acked(cmd, ack);
    commands::split_acked(conn.req_packed_commands(&pipe.get_packed_pipeline(), 0, 2))
}

/// A distributed lock on one key, over a blocking redis-rs connection: the
/// `Locker` of bsm/redis-lock.
///
/// `C` is any [`redis::ConnectionLike`]: a [`redis::Connection`], a
/// `&mut Connection` (to keep using the connection elsewhere), an r2d2
/// pooled connection, a `redis::cluster::ClusterConnection`, or a
/// [`redis::Client`] (a new connection per command).
///
/// A locker holds at most one lock at a time and can lock repeatedly. The
/// lock is a key on the server that expires [`Options::lock_timeout`] after
/// it was obtained or last renewed; [`lock`](Self::lock) renews it,
/// [`guard_with_watchdog`](Self::guard_with_watchdog) keeps renewing it.
///
/// ```no_run
/// # fn main() -> Result<(), redis_fenced_lock::Error> {
/// use redis_fenced_lock::{Locker, Options};
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let mut locker = Locker::new(client.get_connection()?, "lock.foo", Options::default());
/// if locker.lock()? {
///     println!("fence {:?}", locker.fence());
///     locker.unlock()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Locker<C = redis::Connection> {
    conn: C,
    pub(crate) state: LockState,
}

impl<C: ConnectionLike> Locker<C> {
    /// A locker on `key` (bsm/redis-lock's `New`); `options` are normalised
    /// (`Options::default()` is bsm/redis-lock's `nil`). Nothing is sent yet.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), redis_fenced_lock::Error> {
    /// # let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let mut conn = client.get_connection()?;
    /// // Borrow the connection: it stays usable once the locker is gone.
    /// let mut locker = redis_fenced_lock::Locker::new(&mut conn, "lock.foo", Default::default());
    /// # Ok(()) }
    /// ```
    pub fn new(conn: C, key: impl AsRef<[u8]>, options: Options) -> Self {
        Locker {
            conn,
            state: LockState::new(key.as_ref().to_vec(), options, true),
        }
    }

    /// New + [`lock`](Self::lock) (bsm/redis-lock's `Obtain`): the locker holding
    /// the lock, or [`Error::NotObtained`] when someone else holds it after
    /// all retries. Pass `&mut conn` to keep the connection on failure.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), redis_fenced_lock::Error> {
    /// # let client = redis::Client::open("redis://127.0.0.1/")?;
    /// # let mut conn = client.get_connection()?;
    /// use redis_fenced_lock::{Error, Locker, Options};
    ///
    /// match Locker::obtain(&mut conn, "lock.foo", Options::default()) {
    ///     Ok(mut locker) => locker.unlock()?,
    ///     Err(Error::NotObtained) => println!("busy"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn obtain(conn: C, key: impl AsRef<[u8]>, options: Options) -> Result<Self> {
        let mut locker = Locker::new(conn, key, options);
        if locker.lock()? {
            Ok(locker)
        } else {
            Err(Error::NotObtained)
        }
    }

    /// Obtains the lock, or renews it if this locker holds it (bsm/redis-lock's
    /// `Lock`).
    ///
    /// - Not holding: tries with a new token, retrying up to
    ///   [`Options::retry_count`] times (waiting in the server's queue when
    ///   it supports that, see [`Options::wait_in_server`]). `Ok(true)` when
    ///   obtained, `Ok(false)` when someone else still holds it.
    /// - Holding: resets the lock's time to live to
    ///   [`Options::lock_timeout`], keeping token and fence. If the lock was
    ///   lost meanwhile (expired, deleted, taken), obtains it afresh with a
    ///   new token, as bsm/redis-lock does; so this returns `Ok(false)` (and
    ///   [`is_locked`](LockState::is_locked) becomes false) when someone else
    ///   holds it now. Compare [`fence`](LockState::fence) before and after to
    ///   tell a renewal from a new hold.
    /// - On an error, a hold is kept (it may still be valid); a new attempt
    ///   that failed with a connection error releases its token best-effort.
    pub fn lock(&mut self) -> Result<bool> {
        self.run(None)
    }

    /// Like [`lock`](Self::lock), but `cancel` ends the wait between retries
    /// at once with [`Error::Cancelled`] (bsm/redis-lock's `LockWithContext`).
    ///
    /// A server-side wait in progress cannot be interrupted (the connection
    /// is blocked in a read): cancellation is seen when the current slice of
    /// at most [`Options::server_wait_slice`] ends. A lock granted to that
    /// slice is kept and reported as `Ok(true)`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), redis_fenced_lock::Error> {
    /// # let client = redis::Client::open("redis://127.0.0.1/")?;
    /// use std::time::Duration;
    /// use redis_fenced_lock::{CancelHandle, Error, Locker, Options};
    ///
    /// let options = Options { retry_count: 1000, ..Options::default() };
    /// let mut locker = Locker::new(client.get_connection()?, "lock.foo", options);
    /// let cancel = CancelHandle::with_timeout(Duration::from_secs(2));
    /// let stop = cancel.clone(); // e.g. for a signal handler: stop.cancel()
    /// match locker.lock_with_context(&cancel) {
    ///     Ok(true) => println!("locked"),
    ///     Ok(false) => println!("busy"),
    ///     Err(Error::Cancelled) => println!("gave up"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lock_with_context(&mut self, cancel: &CancelHandle) -> Result<bool> {
        self.run(Some(cancel))
    }

    /// The sync driver of the shared [`LockOp`].
    fn run(&mut self, cancel: Option<&CancelHandle>) -> Result<bool> {
        let (mut op, mut action) = LockOp::start(&mut self.state, Instant::now());
        loop {
            action = match action {
                Action::Send { cmd, blocking, ack } => {
                    // Before a wait in the server (no grant is pending then).
                    if blocking.is_some() && cancel.is_some_and(CancelHandle::is_cancelled) {
                        return Err(Error::Cancelled);
                    }
                    match ack {
                        None => {
                            let reply = self.conn.req_command(&cmd);
                            op.on_reply(&mut self.state, reply, Instant::now())
                        }
                        Some(ack) => {
                            let (reply, ack_reply) = send_acked(&mut self.conn, &cmd, &ack);
                            op.on_acked_reply(
                                &mut self.state,
                                reply,
                                ack_reply,
                                &ack,
                                Instant::now(),
                            )
                        }
                    }
                }
                Action::Sleep(d) => {
                    match cancel {
                        Some(c) => {
                            if c.sleep(d) {
                                return Err(Error::Cancelled);
                            }
                        }
                        None => thread::sleep(d),
                    }
                    op.on_slept(&mut self.state, Instant::now())
                }
                Action::Done(result) => return result,
            }
        }
    }

    /// Releases the lock if it is still ours (bsm/redis-lock's `Unlock`):
    /// [`Error::UnlockFailed`] when it was not (expired, taken by someone
    /// else, or never obtained), in which case nothing is changed on the
    /// server. Always clears the local state.
    ///
    /// With [`Options::replica_ack`], the release is acknowledged too:
    /// [`Error::NotAcknowledged`] when it was released on the master but
    /// not acknowledged in time.
    pub fn unlock(&mut self) -> Result<()> {
        let Some(cmd) = self.state.take_unlock_cmd() else {
            return Err(Error::UnlockFailed);
        };
        match self.state.options.replica_ack {
            None => commands::unlock_result(self.conn.req_command(&cmd)),
            Some(ack) => {
                let (reply, ack_reply) = send_acked(&mut self.conn, &cmd, &ack);
                commands::unlock_result(reply)?;
                commands::check_ack(&ack, AckStep::Release, ack_reply)
            }
        }
    }

    /// The remaining time to live of our lock, asked from the server
    /// (`LOCK.CHECK`): `None` when we do not hold it (never obtained,
    /// expired, taken). `Duration::MAX` for a lock that someone made
    /// persistent. Does not change the local state.
    pub fn ttl(&mut self) -> Result<Option<Duration>> {
        match self.state.check_cmd() {
            Some(cmd) => commands::ttl_result(self.conn.req_command(&cmd)),
            None => Ok(None),
        }
    }

    /// Obtains the lock (like [`lock`](Self::lock)) and returns a guard that
    /// releases it when dropped; [`Error::NotObtained`] when someone else
    /// holds it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), redis_fenced_lock::Error> {
    /// # let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let mut locker = redis_fenced_lock::Locker::new(client.get_connection()?, "lock.foo", Default::default());
    /// {
    ///     let guard = locker.guard()?;
    ///     println!("working under fence {:?}", guard.fence());
    /// } // released here
    /// assert!(!locker.is_locked());
    /// # Ok(()) }
    /// ```
    pub fn guard(&mut self) -> Result<LockGuard<'_, C>> {
        if !self.lock()? {
            return Err(Error::NotObtained);
        }
        Ok(LockGuard::new(self, None))
    }

    /// Like [`guard`](Self::guard), plus a watchdog: a background thread
    /// that renews the lock every third of [`Options::lock_timeout`] over
    /// `watchdog_conn` (a connection of its own: a blocking connection cannot
    /// be shared across threads), and reports a loss through
    /// [`LockGuard::loss_signal`]. The thread is stopped and joined when the
    /// guard is dropped or unlocked, before the lock is released.
    ///
    /// Give `watchdog_conn` a read timeout shorter than the lock timeout
    /// (`Connection::set_read_timeout`), so that a dead server cannot stall a
    /// renewal, and the guard's drop, indefinitely.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), redis_fenced_lock::Error> {
    /// use std::time::Duration;
    /// use redis_fenced_lock::{Locker, Options};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let options = Options { lock_timeout: Duration::from_secs(10), ..Options::default() };
    /// let mut locker = Locker::new(client.get_connection()?, "lock.report", options);
    /// let renewer = client.get_connection()?;
    /// renewer.set_read_timeout(Some(Duration::from_secs(3)))?;
    /// let guard = locker.guard_with_watchdog(renewer)?;
    /// // ... work for as long as it takes, checking guard.is_lost() ...
    /// guard.unlock()?;
    /// # Ok(()) }
    /// ```
    pub fn guard_with_watchdog<W>(&mut self, watchdog_conn: W) -> Result<LockGuard<'_, C>>
    where
        W: ConnectionLike + Send + 'static,
    {
        if !self.lock()? {
            return Err(Error::NotObtained);
        }
        Ok(LockGuard::new(self, Some(Box::new(watchdog_conn))))
    }
}

/// The accessors shared with [`AsyncLocker`](crate::AsyncLocker):
/// [`fence`](LockState::fence), [`token`](LockState::token),
/// [`is_locked`](LockState::is_locked), [`key`](LockState::key), …
impl<C> Deref for Locker<C> {
    type Target = LockState;

    fn deref(&self) -> &LockState {
        &self.state
    }
}

impl<C> Locker<C> {
    /// The connection.
    pub fn get_ref(&self) -> &C {
        &self.conn
    }

    /// The connection, mutably (to send other commands on it).
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    /// The connection back. A lock still held is not released: it expires
    /// after its time to live.
    pub fn into_inner(self) -> C {
        self.conn
    }
}
