//! Server-side waiting (`LOCK.ACQUIRE … WAIT`): used when the server has it,
//! detected and replaced by polling when it does not. The tests that need
//! the server to support WAIT skip (with a note) when it does not.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::fake::FakeServer;
use common::*;
use redis::Commands;
use redis_fenced_lock::{AsyncLocker, Locker, Options, RetryStrategy, WaitConnections};
use testkit::{wait_for, Server};

const KEY: &str = "__redis_lock_wait__";

/// Skips the calling test (with a note) when the server lacks WAIT.
macro_rules! require_wait {
    ($server:expr) => {
        if !server_supports_wait(&$server) {
            eprintln!("note: the server does not support LOCK.ACQUIRE … WAIT yet; skipping");
            return;
        }
    };
}

fn waiting_options() -> Options {
    Options {
        lock_timeout: Duration::from_secs(5),
        retry_count: 5,
        retry_delay: Duration::from_secs(1), // polling would be slow
        ..Options::default()
    }
}

#[test]
fn detects_support_once_and_obtains_either_way() {
    let server = Server::start();
    let supported = server_supports_wait(&server);
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "other", 200).is_some());
    let options = Options {
        retry_count: 20,
        retry_delay: Duration::from_millis(50),
        ..Options::default()
    };
    let mut locker = Locker::new(server.conn(), KEY, options);
    assert_eq!(locker.server_wait_supported(), None);
    assert!(
        locker.lock().unwrap(),
        "obtained once the other lock expired"
    );
    assert_eq!(locker.server_wait_supported(), Some(supported));
    locker.unlock().unwrap();

    // Without retries, no WAIT is sent at all.
    let mut quick = Locker::new(server.conn(), KEY, Options::default());
    assert!(quick.lock().unwrap());
    assert_eq!(quick.server_wait_supported(), None);
    quick.unlock().unwrap();
}

#[test]
fn polling_when_waiting_is_disabled() {
    let server = Server::start();
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "other", 150).is_some());
    let options = Options {
        retry_count: 20,
        retry_delay: Duration::from_millis(50),
        wait_in_server: false,
        ..Options::default()
    };
    let mut locker = Locker::new(server.conn(), KEY, options);
    assert!(locker.lock().unwrap());
    assert_eq!(locker.server_wait_supported(), None, "never asked");
}

#[test]
fn a_release_wakes_the_waiter_at_once() {
    let server = Server::start();
    require_wait!(server);
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "holder", 10_000).is_some());
    let waiter = {
        let conn = server.conn();
        thread::spawn(move || {
            let mut locker = Locker::new(conn, KEY, waiting_options());
            let ok = locker.lock().unwrap();
            (ok, Instant::now(), locker.server_wait_supported())
        })
    };
    thread::sleep(Duration::from_millis(300));
    let released = Instant::now();
    assert!(release(&mut conn, KEY, "holder"));
    let (ok, granted, supported) = waiter.join().unwrap();
    assert!(ok);
    assert_eq!(supported, Some(true));
    let latency = granted.duration_since(released);
    assert!(
        latency < Duration::from_millis(300),
        "granted {latency:?} after release (polling would take up to 1 s)"
    );
}

#[test]
fn a_wait_spans_several_slices() {
    let server = Server::start();
    require_wait!(server);
    let mut conn = server.conn();
    // Expires during the waiter's third slice (of 400 ms).
    assert!(acquire(&mut conn, KEY, "holder", 1000).is_some());
    let start = Instant::now();
    let mut locker = Locker::new(server.conn(), KEY, waiting_options());
    assert!(locker.lock().unwrap());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(check(&mut conn, KEY, &locker.token().unwrap()) > 0);
}

#[test]
fn waiters_are_served_in_order() {
    let server = Server::start();
    require_wait!(server);
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "holder", 10_000).is_some());
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let conn = server.conn();
            let order = order.clone();
            let t = thread::spawn(move || {
                let options = Options {
                    // One wait for the whole budget: strict FIFO.
                    server_wait_slice: Duration::from_secs(10),
                    ..waiting_options()
                };
                let mut locker = Locker::new(conn, KEY, options);
                assert!(locker.lock().unwrap(), "waiter {i}");
                order.lock().unwrap().push((i, locker.fence().unwrap()));
                thread::sleep(Duration::from_millis(50));
                locker.unlock().unwrap();
            });
            thread::sleep(Duration::from_millis(100)); // queue in order
            t
        })
        .collect();
    assert!(release(&mut conn, KEY, "holder"));
    for w in waiters {
        w.join().unwrap();
    }
    let order = order.lock().unwrap();
    let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert!(order.windows(2).all(|w| w[0].1 < w[1].1), "fences increase");
}

#[test]
fn async_waiter_dropped_midway_leaves_no_lock() {
    let server = Server::start();
    require_wait!(server);
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "holder", 10_000).is_some());
    let mut locker = AsyncLocker::new(async_conn(&server), KEY, waiting_options())
        .with_wait_connections(WaitConnections::new(server.client()));
    // The holder releases while the dropped waiter's WAIT is still queued:
    // the server grants it to that waiter, whose release follows at once.
    let releaser = {
        let mut conn = server.conn();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            assert!(release(&mut conn, KEY, "holder"));
        })
    };
    let outcome = rt()
        .block_on(async { tokio::time::timeout(Duration::from_millis(100), locker.lock()).await });
    assert!(outcome.is_err());
    releaser.join().unwrap();
    wait_for(Duration::from_secs(3), "the grant to be released", || {
        let exists: bool = conn.exists(KEY).unwrap();
        (!exists).then_some(())
    });
    assert!(!locker.is_locked());
    let mut next = Locker::new(server.conn(), KEY, Options::default());
    assert!(next.lock().unwrap());
}

/// A module from before server-side waiting: `WAIT` is refused, so the
/// locker polls, and remembers not to ask again.
fn server_without_wait() -> FakeServer {
    let mut tries = 0;
    FakeServer::start(Box::new(move |args| {
        match args[0].to_ascii_uppercase().as_str() {
            "LOCK.ACQUIRE" if args.len() > 4 => {
                "-ERR WAIT is not supported by this version\r\n".into()
            }
            "LOCK.ACQUIRE" => {
                tries += 1;
                if tries % 3 == 0 {
                    format!(":{tries}\r\n")
                } else {
                    "$-1\r\n".into()
                }
            }
            "LOCK.RELEASE" => ":1\r\n".into(),
            _ => "-ERR unexpected\r\n".into(),
        }
    }))
}

fn polling_options() -> Options {
    Options {
        retry_count: 5,
        retry_delay: Duration::from_millis(10),
        ..Options::default()
    }
}

/// The commands: one refused WAIT, then three plain tries; then (after an
/// unlock) plain tries only.
fn assert_fell_back(fake: &FakeServer) {
    let cmds = fake.commands();
    let waits = cmds.iter().filter(|c| c.len() > 4).count();
    assert_eq!(waits, 1, "{cmds:?}");
    assert_eq!(&cmds[0][4..], ["WAIT", "50"], "the budget: 5 × 10 ms");
    assert!(cmds[1..4]
        .iter()
        .all(|c| c[0] == "LOCK.ACQUIRE" && c.len() == 4));
    assert_eq!(cmds[4][0], "LOCK.RELEASE");
    assert!(cmds[5..].iter().all(|c| c.len() <= 4), "{cmds:?}");
}

#[test]
fn sync_falls_back_to_polling_without_wait() {
    let fake = server_without_wait();
    let client = redis::Client::open(fake.url.as_str()).unwrap();
    let mut locker = Locker::new(client.get_connection().unwrap(), KEY, polling_options());
    assert!(locker.lock().unwrap());
    assert_eq!(locker.fence(), Some(3));
    assert_eq!(locker.server_wait_supported(), Some(false));
    locker.unlock().unwrap();
    assert!(locker.lock().unwrap());
    assert_fell_back(&fake);
}

#[test]
fn async_falls_back_to_polling_without_wait() {
    let fake = server_without_wait();
    let client = redis::Client::open(fake.url.as_str()).unwrap();
    rt().block_on(async {
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut locker = AsyncLocker::new(conn, KEY, polling_options())
            .with_wait_connections(WaitConnections::new(client.clone()));
        assert!(locker.lock().await.unwrap());
        assert_eq!(locker.fence(), Some(3));
        assert_eq!(locker.server_wait_supported(), Some(false));
        locker.unlock().await.unwrap();
        assert!(locker.lock().await.unwrap());
    });
    assert_fell_back(&fake);
}

#[test]
fn exponential_backoff_retries_until_free() {
    let server = Server::start();
    let mut conn = server.conn();
    assert!(acquire(&mut conn, KEY, "other", 300).is_some());
    let options = Options {
        retry_count: 10,
        retry_delay: Duration::from_millis(20),
        retry_strategy: RetryStrategy::exponential(Duration::from_millis(200)),
        wait_in_server: false,
        ..Options::default()
    };
    let mut locker = Locker::new(server.conn(), KEY, options);
    let start = Instant::now();
    assert!(locker.lock().unwrap());
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert!(check(&mut conn, KEY, &locker.token().unwrap()) > 0);
}
