//! One `Locker` over every kind of redis-rs connection: plain, borrowed,
//! pooled (r2d2), per-command (`Client`), cluster; and the async locker over
//! `ConnectionManager`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::Commands;
use redis_fenced_lock::{AsyncLocker, Error, LockClient, Locker, ObtainOptions, Options};
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
fn binary_keys() {
    let server = Server::start();
    let key: &[u8] = b"\x00jobs:\xff";
    let mut locker = Locker::new(server.conn(), key, Options::default());
    assert!(locker.lock().unwrap());
    assert_eq!(locker.key_bytes(), key);
    let mut conn = server.conn();
    let exists: bool = conn.exists(key).unwrap();
    assert!(exists);
    locker.unlock().unwrap();
    let exists: bool = conn.exists(key).unwrap();
    assert!(!exists);
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

/// A one-node cluster owning every slot.
fn cluster_server() -> Server {
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
    server
}

#[test]
fn cluster_connection() {
    let server = cluster_server();
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

#[test]
fn async_cluster_connection() {
    let server = cluster_server();
    let mut conn = server.conn();
    let client = redis::cluster::ClusterClient::new(vec![server.url()]).unwrap();
    rt().block_on(async {
        let cluster = client.get_async_connection().await.unwrap();
        // The bsm/redis-lock-style locker: lock, renew, check, guard with a
        // watchdog over several lock timeouts, unlock.
        let options = Options {
            lock_timeout: Duration::from_millis(1000),
            ..Options::default()
        };
        let mut locker = AsyncLocker::new(cluster.clone(), KEY, options);
        assert!(locker.lock().await.unwrap());
        let fence = locker.fence();
        assert!(locker.lock().await.unwrap());
        assert_eq!(locker.fence(), fence);
        assert!(locker.ttl().await.unwrap().is_some());
        let guard = locker.guard_with_watchdog().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!guard.is_lost(), "{:?}", guard.loss());
        assert!(check(&mut conn, KEY, guard.token().unwrap()) > 0);
        guard.unlock().await.unwrap();

        // A waiter on a clone polls (a cluster connection is shared) and
        // gets the lock once the holder releases it.
        let mut holder = AsyncLocker::new(cluster.clone(), "{user:42}.lock", Options::default());
        assert!(holder.lock().await.unwrap());
        let mut waiter = AsyncLocker::new(
            cluster.clone(),
            "{user:42}.lock",
            Options {
                retry_count: 50,
                retry_delay: Duration::from_millis(20),
                ..Options::default()
            },
        );
        let wait = tokio::spawn(async move { waiter.lock().await.map(|ok| (ok, waiter)) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        holder.unlock().await.unwrap();
        let (ok, mut waiter) = wait.await.unwrap().unwrap();
        assert!(ok);
        waiter.unlock().await.unwrap();

        // The bsm/redislock-style client over the cluster.
        let locks = LockClient::new(cluster);
        let lock = locks
            .obtain(
                "{user:7}.lock",
                Duration::from_secs(5),
                &ObtainOptions::new(),
            )
            .await
            .unwrap();
        assert!(lock.ttl().await.unwrap().is_some());
        lock.release().await.unwrap();
    });
    let exists: bool = conn.exists(KEY).unwrap();
    assert!(!exists);
}
