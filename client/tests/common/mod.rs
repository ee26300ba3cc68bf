//! Shared test support: one locker interface over the sync and async
//! lockers, so that bsm/redis-lock's suite runs through both.
#![allow(dead_code)]

pub mod fake;

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Commands, Connection};
use redis_fenced_lock::{
    AsyncLocker, CancelHandle, LockState, Locker, Options, Result, WaitConnections,
};
use testkit::Server;

/// The tokio runtime of the async tests (multi-threaded, so that spawned
/// tasks such as watchdogs and releases run between `block_on` calls).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// A locker, sync or async, seen through blocking calls.
pub trait TestLocker: Send {
    fn lock(&mut self) -> Result<bool>;
    fn lock_with_context(&mut self, cancel: &CancelHandle) -> Result<bool>;
    fn unlock(&mut self) -> Result<()>;
    fn ttl(&mut self) -> Result<Option<Duration>>;
    fn is_locked(&self) -> bool;
    fn token(&self) -> Option<String>;
    fn fence(&self) -> Option<u64>;
    fn options(&self) -> Options;
    fn server_wait_supported(&self) -> Option<bool>;
}

/// How to make lockers of one kind.
pub trait Flavor {
    type L: TestLocker + 'static;
    fn new(server: &Server, key: &str, options: Options) -> Self::L;
    fn obtain(server: &Server, key: &str, options: Options) -> Result<Self::L>;
}

pub struct Sync;
pub struct Async;

impl TestLocker for Locker<Connection> {
    fn lock(&mut self) -> Result<bool> {
        Locker::lock(self)
    }
    fn lock_with_context(&mut self, cancel: &CancelHandle) -> Result<bool> {
        Locker::lock_with_context(self, cancel)
    }
    fn unlock(&mut self) -> Result<()> {
        Locker::unlock(self)
    }
    fn ttl(&mut self) -> Result<Option<Duration>> {
        Locker::ttl(self)
    }
    fn is_locked(&self) -> bool {
        LockState::is_locked(self)
    }
    fn token(&self) -> Option<String> {
        LockState::token(self).map(str::to_owned)
    }
    fn fence(&self) -> Option<u64> {
        LockState::fence(self)
    }
    fn options(&self) -> Options {
        LockState::options(self).clone()
    }
    fn server_wait_supported(&self) -> Option<bool> {
        LockState::server_wait_supported(self)
    }
}

impl Flavor for Sync {
    type L = Locker<Connection>;
    fn new(server: &Server, key: &str, options: Options) -> Self::L {
        Locker::new(server.conn(), key, options)
    }
    fn obtain(server: &Server, key: &str, options: Options) -> Result<Self::L> {
        Locker::obtain(server.conn(), key, options)
    }
}

impl TestLocker for AsyncLocker<MultiplexedConnection> {
    fn lock(&mut self) -> Result<bool> {
        rt().block_on(AsyncLocker::lock(self))
    }
    fn lock_with_context(&mut self, cancel: &CancelHandle) -> Result<bool> {
        rt().block_on(AsyncLocker::lock_with_context(self, cancel))
    }
    fn unlock(&mut self) -> Result<()> {
        rt().block_on(AsyncLocker::unlock(self))
    }
    fn ttl(&mut self) -> Result<Option<Duration>> {
        rt().block_on(AsyncLocker::ttl(self))
    }
    fn is_locked(&self) -> bool {
        LockState::is_locked(self)
    }
    fn token(&self) -> Option<String> {
        LockState::token(self).map(str::to_owned)
    }
    fn fence(&self) -> Option<u64> {
        LockState::fence(self)
    }
    fn options(&self) -> Options {
        LockState::options(self).clone()
    }
    fn server_wait_supported(&self) -> Option<bool> {
        LockState::server_wait_supported(self)
    }
}

/// A multiplexed connection of its own (server-side waits block it).
pub fn async_conn(server: &Server) -> MultiplexedConnection {
    let client = server.client();
    rt().block_on(client.get_multiplexed_async_connection())
        .expect("async connection")
}

impl Flavor for Async {
    type L = AsyncLocker<MultiplexedConnection>;
    fn new(server: &Server, key: &str, options: Options) -> Self::L {
        AsyncLocker::new(async_conn(server), key, options)
            .with_wait_connections(WaitConnections::new(server.client()))
    }
    fn obtain(server: &Server, key: &str, options: Options) -> Result<Self::L> {
        let conn = async_conn(server);
        rt().block_on(AsyncLocker::obtain(conn, key, options))
    }
}

/// The options of bsm/redis-lock's suite: 4 retries 25 ms apart, 1 s locks, and a
/// token prefix.
pub fn go_library_options() -> Options {
    Options {
        retry_count: 4,
        retry_delay: Duration::from_millis(25),
        lock_timeout: Duration::from_secs(1),
        token_prefix: format!("test-{}-", std::process::id()),
        ..Options::default()
    }
}

/// The key's remaining time to live in ms (PTTL: -2 missing, -1 no expiry).
pub fn pttl(conn: &mut Connection, key: &str) -> i64 {
    conn.pttl(key).expect("PTTL")
}

/// `LOCK.CHECK key token`.
pub fn check(conn: &mut Connection, key: &str, token: &str) -> i64 {
    redis::cmd("LOCK.CHECK")
        .arg(key)
        .arg(token)
        .query(conn)
        .expect("LOCK.CHECK")
}

/// `LOCK.ACQUIRE key token ms`: the fence, or `None`.
pub fn acquire(conn: &mut Connection, key: &str, token: &str, ms: u64) -> Option<u64> {
    redis::cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg(token)
        .arg(ms)
        .query(conn)
        .expect("LOCK.ACQUIRE")
}

/// `LOCK.RELEASE key token`: whether released.
pub fn release(conn: &mut Connection, key: &str, token: &str) -> bool {
    let n: i64 = redis::cmd("LOCK.RELEASE")
        .arg(key)
        .arg(token)
        .query(conn)
        .expect("LOCK.RELEASE");
    n == 1
}

/// Whether the server supports `LOCK.ACQUIRE … WAIT` (asked on a scratch key).
pub fn server_supports_wait(server: &Server) -> bool {
    let mut conn = server.conn();
    let probe = "__redis_lock_wait_probe__";
    let reply: redis::RedisResult<Option<u64>> = redis::cmd("LOCK.ACQUIRE")
        .arg(probe)
        .arg("probe")
        .arg(1000)
        .arg("WAIT")
        .arg(0)
        .query(&mut conn);
    match reply {
        Ok(_) => {
            release(&mut conn, probe, "probe");
            true
        }
        Err(_) => false,
    }
}

/// Asserts `actual` is within `tolerance` of `expected` (all in ms).
#[track_caller]
pub fn assert_near(actual: i64, expected: i64, tolerance: i64, what: &str) {
    // A TTL only runs down: a stalled test thread (a busy 2-core machine)
    // reads a lower one, never a higher one, so the low side gets more room.
    let low = expected - tolerance.max(150);
    assert!(
        actual <= expected + tolerance && actual >= low,
        "{what}: {actual} ms, expected {low} to {} ms",
        expected + tolerance
    );
}

/// How many times the server ran `command` (INFO commandstats), for example
/// `lock.acquire`.
pub fn command_calls(conn: &mut Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
