//! Redis Cluster: three masters with one replica each, every node with the
//! module, created with `redis-cli --cluster create` (testkit's
//! [`Cluster`]), driven through redis-rs cluster connections, sync and
//! async, and the client crate's `Locker` / `AsyncLocker`. Hundreds of locks
//! and dozens of waiters over all masters, then:
//!
//! * a planned failover (`CLUSTER FAILOVER` on a replica) while locks are
//!   held, expiring and waited for: both nodes survive; every lock is on the
//!   new master with its token, expiry and fence; the old master's waiters
//!   are sent to retry (`-TRYAGAIN`), never granted there, and get the lock
//!   on the new master; new fences on the moved slots are above every fence
//!   issued before, though the new master's clock runs 2 s behind;
//! * an unplanned failover (a master SIGKILLed, its replica promoted): every
//!   lock acknowledged by `WAIT 1` after `LOCK.ACQUIRE` survives with its
//!   token, expiry and fence; the test reports how many unacknowledged ones
//!   were lost;
//! * a slot migration (`CLUSTER SETSLOT`, `MIGRATE`) while clients wait:
//!   the waiters on the old owner get `-TRYAGAIN`, retry and are granted the
//!   lock on the new owner, one after the other; the old owner grants none
//!   of them.
//!
//! Every wait has a wide margin; nothing asserts on timing.

mod common;

use std::collections::HashMap;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use redis::cluster::{ClusterClient, ClusterConnection};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Connection, Value};
use redis_fenced_lock::{AsyncLocker, Locker, Options};
use testkit::Cluster;

/// Time to live of locks that must outlast a test.
const TTL_MS: u64 = 120_000;
/// How long a waiter waits in the server.
const WAIT_MS: u64 = 40_000;
/// Locks spread over all masters.
const LOCKS: usize = 300;
/// Planned failover: the victim's held locks with a waiter each, its
/// expiring locks with a waiter each, and waiters on each other master.
const HELD_WAITED: usize = 24;
const EXPIRING: usize = 8;
const ELSEWHERE_PER_MASTER: usize = 6;

/// A cluster client with no response timeout below the longest wait.
fn cluster_client(cluster: &Cluster) -> ClusterClient {
    ClusterClient::builder(cluster.urls())
        .response_timeout(Duration::from_millis(WAIT_MS + 30_000))
        .build()
        .expect("cluster client")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Client options for locks taken at once (no waiting).
fn no_wait() -> Options {
    Options {
        lock_timeout: Duration::from_millis(TTL_MS),
        ..Options::default()
    }
}

/// Client options for a locker that waits in the server's queue for up to
/// [`WAIT_MS`], in one piece (so that it is queued when the cluster
/// changes, and counted by the node's `wait_redirects`).
fn waiting() -> Options {
    Options {
        lock_timeout: Duration::from_millis(TTL_MS),
        retry_count: 1,
        retry_delay: Duration::from_millis(WAIT_MS),
        server_wait_slice: Duration::from_millis(WAIT_MS),
        ..Options::default()
    }
}

/// The cluster's slot for `key`.
fn slot(admin: &mut Connection, key: &str) -> u16 {
    int(&cmd(admin, ("CLUSTER", "KEYSLOT", key))) as u16
}

/// `n` keys `prefix:i` whose slots `owners` maps to `node`.
fn keys_on(
    admin: &mut Connection,
    owners: &[usize],
    node: usize,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| owners[usize::from(slot(admin, k))] == node)
        .take(n)
        .collect()
}

/// `LOCK.INFO key`: (held, fence).
fn lock_info(c: &mut Connection, key: &str) -> (bool, Option<i64>) {
    let v: Vec<Value> = redis::from_redis_value(cmd(c, ("LOCK.INFO", key))).unwrap();
    let field = |name: &[u8]| {
        v.chunks(2)
            .find(|kv| bytes(&kv[0]).as_deref() == Some(name))
            .map(|kv| kv[1].clone())
            .unwrap()
    };
    let fence = match field(b"fence") {
        Value::Nil => None,
        f => Some(int(&f)),
    };
    (int(&field(b"held")) == 1, fence)
}

/// Asserts that `token` holds `key` on `c`'s node with `fence`.
fn assert_holds(c: &mut Connection, key: &str, token: &str, fence: i64) {
    assert!(
        check(c, key.as_bytes(), token.as_bytes()) > 0,
        "{key} is not held by {token}"
    );
    assert_eq!(lock_info(c, key), (true, Some(fence)), "{key}'s fence");
}

fn stat(c: &mut Connection, name: &str) -> u64 {
    lock_stats(c)[name]
}

fn role(c: &mut Connection) -> String {
    info(c, "replication")["role"].clone()
}

/// The node answers and its log reports no crash.
fn assert_alive(server: &Server) {
    let mut c = server.conn();
    assert_eq!(text(&cmd(&mut c, "PING")), "PONG");
    let log = server.log();
    assert!(
        !log.contains("ASSERTION") && !log.contains("crashed") && !log.contains("panicked"),
        "{} reported a crash:\n{log}",
        server.addr()
    );
}

/// What a granted waiter got.
#[derive(Debug)]
struct Got {
    token: String,
    fence: i64,
    /// The errors that sent it to retry (the text of each).
    sent_away: Vec<String>,
}

/// A waiter's result, or the error that ended it.
type Outcome = Result<Got, String>;

/// The errors after which a waiter retries, as an application would: its
/// node stopped serving the key (`-TRYAGAIN`, the module's), or became a
/// replica (`-UNBLOCKED`, Redis's own answer to every blocked client when
/// a master turns into a replica; it closes the connection after it). A
/// cluster client follows `MOVED` on the retry. redis-rs retries
/// `-TRYAGAIN` by itself, not `-UNBLOCKED`.
fn retry_after(error: &str) -> bool {
    error.contains("UNBLOCKED") || error.contains("TRYAGAIN")
}

/// How many times a waiter retries at most.
const RETRIES: usize = 5;

/// A raw `LOCK.ACQUIRE key token TTL WAIT WAIT_MS` on a cluster connection
/// of its own (redis-rs follows `-TRYAGAIN`, `MOVED` and `ASK`). With
/// `release`, a granted waiter holds the lock for 5 ms and releases it (on
/// the same connection, so wherever the key is served now); the release
/// must find the lock still held.
fn raw_waiter(client: &ClusterClient, key: &str, release: bool) -> JoinHandle<Outcome> {
    let mut conn: ClusterConnection = client.get_connection().unwrap();
    let key = key.to_owned();
    let token = String::from_utf8(unique_token("raw")).unwrap();
    thread::spawn(move || {
        let mut sent_away = Vec::new();
        let fence = loop {
            let reply: redis::RedisResult<Option<i64>> = redis::cmd("LOCK.ACQUIRE")
                .arg(&key)
                .arg(&token)
                .arg(TTL_MS)
                .arg("WAIT")
                .arg(WAIT_MS)
                .query(&mut conn);
            match reply {
                Ok(Some(fence)) => break fence,
                Ok(None) => return Err(format!("{key}: the wait timed out")),
                Err(e) if retry_after(&error_text(&e)) && sent_away.len() < RETRIES => {
                    sent_away.push(error_text(&e));
                }
                Err(e) => return Err(format!("{key}: {} after {sent_away:?}", error_text(&e))),
            }
        };
        if release {
            thread::sleep(Duration::from_millis(5));
            let released: i64 = redis::cmd("LOCK.RELEASE")
                .arg(&key)
                .arg(&token)
                .query(&mut conn)
                .map_err(|e| format!("{key}: {e}"))?;
            if released != 1 {
                return Err(format!("{key}: no longer held at its release"));
            }
        }
        Ok(Got {
            token,
            fence,
            sent_away,
        })
    })
}

/// The client crate's `Locker`, waiting in the server, on a cluster
/// connection of its own; `release` as for [`raw_waiter`].
fn locker_waiter(client: &ClusterClient, key: &str, release: bool) -> JoinHandle<Outcome> {
    let conn = client.get_connection().unwrap();
    let key = key.to_owned();
    thread::spawn(move || {
        let mut locker = Locker::new(conn, key.clone(), waiting());
        let mut sent_away = Vec::new();
        loop {
            match locker.lock() {
                Ok(true) => break,
                Ok(false) => return Err(format!("{key}: not obtained")),
                Err(e) if retry_after(&e.to_string()) && sent_away.len() < RETRIES => {
                    sent_away.push(e.to_string());
                }
                Err(e) => return Err(format!("{key}: {e} after {sent_away:?}")),
            }
        }
        let got = Got {
            token: locker.token().unwrap().to_owned(),
            fence: locker.fence().unwrap() as i64,
            sent_away,
        };
        if release {
            thread::sleep(Duration::from_millis(5));
            locker.unlock().map_err(|e| format!("{key}: {e}"))?;
        }
        Ok(got)
    })
}

/// A waiter of any kind, to be joined.
type Waiter = Box<dyn FnOnce() -> Outcome>;

/// Waiter number `n` on `key`: a raw command or a sync locker, both waiting
/// in the server. (The async locker polls on a cluster connection, having
/// no connection of its own to wait on, so it never queues; the async
/// cluster connection takes locks above.)
fn any_waiter(n: usize, client: &ClusterClient, key: &str, release: bool) -> Waiter {
    if n.is_multiple_of(2) {
        let w = raw_waiter(client, key, release);
        Box::new(move || w.join().unwrap())
    } else {
        let w = locker_waiter(client, key, release);
        Box::new(move || w.join().unwrap())
    }
}

/// Waits until `n` clients wait on node `c`.
fn wait_queued(c: &mut Connection, n: u64, what: &str) {
    wait_for(Duration::from_secs(60), what, || {
        (stat(c, "waiters") == n).then_some(())
    });
}

/// A lock taken through the cluster: key, token, fence.
#[derive(Clone, Debug)]
struct Held {
    key: String,
    token: String,
    fence: i64,
}

/// Takes `keys` with the sync `Locker` on a cluster connection.
fn take_sync(conn: &mut ClusterConnection, keys: &[String]) -> Vec<Held> {
    keys.iter()
        .map(|key| {
            let mut locker = Locker::new(&mut *conn, key.clone(), no_wait());
            assert!(locker.lock().unwrap(), "{key} was refused");
            Held {
                key: key.clone(),
                token: locker.token().unwrap().to_owned(),
                fence: locker.fence().unwrap() as i64,
            }
        })
        .collect()
}

/// Takes `keys` with the `AsyncLocker` on one async cluster connection.
fn take_async(rt: &tokio::runtime::Runtime, client: &ClusterClient, keys: &[String]) -> Vec<Held> {
    rt.block_on(async {
        let conn = client.get_async_connection().await.unwrap();
        let mut held = Vec::new();
        for key in keys {
            let mut locker = AsyncLocker::new(conn.clone(), key.clone(), no_wait());
            assert!(locker.lock().await.unwrap(), "{key} was refused");
            held.push(Held {
                key: key.clone(),
                token: locker.token().unwrap().to_owned(),
                fence: locker.fence().unwrap() as i64,
            });
        }
        held
    })
}

/// `LOCK.RELEASE` through the cluster; must release.
fn release_via(conn: &mut ClusterConnection, h: &Held) {
    let r: i64 = redis::cmd("LOCK.RELEASE")
        .arg(&h.key)
        .arg(&h.token)
        .query(conn)
        .unwrap();
    assert_eq!(r, 1, "{} was not held by {}", h.key, h.token);
}

/// `PEXPIRETIME` of each key on `c`'s node, in one pipeline.
fn expire_times(c: &mut Connection, held: &[Held]) -> Vec<i64> {
    let mut p = redis::pipe();
    for h in held {
        p.cmd("PEXPIRETIME").arg(&h.key);
    }
    p.query(c).unwrap()
}

#[test]
fn planned_failover_keeps_every_lock_and_sends_waiters_to_the_new_master() {
    let started = Instant::now();
    let cluster = Cluster::start(5_000);
    let client = cluster_client(&cluster);
    let rt = rt();
    let mut admin = cluster.node(0).conn();
    let owners = cluster.slot_owners();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let (old, ref replicas) = masters[0];
    let new = replicas[0];
    let (mut m, mut r) = (cluster.node(old).conn(), cluster.node(new).conn());
    // The replica's fencing clock runs 2 s behind its master's: without the
    // fence floor raised on promotion, its new fences could be lower.
    cmd(
        &mut r,
        ("CONFIG", "SET", "lock.debug-fence-clock-offset", -2000),
    );

    // 300 locks over all masters, half through the sync client, half
    // through the async one.
    let keys: Vec<String> = (0..LOCKS).map(|i| format!("lock:{i}")).collect();
    let mut conn = client.get_connection().unwrap();
    let mut held = take_sync(&mut conn, &keys[..LOCKS / 2]);
    held.extend(take_async(&rt, &client, &keys[LOCKS / 2..]));
    for (i, _) in &masters {
        let n = held
            .iter()
            .filter(|h| owners[usize::from(slot(&mut admin, &h.key))] == *i)
            .count();
        assert!(n > 50, "node {i} holds only {n} of the {LOCKS} locks");
    }

    // On the master to fail over: held locks with a waiter each, and locks
    // about to expire with a waiter each; on the others, held locks with
    // waiters too. Waiters are raw commands and sync lockers.
    let held_waited = take_sync(
        &mut conn,
        &keys_on(&mut admin, &owners, old, "waited", HELD_WAITED),
    );
    let expiring = take_sync(
        &mut conn,
        &keys_on(&mut admin, &owners, old, "expiring", EXPIRING),
    );
    let mut elsewhere = Vec::new();
    for (i, _) in &masters[1..] {
        let keys = keys_on(&mut admin, &owners, *i, "elsewhere", ELSEWHERE_PER_MASTER);
        elsewhere.extend(take_sync(&mut conn, &keys));
    }
    let spawn = |n: usize, h: &Held| any_waiter(n, &client, &h.key, false);
    let held_waiters: Vec<_> = held_waited
        .iter()
        .enumerate()
        .map(|(n, h)| spawn(n, h))
        .collect();
    let expiring_waiters: Vec<_> = expiring
        .iter()
        .enumerate()
        .map(|(n, h)| spawn(n, h))
        .collect();
    let elsewhere_waiters: Vec<_> = elsewhere
        .iter()
        .enumerate()
        .map(|(n, h)| spawn(n, h))
        .collect();
    wait_queued(
        &mut m,
        (HELD_WAITED + EXPIRING) as u64,
        "waiters on the old master",
    );
    for (i, _) in &masters[1..] {
        let mut c = cluster.node(*i).conn();
        wait_queued(&mut c, ELSEWHERE_PER_MASTER as u64, "waiters elsewhere");
    }

    // What the old master holds, as its replica acknowledged it.
    let on_old: Vec<Held> = held
        .iter()
        .chain(&held_waited)
        .filter(|h| owners[usize::from(slot(&mut admin, &h.key))] == old)
        .cloned()
        .collect();
    wait_replicated(&mut m);
    let expiry = expire_times(&mut m, &on_old);
    let before = lock_stats(&mut m);
    let mut fences_before: Vec<i64> = on_old.iter().chain(&expiring).map(|h| h.fence).collect();

    // The promotion raises the fence floor to the new master's clock + the
    // 10 s margin; that is above the old master's own floor (its start +
    // 10 s, on a clock 2 s ahead) once the old master has run for 2 s.
    let up = Duration::from_millis(2_500);
    if started.elapsed() < up {
        thread::sleep(up - started.elapsed());
    }
    // Back to back: the expiring locks now expire 300 ms from here, about
    // when the failover pauses the old master's writes.
    let mut p = redis::pipe();
    for h in &expiring {
        p.cmd("LOCK.ACQUIRE").arg(&h.key).arg(&h.token).arg(300);
    }
    let renewed: Vec<i64> = p.query(&mut m).unwrap();
    assert_eq!(
        renewed,
        expiring.iter().map(|h| h.fence).collect::<Vec<_>>()
    );
    let failover_at = Instant::now();
    assert_eq!(cmd(&mut r, ("CLUSTER", "FAILOVER")), Value::Okay);
    wait_for(Duration::from_secs(60), "the replica to take over", || {
        (role(&mut r) == "master" && role(&mut m) == "slave").then_some(())
    });
    cluster.wait_converged();
    let took = failover_at.elapsed();
    assert_alive(cluster.node(old));
    assert_alive(cluster.node(new));
    let owners_after = cluster.slot_owners();
    for h in &on_old {
        assert_eq!(owners_after[usize::from(slot(&mut admin, &h.key))], new);
    }

    // Every lock the old master held is on the new one: token, expiry, fence.
    for h in &on_old {
        assert_holds(&mut r, &h.key, &h.token, h.fence);
    }
    assert_eq!(expire_times(&mut r, &on_old), expiry);

    // The expiring locks' waiters got them, from the old master before its
    // pause or from the new one after retrying; the new master has each.
    let mut expiring_sent_away = 0;
    for (w, h) in expiring_waiters.into_iter().zip(&expiring) {
        let got = w().unwrap_or_else(|e| panic!("expiring: {e}"));
        assert!(got.fence > h.fence);
        assert_holds(&mut r, &h.key, &got.token, got.fence);
        fences_before.push(got.fence);
        expiring_sent_away += usize::from(!got.sent_away.is_empty());
    }
    let highest_before = *fences_before.iter().max().unwrap();

    // The old master granted none of the held locks' waiters: each waiter
    // still queued when it became a replica was answered (Redis answers
    // them `-UNBLOCKED` and closes their connections: the module sees them
    // leave), and it has no waiter left.
    let after = lock_stats(&mut m);
    let delta = |name: &str| after[name] - before[name];
    let (disconnected, redirected) = (delta("wait_disconnects"), delta("wait_redirects"));
    let sent_away = disconnected + redirected;
    let granted_there = delta("handoffs");
    assert_eq!(sent_away + granted_there, (HELD_WAITED + EXPIRING) as u64);
    assert!(sent_away >= HELD_WAITED as u64, "{sent_away} sent away");
    assert!(granted_there as usize + expiring_sent_away >= EXPIRING);
    assert_eq!(stat(&mut m, "waiters"), 0);

    // The held locks' waiters queue again on the new master; their holders
    // release through the cluster, and each waiter gets its lock there with
    // a fence above every earlier one.
    wait_queued(&mut r, HELD_WAITED as u64, "waiters on the new master");
    let mut conn = client.get_connection().unwrap();
    for h in &held_waited {
        release_via(&mut conn, h);
    }
    let mut errors = Vec::new();
    for (w, h) in held_waiters.into_iter().zip(&held_waited) {
        let got = w().unwrap_or_else(|e| panic!("held: {e}"));
        assert!(
            got.fence > highest_before,
            "{} <= {highest_before}",
            got.fence
        );
        assert_holds(&mut r, &h.key, &got.token, got.fence);
        // It was sent away from the old master, once.
        assert_eq!(got.sent_away.len(), 1, "{}: {:?}", h.key, got.sent_away);
        errors.extend(got.sent_away);
    }
    errors.sort();
    errors.dedup();
    // Fresh locks in the moved slots, through both clients: above too.
    let fresh = keys_on(&mut admin, &owners_after, new, "fresh", 20);
    let fresh_held = take_sync(&mut conn, &fresh[..10]);
    let fresh_async = take_async(&rt, &client, &fresh[10..]);
    for h in fresh_held.iter().chain(&fresh_async) {
        assert!(h.fence > highest_before, "{} <= {highest_before}", h.fence);
    }

    // Other masters: their locks held, their waiters served as usual.
    for h in &elsewhere {
        release_via(&mut conn, h);
    }
    for (w, h) in elsewhere_waiters.into_iter().zip(&elsewhere) {
        let got = w().unwrap_or_else(|e| panic!("elsewhere: {e}"));
        assert!(got.fence > h.fence);
        assert!(got.sent_away.is_empty(), "{:?}", got.sent_away);
    }
    for h in &held {
        let left: i64 = redis::cmd("LOCK.CHECK")
            .arg(&h.key)
            .arg(&h.token)
            .query(&mut conn)
            .unwrap();
        assert!(left > 0, "{} was lost", h.key);
    }
    println!(
        "planned failover: {} locks on the moved slots kept; {sent_away} waiters sent away \
         ({disconnected} seen leaving by the module, {redirected} answered by it; {errors:?}), \
         {granted_there} granted by the old master before its pause; \
         failover {took:?}, test {:?}",
        on_old.len(),
        started.elapsed()
    );
}

#[test]
fn unplanned_failover_keeps_every_acknowledged_lock() {
    let started = Instant::now();
    let mut cluster = Cluster::start(2_000);
    let client = cluster_client(&cluster);
    let owners = cluster.slot_owners();
    let masters = cluster.masters();
    let (old, ref replicas) = masters[0];
    // Asks for key slots; not the node to be killed.
    let mut admin = cluster.node(masters[1].0).conn();
    let new = replicas[0];
    let mut m = cluster.node(old).conn();
    let mut r = cluster.node(new).conn();
    cmd(
        &mut r,
        ("CONFIG", "SET", "lock.debug-fence-clock-offset", -2000),
    );

    // 300 locks over all masters, each acknowledged: `WAIT 1` on the key's
    // master right after LOCK.ACQUIRE, through the cluster connection.
    let mut conn = client.get_connection().unwrap();
    let mut acked = Vec::new();
    for i in 0..LOCKS {
        let key = format!("acked:{i}");
        let h = take_sync(&mut conn, std::slice::from_ref(&key)).remove(0);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
            &key,
            SlotAddr::Master,
        )));
        let n = conn
            .route_command(redis::cmd("WAIT").arg(1).arg(5_000), route)
            .unwrap();
        assert_eq!(int(&n), 1, "{key} was not acknowledged");
        acked.push(h);
    }
    let on_old: Vec<Held> = acked
        .iter()
        .filter(|h| owners[usize::from(slot(&mut admin, &h.key))] == old)
        .cloned()
        .collect();
    let expiry = expire_times(&mut m, &on_old);
    let cut_keys = keys_on(&mut admin, &owners, old, "cut", 50);

    // Unacknowledged locks on the master to kill: 100 with the replica's
    // link up, then 50 taken right after the link was cut (`CLIENT KILL`;
    // the replica reconnects within a second), just before the kill.
    let unacked = take_sync(
        &mut conn,
        &keys_on(&mut admin, &owners, old, "unacked", 100),
    );
    let cut_tokens: Vec<String> = (0..cut_keys.len())
        .map(|_| String::from_utf8(unique_token("cut")).unwrap())
        .collect();
    let mut p = redis::pipe();
    p.cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica");
    for (k, t) in cut_keys.iter().zip(&cut_tokens) {
        p.cmd("LOCK.ACQUIRE").arg(k).arg(t).arg(TTL_MS);
    }
    let replies: Vec<Value> = p.query(&mut m).unwrap();
    assert_eq!(int(&replies[0]), 1, "one replica link cut");
    let cut: Vec<Held> = cut_keys
        .iter()
        .zip(&cut_tokens)
        .zip(&replies[1..=cut_keys.len()])
        .map(|((k, t), f)| Held {
            key: k.clone(),
            token: t.clone(),
            fence: int(f),
        })
        .collect();

    // SIGKILL; the cluster notices after the node timeout and promotes.
    let killed_at = Instant::now();
    cluster.kill(old);
    let highest_before = on_old
        .iter()
        .chain(&unacked)
        .chain(&cut)
        .map(|h| h.fence)
        .max()
        .unwrap();
    wait_for(Duration::from_secs(60), "the replica's promotion", || {
        (role(&mut r) == "master").then_some(())
    });
    let promoted = killed_at.elapsed();
    cluster.wait_converged();
    assert_alive(cluster.node(new));
    let owners_after = cluster.slot_owners();
    for h in &on_old {
        assert_eq!(owners_after[usize::from(slot(&mut admin, &h.key))], new);
    }

    // Every acknowledged lock survived, with token, expiry and fence.
    for h in &on_old {
        assert_holds(&mut r, &h.key, &h.token, h.fence);
    }
    assert_eq!(expire_times(&mut r, &on_old), expiry);
    // Unacknowledged ones may be lost; those kept are intact.
    let mut lost = |set: &[Held]| {
        set.iter()
            .filter(|h| {
                let kept = check(&mut r, h.key.as_bytes(), h.token.as_bytes()) > 0;
                if kept {
                    assert_eq!(lock_info(&mut r, &h.key).1, Some(h.fence));
                }
                !kept
            })
            .count()
    };
    let lost_unacked = lost(&unacked);
    let lost_cut = lost(&cut);

    // New fences on the moved slots, for fresh keys and for the lost ones'
    // keys (through a new cluster connection), are above every fence the
    // old master issued, acknowledged or not.
    let client = cluster_client(&cluster);
    let mut conn = client.get_connection().unwrap();
    let mut again: Vec<String> = keys_on(&mut admin, &owners_after, new, "fresh", 20);
    again.extend(
        unacked
            .iter()
            .chain(&cut)
            .filter(|h| !exists(&mut r, h.key.as_bytes()))
            .map(|h| h.key.clone()),
    );
    for h in take_sync(&mut conn, &again) {
        assert!(h.fence > highest_before, "{} <= {highest_before}", h.fence);
    }
    // The other masters' locks are untouched.
    for h in acked
        .iter()
        .filter(|h| !on_old.iter().any(|o| o.key == h.key))
    {
        let left: i64 = redis::cmd("LOCK.CHECK")
            .arg(&h.key)
            .arg(&h.token)
            .query(&mut conn)
            .unwrap();
        assert!(left > 0, "{} was lost", h.key);
    }
    println!(
        "unplanned failover: {} acknowledged locks on the killed master, all kept; \
         unacknowledged with the replica linked: {lost_unacked} of {} lost; \
         taken after the replica's link was cut: {lost_cut} of {} lost; promoted {promoted:?} after the kill \
         (cluster-node-timeout 2000 ms); test {:?}",
        on_old.len(),
        unacked.len(),
        cut.len(),
        started.elapsed()
    );
}

#[test]
fn slot_migration_sends_waiters_to_the_new_owner() {
    const KEYS: usize = 10;
    let started = Instant::now();
    let cluster = Cluster::start(5_000);
    let client = cluster_client(&cluster);
    let mut admin = cluster.node(0).conn();
    let owners = cluster.slot_owners();
    let masters = cluster.masters();
    let (from, to) = (masters[0].0, masters[1].0);
    let (mut a, mut b) = (cluster.node(from).conn(), cluster.node(to).conn());

    // Ten locks in one slot of `from` (one hash tag), each with three
    // waiters: a raw command and a sync locker on cluster connections,
    // and a raw command on a plain connection to `from`. One more lock, in
    // another slot of `from`, with two waiters that stay there.
    let tag = (0..)
        .map(|i| format!("{{mig{i}}}"))
        .find(|t| owners[usize::from(slot(&mut admin, t))] == from)
        .unwrap();
    let sl = slot(&mut admin, &tag);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{tag}:{i}")).collect();
    let stay_key = keys_on(&mut admin, &owners, from, "stay", 20)
        .into_iter()
        .find(|k| slot(&mut admin, k) != sl)
        .unwrap();
    let mut conn = client.get_connection().unwrap();
    let holders = take_sync(&mut conn, &keys);
    let stay = take_sync(&mut conn, std::slice::from_ref(&stay_key)).remove(0);
    // Each waiter, once granted, holds the lock briefly and releases it
    // where it is now served, so that the next waiter gets it.
    let mut waiters: Vec<(String, Waiter)> = Vec::new();
    let mut plain = Vec::new();
    for key in &keys {
        waiters.push((key.clone(), any_waiter(0, &client, key, true)));
        waiters.push((key.clone(), any_waiter(1, &client, key, true)));
        let mut direct = cluster.node(from).conn();
        let (k, token) = (
            key.clone(),
            String::from_utf8(unique_token("plain")).unwrap(),
        );
        plain.push(thread::spawn(move || {
            let reply = try_cmd(
                &mut direct,
                ("LOCK.ACQUIRE", &k, &token, TTL_MS, "WAIT", WAIT_MS),
            );
            (k, reply)
        }));
    }
    for _ in 0..2 {
        waiters.push((stay_key.clone(), any_waiter(0, &client, &stay_key, true)));
    }
    let queued = (3 * KEYS + 2) as u64;
    wait_queued(&mut a, queued, "the waiters on the old owner");
    let redirects_before = stat(&mut a, "wait_redirects");
    let handoffs_before = stat(&mut a, "handoffs");

    // Move the slot with its locks from `from` to `to`.
    let (from_id, to_id) = (cluster.id(from).to_owned(), cluster.id(to).to_owned());
    cmd(&mut b, ("CLUSTER", "SETSLOT", sl, "IMPORTING", &from_id));
    cmd(&mut a, ("CLUSTER", "SETSLOT", sl, "MIGRATING", &to_id));
    let mut migrate = redis::cmd("MIGRATE");
    migrate
        .arg("127.0.0.1")
        .arg(cluster.node(to).port())
        .arg("")
        .arg(0)
        .arg(10_000)
        .arg("KEYS")
        .arg(&keys);
    let _: () = migrate.query(&mut a).unwrap();
    for (i, _) in &masters {
        let mut c = cluster.node(*i).conn();
        cmd(&mut c, ("CLUSTER", "SETSLOT", sl, "NODE", &to_id));
    }

    // The plain connections see the error itself, then retry through the
    // cluster (the client crate's Locker, waiting in the server).
    for p in plain {
        let (key, reply) = p.join().unwrap();
        let e = reply.expect_err("granted on the old owner");
        let e = error_text(&e);
        assert!(e.starts_with("TRYAGAIN"), "{key}: {e}");
        waiters.push((key.clone(), any_waiter(1, &client, &key, true)));
    }
    // The migrated locks are held on the new owner, with their fences.
    for h in &holders {
        assert_holds(&mut b, &h.key, &h.token, h.fence);
    }
    assert_eq!(int(&cmd(&mut a, ("CLUSTER", "COUNTKEYSINSLOT", sl))), 0);
    // Every waiter of the moved slot was sent away by the old owner; the
    // two of the other slot still wait there.
    assert_eq!(
        stat(&mut a, "wait_redirects") - redirects_before,
        (3 * KEYS) as u64
    );
    assert_eq!(stat(&mut a, "waiters"), 2);
    wait_queued(&mut b, (3 * KEYS) as u64, "the waiters on the new owner");

    // The holders release through the cluster; the waiters get each lock in
    // turn on the new owner.
    for h in holders.iter().chain(std::iter::once(&stay)) {
        release_via(&mut conn, h);
    }
    let mut fences: HashMap<String, Vec<i64>> = HashMap::new();
    for (key, w) in waiters {
        let got = w().unwrap_or_else(|e| panic!("{e}"));
        fences.entry(key).or_default().push(got.fence);
    }
    for h in holders.iter().chain(std::iter::once(&stay)) {
        let mut f = fences.remove(&h.key).unwrap();
        f.sort_unstable();
        f.dedup();
        let expected = if h.key == stay_key { 2 } else { 3 };
        assert_eq!(f.len(), expected, "{}: {f:?}", h.key);
        assert!(f[0] > h.fence, "{}: {f:?} after {}", h.key, h.fence);
    }
    // The old owner granted only the other slot's two waiters.
    assert_eq!(stat(&mut a, "handoffs") - handoffs_before, 2);
    assert_eq!(int(&cmd(&mut b, ("CLUSTER", "COUNTKEYSINSLOT", sl))), 0);
    assert_alive(cluster.node(from));
    assert_alive(cluster.node(to));
    println!(
        "slot migration: {} waiters on {KEYS} locks redirected and served on the new owner; \
         test {:?}",
        3 * KEYS,
        started.elapsed()
    );
}

/// A node raises its fence floor (clock + `lock.fence-margin`) when it
/// starts, is promoted, or is handed slots (`CLUSTER SETSLOT … NODE`).
/// Here a master just promoted (its fences are its clock + 10 s for 10 s)
/// grants and releases a key; the key's empty slot moves to another master,
/// whose next fence must still be larger (without the floor it follows its
/// clock: about 10 s lower). No clock is skewed.
#[test]
fn fences_keep_increasing_when_an_empty_slot_moves() {
    let cluster = Cluster::start(5_000);
    let masters = cluster.masters();
    let a = masters[0].1[0];
    let b = masters[1].0;
    let (mut ca, mut cb) = (cluster.node(a).conn(), cluster.node(b).conn());
    assert_eq!(cmd(&mut ca, ("CLUSTER", "FAILOVER")), Value::Okay);
    wait_for(Duration::from_secs(60), "the promotion", || {
        (role(&mut ca) == "master").then_some(())
    });
    cluster.wait_converged();
    let owners = cluster.slot_owners();
    let key = keys_on(&mut cb, &owners, a, "moved", 1).remove(0);
    let sl = slot(&mut cb, &key);
    let before = must_acquire(&mut ca, key.as_bytes(), b"first", 60_000);
    assert_eq!(release(&mut ca, key.as_bytes(), b"first"), 1);
    let (a_id, b_id) = (cluster.id(a).to_owned(), cluster.id(b).to_owned());
    cmd(&mut cb, ("CLUSTER", "SETSLOT", sl, "IMPORTING", &a_id));
    cmd(&mut ca, ("CLUSTER", "SETSLOT", sl, "MIGRATING", &b_id));
    for (i, _) in &cluster.masters() {
        let mut c = cluster.node(*i).conn();
        cmd(&mut c, ("CLUSTER", "SETSLOT", sl, "NODE", &b_id));
    }
    let after = must_acquire(&mut cb, key.as_bytes(), b"second", 60_000);
    assert!(
        after > before,
        "the fence went back from {before} to {after}"
    );
}
