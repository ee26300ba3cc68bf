//! Connections of their own for server-side waits (async lockers).
//!
//! `LOCK.ACQUIRE … WAIT` blocks the connection it is sent on until the lock
//! is granted or the wait times out: on a shared multiplexed connection it
//! would hold back every other command behind it, holders' renewals and
//! releases included. So an async locker waits only on a connection that
//! nothing else uses, taken from this pool, and polls when it has none.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

/// Idle connections kept for later waits; more are closed when returned.
const MAX_IDLE: usize = 16;

/// How much longer than the server-side wait the reply may take before the
/// connection is given up (a dead or paused server).
pub(crate) const WAIT_REPLY_MARGIN: Duration = Duration::from_secs(2);

/// A pool of connections for server-side waits, opened from a
/// [`redis::Client`]: each wait has a connection to itself, so that it never
/// blocks other commands. Cheap to clone (clones share the pool).
///
/// The connections have no response timeout of their own (redis-rs's
/// default of 500 ms would cut every longer wait): the locker allows each
/// wait its length plus 2 s, then closes the connection, which also takes
/// the waiter out of the server's queue.
///
/// ```no_run
/// # async fn run() -> Result<(), redis_fenced_lock::Error> {
/// use redis_fenced_lock::{AsyncLocker, Options, WaitConnections};
///
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let shared = client.get_multiplexed_async_connection().await?;
/// let waits = WaitConnections::new(client);
/// let options = Options { retry_count: 100, ..Options::default() };
/// // Renewals, releases and other work share `shared`; waits do not.
/// let mut locker = AsyncLocker::new(shared, "lock.foo", options).with_wait_connections(waits);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WaitConnections {
    client: redis::Client,
    idle: Arc<Mutex<Vec<MultiplexedConnection>>>,
}

impl fmt::Debug for WaitConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitConnections")
            .field("idle", &self.idle_list().len())
            .finish()
    }
}

impl WaitConnections {
    /// Opens connections from `client` as waits need them.
    pub fn new(client: redis::Client) -> Self {
        WaitConnections {
            client,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection no one else uses: an idle one, or a new one.
    pub(crate) async fn take(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.idle_list().pop() {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Gives back a connection whose wait ended with a reply.
    pub(crate) fn give_back(&self, conn: MultiplexedConnection) {
        let mut idle = self.idle_list();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}
