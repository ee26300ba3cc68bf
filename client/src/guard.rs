//! The RAII guard of the sync locker.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use redis::ConnectionLike;

use crate::error::Result;
use crate::loss::{LossReason, LossSignal};
use crate::sync::Locker;
use crate::watchdog::{follow_relock, RenewPlan, Watchdog, WatchdogConn};

/// Holds a [`Locker`]'s lock and releases it when dropped; optionally with a
/// watchdog that keeps it alive meanwhile. Made by [`Locker::guard`] and
/// [`Locker::guard_with_watchdog`].
///
/// Dereferences to the [`Locker`] for [`fence`](crate::LockState::fence),
/// [`token`](crate::LockState::token), [`is_locked`](crate::LockState::is_locked) and the like.
///
/// The watchdog never outlives the guard: dropping or unlocking the guard
/// stops the watchdog thread and waits for it before releasing the lock.
/// If the lock is lost anyway (someone deleted or took it), or may be about
/// to be (no renewal acknowledged in time: see [`LossSignal`]), the
/// watchdog stops and reports it: [`is_lost`](Self::is_lost),
/// [`loss_signal`](Self::loss_signal).
///
/// ```no_run
/// # fn main() -> Result<(), redis_fenced_lock::Error> {
/// # let client = redis::Client::open("redis://127.0.0.1/")?;
/// let mut locker = redis_fenced_lock::Locker::new(client.get_connection()?, "lock.foo", Default::default());
/// let guard = locker.guard_with_watchdog(client.get_connection()?)?;
/// let fence = guard.fence().unwrap();
/// // ... write to the protected resource, passing `fence` along ...
/// if guard.is_lost() {
///     eprintln!("lost the lock: {:?}", guard.loss());
/// }
/// drop(guard); // stops the watchdog, releases the lock
/// # Ok(()) }
/// ```
pub struct LockGuard<'a, C: ConnectionLike> {
    locker: &'a mut Locker<C>,
    watchdog: Option<Watchdog>,
}

impl<C: ConnectionLike> fmt::Debug for LockGuard<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.locker.key())
            .field("fence", &self.locker.fence())
            .field("watchdog", &self.watchdog.is_some())
            .field("lost", &self.loss())
            .finish()
    }
}

impl<'a, C: ConnectionLike> LockGuard<'a, C> {
    /// A guard of the locker's current hold; with a watchdog renewing it over
    /// `watchdog_conn`.
    pub(crate) fn new(locker: &'a mut Locker<C>, watchdog_conn: Option<WatchdogConn>) -> Self {
        let mut guard = LockGuard {
            locker,
            watchdog: None,
        };
        if let Some(conn) = watchdog_conn {
            guard.start_watchdog(conn);
        }
        guard
    }

    fn start_watchdog(&mut self, conn: WatchdogConn) {
        if let Some(hold) = &self.locker.state.hold {
            let plan = RenewPlan::new(&self.locker.state, hold);
            self.watchdog = Some(Watchdog::spawn(conn, plan));
        }
    }

    /// Renews the lock now, as [`Locker::lock`] does (and like it, obtains
    /// it afresh if it was lost). The watchdog keeps watching meanwhile; if
    /// the hold changed (lost, then obtained afresh or not), the old loss
    /// signal reports the loss and the new hold is watched with a new one.
    pub fn lock(&mut self) -> Result<bool> {
        let before = self.locker.state.hold.clone();
        let result = self.locker.lock();
        let replace = match &self.watchdog {
            Some(w) => follow_relock(before.as_ref(), &self.locker.state, w.signal()),
            None => false,
        };
        if let Some(old) = self.watchdog.take_if(|_| replace) {
            let signal = old.signal().clone();
            match old.stop() {
                Some(conn) => self.start_watchdog(conn),
                // Its thread panicked: keep reporting that, never go unwatched.
                None => self.watchdog = Some(Watchdog::failed(signal)),
            }
        }
        result
    }

    /// Stops the watchdog, then releases the lock, reporting the outcome
    /// ([`Locker::unlock`]); dropping the guard does the same silently.
    pub fn unlock(mut self) -> Result<()> {
        self.stop_watchdog();
        self.locker.unlock()
    }

    /// The remaining time to live, asked from the server ([`Locker::ttl`]).
    pub fn ttl(&mut self) -> Result<Option<Duration>> {
        self.locker.ttl()
    }

    /// Whether the watchdog found the lock lost. Always false without a
    /// watchdog.
    pub fn is_lost(&self) -> bool {
        self.loss().is_some()
    }

    /// Why the watchdog found the lock lost, if it did.
    pub fn loss(&self) -> Option<LossReason> {
        self.watchdog.as_ref().and_then(|w| w.signal().reason())
    }

    /// The watchdog's loss signal, to watch the lock from elsewhere; `None`
    /// without a watchdog.
    pub fn loss_signal(&self) -> Option<LossSignal> {
        self.watchdog.as_ref().map(|w| w.signal().clone())
    }

    fn stop_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.stop();
        }
    }
}

impl<C: ConnectionLike> Deref for LockGuard<'_, C> {
    type Target = Locker<C>;

    fn deref(&self) -> &Locker<C> {
        self.locker
    }
}

impl<C: ConnectionLike> Drop for LockGuard<'_, C> {
    fn drop(&mut self) {
        self.stop_watchdog();
        if self.locker.is_locked() {
            let _ = self.locker.unlock();
        }
    }
}
