//! Cancellation handles for `lock_with_context` (bsm/redis-lock's `context.Context`).

use std::fmt;
use std::time::{Duration, Instant};

use crate::signal::Signal;

/// Ends a [`lock_with_context`](crate::Locker::lock_with_context) call's
/// retry wait early: the call then returns [`Error::Cancelled`](crate::Error::Cancelled).
///
/// Clones share the state: cancel one, and all are cancelled. A handle made
/// with [`CancelHandle::with_timeout`] also cancels itself at its deadline
/// (bsm/redis-lock's `context.WithTimeout`).
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::CancelHandle;
///
/// let cancel = CancelHandle::new();
/// let for_other_thread = cancel.clone();
/// std::thread::spawn(move || for_other_thread.cancel()).join().unwrap();
/// assert!(cancel.is_cancelled());
///
/// let deadline = CancelHandle::with_timeout(Duration::ZERO);
/// assert!(deadline.is_cancelled());
/// ```
#[derive(Clone)]
pub struct CancelHandle {
    signal: Signal<()>,
    deadline: Option<Instant>,
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.is_cancelled())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Default for CancelHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelHandle {
    /// A handle that is cancelled only by [`cancel`](Self::cancel).
    pub fn new() -> Self {
        CancelHandle {
            signal: Signal::new(),
            deadline: None,
        }
    }

    /// A handle that cancels itself `timeout` from now (or earlier by
    /// [`cancel`](Self::cancel)).
    pub fn with_timeout(timeout: Duration) -> Self {
        CancelHandle {
            signal: Signal::new(),
            deadline: Instant::now().checked_add(timeout),
        }
    }

    /// Cancels: waits in progress end at once, later ones do not start.
    pub fn cancel(&self) {
        self.signal.set(());
    }

    /// Whether [`cancel`](Self::cancel) was called or the deadline passed.
    pub fn is_cancelled(&self) -> bool {
        self.signal.get().is_some() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The deadline, for a handle made with [`with_timeout`](Self::with_timeout).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sleeps for `d` unless cancelled first; true when cancelled.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now().checked_add(d);
        let until = match (until, self.deadline) {
            (Some(u), Some(dl)) => Some(u.min(dl)),
            (u, dl) => u.or(dl),
        };
        self.signal.wait_until(until);
        self.is_cancelled()
    }

    /// Resolves once cancelled (by `cancel()` or the deadline).
    #[cfg(feature = "tokio")]
    pub(crate) async fn cancelled(&self) {
        let signal = self.signal.wait_async();
        match self.deadline {
            None => signal.await,
            Some(d) => {
                let timer = tokio::time::sleep_until(d.into());
                let _ = crate::aio::race(signal, timer).await;
            }
        }
    }
}
