//! Shared connections are safe: a lock held on one clone of a multiplexed
//! connection (or a `ConnectionManager`) keeps being renewed and released
//! while other lockers on clones of it wait for the lock; waiters are
//! served in order; nothing times out.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis_fenced_lock::{AsyncLocker, Options, WaitConnections};
use testkit::Server;

const KEY: &str = "__redis_lock_shared__";
const WAITERS: usize = 3;

/// `blocked_clients` of INFO clients: lockers waiting in the server.
fn blocked_clients(server: &Server) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut server.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Holder A locks on a clone, holds 1 s (2.5 s, over two lock timeouts,
/// with a watchdog), then releases; three waiters with 100 retries lock on
/// clones meanwhile, one after the other, each holding 100 ms. With wait
/// connections they wait in the server, so they are served in order.
async fn scenario<C>(server: &Server, conn: C, waits: Option<WaitConnections>, watchdog: bool)
where
    C: ConnectionLike + Clone + Send + std::marker::Sync + 'static,
{
    let with_waits = |locker: AsyncLocker<C>| match &waits {
        Some(w) => locker.with_wait_connections(w.clone()),
        None => locker,
    };
    let holder_options = Options {
        lock_timeout: Duration::from_millis(if watchdog { 1000 } else { 5000 }),
        ..Options::default()
    };
    let mut holder = with_waits(AsyncLocker::new(conn.clone(), KEY, holder_options));
    let spawn_waiters = || {
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..WAITERS {
            let mut locker = with_waits(AsyncLocker::new(
                conn.clone(),
                KEY,
                Options {
                    retry_count: 100,
                    ..Options::default()
                },
            ));
            let served = served.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
                let got = locker.lock().await;
                assert!(matches!(got, Ok(true)), "waiter {i}: {got:?}");
                served.lock().unwrap().push((i, locker.fence().unwrap()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                locker.unlock().await.expect("the waiter's unlock");
            }));
        }
        (tasks, served)
    };
    let check_blocked = || {
        let blocked = blocked_clients(server);
        if waits.is_some() {
            assert_eq!(blocked, WAITERS as u64, "the waiters wait in the server");
        } else {
            assert_eq!(
                blocked, 0,
                "nothing waits in the server without wait connections"
            );
        }
    };
    let (tasks, served) = if watchdog {
        let mut guard = holder.guard_with_watchdog().await.unwrap();
        let waiters = spawn_waiters();
        tokio::time::sleep(Duration::from_millis(700)).await;
        check_blocked();
        tokio::time::sleep(Duration::from_millis(1800)).await;
        assert!(!guard.is_lost(), "{:?}", guard.loss());
        assert!(guard.ttl().await.unwrap().is_some(), "still held");
        guard.unlock().await.expect("the holder's unlock");
        waiters
    } else {
        assert!(holder.lock().await.unwrap());
        let waiters = spawn_waiters();
        tokio::time::sleep(Duration::from_millis(700)).await;
        check_blocked();
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.unlock().await.expect("the holder's unlock");
        waiters
    };
    for t in tasks {
        t.await.unwrap();
    }
    let served = served.lock().unwrap().clone();
    assert_eq!(served.len(), WAITERS);
    if waits.is_some() {
        let order: Vec<_> = served.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [0, 1, 2], "first in, first out");
    }
    assert!(
        served.windows(2).all(|w| w[0].1 < w[1].1),
        "fences increase"
    );
}

fn multiplexed(server: &Server, waits: bool, watchdog: bool) {
    rt().block_on(async {
        let conn = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let waits = waits.then(|| WaitConnections::new(server.client()));
        scenario(server, conn, waits, watchdog).await;
    });
}

fn manager(server: &Server, watchdog: bool) {
    rt().block_on(async {
        let conn = ConnectionManager::new(server.client()).await.unwrap();
        let waits = WaitConnections::new(server.client());
        scenario(server, conn, Some(waits), watchdog).await;
    });
}

#[test]
fn multiplexed_connection_waiters_in_order() {
    multiplexed(&Server::start(), true, false);
}

#[test]
fn multiplexed_connection_with_watchdog() {
    multiplexed(&Server::start(), true, true);
}

#[test]
fn connection_manager_waiters_in_order() {
    manager(&Server::start(), false);
}

#[test]
fn connection_manager_with_watchdog() {
    manager(&Server::start(), true);
}

#[test]
fn without_wait_connections_lockers_poll() {
    multiplexed(&Server::start(), false, true);
}

/// A server-side wait longer than redis-rs's 500 ms response timeout.
#[test]
fn a_wait_outlasts_the_response_timeout() {
    let server = Server::start();
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "holder", 10_000).is_some());
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        assert!(release(&mut conn, KEY, "holder"));
    });
    rt().block_on(async {
        let shared = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let options = Options {
            retry_count: 50,
            server_wait_slice: Duration::from_secs(5),
            ..Options::default()
        };
        let mut locker = AsyncLocker::new(shared, KEY, options)
            .with_wait_connections(WaitConnections::new(server.client()));
        assert!(locker.lock().await.unwrap());
        assert_eq!(locker.server_wait_supported(), Some(true));
        locker.unlock().await.unwrap();
    });
    releaser.join().unwrap();
}
