//! Lock options: bsm/redis-lock's fields and defaults, plus retry strategies and
//! server-side waiting.

use std::time::Duration;

/// The default lock timeout (time to live of a lock): 5 s.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The default delay between retries: 100 ms.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The default longest single server-side wait: 400 ms (below redis-rs's
/// default 500 ms response timeout of async connections).
pub const DEFAULT_SERVER_WAIT_SLICE: Duration = Duration::from_millis(400);

/// How long to sleep between two tries to obtain a lock.
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::RetryStrategy;
///
/// // The Go library's behaviour: `retry_delay` between every two tries.
/// let fixed = RetryStrategy::Fixed;
/// assert_eq!(fixed.nominal_delay(Duration::from_millis(100), 3), Duration::from_millis(100));
///
/// // Doubling from `retry_delay`, capped at one second, with jitter.
/// let backoff = RetryStrategy::exponential(Duration::from_secs(1));
/// assert_eq!(backoff.nominal_delay(Duration::from_millis(100), 3), Duration::from_millis(800));
/// assert_eq!(backoff.nominal_delay(Duration::from_millis(100), 9), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RetryStrategy {
    /// Sleep [`Options::retry_delay`] between tries (bsm/redis-lock's behaviour).
    #[default]
    Fixed,
    /// Sleep `retry_delay × 2ⁿ` before retry `n` (counting from 0), capped at
    /// `max_delay`. With `jitter`, each sleep is drawn uniformly from
    /// `[d/2, d]` ("equal jitter"), so that contending clients spread out.
    Exponential {
        /// The longest single sleep.
        max_delay: Duration,
        /// Randomise each sleep within `[d/2, d]`.
        jitter: bool,
    },
}

impl RetryStrategy {
    /// Exponential backoff with jitter, capped at `max_delay`.
    pub fn exponential(max_delay: Duration) -> Self {
        RetryStrategy::Exponential {
            max_delay,
            jitter: true,
        }
    }

    /// The delay before retry number `retry` (0 = the first retry), without
    /// jitter.
    pub fn nominal_delay(&self, base: Duration, retry: u32) -> Duration {
        match *self {
            RetryStrategy::Fixed => base,
            RetryStrategy::Exponential { max_delay, .. } => {
                let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
                base.checked_mul(factor)
                    .unwrap_or(Duration::MAX)
                    .min(max_delay.max(base))
            }
        }
    }

    /// The delay to actually sleep before retry number `retry`: the nominal
    /// delay, with jitter applied when the strategy asks for it.
    pub fn delay(&self, base: Duration, retry: u32) -> Duration {
        let nominal = self.nominal_delay(base, retry);
        match *self {
            RetryStrategy::Exponential { jitter: true, .. } => {
                use rand::Rng;
                let half = nominal / 2;
                let spread = (nominal - half).as_nanos().min(u64::MAX as u128) as u64;
                half + Duration::from_nanos(rand::rng().random_range(0..=spread))
            }
            _ => nominal,
        }
    }
}

/// Replica acknowledgement: a write to the lock (acquisition, renewal,
/// release) counts only once this many replicas have acknowledged it within
/// `timeout`. Off by default ([`Options::replica_ack`],
/// [`ObtainOptions::replica_ack`](crate::ObtainOptions::replica_ack)).
///
/// The client pipelines `WAIT replicas timeout` (or `WAITAOF local replicas
/// timeout`) right after the lock command, on the same connection: `WAIT`
/// waits for that connection's own last write. A lock acknowledged by `N`
/// replicas survives a failover to any of them; an unacknowledged one may
/// be lost with the master that granted it, and granted again.
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::ReplicaAck;
///
/// // One replica must have the lock in memory within 100 ms.
/// let ack = ReplicaAck::replicas(1, Duration::from_millis(100));
/// assert_eq!(ack.wanted(), 1);
/// // The master's AOF fsynced, and one replica's (Redis 7.2+, Valkey).
/// let aof = ReplicaAck::Aof { local: true, replicas: 1, timeout: Duration::from_millis(100) };
/// assert_eq!(aof.wanted(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaAck {
    /// `WAIT replicas timeout`: the replicas have received the write.
    Replicas {
        /// How many replicas must acknowledge.
        replicas: u32,
        /// How long to wait for them (at least 1 ms; sent in whole
        /// milliseconds, rounded up).
        timeout: Duration,
    },
    /// `WAITAOF local replicas timeout` (Redis 7.2+, Valkey 8): the write is
    /// fsynced to the append-only file of the master (`local`, which needs
    /// `appendonly yes` there) and of `replicas` replicas (which need it
    /// too). Servers without `WAITAOF` answer with an error.
    Aof {
        /// Whether the master's own AOF must have fsynced the write.
        local: bool,
        /// How many replicas' AOFs must have fsynced it.
        replicas: u32,
        /// How long to wait (at least 1 ms).
        timeout: Duration,
    },
}

impl ReplicaAck {
    /// `WAIT replicas timeout`.
    pub fn replicas(replicas: u32, timeout: Duration) -> Self {
        ReplicaAck::Replicas { replicas, timeout }
    }

    /// How long the server may wait for the acknowledgement.
    pub fn timeout(&self) -> Duration {
        match *self {
            ReplicaAck::Replicas { timeout, .. } | ReplicaAck::Aof { timeout, .. } => timeout,
        }
    }

    /// How many acknowledgements are needed (for `WAITAOF`, the master's
    /// own fsync counts as one).
    pub fn wanted(&self) -> u32 {
        match *self {
            ReplicaAck::Replicas { replicas, .. } => replicas,
            ReplicaAck::Aof {
                local, replicas, ..
            } => replicas.saturating_add(u32::from(local)),
        }
    }
}

/// Options of a [`Locker`](crate::Locker) or [`AsyncLocker`](crate::AsyncLocker).
///
/// The first four fields are bsm/redis-lock's, with its defaults and normalisation
/// (see [`Options::normalize`]); `Options::default()` is bsm/redis-lock's `nil`.
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::{Options, RetryStrategy};
///
/// let options = Options {
///     lock_timeout: Duration::from_secs(30),
///     retry_count: 50,
///     retry_delay: Duration::from_millis(20),
///     retry_strategy: RetryStrategy::exponential(Duration::from_secs(1)),
///     token_prefix: "worker-7-".into(),
///     ..Options::default()
/// };
/// assert!(options.wait_in_server);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The time to live of a lock: it expires this long after it was obtained
    /// or last renewed. Default 5 s; zero becomes the default. Sent in whole
    /// milliseconds (rounded up).
    pub lock_timeout: Duration,
    /// How many times to retry obtaining a lock held by someone else.
    /// Default 0: do not retry.
    pub retry_count: u32,
    /// The delay between retries (the base delay of exponential backoff).
    /// Default 100 ms; zero becomes the default.
    pub retry_delay: Duration,
    /// Prepended to the random token, so that an operator can see who holds
    /// a lock (for example `hostname-pid-`). Default empty.
    pub token_prefix: String,
    /// How to space the retries. Default [`RetryStrategy::Fixed`] (bsm/redis-lock's).
    pub retry_strategy: RetryStrategy,
    /// With retries, wait in the server's FIFO queue (`LOCK.ACQUIRE … WAIT`)
    /// instead of polling, when the server supports it; servers that do not
    /// are detected once per locker, which then polls. Default `true`.
    ///
    /// The total wait is the retry budget (see [`Options::retry_budget`]).
    /// A waiting command blocks the connection it is sent on: give a waiting
    /// locker a connection of its own (never a multiplexed connection shared
    /// with other work, such as a watchdog).
    pub wait_in_server: bool,
    /// The longest single server-side wait. Longer budgets are waited in
    /// slices; each takes back the locker's place in the server's queue (the
    /// server keeps a timed-out waiter's place for 1 s for the same token,
    /// and the token stays the same across slices). Keep it below the
    /// connection's response timeout (redis-rs async connections: 500 ms by
    /// default); it also bounds how late the sync locker notices a
    /// cancellation while waiting. Default 400 ms; zero becomes the default.
    pub server_wait_slice: Duration,
    /// Acquisitions, renewals and releases count only once replicas
    /// acknowledged them (see [`ReplicaAck`]). Default `None`: no
    /// acknowledgement. An acquisition that is not acknowledged in time is
    /// released and fails with [`Error::NotAcknowledged`](crate::Error::NotAcknowledged).
    ///
    /// The `WAIT` blocks the connection it is sent on for up to its
    /// timeout. The [`Locker`](crate::Locker) sends it on its own
    /// connection (and its watchdog's); an
    /// [`AsyncLocker`](crate::AsyncLocker) only on a connection of its own
    /// from [`WaitConnections`](crate::WaitConnections), never on its shared
    /// connection: without wait connections it fails with
    /// [`Error::AckNeedsOwnConnection`](crate::Error::AckNeedsOwnConnection).
    pub replica_ack: Option<ReplicaAck>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            retry_count: 0,
            retry_delay: DEFAULT_RETRY_DELAY,
            token_prefix: String::new(),
            retry_strategy: RetryStrategy::Fixed,
            wait_in_server: true,
            server_wait_slice: DEFAULT_SERVER_WAIT_SLICE,
            replica_ack: None,
        }
    }
}

impl Options {
    /// Replaces out-of-range values with the defaults, as bsm/redis-lock does:
    /// a zero lock timeout becomes 5 s, a zero retry delay 100 ms, a zero
    /// server wait slice 400 ms. (The Go library's "negative retry count becomes 0"
    /// is enforced by the type.) Lockers normalise their options on creation.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redis_fenced_lock::Options;
    ///
    /// let options = Options {
    ///     lock_timeout: Duration::ZERO,
    ///     retry_delay: Duration::ZERO,
    ///     ..Options::default()
    /// }
    /// .normalize();
    /// assert_eq!(options, Options::default());
    /// ```
    pub fn normalize(mut self) -> Self {
        if self.lock_timeout.is_zero() {
            self.lock_timeout = DEFAULT_LOCK_TIMEOUT;
        }
        if self.retry_delay.is_zero() {
            self.retry_delay = DEFAULT_RETRY_DELAY;
        }
        if self.server_wait_slice.is_zero() {
            self.server_wait_slice = DEFAULT_SERVER_WAIT_SLICE;
        }
        self
    }

    /// The longest time `lock()` spends retrying: the sum of the nominal
    /// delays of all retries (`retry_count × retry_delay` with the fixed
    /// strategy). Zero without retries.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redis_fenced_lock::Options;
    ///
    /// let options = Options { retry_count: 4, retry_delay: Duration::from_millis(25), ..Options::default() };
    /// assert_eq!(options.retry_budget(), Duration::from_millis(100));
    /// ```
    pub fn retry_budget(&self) -> Duration {
        (0..self.retry_count)
            .map(|n| self.retry_strategy.nominal_delay(self.retry_delay, n))
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// The lock timeout in whole milliseconds, rounded up (at least 1).
    pub(crate) fn lock_timeout_ms(&self) -> u64 {
        ceil_ms(self.lock_timeout)
    }
}

/// A duration in whole milliseconds, rounded up, at least 1.
pub(crate) fn ceil_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.clamp(1, u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_bsm_redis_locks() {
        let o = Options::default();
        assert_eq!(o.lock_timeout, Duration::from_secs(5));
        assert_eq!(o.retry_count, 0);
        assert_eq!(o.retry_delay, Duration::from_millis(100));
        assert_eq!(o.token_prefix, "");
        assert_eq!(o.retry_strategy, RetryStrategy::Fixed);
        assert_eq!(o.retry_budget(), Duration::ZERO);
    }

    #[test]
    fn ceil_ms_rounds_up() {
        assert_eq!(ceil_ms(Duration::from_micros(1)), 1);
        assert_eq!(ceil_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ceil_ms(Duration::from_secs(5)), 5000);
        assert_eq!(ceil_ms(Duration::ZERO), 1);
        assert_eq!(ceil_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn exponential_jitter_stays_in_range() {
        let s = RetryStrategy::exponential(Duration::from_millis(500));
        let base = Duration::from_millis(10);
        for n in 0..40 {
            let nominal = s.nominal_delay(base, n);
            let d = s.delay(base, n);
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
        }
        assert_eq!(s.nominal_delay(base, 39), Duration::from_millis(500));
    }

    #[test]
    fn budget_sums_nominal_delays() {
        let o = Options {
            retry_count: 4,
            retry_delay: Duration::from_millis(10),
            retry_strategy: RetryStrategy::exponential(Duration::from_millis(50)),
            ..Options::default()
        };
        // 10 + 20 + 40 + 50
        assert_eq!(o.retry_budget(), Duration::from_millis(120));
    }
}
