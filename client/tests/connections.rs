//! One `Locker` over every kind of redis-rs connection: plain, borrowed,
//! pooled (r2d2), per-command (`Client`), cluster; and the async locker over
//! `ConnectionManager`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::Commands;
use redis_fenced_lock::{AsyncLocker, Error, Locker, Options};
use testkit::{Config, Server};

const KEY: &str = "__redis_lock_conn__";

/// Lock, renew, check, unlock: the same round over any connection.
fn round<C: redis::ConnectionLike>(locker: &mut Locker<C>, server: &Server) {
    let mut conn = server.conn();
    assert!(locker.lock().unwrap());
    let fence = locker.fence();
    assert!(locker.lock().unwrap());
    assert_eq!(locker.fence(), fence);
    assert!(locker.ttl().unwrap().is_some());
    assert!(check(&mut conn, locker.key(), locker.token().unwrap()) > 0);
    locker.unlock().unwrap();
    let exists: bool = conn.exists(locker.key()).unwrap();
    assert!(!exists);
}

#[test]
fn plain_and_borrowed_connections() {
    let server = Server::start();
    let mut plain = Locker::new(server.conn(), KEY, Options::default());
    round(&mut plain, &server);

    let mut conn = server.conn();
    {
        let mut borrowed = Locker::new(&mut conn, KEY, Options::default());
        round(&mut borrowed, &server);
        // Obtain keeps the connection usable on failure when borrowed.
        let mut other = server.conn();
        assert!(acquire(&mut other, KEY, "other", 5000).is_some());
    }
    assert!(matches!(
        Locker::obtain(&mut conn, KEY, Options::default()),
        Err(Error::NotObtained)
    ));
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn pooled_and_per_command_connections() {
    let server = Server::start();
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(server.client())
        .unwrap();
    let mut pooled = Locker::new(pool.get().unwrap(), KEY, Options::default());
    round(&mut pooled, &server);

    let mut per_command = Locker::new(server.client(), KEY, Options::default());
    round(&mut per_command, &server);
}

#[test]
fn cluster_connection() {
    let server = Server::with(Config::default().arg("cluster-enabled", "yes"));
    let mut admin = server.conn();
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut admin)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut admin).unwrap();
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(Instant::now() < deadline, "cluster not ok: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = redis::cluster::ClusterClient::new(vec![server.url()]).unwrap();
    let mut locker = Locker::new(client.get_connection().unwrap(), KEY, Options::default());
    round(&mut locker, &server);
    // Keys in other slots work too (the client routes by key).
    let mut other = Locker::new(
        client.get_connection().unwrap(),
        "{user:42}.lock",
        Options::default(),
    );
    round(&mut other, &server);
}

#[test]
fn connection_manager() {
    let server = Server::start();
    let mut conn = server.conn();
    let client = server.client();
    rt().block_on(async {
        let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
        let mut locker = AsyncLocker::new(manager, KEY, Options::default());
        assert!(locker.lock().await.unwrap());
        let fence = locker.fence();
        assert!(locker.lock().await.unwrap());
        assert_eq!(locker.fence(), fence);
        assert!(locker.ttl().await.unwrap().is_some());
        let guard = locker.guard_with_watchdog().await.unwrap();
        assert!(check(&mut conn, KEY, guard.token().unwrap()) > 0);
        guard.unlock().await.unwrap();
    });
    let exists: bool = conn.exists(KEY).unwrap();
    assert!(!exists);
}
