//! Write pauses, failovers and role changes: the module never writes while
//! writes are paused or on a replica, answers its waiters when the server
//! becomes a replica, keeps fences increasing across a promotion to a
//! server whose clock runs behind, and answers every waiter exactly once.

mod common;

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, RedisError, Value};

/// A replica of `master` with the module, linked up.
fn replica_of(master: &Server, config: Config) -> (Server, Connection) {
    let replica = Server::with(config.arg("replicaof", &format!("127.0.0.1 {}", master.port())));
    let mut c = replica.conn();
    wait_link_up(&mut c);
    (replica, c)
}

/// `LOCK.ACQUIRE key token ttl WAIT wait` on a connection of its own; the
/// reply and when it came.
fn waiter(
    server: &Server,
    key: &'static [u8],
    token: &'static [u8],
    ttl: u64,
    wait: u64,
) -> JoinHandle<(Result<Value, RedisError>, Instant)> {
    let mut c = server.conn();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    thread::spawn(move || {
        let r = try_cmd(
            &mut c,
            (&b"LOCK.ACQUIRE"[..], key, token, ttl, "WAIT", wait),
        );
        (r, Instant::now())
    })
}

/// Waits until `n` clients wait for `key`.
fn wait_waiters(c: &mut Connection, key: &[u8], n: i64) {
    wait_for(WAIT, "the waiter to queue", || {
        let info: Vec<Value> = redis::from_redis_value(cmd(c, ("LOCK.INFO", key))).unwrap();
        let waiters = info
            .chunks(2)
            .find(|kv| bytes(&kv[0]).as_deref() == Some(&b"waiters"[..]))
            .map(|kv| int(&kv[1]));
        (waiters == Some(n)).then_some(())
    });
}

fn role(c: &mut Connection) -> String {
    info(c, "replication")["role"].clone()
}

fn assert_alive(server: &Server) {
    let mut c = server.conn();
    assert_eq!(text(&cmd(&mut c, "PING")), "PONG");
    let log = server.log();
    assert!(
        !log.contains("ASSERTION") && !log.contains("crashed"),
        "the server reported a crash:\n{log}"
    );
}

fn fence_of(reply: &Result<Value, RedisError>) -> i64 {
    match reply {
        Ok(Value::Int(f)) => *f,
        other => panic!("expected a fence, got {other:?}"),
    }
}

/// A lock with a waiter expires inside `CLIENT PAUSE`: nothing is written
/// during the pause (Redis 7.0 aborted here), the waiter gets the lock
/// after it, and the replica has the same lock.
fn lock_expiring_inside_a_pause(mode: &str) {
    let m = Server::start();
    let (_r, mut rc) = replica_of(&m, Config::default());
    let mut c = m.conn();
    let held = must_acquire(&mut c, b"k", b"holder", 60_000);
    let w = waiter(&m, b"k", b"next", 60_000, 20_000);
    wait_waiters(&mut c, b"k", 1);

    let mut other = m.conn();
    let pause_ms = 1_500;
    let paused_at = Instant::now();
    // Back to back, however slow the machine: the lock now expires 300 ms
    // into the pause.
    let (renewed, ok): (i64, String) = redis::pipe()
        .cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("holder")
        .arg(300)
        .cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause_ms)
        .arg(mode)
        .query(&mut c)
        .unwrap();
    assert_eq!((renewed, ok.as_str()), (held, "OK"));
    // A LOCK.* write is held back by Redis for the whole pause.
    let t = Instant::now();
    assert!(acquire(&mut other, b"k2", b"x", 60_000).is_some());
    assert!(t.elapsed() >= Duration::from_millis(pause_ms - 200));

    let (reply, at) = w.join().unwrap();
    let fence = fence_of(&reply);
    // Servers keep the pause's end in whole milliseconds of a cached clock,
    // so it may end up to 2 ms before `paused_at + pause_ms`; a grant inside
    // the pause would come 300 ms in, at the lock's expiry.
    assert!(
        at + Duration::from_millis(2) >= paused_at + Duration::from_millis(pause_ms),
        "the waiter was granted during the pause: {:?} after it began",
        at - paused_at
    );
    println!(
        "{mode}: granted {:?} after the pause began ({pause_ms} ms pause)",
        at - paused_at
    );
    assert_alive(&m);
    assert!(check(&mut c, b"k", b"next") > 0);
    assert_eq!(acquire(&mut c, b"k", b"next", 60_000), Some(fence));
    wait_replicated(&mut c);
    assert_eq!(snapshot(&mut rc, b"k"), snapshot(&mut c, b"k"));
    assert_eq!(snapshot(&mut rc, b"k2"), snapshot(&mut c, b"k2"));
}

#[test]
fn lock_expiring_inside_client_pause_write() {
    lock_expiring_inside_a_pause("WRITE");
}

#[test]
fn lock_expiring_inside_client_pause_all() {
    lock_expiring_inside_a_pause("ALL");
}

/// `FAILOVER` pauses writes until the replica has caught up (here held
/// back by `DEBUG SLEEP`), and a lock with a waiter expires inside that
/// pause; then the master becomes a replica. Both servers survive, the
/// waiter is answered with an error, and the new master has every lock
/// with its token, expiry and fence.
#[test]
fn failover_with_waiters_and_expiring_locks() {
    let m = Server::start();
    let (r, mut rc) = replica_of(&m, Config::default());
    let mut c = m.conn();
    let held = must_acquire(&mut c, b"held", b"a", 120_000);
    let expiring = must_acquire(&mut c, b"k", b"holder", 60_000);
    let w = waiter(&m, b"k", b"next", 60_000, 30_000);
    wait_waiters(&mut c, b"k", 1);
    wait_replicated(&mut c);

    let mut slow = r.conn();
    let sleeper = thread::spawn(move || cmd(&mut slow, ("DEBUG", "SLEEP", 3)));
    thread::sleep(Duration::from_millis(100));
    // Back to back: the lock now expires 300 ms into the failover's pause.
    let (renewed, ok): (i64, String) = redis::pipe()
        .cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("holder")
        .arg(300)
        .cmd("FAILOVER")
        .arg("TIMEOUT")
        .arg(20_000)
        .query(&mut c)
        .unwrap();
    assert_eq!((renewed, ok.as_str()), (expiring, "OK"));
    sleeper.join().unwrap();

    let (reply, _) = w.join().unwrap();
    let e = reply.expect_err("the old master must not grant during the failover");
    assert!(
        error_text(&e).starts_with("UNBLOCKED"),
        "{}",
        error_text(&e)
    );
    wait_for(WAIT, "the roles to swap", || {
        (role(&mut c) == "slave" && role(&mut rc) == "master").then_some(())
    });
    assert_alive(&m);
    assert_alive(&r);

    // The new master has the held lock, with its fence.
    assert_eq!(acquire(&mut rc, b"held", b"a", 120_000), Some(held));
    // The expired one is free there; the waiter retries and gets it with a
    // larger fence.
    let fence = must_acquire(&mut rc, b"k", b"next", 60_000);
    assert!(fence > expiring && fence > held);
    wait_replicated(&mut rc);
    for key in [&b"held"[..], b"k"] {
        assert_eq!(snapshot(&mut c, key), snapshot(&mut rc, key));
    }
    // The old master refuses writes now.
    assert!(try_cmd(&mut c, (&b"LOCK.ACQUIRE"[..], &b"z"[..], &b"t"[..], 1000)).is_err());
}

/// `REPLICAOF` on a master with waiters: each is answered at once (not
/// after its 30 s wait), nothing is granted there, and the server survives.
#[test]
fn replicaof_answers_waiters_at_once() {
    let m = Server::start();
    let other = Server::start();
    let mut c = m.conn();
    must_acquire(&mut c, b"k", b"holder", 60_000);
    let waiters: Vec<_> = [&b"w1"[..], b"w2"]
        .into_iter()
        .map(|t| waiter(&m, b"k", t, 60_000, 30_000))
        .collect();
    wait_waiters(&mut c, b"k", 2);

    let t = Instant::now();
    cmd(&mut c, ("REPLICAOF", "127.0.0.1", other.port()));
    for w in waiters {
        let (reply, at) = w.join().unwrap();
        let e = reply.expect_err("a replica must not grant");
        assert!(error_text(&e).starts_with("UNBLOCKED"), "{e}");
        assert!(
            at - t < Duration::from_secs(20),
            "answered only at its timeout"
        );
    }
    assert_alive(&m);
    wait_link_up(&mut c);
    assert_eq!(lock_stats(&mut c)["waiters"], 0);
}

/// A master whose fencing clock runs 5 s ahead issues a fence; the key is
/// released; a replica whose clock is "behind" is promoted. With the
/// default margin (10 s) its next fence for the key is larger; with no
/// margin it would be smaller (the documented limit).
#[test]
fn fences_keep_growing_across_a_promotion_to_a_slower_clock() {
    // No margin at start anywhere, so that only the promotion counts.
    let m = Server::with(
        Config::default()
            .module_arg("debug-fence-clock-offset", "5000")
            .module_arg("fence-margin", "0"),
    );
    let (_r1, mut r1) = replica_of(&m, Config::default().module_arg("fence-margin", "0"));
    let (_r2, mut r2) = replica_of(&m, Config::default().module_arg("fence-margin", "0"));
    let mut c = m.conn();
    let old = must_acquire(&mut c, b"k", b"a", 60_000);
    assert_eq!(release(&mut c, b"k", b"a"), 1);
    assert_eq!(int(&cmd(&mut c, ("WAIT", 2, 5000))), 2);

    cmd(&mut r1, ("CONFIG", "SET", "lock.fence-margin", 10_000));
    cmd(&mut r1, ("REPLICAOF", "NO", "ONE"));
    let new = must_acquire(&mut r1, b"k", b"b", 60_000);
    assert!(new > old, "fence went back from {old} to {new}");

    cmd(&mut r2, ("REPLICAOF", "NO", "ONE"));
    let unprotected = must_acquire(&mut r2, b"k", b"b", 60_000);
    assert!(
        unprotected < old,
        "without a margin the skew shows: {unprotected} vs {old}"
    );
}

/// The server-wide last fence starts again after a restart; a hand-off
/// must still go above the key's own previous fence, even when that fence
/// came from a clock far ahead.
#[test]
fn hand_off_after_a_restart_goes_above_the_keys_fence() {
    let aof = Config::default()
        .arg("appendonly", "yes")
        .arg("appendfsync", "always");
    let mut s = Server::with(
        aof.clone()
            .module_arg("debug-fence-clock-offset", "3600000"),
    );
    let mut c = s.conn();
    let old = must_acquire(&mut c, b"k", b"a", 120_000);
    s.restart_with(aof.module_arg("fence-margin", "0"));
    let mut c = s.conn();
    // The server-wide counter started again: a fresh key follows the clock.
    assert!(must_acquire(&mut c, b"fresh", b"x", 1_000) < old);
    let w = waiter(&s, b"k", b"b", 60_000, 30_000);
    wait_waiters(&mut c, b"k", 1);
    assert_eq!(release(&mut c, b"k", b"a"), 1);
    let (reply, _) = w.join().unwrap();
    let new = fence_of(&reply);
    assert!(new > old, "fence went back from {old} to {new}");
}

/// The deadline timer hands the lock on when it expires (the sweep would
/// too, a little later, but counts as another cause).
#[test]
fn the_deadline_timer_hands_off_at_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    let held = must_acquire(&mut c, b"k", b"a", 60_000);
    let w = waiter(&s, b"k", b"b", 60_000, 30_000);
    wait_waiters(&mut c, b"k", 1);
    // A renewal to 200 ms moves the deadline timer with it.
    assert_eq!(acquire(&mut c, b"k", b"a", 200), Some(held));
    let (reply, _) = w.join().unwrap();
    fence_of(&reply);
    assert_eq!(lock_stats(&mut c)["expiry_handoffs"], 1);
}

/// A wait whose timeout falls within a few ms of the holder's expiry gets
/// exactly one reply (a fence or null), and it agrees with the lock.
#[test]
fn a_wait_timing_out_as_the_lock_expires_gets_exactly_one_reply() {
    let s = Server::start();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (mut h, mut w) = (s.conn(), s.conn());
            w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            thread::spawn(move || {
                let (mut granted, mut timed_out) = (0, 0);
                for i in 0..40 {
                    let key = format!("race:{t}:{i}").into_bytes();
                    must_acquire(&mut h, &key, b"H", 100);
                    let reply = try_cmd(
                        &mut w,
                        (&b"LOCK.ACQUIRE"[..], &key, &b"W"[..], 60_000, "WAIT", 97),
                    );
                    match reply {
                        Ok(Value::Int(_)) => {
                            granted += 1;
                            assert!(check(&mut w, &key, b"W") > 0);
                        }
                        Ok(Value::Nil) => {
                            timed_out += 1;
                            assert_eq!(check(&mut w, &key, b"W"), 0);
                        }
                        other => panic!("{}: {other:?}", String::from_utf8_lossy(&key)),
                    }
                    // A second reply would be read here instead of PONG.
                    assert_eq!(text(&cmd(&mut w, "PING")), "PONG");
                }
                (granted, timed_out)
            })
        })
        .collect();
    let (mut granted, mut timed_out) = (0, 0);
    for t in threads {
        let (g, n) = t.join().unwrap();
        granted += g;
        timed_out += n;
    }
    println!("320 races: {granted} granted, {timed_out} timed out");
    let mut c = s.conn();
    assert_eq!(lock_stats(&mut c)["grants_undelivered"], 0);
}

/// `CLIENT UNBLOCK` ends a wait like its timeout: one null reply.
#[test]
fn client_unblock_ends_a_wait_with_null() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"a", 60_000);
    let mut w = s.conn();
    let id = int(&cmd(&mut w, ("CLIENT", "ID")));
    let h = thread::spawn(move || {
        let r = try_cmd(
            &mut w,
            (&b"LOCK.ACQUIRE"[..], &b"k"[..], &b"b"[..], 1000, "WAIT", 0),
        );
        let pong = text(&cmd(&mut w, "PING"));
        (r, pong)
    });
    wait_waiters(&mut c, b"k", 1);
    assert_eq!(int(&cmd(&mut c, ("CLIENT", "UNBLOCK", id))), 1);
    let (r, pong) = h.join().unwrap();
    assert_eq!(r.unwrap(), Value::Nil);
    assert_eq!(pong, "PONG");
    assert_eq!(lock_stats(&mut c)["waiters"], 0);
}
