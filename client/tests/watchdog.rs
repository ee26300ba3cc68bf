//! Guards and watchdogs, sync and async: renewal over several lock
//! timeouts, stopping on drop, and reporting loss.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redis::Commands;
use redis_fenced_lock::{AsyncLocker, Locker, LossReason, Options};
use testkit::{wait_for, Server};

const KEY: &str = "__redis_lock_watchdog__";

fn short_options() -> Options {
    Options {
        lock_timeout: Duration::from_millis(600),
        ..Options::default()
    }
}

/// Acquisitions and renewals (the watchdog renews with LOCK.EXTEND).
fn acquire_calls(conn: &mut redis::Connection) -> u64 {
    command_calls(conn, "lock.acquire") + command_calls(conn, "lock.extend")
}

fn exists(conn: &mut redis::Connection) -> bool {
    conn.exists(KEY).unwrap()
}

#[test]
fn sync_guard_releases_on_drop() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = Locker::new(server.conn(), KEY, Options::default());
    {
        let guard = locker.guard().unwrap();
        assert!(guard.is_locked());
        assert!(!guard.is_lost());
        assert!(guard.loss_signal().is_none());
        assert!(check(&mut conn, KEY, &guard.token().unwrap()) > 0);
    }
    assert!(!locker.is_locked());
    assert!(!exists(&mut conn));

    // Held elsewhere: no guard.
    assert!(acquire(&mut conn, KEY, "other", 5000).is_some());
    assert!(matches!(
        locker.guard(),
        Err(redis_fenced_lock::Error::NotObtained)
    ));
}

#[test]
fn sync_watchdog_keeps_the_lock_over_several_ttls() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = Locker::new(server.conn(), KEY, short_options());
    let guard = locker.guard_with_watchdog(server.conn()).unwrap();
    let (token, fence) = (guard.token().unwrap().to_owned(), guard.fence());
    thread::sleep(Duration::from_millis(2000)); // over three lock timeouts
    assert!(check(&mut conn, KEY, &token) > 0, "still held");
    assert!(!guard.is_lost(), "{:?}", guard.loss());
    assert_eq!(guard.fence(), fence);
    guard.unlock().unwrap();
    assert!(!exists(&mut conn));
}

#[test]
fn sync_watchdog_stops_on_drop() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = Locker::new(server.conn(), KEY, short_options());
    let token;
    {
        let guard = locker.guard_with_watchdog(server.conn()).unwrap();
        token = guard.token().unwrap().to_owned();
        thread::sleep(Duration::from_millis(450));
        assert!(acquire_calls(&mut conn) >= 2, "renewing");
    }
    assert!(!exists(&mut conn), "released on drop");
    // Put a lock with the old token back: nobody renews it, so it expires.
    assert!(acquire(&mut conn, KEY, &token, 300).is_some());
    let calls = acquire_calls(&mut conn);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(acquire_calls(&mut conn), calls, "no renewal after drop");
    assert!(!exists(&mut conn), "expired");
}

#[test]
fn sync_watchdog_reports_loss_when_deleted() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = Locker::new(server.conn(), KEY, short_options());
    let guard = locker.guard_with_watchdog(server.conn()).unwrap();
    let lost = guard.loss_signal().unwrap();
    let _: () = conn.del(KEY).unwrap();
    let reason = lost.wait_timeout(Duration::from_secs(3));
    assert_eq!(reason, Some(LossReason::Expired));
    assert!(guard.is_lost());
    // The renewal that found it gone gave up what it re-created.
    assert!(!exists(&mut conn));
    drop(guard);
    assert!(!locker.is_locked());
}

#[test]
fn sync_watchdog_reports_loss_when_taken() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = Locker::new(server.conn(), KEY, short_options());
    let guard = locker.guard_with_watchdog(server.conn()).unwrap();
    let _: () = conn.del(KEY).unwrap();
    assert!(acquire(&mut conn, KEY, "thief", 5000).is_some());
    let reason = guard
        .loss_signal()
        .unwrap()
        .wait_timeout(Duration::from_secs(3));
    assert_eq!(reason, Some(LossReason::HeldByOther));
    drop(guard);
    // The other holder is untouched.
    assert!(check(&mut conn, KEY, "thief") > 0);
}

#[test]
fn sync_guard_renews_and_follows_a_new_hold() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = Locker::new(server.conn(), KEY, short_options());
    let mut guard = locker.guard_with_watchdog(server.conn()).unwrap();
    let first = guard.loss_signal().unwrap();
    let fence = guard.fence();
    assert!(guard.lock().unwrap(), "renewed");
    assert_eq!(guard.fence(), fence);
    assert!(!first.is_lost());

    // Lost and obtained afresh: the old signal reports it, a new hold is watched.
    let _: () = conn.del(KEY).unwrap();
    assert!(guard.lock().unwrap());
    assert!(guard.fence() > fence);
    assert_eq!(first.reason(), Some(LossReason::Expired));
    assert!(!guard.is_lost());
    thread::sleep(Duration::from_millis(700));
    assert!(
        check(&mut conn, KEY, &guard.token().unwrap()) > 0,
        "watched"
    );
    drop(guard);
    assert!(!exists(&mut conn));
}

#[test]
fn async_guard_releases_on_drop() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, Options::default());
    rt().block_on(async {
        let guard = locker.guard().await.unwrap();
        assert!(guard.is_locked());
        assert!(!guard.is_lost());
    });
    assert!(!locker.is_locked());
    wait_for(Duration::from_secs(2), "the spawned release", || {
        (!exists(&mut conn)).then_some(())
    });
    rt().block_on(async {
        let guard = locker.guard().await.unwrap();
        guard.unlock().await.unwrap();
    });
    assert!(!exists(&mut conn));
}

#[test]
fn async_watchdog_keeps_the_lock_over_several_ttls() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, short_options());
    rt().block_on(async {
        let guard = locker.guard_with_watchdog().await.unwrap();
        let token = guard.token().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let mut c = server.conn();
        assert!(check(&mut c, KEY, &token) > 0, "still held");
        assert!(!guard.is_lost(), "{:?}", guard.loss());
        guard.unlock().await.unwrap();
    });
    assert!(!exists(&mut conn));
}

#[test]
fn async_watchdog_stops_on_drop() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, short_options());
    let token = rt().block_on(async {
        let guard = locker.guard_with_watchdog().await.unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
        guard.token().unwrap().to_owned()
    });
    assert!(!locker.is_locked());
    wait_for(Duration::from_secs(2), "the spawned release", || {
        (!exists(&mut conn)).then_some(())
    });
    assert!(acquire(&mut conn, KEY, &token, 300).is_some());
    let calls = acquire_calls(&mut conn);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(acquire_calls(&mut conn), calls, "no renewal after drop");
    assert!(!exists(&mut conn), "expired");
}

#[test]
fn async_watchdog_reports_loss() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, short_options());
    rt().block_on(async {
        let guard = locker.guard_with_watchdog().await.unwrap();
        let lost = guard.loss_signal().unwrap();
        let _: () = conn.del(KEY).unwrap();
        assert!(acquire(&mut conn, KEY, "thief", 5000).is_some());
        let start = Instant::now();
        let reason = tokio::time::timeout(Duration::from_secs(3), lost.lost())
            .await
            .expect("loss reported");
        assert_eq!(reason, LossReason::HeldByOther);
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(guard.is_lost());
        assert!(matches!(
            guard.unlock().await,
            Err(redis_fenced_lock::Error::UnlockFailed)
        ));
    });
    assert!(check(&mut conn, KEY, "thief") > 0);
}
