//! Async cancellation safety: a `lock()` future dropped (or cancelled) while
//! its acquisition is in flight leaves no lock held by nobody.

mod common;

use std::time::Duration;

use common::*;
use redis::Commands;
use redis_fenced_lock::{AsyncLocker, CancelHandle, Error, Options};
use testkit::{wait_for, Server};

const KEY: &str = "__redis_lock_cancel__";

/// Holds write commands for `ms` on the server (CLIENT PAUSE … WRITE), so
/// that an acquisition sent meanwhile is in flight until then.
fn pause_writes(server: &Server, ms: u64) {
    let mut conn = server.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query(&mut conn)
        .unwrap();
}

/// The abandoned acquisition was granted, then released by the locker.
fn grant_released(server: &Server) {
    let mut conn = server.conn();
    wait_for(
        Duration::from_secs(3),
        "the abandoned grant's release",
        || {
            let exists: bool = conn.exists(KEY).unwrap();
            (!exists && command_calls(&mut conn, "lock.release") == 1).then_some(())
        },
    );
    // The module's own counters, where it has them, show that the release
    // did release a lock (the grant made when the pause ended).
    let info: String = redis::cmd("INFO").arg("lock").query(&mut conn).unwrap();
    if let Some(n) = info.lines().find_map(|l| l.strip_prefix("lock_released:")) {
        assert_eq!(n.trim(), "1", "{info}");
    }
}

#[test]
fn dropped_lock_future_releases_its_grant() {
    let server = Server::start();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, Options::default());
    pause_writes(&server, 400);
    let outcome = rt()
        .block_on(async { tokio::time::timeout(Duration::from_millis(100), locker.lock()).await });
    assert!(outcome.is_err(), "the lock() future was dropped midway");
    assert!(!locker.is_locked());
    // The acquisition is carried out when the pause ends, then released.
    grant_released(&server);
    // And the key is free for others.
    let mut other = AsyncLocker::new(async_conn(&server), KEY, Options::default());
    assert!(rt().block_on(other.lock()).unwrap());
}

#[test]
fn cancelled_lock_releases_its_grant() {
    let server = Server::start();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, Options::default());
    pause_writes(&server, 400);
    let cancel = CancelHandle::with_timeout(Duration::from_millis(100));
    let result = rt().block_on(locker.lock_with_context(&cancel));
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(!locker.is_locked());
    grant_released(&server);
}

#[test]
fn dropped_refresh_keeps_the_hold() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, Options::default());
    assert!(rt().block_on(locker.lock()).unwrap());
    let token = locker.token().unwrap().to_owned();
    pause_writes(&server, 300);
    let outcome = rt()
        .block_on(async { tokio::time::timeout(Duration::from_millis(100), locker.lock()).await });
    assert!(outcome.is_err());
    // Still ours, and still recorded as ours, so unlock() works.
    assert!(locker.is_locked());
    assert!(check(&mut conn, KEY, &token) > 0);
    rt().block_on(locker.unlock()).unwrap();
    let exists: bool = conn.exists(KEY).unwrap();
    assert!(!exists);
}
