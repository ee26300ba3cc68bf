//! Composable retry strategies (bsm/redislock's `RetryStrategy`): how long
//! to wait before each new attempt to obtain a lock, and when to give up.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::options::{Options, RetryStrategy};

/// Attempts beyond which a strategy's budget counts as unlimited.
const BUDGET_ATTEMPTS: u32 = 10_000;

/// When to retry obtaining a lock that someone else holds.
///
/// [`delay`](Retry::delay) is asked before each retry, counting from 0;
/// `None` gives up. Strategies are stateless, so one value serves any
/// number of concurrent attempts. Compose them with [`RetryExt`]; write your
/// own by implementing this trait or with [`retry_fn`].
///
/// When the lock is waited for in the server, the locker waits for the
/// whole [`budget`](Retry::budget) in the server's queue instead of polling.
///
/// ```
/// use std::time::{Duration, Instant};
/// use redis_fenced_lock::retry::{LinearBackoff, Retry, RetryExt};
///
/// let strategy = LinearBackoff(Duration::from_millis(100)).limit(3);
/// assert_eq!(strategy.delay(2), Some(Duration::from_millis(100)));
/// assert_eq!(strategy.delay(3), None);
/// assert_eq!(strategy.budget(), Some(Duration::from_millis(300)));
///
/// let until = LinearBackoff(Duration::from_millis(100)).until(Instant::now() + Duration::from_secs(2));
/// assert!(until.budget().unwrap() <= Duration::from_secs(2));
/// ```
pub trait Retry: Send + Sync + fmt::Debug {
    /// The delay before retry number `attempt` (0 = the first retry), or
    /// `None` to give up.
    fn delay(&self, attempt: u32) -> Option<Duration>;

    /// The longest time the strategy keeps retrying: the sum of its delays,
    /// `None` when it does not give up (or only after more than 10,000
    /// retries).
    fn budget(&self) -> Option<Duration> {
        let mut total = Duration::ZERO;
        for attempt in 0..BUDGET_ATTEMPTS {
            match self.delay(attempt) {
                Some(d) => total = total.saturating_add(d),
                None => return Some(total),
            }
        }
        None
    }
}

impl<R: Retry + ?Sized> Retry for Arc<R> {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        (**self).delay(attempt)
    }
    fn budget(&self) -> Option<Duration> {
        (**self).budget()
    }
}

impl<R: Retry + ?Sized> Retry for Box<R> {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        (**self).delay(attempt)
    }
    fn budget(&self) -> Option<Duration> {
        (**self).budget()
    }
}

/// Combinators for every [`Retry`].
pub trait RetryExt: Retry + Sized {
    /// At most `n` retries (bsm/redislock's `LimitRetry`).
    fn limit(self, n: u32) -> LimitRetry<Self> {
        LimitRetry { inner: self, n }
    }

    /// No retry starts after `deadline`, and none sleeps past it.
    fn until(self, deadline: Instant) -> RetryUntil<Self> {
        RetryUntil {
            inner: self,
            deadline,
        }
    }
}

impl<R: Retry> RetryExt for R {}

/// Never retry (bsm/redislock's `NoRetry`): the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoRetry;

impl Retry for NoRetry {
    fn delay(&self, _: u32) -> Option<Duration> {
        None
    }
    fn budget(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

/// The same delay before every retry, without end (bsm/redislock's
/// `LinearBackoff`); bound it with [`RetryExt::limit`] or
/// [`RetryExt::until`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearBackoff(pub Duration);

impl Retry for LinearBackoff {
    fn delay(&self, _: u32) -> Option<Duration> {
        Some(self.0)
    }
}

/// Doubling delays: `min × 2ⁿ` before retry `n`, capped at `max`, without
/// end (bsm/redislock's `ExponentialBackoff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExponentialBackoff {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Retry for ExponentialBackoff {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        let strategy = RetryStrategy::Exponential {
            max_delay: self.max,
            jitter: false,
        };
        Some(strategy.nominal_delay(self.min, attempt))
    }
}

/// See [`RetryExt::limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitRetry<R> {
    inner: R,
    n: u32,
}

impl<R: Retry> Retry for LimitRetry<R> {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        if attempt < self.n {
            self.inner.delay(attempt)
        } else {
            None
        }
    }
}

/// See [`RetryExt::until`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryUntil<R> {
    inner: R,
    deadline: Instant,
}

impl<R: Retry> Retry for RetryUntil<R> {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        self.inner.delay(attempt).map(|d| d.min(left))
    }
    fn budget(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        Some(self.inner.budget().map_or(left, |b| b.min(left)))
    }
}

/// A strategy from a function of the retry number (`None` gives up).
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::retry::{retry_fn, Retry};
///
/// // 10, 20, 30 ms, then give up.
/// let steps = retry_fn(|n| (n < 3).then(|| Duration::from_millis(10 * u64::from(n + 1))));
/// assert_eq!(steps.budget(), Some(Duration::from_millis(60)));
/// ```
pub fn retry_fn<F>(f: F) -> RetryFn<F>
where
    F: Fn(u32) -> Option<Duration> + Send + Sync,
{
    RetryFn(f)
}

/// See [`retry_fn`].
#[derive(Clone, Copy)]
pub struct RetryFn<F>(F);

impl<F> fmt::Debug for RetryFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryFn")
    }
}

impl<F: Fn(u32) -> Option<Duration> + Send + Sync> Retry for RetryFn<F> {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        (self.0)(attempt)
    }
}

/// The retries of the [`Locker`](crate::Locker) API's [`Options`]:
/// `retry_count` delays after [`RetryStrategy`].
#[derive(Clone, Debug)]
pub(crate) struct OptionsRetry {
    count: u32,
    base: Duration,
    strategy: RetryStrategy,
    budget: Duration,
}

impl OptionsRetry {
    pub(crate) fn new(options: &Options) -> Self {
        OptionsRetry {
            count: options.retry_count,
            base: options.retry_delay,
            strategy: options.retry_strategy,
            budget: options.retry_budget(),
        }
    }
}

impl Retry for OptionsRetry {
    fn delay(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.count).then(|| self.strategy.delay(self.base, attempt))
    }
    fn budget(&self) -> Option<Duration> {
        Some(self.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_and_combinators() {
        assert_eq!(NoRetry.delay(0), None);
        assert_eq!(NoRetry.budget(), Some(Duration::ZERO));
        assert_eq!(LinearBackoff(Duration::from_millis(5)).budget(), None);
        let exp = ExponentialBackoff {
            min: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        let delays: Vec<_> = (0..4).map(|n| exp.delay(n).unwrap().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 50]);
        assert_eq!(exp.limit(4).budget(), Some(Duration::from_millis(120)));
        let past = LinearBackoff(Duration::from_millis(5)).until(Instant::now());
        assert_eq!(past.delay(0), None);
        let soon = LinearBackoff(Duration::from_secs(5))
            .until(Instant::now() + Duration::from_millis(200));
        assert!(soon.delay(0).unwrap() <= Duration::from_millis(200));
        assert!(soon.budget().unwrap() <= Duration::from_millis(200));
        // The tighter of a limit and a deadline wins.
        let both = LinearBackoff(Duration::from_millis(10))
            .limit(3)
            .until(Instant::now() + Duration::from_secs(60));
        assert_eq!(both.budget(), Some(Duration::from_millis(30)));
    }

    #[test]
    fn options_retry_follows_the_options() {
        let o = Options {
            retry_count: 2,
            retry_delay: Duration::from_millis(25),
            ..Options::default()
        };
        let r = OptionsRetry::new(&o);
        assert_eq!(r.delay(1), Some(Duration::from_millis(25)));
        assert_eq!(r.delay(2), None);
        assert_eq!(r.budget(), Some(Duration::from_millis(50)));
    }
}
