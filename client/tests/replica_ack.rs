//! Replica acknowledgement (`Options::replica_ack`,
//! `ObtainOptions::replica_ack`) against a real master and replica, both
//! with the module: an acknowledged acquisition is on the replica the moment
//! it returns; with the replica stopped (SIGSTOP) or absent, the
//! acquisition fails with `Error::NotAcknowledged` and leaves no lock on the
//! master; renewals and releases report the error too.
//!
//! Timeouts are wide (5 s to acknowledge; 300 ms where the replica is
//! stopped) and no latency is asserted.

use std::time::Duration;

use redis::Connection;
use redis_fenced_lock::{
    AckStep, AsyncLocker, Error, LockClient, Locker, ObtainOptions, Options, ReplicaAck,
    WaitConnections,
};
use testkit::{wait_for, Config, Server};

mod common;
use common::rt;

const OK_ACK: Duration = Duration::from_secs(5);
/// Where nothing is granted first: the replica is stopped or absent.
const STOPPED_ACK: Duration = Duration::from_millis(300);
/// Where the lock is obtained with the replica running, then the replica
/// stopped: long enough for the first, short enough to wait out.
const BOTH_ACK: Duration = Duration::from_secs(3);

fn master_and_replica() -> (Server, Server) {
    let master = Server::start();
    let replica =
        Server::with(Config::default().arg("replicaof", &format!("127.0.0.1 {}", master.port())));
    let mut r = replica.conn();
    wait_for(Duration::from_secs(30), "master_link_status:up", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).ok()?;
        info.contains("master_link_status:up").then_some(())
    });
    // The master counts the replica once it has acknowledged.
    let mut m = master.conn();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(30_000).query(&mut m).unwrap();
    assert_eq!(acked, 1);
    (master, replica)
}

fn exists(c: &mut Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(c).unwrap() == 1
}

/// `LOCK.CHECK key token` > 0: the token holds the key there.
fn holds(c: &mut Connection, key: &str, token: &[u8]) -> bool {
    redis::cmd("LOCK.CHECK")
        .arg(key)
        .arg(token)
        .query::<i64>(c)
        .unwrap()
        != 0
}

fn options(ack: Duration) -> Options {
    Options {
        lock_timeout: Duration::from_secs(30),
        replica_ack: Some(ReplicaAck::replicas(1, ack)),
        ..Options::default()
    }
}

fn assert_not_acked(r: Result<impl std::fmt::Debug, Error>, want: AckStep) {
    match r {
        Err(Error::NotAcknowledged {
            step,
            acknowledged,
            wanted,
        }) => {
            assert_eq!((step, acknowledged, wanted), (want, 0, 1));
        }
        other => panic!("expected NotAcknowledged({want:?}), got {other:?}"),
    }
}

#[test]
fn sync_acknowledged_lock_is_on_the_replica_at_once() {
    let (master, replica) = master_and_replica();
    let mut r = replica.conn();
    let mut locker = Locker::new(master.conn(), "ack:sync", options(OK_ACK));
    assert!(locker.lock().unwrap());
    let token = locker.token().unwrap().as_bytes().to_vec();
    // No waiting: the acknowledgement means the replica has it.
    assert!(holds(&mut r, "ack:sync", &token));
    let fence = locker.fence();
    assert!(locker.lock().unwrap(), "renewal");
    assert_eq!(locker.fence(), fence);
    locker.unlock().unwrap();
    assert!(!exists(&mut r, "ack:sync"), "the release is on the replica");
}

#[test]
fn sync_unacknowledged_lock_fails_and_is_released() {
    let (master, replica) = master_and_replica();
    let mut m = master.conn();
    let stopped = replica.stop();
    let mut locker = Locker::new(master.conn(), "ack:stopped", options(STOPPED_ACK));
    let err = locker.lock();
    let msg = format!("{:?}", err.as_ref().map_err(ToString::to_string));
    assert!(msg.contains("released"), "{msg}");
    assert_not_acked(err, AckStep::Acquire);
    assert!(!locker.is_locked());
    assert!(!exists(&mut m, "ack:stopped"), "left held on the master");
    drop(stopped);

    // No replica at all: the same.
    let alone = Server::start();
    let mut a = alone.conn();
    let mut locker = Locker::new(alone.conn(), "ack:alone", options(STOPPED_ACK));
    assert_not_acked(locker.lock(), AckStep::Acquire);
    assert!(!exists(&mut a, "ack:alone"));
    // Without the option the same server grants it.
    let mut plain = Locker::new(alone.conn(), "ack:alone", Options::default());
    assert!(plain.lock().unwrap());
}

#[test]
fn sync_unacknowledged_renewal_and_release_report_it() {
    let (master, replica) = master_and_replica();
    let mut m = master.conn();
    let mut locker = Locker::new(master.conn(), "ack:renew", options(BOTH_ACK));
    assert!(locker.lock().unwrap());
    let token = locker.token().unwrap().as_bytes().to_vec();
    let _stopped = replica.stop();
    assert_not_acked(locker.lock(), AckStep::Renew);
    // Still ours on the master.
    assert!(locker.is_locked());
    assert!(holds(&mut m, "ack:renew", &token));
    assert_not_acked(locker.unlock(), AckStep::Release);
    assert!(!exists(&mut m, "ack:renew"), "released on the master");
}

#[test]
fn sync_watchdog_counts_unacknowledged_renewals_as_failed() {
    let (master, replica) = master_and_replica();
    let o = Options {
        lock_timeout: Duration::from_secs(6),
        ..options(Duration::from_millis(1500))
    };
    let mut locker = Locker::new(master.conn(), "ack:watchdog", o);
    let guard = locker.guard_with_watchdog(master.conn()).unwrap();
    let _stopped = replica.stop();
    // Every renewal works on the master, none is acknowledged: the loss is
    // reported although the master still extends the lock.
    let reason = wait_for(Duration::from_secs(40), "loss reported", || guard.loss());
    assert!(reason.to_string().contains("not acknowledged"), "{reason}");
    let mut m = master.conn();
    assert!(exists(&mut m, "ack:watchdog"), "the master still has it");
}

#[test]
fn async_locker_acknowledges_on_a_wait_connection_only() {
    let (master, replica) = master_and_replica();
    let mut m = master.conn();
    let mut r = replica.conn();
    rt().block_on(async {
        let conn = master
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        // Never on the shared connection: refused before anything is sent.
        let mut shared = AsyncLocker::new(conn.clone(), "ack:async", options(OK_ACK));
        assert!(matches!(
            shared.lock().await,
            Err(Error::AckNeedsOwnConnection)
        ));
        assert!(!exists(&mut m, "ack:async"));

        let waits = WaitConnections::new(master.client());
        let mut locker = AsyncLocker::new(conn.clone(), "ack:async", options(OK_ACK))
            .with_wait_connections(waits.clone());
        assert!(locker.lock().await.unwrap());
        let token = locker.token().unwrap().as_bytes().to_vec();
        assert!(holds(&mut r, "ack:async", &token));
        locker.unlock().await.unwrap();
        assert!(!exists(&mut r, "ack:async"));

        let mut locker = AsyncLocker::new(conn.clone(), "ack:async", options(BOTH_ACK))
            .with_wait_connections(waits.clone());
        assert!(locker.lock().await.unwrap());
        let stopped = replica.stop();
        assert_not_acked(locker.lock().await, AckStep::Renew);
        assert!(locker.is_locked());
        assert_not_acked(locker.unlock().await, AckStep::Release);
        assert!(!exists(&mut m, "ack:async"));
        assert_not_acked(locker.lock().await, AckStep::Acquire);
        assert!(!locker.is_locked());
        assert!(!exists(&mut m, "ack:async"), "left held on the master");
        drop(stopped);
    });
}

#[test]
fn lock_client_acknowledged_obtain_refresh_release() {
    let (master, replica) = master_and_replica();
    let mut m = master.conn();
    let mut r = replica.conn();
    rt().block_on(async {
        let conn = master
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl = Duration::from_secs(30);
        let acked = ObtainOptions::new().replica_ack(ReplicaAck::replicas(1, OK_ACK));
        let bare = LockClient::new(conn.clone());
        assert!(matches!(
            bare.obtain("ack:client", ttl, &acked).await,
            Err(Error::AckNeedsOwnConnection)
        ));

        let locks =
            LockClient::new(conn).with_wait_connections(WaitConnections::new(master.client()));
        let lock = locks.obtain("ack:client", ttl, &acked).await.unwrap();
        assert!(holds(&mut r, "ack:client", lock.token()));
        lock.release().await.unwrap();
        assert!(!exists(&mut r, "ack:client"));

        let short = ObtainOptions::new().replica_ack(ReplicaAck::replicas(1, BOTH_ACK));
        let mut lock = locks.obtain("ack:client", ttl, &short).await.unwrap();
        let stopped = replica.stop();
        assert_not_acked(lock.refresh(ttl).await, AckStep::Renew);
        assert!(holds(&mut m, "ack:client", lock.token()));
        assert_not_acked(lock.release().await, AckStep::Release);
        assert!(!exists(&mut m, "ack:client"));
        assert_not_acked(
            locks.obtain("ack:client", ttl, &short).await,
            AckStep::Acquire,
        );
        assert!(!exists(&mut m, "ack:client"), "left held on the master");
        drop(stopped);
    });
}

#[test]
fn waitaof_acknowledges_where_the_server_has_it() {
    let master = Server::with(
        Config::default()
            .arg("appendonly", "yes")
            .arg("appendfsync", "always"),
    );
    let mut m = master.conn();
    let has_waitaof = !redis::cmd("COMMAND")
        .arg("INFO")
        .arg("WAITAOF")
        .query::<Vec<redis::Value>>(&mut m)
        .unwrap()
        .iter()
        .all(|v| matches!(v, redis::Value::Nil));
    let o = Options {
        replica_ack: Some(ReplicaAck::Aof {
            local: true,
            replicas: 0,
            timeout: OK_ACK,
        }),
        ..Options::default()
    };
    let mut locker = Locker::new(master.conn(), "ack:aof", o);
    let r = locker.lock();
    if has_waitaof {
        assert!(r.unwrap());
        locker.unlock().unwrap();
    } else {
        // Redis 7.0: the server's error, and the grant is given up.
        assert!(matches!(r, Err(Error::Redis(_))), "{r:?}");
        assert!(!locker.is_locked());
    }
    assert!(!exists(&mut m, "ack:aof"));

    // A replica that must fsync, but there is none: not acknowledged.
    if has_waitaof {
        let o = Options {
            replica_ack: Some(ReplicaAck::Aof {
                local: true,
                replicas: 1,
                timeout: STOPPED_ACK,
            }),
            ..Options::default()
        };
        let mut locker = Locker::new(master.conn(), "ack:aof", o);
        match locker.lock() {
            Err(Error::NotAcknowledged {
                step: AckStep::Acquire,
                acknowledged: 1,
                wanted: 2,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!exists(&mut m, "ack:aof"));
    }
}

#[test]
fn async_watchdog_counts_unacknowledged_renewals_as_failed() {
    let (master, replica) = master_and_replica();
    let mut m = master.conn();
    rt().block_on(async {
        let conn = master
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let locks =
            LockClient::new(conn).with_wait_connections(WaitConnections::new(master.client()));
        let o =
            ObtainOptions::new().replica_ack(ReplicaAck::replicas(1, Duration::from_millis(1500)));
        let lock = locks
            .obtain("ack:adog", Duration::from_secs(6), &o)
            .await
            .unwrap();
        let guard = lock.guard_with_watchdog();
        let _stopped = replica.stop();
        let lost = guard.loss_signal().unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(40), lost.lost())
            .await
            .expect("loss reported");
        assert!(reason.to_string().contains("not acknowledged"), "{reason}");
        assert!(exists(&mut m, "ack:adog"), "the master still has it");
    });
}
