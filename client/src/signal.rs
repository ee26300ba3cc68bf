//! A one-shot, thread-safe flag that threads can block on and futures can
//! await: the base of [`CancelHandle`](crate::CancelHandle) and
//! [`LossSignal`](crate::LossSignal). No runtime needed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct State<T> {
    value: Option<T>,
    wakers: Vec<Waker>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
}

/// A flag that is set at most once, with a value.
pub(crate) struct Signal<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Signal<T> {
    fn clone(&self) -> Self {
        Signal {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Clone> Signal<T> {
    pub(crate) fn new() -> Self {
        Signal {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    value: None,
                    wakers: Vec::new(),
                }),
                cond: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the state inconsistent.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the flag (the first value wins) and wakes every waiter.
    pub(crate) fn set(&self, value: T) {
        let wakers = {
            let mut s = self.lock();
            if s.value.is_some() {
                return;
            }
            s.value = Some(value);
            std::mem::take(&mut s.wakers)
        };
        self.inner.cond.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// The value, if set.
    pub(crate) fn get(&self) -> Option<T> {
        self.lock().value.clone()
    }

    /// Blocks until the flag is set or `deadline` passes (`None`: forever);
    /// returns the value if set.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(v) = &s.value {
                return Some(v.clone());
            }
            match deadline {
                None => s = self.inner.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    s = self
                        .inner
                        .cond
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// A future that resolves with the value once the flag is set.
    pub(crate) fn wait_async(&self) -> SignalFuture<T> {
        SignalFuture {
            signal: self.clone(),
        }
    }
}

/// Resolves when the [`Signal`] is set.
pub(crate) struct SignalFuture<T> {
    signal: Signal<T>,
}

impl<T: Clone> Future for SignalFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.signal.lock();
        if let Some(v) = &s.value {
            return Poll::Ready(v.clone());
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
    use std::time::Duration;

    #[test]
    fn wakes_a_blocked_thread() {
        let s = Signal::<u8>::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_until(None));
        std::thread::sleep(Duration::from_millis(20));
        s.set(3);
        s.set(4);
        assert_eq!(t.join().unwrap(), Some(3));
        assert_eq!(s.get(), Some(3));
    }

    #[test]
    fn times_out() {
        let s = Signal::<()>::new();
        let start = Instant::now();
        assert_eq!(s.wait_until(Some(start + Duration::from_millis(30))), None);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
