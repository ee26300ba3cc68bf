//! A Redlock this process holds: its handle, refresh and release, and the
//! guard whose watchdog refreshes it and reports its loss.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::servers::{Limits, Round, Servers};
use super::tally::{RedlockError, Tally};
use super::{drift, validity_at, MIN_TTL};
use crate::commands;
use crate::loss::{loss_margin, LossReason, LossSignal};
use crate::options::ceil_ms;
use crate::watchdog::renew_interval;

/// When the last successful obtain or refresh started, and for how long.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lease {
    pub(super) start: Instant,
    pub(super) ttl: Duration,
}

impl Lease {
    fn validity(&self, now: Instant) -> Duration {
        validity_at(self.start, self.ttl, now)
    }

    /// When the validity ends.
    fn end(&self) -> Instant {
        let span = self.ttl.saturating_sub(drift(self.ttl));
        self.start.checked_add(span).unwrap_or(self.start)
    }
}

/// A lock held on a majority of the servers: an owned, `'static` handle, to
/// move into a task. Dropping it does not release the lock (it expires
/// after its TTL); [`guard`](Self::guard) does.
pub struct RedlockLock {
    pub(super) servers: Arc<Servers>,
    pub(super) limits: Limits,
    pub(super) key: Vec<u8>,
    pub(super) token: Vec<u8>,
    pub(super) metadata: Option<Vec<u8>>,
    pub(super) fence: u64,
    pub(super) fences: Vec<Option<u64>>,
    /// Shared with the watchdog, which moves it on each refresh.
    pub(super) lease: Arc<Mutex<Lease>>,
}

impl fmt::Debug for RedlockLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockLock")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("fence", &self.fence)
            .field("server_fences", &self.fences)
            .field("validity", &self.validity())
            .finish_non_exhaustive()
    }
}

fn lease(l: &Mutex<Lease>) -> MutexGuard<'_, Lease> {
    // A lease is replaced whole, so a poisoned one is still consistent.
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedlockLock {
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The token that holds the lock on the granting servers.
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// The fencing token: the largest fence of the servers whose grant was
    /// counted. What it does and does not guarantee is in the
    /// [module](super) documentation.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Each server's fence, in the servers' order; `None` where the grant
    /// was not counted (refused, timed out, failed).
    pub fn server_fences(&self) -> &[Option<u64>] {
        &self.fences
    }

    /// The metadata the lock was obtained with.
    pub fn metadata(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }

    /// The validity left: `TTL − (now − start) − drift`, where `start` is
    /// when the obtain or the last successful refresh began; zero once it
    /// has passed or the lock was released. Work under the lock must end
    /// before it does.
    pub fn validity(&self) -> Duration {
        lease(&self.lease).validity(Instant::now())
    }

    /// The TTL of the last obtain or refresh.
    pub fn ttl(&self) -> Duration {
        lease(&self.lease).ttl
    }

    /// Extends the lock to `ttl` from now on every server that still holds
    /// it (`LOCK.EXTEND`, which never re-creates a lapsed lock). Succeeds
    /// only when a majority extended before the current validity ended and
    /// the new validity is positive; then [`validity`](Self::validity)
    /// counts from this refresh's start. On failure the current validity
    /// stands: stop the work before it ends.
    pub async fn refresh(&mut self, ttl: Duration) -> Result<Tally, RedlockError> {
        extend(
            &self.servers,
            self.limits,
            &self.key,
            &self.token,
            &self.lease,
            ttl,
        )
        .await
    }

    /// Releases the lock on every server. `Ok` when a majority released it
    /// (it was held to the end); [`RedlockError::NotHeld`] when fewer did
    /// (it had expired, or servers did not answer: it stays there until its
    /// TTL). Either way [`validity`](Self::validity) is zero afterwards.
    pub async fn release(&self) -> Result<Tally, RedlockError> {
        lease(&self.lease).ttl = Duration::ZERO;
        release_all(&self.servers, self.limits, &self.key, &self.token).await
    }

    /// A guard that releases the lock when dropped (in a spawned task).
    pub fn guard(self) -> RedlockGuard {
        RedlockGuard {
            lock: self,
            watchdog: None,
            released: false,
        }
    }

    /// A guard that also refreshes the lock every third of its TTL and
    /// reports a loss ([`LossSignal`]): when a majority no longer holds it
    /// ([`LossReason::Expired`]), or when no refresh succeeded by a tenth
    /// of the TTL before the servers may let it go
    /// ([`LossReason::Unreachable`], with the last tally), which is before
    /// the validity ends. Needs a tokio runtime.
    pub fn guard_with_watchdog(self) -> RedlockGuard {
        let watchdog = Watchdog::spawn(&self);
        RedlockGuard {
            lock: self,
            watchdog: Some(watchdog),
            released: false,
        }
    }
}

/// One refresh round: see [`RedlockLock::refresh`].
async fn extend(
    servers: &Arc<Servers>,
    limits: Limits,
    key: &[u8],
    token: &[u8],
    lease_cell: &Mutex<Lease>,
    ttl: Duration,
) -> Result<Tally, RedlockError> {
    if ttl < MIN_TTL {
        return Err(RedlockError::Invalid(format!(
            "the TTL ({} ms) is below the minimum of {} ms",
            ttl.as_millis(),
            MIN_TTL.as_millis()
        )));
    }
    let start = Instant::now();
    let current_end = lease(lease_cell).end();
    let mut tally = Tally::new(servers.nodes.len(), servers.quorum());
    let left = current_end.saturating_duration_since(start);
    if left.is_zero() {
        return Err(RedlockError::NotHeld(tally));
    }
    // A reply after the current validity could not count anyway.
    let timeout = limits.timeout.min(ttl - drift(ttl)).min(left);
    let cmd = commands::extend(key, token, ceil_ms(ttl));
    let outcomes = Round::start(servers, &cmd, timeout, limits)
        .outcomes()
        .await;
    let end = Instant::now();
    for (o, node) in outcomes.into_iter().zip(&servers.nodes) {
        tally.count_fence(&node.name, o);
    }
    tally.elapsed = end - start;
    tally.validity = if end < current_end {
        validity_at(start, ttl, end)
    } else {
        Duration::ZERO
    };
    if tally.has_quorum() && !tally.validity.is_zero() {
        *lease(lease_cell) = Lease { start, ttl };
        Ok(tally)
    } else {
        Err(RedlockError::NotHeld(tally))
    }
}

/// `LOCK.RELEASE` everywhere; `Ok` when a majority released.
async fn release_all(
    servers: &Arc<Servers>,
    limits: Limits,
    key: &[u8],
    token: &[u8],
) -> Result<Tally, RedlockError> {
    let start = Instant::now();
    let cmd = commands::release(key, token);
    let outcomes = Round::start(servers, &cmd, limits.timeout, limits)
        .outcomes()
        .await;
    let mut tally = Tally::new(servers.nodes.len(), servers.quorum());
    for (o, node) in outcomes.into_iter().zip(&servers.nodes) {
        tally.count_release(&node.name, o);
    }
    tally.elapsed = start.elapsed();
    if tally.has_quorum() {
        Ok(tally)
    } else {
        Err(RedlockError::NotHeld(tally))
    }
}

/// `at + d`, or a year after `at` if that overflows (an absurd TTL).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 86400)))
        .unwrap_or(at)
}

/// The refresh task, the task running the loss signal's timer, and the
/// signal.
struct Watchdog {
    task: JoinHandle<()>,
    timer: JoinHandle<()>,
    signal: LossSignal,
}

impl Watchdog {
    fn spawn(lock: &RedlockLock) -> Watchdog {
        let first = *lease(&lock.lease);
        let margin = first.ttl.saturating_sub(loss_margin(first.ttl));
        let signal = LossSignal::new(first.start.checked_add(margin).unwrap_or(first.start));
        let (servers, limits) = (lock.servers.clone(), lock.limits);
        let (key, token, cell) = (lock.key.clone(), lock.token.clone(), lock.lease.clone());
        let task_signal = signal.clone();
        let task = tokio::spawn(async move {
            let signal = task_signal;
            let mut next = later(first.start, renew_interval(first.ttl));
            loop {
                tokio::time::sleep_until(next.into()).await;
                let ttl = lease(&cell).ttl;
                match extend(&servers, limits, &key, &token, &cell, ttl).await {
                    Ok(_) => {
                        let now = *lease(&cell);
                        signal.renewed(now.start, now.ttl);
                        next = later(now.start, renew_interval(now.ttl));
                    }
                    Err(RedlockError::NotHeld(t)) if t.quorum_impossible() => {
                        signal.set(LossReason::Expired);
                    }
                    Err(e) => {
                        signal.renewal_failed(e.to_string());
                        // Try again soon: the loss is reported at the
                        // signal's deadline unless a refresh succeeds first.
                        next = later(
                            Instant::now(),
                            loss_margin(ttl).max(Duration::from_millis(1)),
                        );
                    }
                }
                if signal.is_lost() {
                    return;
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
        Watchdog {
            task,
            timer,
            signal,
        }
    }

    /// Stops both tasks; the refresh task's handle, to order a release
    /// after it.
    fn abort(self) -> JoinHandle<()> {
        self.signal.close();
        self.timer.abort();
        self.task.abort();
        self.task
    }
}

/// Owns a [`RedlockLock`] and releases it everywhere when dropped;
/// optionally with a watchdog refreshing it. `'static`: moves into
/// `tokio::spawn`. Dereferences to the lock.
pub struct RedlockGuard {
    lock: RedlockLock,
    watchdog: Option<Watchdog>,
    released: bool,
}

impl fmt::Debug for RedlockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockGuard")
            .field("lock", &self.lock)
            .field("watchdog", &self.watchdog.is_some())
            .field("lost", &self.loss())
            .finish()
    }
}

impl RedlockGuard {
    /// Stops the watchdog (waiting for it), then releases the lock
    /// everywhere ([`RedlockLock::release`]).
    pub async fn release(mut self) -> Result<Tally, RedlockError> {
        self.released = true;
        if let Some(w) = self.watchdog.take() {
            let _ = w.abort().await;
        }
        self.lock.release().await
    }

    /// Whether the watchdog reports the lock lost. Always false without one.
    pub fn is_lost(&self) -> bool {
        self.loss().is_some()
    }

    /// Why the watchdog reports the lock lost, if it does.
    pub fn loss(&self) -> Option<LossReason> {
        self.watchdog.as_ref().and_then(|w| w.signal.reason())
    }

    /// The watchdog's loss signal; `None` without a watchdog.
    pub fn loss_signal(&self) -> Option<LossSignal> {
        self.watchdog.as_ref().map(|w| w.signal.clone())
    }
}

impl Deref for RedlockGuard {
    type Target = RedlockLock;

    fn deref(&self) -> &RedlockLock {
        &self.lock
    }
}

impl Drop for RedlockGuard {
    fn drop(&mut self) {
        let watchdog = self.watchdog.take().map(Watchdog::abort);
        if self.released {
            return;
        }
        lease(&self.lock.lease).ttl = Duration::ZERO;
        let (servers, limits) = (self.lock.servers.clone(), self.lock.limits);
        let (key, token) = (self.lock.key.clone(), self.lock.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // After the refresh task has ended, so no refresh follows.
                if let Some(task) = watchdog {
                    let _ = task.await;
                }
                let _ = release_all(&servers, limits, &key, &token).await;
            });
        }
    }
}
