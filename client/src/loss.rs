//! The loss signal: reports that a guarded lock is, or may be, lost. It
//! carries the deadline by which a renewal must be acknowledged, so that it
//! reports the loss before the server's own deadline, whatever the
//! in-flight renewal does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why a lock is reported lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// Someone else holds the lock now (a renewal found it taken).
    HeldByOther,
    /// The lock had expired or been deleted before a renewal reached it.
    Expired,
    /// No renewal was acknowledged in time: the lock may expire on the
    /// server any moment (the server is unreachable, paused, refuses the
    /// renewals, or is too slow). Reported [`loss_margin`] before the
    /// earliest moment the server may let the lock go; the last renewal
    /// error, if there was one.
    Unreachable(String),
    /// The watchdog itself failed (its thread or task panicked), so nothing
    /// renews the lock any more.
    WatchdogFailed,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::HeldByOther => f.write_str("the lock is held by someone else"),
            LossReason::Expired => f.write_str("the lock expired or was deleted"),
            LossReason::Unreachable(e) => write!(f, "the lock could not be renewed in time: {e}"),
            LossReason::WatchdogFailed => f.write_str("the watchdog renewing the lock failed"),
        }
    }
}

/// How long before the server's earliest deadline a loss is reported: a
/// tenth of the time to live.
///
/// The server counts a lock's time to live from when it received the last
/// renewal, which is after the watchdog sent it; the watchdog counts from
/// the sending, so it is early by the trip to the server even without a
/// margin. The margin covers the rest: clocks running at slightly different
/// rates on the two hosts (far below 1 % on sane hardware) and this
/// process's timer firing late.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(redis_fenced_lock::loss_margin(Duration::from_secs(30)), Duration::from_secs(3));
/// ```
pub fn loss_margin(ttl: Duration) -> Duration {
    ttl / 10
}

/// When a hold renewed at `sent` for `ttl` is reported lost: `sent + ttl −
/// margin`, or ~136 years on for a time to live beyond the clock's range.
pub(crate) fn loss_deadline(sent: Instant, ttl: Duration) -> Instant {
    let left = ttl - loss_margin(ttl);
    sent.checked_add(left)
        .or_else(|| sent.checked_add(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(sent)
}

struct State {
    reason: Option<LossReason>,
    /// Lost at this instant unless a renewal moves it; `None` once the
    /// watch is over (released, or handed to a new hold).
    deadline: Option<Instant>,
    last_error: Option<String>,
    wakers: Vec<Waker>,
}

struct Inner {
    state: Mutex<State>,
    cond: Condvar,
}

/// Reports that a guarded lock was lost: a cheap, cloneable handle that
/// other threads or tasks can poll, block on or await.
///
/// It is lost when a renewal finds the lock gone or taken, and also when no
/// renewal has been acknowledged by `sent + ttl − margin` (`sent`: when the
/// last acknowledged renewal was sent; `margin`: [`loss_margin`]): before
/// the server can hand the lock to anyone else. From then on
/// [`is_lost`](Self::is_lost) is true, checked against the clock on every
/// call, whether or not a renewal is still in flight.
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
    inner: Arc<Inner>,
}

impl fmt::Debug for LossSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossSignal")
            .field("lost", &self.reason())
            .finish()
    }
}

impl LossSignal {
    /// A signal that reports a loss at `deadline` unless moved.
    pub(crate) fn new(deadline: Instant) -> Self {
        LossSignal {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    reason: None,
                    deadline: Some(deadline),
                    last_error: None,
                    wakers: Vec::new(),
                }),
                cond: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, even one cut by a panic.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports the loss (the first reason wins) and wakes every waiter.
    pub(crate) fn set(&self, reason: LossReason) {
        let mut s = self.lock();
        self.set_locked(&mut s, reason);
    }

    fn set_locked(&self, s: &mut State, reason: LossReason) {
        if s.reason.is_some() {
            return;
        }
        s.reason = Some(reason);
        s.deadline = None;
        for w in s.wakers.drain(..) {
            w.wake();
        }
        self.inner.cond.notify_all();
    }

    /// Materialises a passed deadline as a loss; the reason if lost.
    fn check(&self, s: &mut State, now: Instant) -> Option<LossReason> {
        if s.reason.is_none() && s.deadline.is_some_and(|d| now >= d) {
            let why = s
                .last_error
                .clone()
                .unwrap_or_else(|| "no reply to the renewal".to_owned());
            self.set_locked(s, LossReason::Unreachable(why));
        }
        s.reason.clone()
    }

    /// A renewal sent at `sent` was acknowledged: the deadline moves to
    /// `sent + ttl − margin` (never backwards).
    pub(crate) fn renewed(&self, sent: Instant, ttl: Duration) {
        let mut s = self.lock();
        if self.check(&mut s, Instant::now()).is_some() {
            return;
        }
        let next = loss_deadline(sent, ttl);
        s.deadline = s.deadline.map(|d| d.max(next));
        s.last_error = None;
        self.inner.cond.notify_all();
    }

    /// Remembers why the last renewal failed, for the report.
    pub(crate) fn renewal_failed(&self, error: String) {
        self.lock().last_error = Some(error);
    }

    /// Ends the watch without a loss: the lock was released, or another hold
    /// is watched now. Waiters stay pending.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.deadline = None;
        self.inner.cond.notify_all();
    }

    /// When the loss will be reported unless a renewal is acknowledged
    /// first; `None` when lost or no longer watched.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let mut s = self.lock();
        self.check(&mut s, Instant::now());
        s.deadline
    }

    /// The timer: blocks until the deadline passes (reporting the loss) or
    /// the watch ends. It never waits on a renewal in flight.
    pub(crate) fn run_timer(&self) {
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            if self.check(&mut s, now).is_some() {
                return;
            }
            let Some(deadline) = s.deadline else { return };
            s = self
                .inner
                .cond
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether the lock was lost (or may be: see the type's description).
    pub fn is_lost(&self) -> bool {
        self.reason().is_some()
    }

    /// Why the lock was lost, if it was.
    pub fn reason(&self) -> Option<LossReason> {
        let mut s = self.lock();
        self.check(&mut s, Instant::now())
    }

    /// Blocks until the lock is lost or `timeout` passes; the reason if lost.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<LossReason> {
        let until = Instant::now().checked_add(timeout);
        let mut s = self.lock();
        loop {
            let now = Instant::now();
            if let Some(r) = self.check(&mut s, now) {
                return Some(r);
            }
            let wake = match (until, s.deadline) {
                (Some(u), Some(d)) => Some(u.min(d)),
                (u, d) => u.or(d),
            };
            s = match wake {
                Some(w) if now >= w => return None,
                Some(w) => {
                    self.inner
                        .cond
                        .wait_timeout(s, w - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.inner.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Resolves when the lock is lost (never, if it is released normally).
    /// Runtime-agnostic: the watchdog's timer wakes it at the deadline.
    pub async fn lost(&self) -> LossReason {
        LostFuture {
            signal: self.clone(),
        }
        .await
    }
}

struct LostFuture {
    signal: LossSignal,
}

impl Future for LostFuture {
    type Output = LossReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LossReason> {
        let mut s = self.signal.lock();
        if let Some(r) = self.signal.check(&mut s, Instant::now()) {
            return Poll::Ready(r);
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_reports_without_a_timer() {
        let now = Instant::now();
        let s = LossSignal::new(now + Duration::from_millis(40));
        assert!(!s.is_lost());
        s.renewal_failed("refused".into());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.reason(), Some(LossReason::Unreachable("refused".into())));
    }

    #[test]
    fn renewals_move_the_deadline_and_the_timer_fires() {
        let t0 = Instant::now();
        let ttl = Duration::from_millis(100);
        let s = LossSignal::new(t0 + ttl - loss_margin(ttl));
        s.renewed(t0 + Duration::from_millis(50), ttl);
        assert_eq!(s.deadline(), Some(t0 + Duration::from_millis(140)));
        let timer = {
            let s = s.clone();
            std::thread::spawn(move || s.run_timer())
        };
        assert!(s.wait_timeout(Duration::from_millis(20)).is_none());
        timer.join().unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(140));
        assert!(s.is_lost());
    }

    #[test]
    fn an_endless_ttl_does_not_overflow() {
        let now = Instant::now();
        assert!(loss_deadline(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn close_ends_the_timer_without_a_loss() {
        let s = LossSignal::new(Instant::now() + Duration::from_secs(60));
        let timer = {
            let s = s.clone();
            std::thread::spawn(move || s.run_timer())
        };
        s.close();
        timer.join().unwrap();
        assert!(!s.is_lost());
        s.set(LossReason::HeldByOther);
        assert_eq!(s.reason(), Some(LossReason::HeldByOther));
    }
}
