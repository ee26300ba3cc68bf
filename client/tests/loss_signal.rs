//! The loss signal comes first: when renewals stop being acknowledged (the
//! server stopped with SIGSTOP, or refusing them), the watchdog reports the
//! loss before the lock's deadline as the server sees it; a watchdog that
//! panics, or a cancelled renewal by hand, never leaves a guard unwatched.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::{RedisResult, Value};
use redis_fenced_lock::{
    AsyncLocker, LockClient, LockState, Locker, LossReason, LossSignal, ObtainOptions, Options,
};
use testkit::Server;

const KEY: &str = "__redis_lock_loss__";
/// Long enough that the margin (a tenth) covers a loaded machine's
/// scheduling delays.
const TTL: Duration = Duration::from_secs(3);

fn options() -> Options {
    Options {
        lock_timeout: TTL,
        ..Options::default()
    }
}

/// The earliest moment the server may let the lock go: asked with
/// LOCK.CHECK (the server's deadline is at least the sending plus the
/// remaining time it answers). Renewals acknowledged later only move it
/// further.
fn server_deadline(server: &Server, token: &str) -> Instant {
    let mut conn = server.conn();
    let sent = Instant::now();
    let left = check(&mut conn, KEY, token);
    assert!(left > 0, "held");
    sent + Duration::from_millis(left as u64)
}

/// Waits for the loss; asserts it came before `deadline`.
fn assert_reported_before(lost: &LossSignal, deadline: Instant) -> LossReason {
    let reason = lost.wait_timeout(TTL * 3).expect("the loss was reported");
    let at = Instant::now();
    assert!(
        at < deadline,
        "reported {:?} after the server's deadline",
        at - deadline
    );
    reason
}

#[test]
fn sync_reports_before_the_deadline_when_the_server_stops() {
    let server = Server::start();
    let mut locker = Locker::new(server.conn(), KEY, options());
    let guard = locker.guard_with_watchdog(server.conn()).unwrap();
    let lost = guard.loss_signal().unwrap();
    std::thread::sleep(TTL / 2); // a renewal or so
    let deadline = server_deadline(&server, &guard.token().unwrap());
    let stopped = server.stop();
    let reason = assert_reported_before(&lost, deadline);
    assert!(matches!(reason, LossReason::Unreachable(_)), "{reason:?}");
    assert!(guard.is_lost());
    drop(stopped);
    drop(guard);
}

#[test]
fn async_reports_before_the_deadline_when_the_server_stops() {
    let server = Server::start();
    let conn = async_conn(&server);
    rt().block_on(async {
        let locks = LockClient::new(conn);
        let lock = locks.obtain(KEY, TTL, &ObtainOptions::new()).await.unwrap();
        let guard = lock.guard_with_watchdog();
        let lost = guard.loss_signal().unwrap();
        tokio::time::sleep(TTL / 2).await;
        let token = String::from_utf8(guard.token().to_vec()).unwrap();
        let deadline = server_deadline(&server, &token);
        let _stopped = server.stop();
        let at = tokio::time::timeout(TTL * 3, lost.lost())
            .await
            .map(|_| Instant::now())
            .expect("the loss was reported");
        assert!(at < deadline, "reported {:?} late", at - deadline);
        assert!(guard.is_lost());
        drop(guard);
    });
}

/// A connection whose renewals the server refuses (ACL: the user may no
/// longer renew), and the admin connection that revokes it.
fn restricted_client(server: &Server) -> redis::Client {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "renewer", "on", "nopass", "~*", "&*", "+@all"])
        .query(&mut server.conn())
        .unwrap();
    redis::Client::open(format!("redis://renewer:any@{}/", server.addr())).unwrap()
}

fn revoke_renewals(server: &Server) {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "renewer", "-lock.extend", "-lock.acquire"])
        .query(&mut server.conn())
        .unwrap();
}

#[test]
fn sync_reports_before_the_deadline_when_renewals_are_refused() {
    let server = Server::start();
    let client = restricted_client(&server);
    let mut locker = Locker::new(server.conn(), KEY, options());
    let guard = locker
        .guard_with_watchdog(client.get_connection().unwrap())
        .unwrap();
    let lost = guard.loss_signal().unwrap();
    std::thread::sleep(TTL / 2);
    revoke_renewals(&server);
    let deadline = server_deadline(&server, &guard.token().unwrap());
    let reason = assert_reported_before(&lost, deadline);
    match reason {
        LossReason::Unreachable(e) => assert!(e.to_ascii_lowercase().contains("noperm"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Still ours on the server until then: the release works.
    guard.unlock().unwrap();
}

#[test]
fn async_reports_before_the_deadline_when_renewals_are_refused() {
    let server = Server::start();
    let client = restricted_client(&server);
    rt().block_on(async {
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut locker = AsyncLocker::new(conn, KEY, options());
        let guard = locker.guard_with_watchdog().await.unwrap();
        let lost = guard.loss_signal().unwrap();
        tokio::time::sleep(TTL / 2).await;
        revoke_renewals(&server);
        let deadline = server_deadline(&server, &guard.token().unwrap());
        let reason = tokio::time::timeout(TTL * 3, lost.lost()).await.unwrap();
        assert!(Instant::now() < deadline, "reported late");
        assert!(matches!(reason, LossReason::Unreachable(_)), "{reason:?}");
    });
}

/// A connection that panics on every command.
struct Panicking;

impl redis::ConnectionLike for Panicking {
    fn req_packed_command(&mut self, _: &[u8]) -> RedisResult<Value> {
        panic!("a bug in the connection");
    }
    fn req_packed_commands(&mut self, _: &[u8], _: usize, _: usize) -> RedisResult<Vec<Value>> {
        panic!("a bug in the connection");
    }
    fn get_db(&self) -> i64 {
        0
    }
    fn check_connection(&mut self) -> bool {
        true
    }
    fn is_open(&self) -> bool {
        true
    }
}

#[test]
fn a_panicked_watchdog_thread_is_reported() {
    let server = Server::start();
    let mut locker = Locker::new(server.conn(), KEY, options());
    let start = Instant::now();
    let mut guard = locker.guard_with_watchdog(Panicking).unwrap();
    let lost = guard.loss_signal().unwrap();
    let reason = lost.wait_timeout(TTL).expect("reported");
    assert_eq!(reason, LossReason::WatchdogFailed);
    assert!(start.elapsed() < TTL, "before the lock could expire");
    // A renewal by hand keeps the guard watched (by a failed watchdog
    // that says so) rather than unwatched.
    assert!(guard.lock().unwrap());
    assert!(guard.loss_signal().is_some());
    assert!(guard.is_lost());
    guard.unlock().unwrap();
}

#[test]
fn a_cancelled_renewal_by_hand_leaves_the_guard_watched() {
    let server = Server::start();
    let mut conn = server.conn();
    let shared = async_conn(&server);
    rt().block_on(async {
        let ttl = Duration::from_secs(1);
        let options = Options {
            lock_timeout: ttl,
            ..Options::default()
        };
        let mut locker = AsyncLocker::new(shared, KEY, options);
        let mut guard = locker.guard_with_watchdog().await.unwrap();
        let token = guard.token().unwrap().to_owned();
        // Writes are held back, so the renewal by hand is in flight when
        // its future is dropped.
        let _: () = redis::cmd("CLIENT")
            .arg(&["PAUSE", "300", "WRITE"])
            .query(&mut conn)
            .unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(100), guard.lock()).await;
        assert!(cancelled.is_err());
        let lost = guard.loss_signal().expect("still watched");
        // Renewed over several lock timeouts.
        tokio::time::sleep(ttl * 3).await;
        assert!(!lost.is_lost(), "{:?}", lost.reason());
        assert!(check(&mut conn, KEY, &token) > 0, "still held");
        assert!(LockState::is_locked(&guard));
        guard.unlock().await.unwrap();
    });
}
