//! Redlock: one lock over N independent servers, each with the module,
//! granted by a majority, after the published algorithm (redis.io,
//! "Distributed Locks with Redis"). Async (tokio) only.
//!
//! # The algorithm
//!
//! [`Redlock::obtain`] notes the time, sends `LOCK.ACQUIRE key token ttl`
//! to every server at once, each request bounded by a per-server timeout
//! much smaller than the TTL ([`Redlock::request_timeout`], 50 ms by
//! default), and counts the grants. The lock is obtained only when a
//! majority (N/2 + 1) granted **and** the validity `TTL − elapsed − drift`
//! is positive, with `drift` = 1 % of the TTL + 2 ms ([`drift`]). Otherwise
//! it releases the token on every server (one that timed out may have
//! granted) and, if the [`Retry`] strategy allows, tries again after a
//! random delay between half and all of the strategy's delay, so that
//! competing clients fall out of step. Server-side waiting (`WAIT`) is never
//! used.
//!
//! [`RedlockLock::refresh`] sends `LOCK.EXTEND` (which never re-creates a
//! lapsed lock) to every server; the extension counts only when a majority
//! extended before the current validity ended, and the new validity again
//! subtracts the elapsed time and the drift. [`RedlockLock::validity`] is
//! the time left, counted from when the obtain or the last refresh
//! *started*. [`RedlockGuard`]'s watchdog refreshes every third of the TTL
//! and reports a loss ([`LossSignal`](crate::LossSignal)) a tenth of the
//! TTL before the server-side TTL can end, which is before the validity
//! ends.
//!
//! Errors ([`RedlockError`]) carry a [`Tally`]: how many servers granted,
//! refused, timed out or failed, and why each failed one failed.
//!
//! # Fencing across the quorum
//!
//! Each server issues its own fences (about its clock in µs, see the top
//! README's *Guarantees and limits*). [`RedlockLock::fence`] is the
//! **maximum of the fences of the servers that granted** (counted ones
//! only); [`RedlockLock::server_fences`] has each of them. For two
//! successive holders H1 and H2 of a key, with granting majorities M1 and
//! M2:
//!
//! - **Guaranteed**: M1 and M2 share at least one server S (two majorities
//!   of N always do). S granted H2 only after H1's grant there ended, so S
//!   gave H2 a larger fence than it gave H1 (under the module's per-server
//!   guarantee: across a restart only within `lock.fence-margin` of clock
//!   difference). So H2's fence is above **at least one** of H1's
//!   per-server fences; and it is above **H1's fence** whenever the server
//!   that gave H1 its maximum also granted H2.
//! - **Not guaranteed**: that H2's fence is above H1's when the server that
//!   gave H1 its maximum is not in M2. Then the comparison depends on how
//!   far apart the servers' fence counters are: they are clock-based, so it
//!   holds when the servers' clocks differ by less than the time between
//!   H1's grants and H2's; but a server that started (or was promoted)
//!   less than `lock.fence-margin` ago (10 s by default) issues fences that
//!   far ahead of its clock, and a holder whose majority included it carries
//!   a fence that the next holders may not exceed for that long. A paused H1
//!   could then write after H2 with the larger fence, and a fenced resource
//!   would accept it. For Redlock, run the servers with NTP, a small
//!   `lock.fence-margin` (0 when restarts are delayed as below), and, where
//!   the fence must be strictly monotonic, prefer one server (or a cluster)
//!   with the module, whose per-key fences are.
//!
//! # Restarts without persistence
//!
//! A server that restarts with an empty dataset forgets the locks it
//! granted, and a second client could then get a majority while the first
//! still holds the lock. The algorithm prescribes either persistence with
//! `appendfsync always`, or a **delayed restart**: a restarted server must
//! not take part for at least the largest TTL in use. This client does the
//! latter itself with [`Redlock::min_server_uptime`]: a server whose
//! uptime (`uptime_in_seconds` of `INFO server`, read on connecting, less
//! one second for its rounding) is below it counts as failed and is not
//! asked. A restart always breaks the connection, so it is always seen.
//! Set it to at least your largest TTL, unless every server runs with
//! `appendonly yes` and `appendfsync always`, or is restarted with such a
//! delay by its supervisor. The module itself does not delay anything: its
//! fences after a restart start above its clock + `lock.fence-margin`, so
//! they keep increasing, but mutual exclusion needs the delay or the
//! persistence.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use redis_fenced_lock::redlock::{Redlock, RedlockOptions};
//! use redis_fenced_lock::retry::{LinearBackoff, RetryExt};
//!
//! let redlock = Redlock::new([
//!     "redis://10.0.0.1/", "redis://10.0.0.2/", "redis://10.0.0.3/",
//!     "redis://10.0.0.4/", "redis://10.0.0.5/",
//! ])?
//! .request_timeout(Duration::from_millis(50))
//! .min_server_uptime(Duration::from_secs(60)); // no TTL is longer than 60 s
//! let options = RedlockOptions::new().retry(LinearBackoff(Duration::from_millis(200)).limit(5));
//! let lock = redlock.obtain("jobs:nightly", Duration::from_secs(30), &options).await?;
//! let guard = lock.guard_with_watchdog();
//! let lost = guard.loss_signal().expect("a watchdog");
//! tokio::select! {
//!     reason = lost.lost() => eprintln!("lost: {reason}"),
//!     _ = tokio::time::sleep(Duration::from_secs(5)) => {} // the work, under guard.fence()
//! }
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod lock;
mod servers;
mod tally;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::IntoConnectionInfo;

use lock::Lease;
pub use lock::{RedlockGuard, RedlockLock};
pub use tally::{RedlockError, Tally};

use crate::commands;
use crate::options::ceil_ms;
use crate::retry::{NoRetry, Retry};
use crate::token::new_token;
use servers::{Limits, Node, Round, Servers};

/// The per-server timeout unless set: 50 ms, the upper end of what the
/// algorithm suggests for a 10 s TTL.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(50);

/// The shortest TTL accepted: below it, the drift and a round trip to N
/// servers leave almost no validity, and the watchdog's loss report (a
/// tenth of the TTL early) would no longer come before the validity ends.
pub const MIN_TTL: Duration = Duration::from_millis(50);

/// The clock drift allowed for a TTL: 1 % of it + 2 ms.
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::redlock::drift;
/// assert_eq!(drift(Duration::from_secs(10)), Duration::from_millis(102));
/// ```
pub fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// The validity left at `now` of a lease whose round started at `start`:
/// `TTL − elapsed − drift`, zero when none.
pub(crate) fn validity_at(start: Instant, ttl: Duration, now: Instant) -> Duration {
    ttl.saturating_sub(drift(ttl))
        .saturating_sub(now.saturating_duration_since(start))
}

/// A random delay between half and all of `delay`, so that clients that
/// failed together do not retry together, and a deadline the strategy
/// honours is still honoured.
fn jittered(delay: Duration) -> Duration {
    let max = delay.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::rng().random_range(max / 2..=max))
}

/// How [`Redlock::obtain`] obtains a lock: retries, token, metadata.
#[derive(Clone)]
pub struct RedlockOptions {
    retry: Arc<dyn Retry>,
    token: Option<Vec<u8>>,
    token_prefix: String,
    metadata: Option<Vec<u8>>,
}

impl fmt::Debug for RedlockOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("RedlockOptions")
            .field("retry", &self.retry)
            .field("token_prefix", &self.token_prefix)
            .finish_non_exhaustive()
    }
}

impl Default for RedlockOptions {
    fn default() -> Self {
        RedlockOptions {
            retry: Arc::new(NoRetry),
            token: None,
            token_prefix: String::new(),
            metadata: None,
        }
    }
}

impl RedlockOptions {
    /// One attempt (no retry), a random token, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// When to retry after an attempt without a majority (default
    /// [`NoRetry`]). Each delay is randomised between half and all of the
    /// strategy's.
    pub fn retry(mut self, strategy: impl Retry + 'static) -> Self {
        self.retry = Arc::new(strategy);
        self
    }

    /// Use this token instead of a random one; make it unguessable.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.token = Some(token.as_ref().to_vec());
        self
    }

    /// Prepended to random tokens, to see who holds a lock.
    pub fn token_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.token_prefix = prefix.into();
        self
    }

    /// A small value stored with the lock on each server (`META`), shown
    /// by `LOCK.INFO`.
    pub fn metadata(mut self, metadata: impl AsRef<[u8]>) -> Self {
        self.metadata = Some(metadata.as_ref().to_vec());
        self
    }
}

/// A quorum locker over N independent servers, each with the module. Cheap
/// to clone: clones share the servers' connections (one multiplexed
/// connection per server, made on first use and again after it breaks).
#[derive(Clone)]
pub struct Redlock {
    servers: Arc<Servers>,
    limits: Limits,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.servers.nodes.iter().map(|n| n.name.as_str()).collect();
        f.debug_struct("Redlock")
            .field("servers", &names)
            .field("request_timeout", &self.limits.timeout)
            .field("min_server_uptime", &self.limits.min_uptime)
            .finish()
    }
}

impl Redlock {
    /// A locker over these servers (URLs, or anything redis-rs connects
    /// to). Nothing is connected yet. Use an odd number, 5 for example: the
    /// lock survives (N − 1)/2 servers down.
    pub fn new<I>(servers: I) -> Result<Self, RedlockError>
    where
        I: IntoIterator,
        I::Item: IntoConnectionInfo,
    {
        let clients = servers
            .into_iter()
            .map(|s| redis::Client::open(s).map_err(|e| RedlockError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_clients(clients)
    }

    /// A locker over these clients, one per server.
    pub fn from_clients(clients: Vec<redis::Client>) -> Result<Self, RedlockError> {
        if clients.is_empty() {
            return Err(RedlockError::Invalid("no servers".into()));
        }
        Ok(Redlock {
            servers: Arc::new(Servers {
                nodes: clients.into_iter().map(Node::new).collect(),
            }),
            limits: Limits {
                timeout: DEFAULT_REQUEST_TIMEOUT,
                min_uptime: Duration::ZERO,
            },
        })
    }

    /// The per-server timeout (default 50 ms), connecting included; keep it
    /// much smaller than the TTL. A request is also never given longer than
    /// the validity it could still leave.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        if !timeout.is_zero() {
            self.limits.timeout = timeout;
        }
        self
    }

    /// A server counts only once it has been up this long (default 0):
    /// the algorithm's delayed restart, enforced by the client. Set it to
    /// at least the largest TTL in use unless the servers persist every
    /// write (`appendfsync always`). A server whose `INFO server` cannot
    /// be read (an ACL without `INFO`) counts at once. See the
    /// [module](self) documentation.
    pub fn min_server_uptime(mut self, uptime: Duration) -> Self {
        self.limits.min_uptime = uptime;
        self
    }

    /// The number of servers, N.
    pub fn servers(&self) -> usize {
        self.servers.nodes.len()
    }

    /// The majority needed: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.servers.quorum()
    }

    /// Obtains the lock `key` for `ttl` on a majority of the servers,
    /// retrying after `options`. [`RedlockError::NotObtained`] carries the
    /// last attempt's [`Tally`]. Dropping the future midway leaves no lock
    /// behind: grants in flight are released once their requests end.
    pub async fn obtain(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Duration,
        options: &RedlockOptions,
    ) -> Result<RedlockLock, RedlockError> {
        if ttl < MIN_TTL {
            return Err(RedlockError::Invalid(format!(
                "the TTL ({} ms) is below the minimum of {} ms",
                ttl.as_millis(),
                MIN_TTL.as_millis()
            )));
        }
        let key = key.as_ref().to_vec();
        let token = match &options.token {
            Some(t) => t.clone(),
            None => new_token(&options.token_prefix).into_bytes(),
        };
        let acquire = commands::acquire(
            &key,
            &token,
            ceil_ms(ttl),
            options.metadata.as_deref(),
            None,
        );
        let release = commands::release(&key, &token);
        let timeout = self.limits.timeout.min(ttl - drift(ttl));
        let mut attempt = 0u32;
        loop {
            let start = Instant::now();
            let mut round = Round::start(&self.servers, &acquire, timeout, self.limits)
                .abandon_with(self.servers.clone(), self.limits, release.clone());
            let outcomes = round.outcomes().await;
            let end = Instant::now();
            let mut tally = Tally::new(self.servers(), self.quorum());
            let fences: Vec<Option<u64>> = outcomes
                .into_iter()
                .zip(&self.servers.nodes)
                .map(|(o, node)| tally.count_fence(&node.name, o))
                .collect();
            tally.elapsed = end - start;
            tally.validity = validity_at(start, ttl, end);
            round.disarm();
            if tally.has_quorum() && !tally.validity.is_zero() {
                let fence = fences.iter().flatten().copied().max().unwrap_or_default();
                return Ok(RedlockLock {
                    servers: self.servers.clone(),
                    limits: self.limits,
                    key,
                    token,
                    metadata: options.metadata.clone(),
                    fence,
                    fences,
                    lease: Arc::new(Mutex::new(Lease { start, ttl })),
                });
            }
            // Everywhere: a server that timed out may still have granted.
            Round::start(&self.servers, &release, self.limits.timeout, self.limits)
                .outcomes()
                .await;
            let Some(delay) = options.retry.delay(attempt) else {
                return Err(RedlockError::NotObtained {
                    attempts: attempt + 1,
                    last: tally,
                });
            };
            attempt += 1;
            tokio::time::sleep(jittered(delay)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_subtracts_elapsed_and_drift() {
        let t0 = Instant::now();
        let ttl = Duration::from_millis(1000);
        assert_eq!(validity_at(t0, ttl, t0), Duration::from_millis(988));
        assert_eq!(
            validity_at(t0, ttl, t0 + Duration::from_millis(900)),
            Duration::from_millis(88)
        );
        assert_eq!(
            validity_at(t0, ttl, t0 + Duration::from_millis(988)),
            Duration::ZERO
        );
        assert_eq!(
            validity_at(t0, ttl, t0 + Duration::from_secs(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_delay() {
        let d = Duration::from_millis(200);
        for _ in 0..1000 {
            let j = jittered(d);
            assert!(j >= d / 2 && j <= d, "{j:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn quorum_is_a_majority() {
        for (n, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)] {
            let urls = vec!["redis://127.0.0.1:1/"; n];
            assert_eq!(Redlock::new(urls).unwrap().quorum(), q);
        }
        assert!(matches!(
            Redlock::new(Vec::<String>::new()),
            Err(RedlockError::Invalid(_))
        ));
        assert!(matches!(
            Redlock::new(["not a url"]),
            Err(RedlockError::Invalid(_))
        ));
    }
}
