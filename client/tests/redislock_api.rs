//! The bsm/redislock-style API: `LockClient::obtain` → `Lock` (refresh,
//! ttl, release, fence, token, metadata), owned guards, retry strategies.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use redis::Commands;
use redis_fenced_lock::retry::{retry_fn, ExponentialBackoff, LinearBackoff, NoRetry, RetryExt};
use redis_fenced_lock::{
    Error, Lock, LockClient, LockHandleGuard, Locker, LossReason, ObtainOptions, Options,
    WaitConnections, TOKEN_LEN,
};
use testkit::Server;

const KEY: &str = "__redis_lock_redislock__";

fn client(server: &Server) -> LockClient {
    LockClient::new(async_conn(server))
}

fn lock_info(server: &Server, key: &[u8]) -> HashMap<String, redis::Value> {
    redis::cmd("LOCK.INFO")
        .arg(key)
        .query(&mut server.conn())
        .unwrap()
}

#[test]
fn obtain_refresh_ttl_release() {
    let server = Server::start();
    let locks = client(&server);
    let mut conn = server.conn();
    rt().block_on(async {
        let mut lock = locks
            .obtain(KEY, Duration::from_secs(1), &ObtainOptions::new())
            .await
            .unwrap();
        assert!(lock.fence() >= 1);
        assert_eq!(lock.token().len(), TOKEN_LEN);
        assert_eq!(lock.key(), KEY.as_bytes());
        let ttl = lock.ttl().await.unwrap().unwrap();
        assert!(ttl <= Duration::from_secs(1) && ttl > Duration::from_millis(500));
        lock.refresh(Duration::from_secs(30)).await.unwrap();
        assert!(lock.ttl().await.unwrap().unwrap() > Duration::from_secs(20));
        assert_near(pttl(&mut conn, KEY), 30_000, 500, "refreshed TTL");

        // Someone else cannot obtain it meanwhile: one convention, NotObtained.
        let other = locks
            .obtain(KEY, Duration::from_secs(1), &ObtainOptions::new())
            .await;
        assert!(matches!(other, Err(Error::NotObtained)), "{other:?}");

        lock.release().await.unwrap();
        assert!(!conn.exists::<_, bool>(KEY).unwrap());
        // No longer ours: NotHeld, and nothing is re-created.
        assert!(matches!(lock.release().await, Err(Error::NotHeld)));
        assert!(matches!(
            lock.refresh(Duration::from_secs(30)).await,
            Err(Error::NotHeld)
        ));
        assert_eq!(lock.ttl().await.unwrap(), None);
        assert!(!conn.exists::<_, bool>(KEY).unwrap());
    });
}

#[test]
fn refresh_never_recreates_a_lapsed_lock() {
    let server = Server::start();
    let locks = client(&server);
    let mut conn = server.conn();
    rt().block_on(async {
        let mut lock = locks
            .obtain(KEY, Duration::from_millis(100), &ObtainOptions::new())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(
            lock.refresh(Duration::from_secs(10)).await,
            Err(Error::NotHeld)
        ));
    });
    assert!(!conn.exists::<_, bool>(KEY).unwrap());
}

#[test]
fn the_watchdog_never_recreates_a_deleted_lock() {
    let server = Server::start();
    let mut conn = server.conn();
    let options = Options {
        lock_timeout: Duration::from_millis(600),
        ..Options::default()
    };
    let mut locker = Locker::new(server.conn(), KEY, options);
    let guard = locker.guard_with_watchdog(server.conn()).unwrap();
    let _: () = conn.del(KEY).unwrap();
    let reason = guard
        .loss_signal()
        .unwrap()
        .wait_timeout(Duration::from_secs(3));
    assert_eq!(reason, Some(LossReason::Expired));
    assert!(!conn.exists::<_, bool>(KEY).unwrap());
    // One acquisition (the guard's); every renewal was LOCK.EXTEND.
    assert_eq!(command_calls(&mut conn, "lock.acquire"), 1);
    assert!(command_calls(&mut conn, "lock.extend") >= 1);
}

#[test]
fn binary_key_caller_token_and_metadata() {
    let server = Server::start();
    let locks = client(&server);
    let key: &[u8] = b"\x00lock:\xff";
    let token: &[u8] = b"\x01tok\x00en\xfe";
    let meta: &[u8] = b"host=db-2 pid=811\x00";
    rt().block_on(async {
        let options = ObtainOptions::new().token(token).metadata(meta);
        let lock = locks
            .obtain(key, Duration::from_secs(10), &options)
            .await
            .unwrap();
        assert_eq!(lock.token(), token);
        assert_eq!(lock.metadata(), Some(meta));
        let info = lock_info(&server, key);
        assert_eq!(info["meta"], redis::Value::BulkString(meta.to_vec()));
        let shown = format!("{info:?}");
        assert!(
            !shown.contains("tok"),
            "LOCK.INFO never shows the token: {shown}"
        );
        // The same token obtains it again: a renewal, same fence.
        let again = locks
            .obtain(key, Duration::from_secs(10), &options)
            .await
            .unwrap();
        assert_eq!(again.fence(), lock.fence());
        lock.release().await.unwrap();
        assert!(matches!(again.release().await, Err(Error::NotHeld)));
    });
}

#[test]
fn retry_strategies() {
    let server = Server::start();
    let locks = client(&server);
    let mut conn = server.conn();
    rt().block_on(async {
        let ttl = Duration::from_secs(5);
        // NoRetry: at once.
        assert!(acquire(&mut conn, KEY, "other", 300).is_some());
        let start = Instant::now();
        let none = ObtainOptions::new().retry(NoRetry);
        assert!(matches!(
            locks.obtain(KEY, ttl, &none).await,
            Err(Error::NotObtained)
        ));
        assert!(start.elapsed() < Duration::from_millis(200));

        // Until a deadline that comes before the lock is free.
        let until = ObtainOptions::new().retry(
            LinearBackoff(Duration::from_millis(20))
                .until(Instant::now() + Duration::from_millis(100)),
        );
        assert!(matches!(
            locks.obtain(KEY, ttl, &until).await,
            Err(Error::NotObtained)
        ));

        // Linear, limited: obtained once the other lock expires.
        let linear = ObtainOptions::new().retry(LinearBackoff(Duration::from_millis(25)).limit(40));
        let lock = locks.obtain(KEY, ttl, &linear).await.unwrap();
        lock.release().await.unwrap();

        // Exponential, and a custom strategy that counts its calls.
        assert!(acquire(&mut conn, KEY, "other", 200).is_some());
        let exp = ObtainOptions::new().retry(
            ExponentialBackoff {
                min: Duration::from_millis(10),
                max: Duration::from_millis(80),
            }
            .limit(20),
        );
        locks
            .obtain(KEY, ttl, &exp)
            .await
            .unwrap()
            .release()
            .await
            .unwrap();

        assert!(acquire(&mut conn, KEY, "other", 10_000).is_some());
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let custom = ObtainOptions::new().retry(retry_fn(move |n| {
            counted.fetch_add(1, Ordering::SeqCst);
            (n < 3).then_some(Duration::from_millis(5))
        }));
        assert!(matches!(
            locks.obtain(KEY, ttl, &custom).await,
            Err(Error::NotObtained)
        ));
        // Budget computation asks too; the polling asked at least 4 times.
        assert!(calls.load(Ordering::SeqCst) >= 4);
    });
}

/// Handles and guards are `'static`: they move into tasks.
fn assert_static<T: Send + 'static>(_: &T) {}

#[test]
fn guards_move_into_tasks_and_waiters_are_served_in_order() {
    let server = Server::start();
    let conn = async_conn(&server);
    let locks = LockClient::new(conn).with_wait_connections(WaitConnections::new(server.client()));
    let mut admin = server.conn();
    rt().block_on(async {
        let ttl = Duration::from_millis(900);
        let lock: Lock = locks.obtain(KEY, ttl, &ObtainOptions::new()).await.unwrap();
        let first = lock.fence();
        let guard: LockHandleGuard = lock.guard_with_watchdog();
        assert_static(&guard);
        let holder = tokio::spawn(async move {
            tokio::time::sleep(ttl * 3).await;
            assert!(!guard.is_lost(), "{:?}", guard.loss());
            guard.release().await
        });
        let mut waiters = Vec::new();
        for i in 0..3u64 {
            let locks = locks.clone();
            waiters.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                let options = ObtainOptions::new()
                    .retry(LinearBackoff(Duration::from_millis(100)).limit(100));
                let lock = locks
                    .obtain(KEY, Duration::from_secs(5), &options)
                    .await
                    .unwrap();
                let fence = lock.fence();
                let guard = lock.guard();
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(guard); // releases in the background
                fence
            }));
        }
        holder.await.unwrap().unwrap();
        let mut fences = vec![first];
        for w in waiters {
            fences.push(w.await.unwrap());
        }
        assert!(
            fences.windows(2).all(|w| w[0] < w[1]),
            "in order: {fences:?}"
        );
    });
    testkit::wait_for(Duration::from_secs(3), "the last release", || {
        (!admin.exists::<_, bool>(KEY).unwrap()).then_some(())
    });
}

#[test]
fn over_a_connection_manager() {
    let server = Server::start();
    let client = server.client();
    rt().block_on(async {
        let manager = redis::aio::ConnectionManager::new(client.clone())
            .await
            .unwrap();
        let locks = LockClient::new(manager).with_wait_connections(WaitConnections::new(client));
        let lock = locks
            .obtain(KEY, Duration::from_secs(5), &ObtainOptions::new())
            .await
            .unwrap();
        let busy = locks
            .obtain(KEY, Duration::from_secs(5), &ObtainOptions::new())
            .await;
        assert!(matches!(busy, Err(Error::NotObtained)), "{busy:?}");
        lock.guard().release().await.unwrap();
    });
}
