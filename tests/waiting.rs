//! Server-side FIFO waiting: `LOCK.ACQUIRE key token ms WAIT timeout-ms`,
//! hand-off on release, expiry and deletion, and `LOCK.INFO`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use testkit::{wait_for, Config, Server};

const LONG: Duration = Duration::from_secs(20);

fn acquire(c: &mut Connection, key: &str, token: &str, ms: u64) -> Option<i64> {
    redis::cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg(token)
        .arg(ms)
        .query(c)
        .unwrap()
}

fn acquire_wait(c: &mut Connection, key: &str, token: &str, ms: u64, wait: u64) -> Option<i64> {
    redis::cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg(token)
        .arg(ms)
        .arg("WAIT")
        .arg(wait)
        .query(c)
        .unwrap()
}

fn release(c: &mut Connection, key: &str, token: &str) -> i64 {
    redis::cmd("LOCK.RELEASE")
        .arg(key)
        .arg(token)
        .query(c)
        .unwrap()
}

fn check(c: &mut Connection, key: &str, token: &str) -> i64 {
    redis::cmd("LOCK.CHECK")
        .arg(key)
        .arg(token)
        .query(c)
        .unwrap()
}

/// A waiter (token "doomed") on `k` whose connection the test will kill:
/// its client id and its thread, once it is queued.
fn doomed_waiter(server: &Server, c: &mut Connection) -> (i64, JoinHandle<Option<i64>>) {
    let before = waiters(c, "k");
    let mut doomed = server.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut doomed).unwrap();
    let handle = thread::spawn(move || {
        redis::cmd("LOCK.ACQUIRE")
            .arg("k")
            .arg("doomed")
            .arg(60_000)
            .arg("WAIT")
            .arg(0)
            .query::<Option<i64>>(&mut doomed)
            .ok()
            .flatten()
    });
    wait_for(LONG, "queued", || (waiters(c, "k") > before).then_some(()));
    (id, handle)
}

/// Releases the holder's lock, which grants it to the doomed waiter, and
/// kills that waiter in the same transaction: before its reply is written.
fn release_and_kill(c: &mut Connection, id: i64) {
    let _: Value = redis::pipe()
        .atomic()
        .cmd("LOCK.RELEASE")
        .arg("k")
        .arg("holder")
        .cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(c)
        .unwrap();
}

fn info(c: &mut Connection, key: &str) -> HashMap<String, Value> {
    redis::cmd("LOCK.INFO").arg(key).query(c).unwrap()
}

fn waiters(c: &mut Connection, key: &str) -> i64 {
    match info(c, key).get("waiters") {
        Some(Value::Int(n)) => *n,
        other => panic!("waiters field: {other:?}"),
    }
}

fn stat(c: &mut Connection, field: &str) -> u64 {
    let text: String = redis::cmd("INFO").arg("lock_stats").query(c).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("lock_{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lock_{field} in {text}"))
}

/// Starts a waiter on its own connection and returns once the server has
/// queued it; the thread yields (reply, time waited).
fn spawn_waiter(
    server: &Server,
    key: &str,
    token: &str,
    ms: u64,
    wait: u64,
) -> JoinHandle<(Option<i64>, Duration)> {
    let mut probe = server.conn();
    let before = waiters(&mut probe, key);
    let mut conn = server.conn();
    let (owned_key, token) = (key.to_owned(), token.to_owned());
    let handle = thread::spawn(move || {
        let start = Instant::now();
        let reply = acquire_wait(&mut conn, &owned_key, &token, ms, wait);
        (reply, start.elapsed())
    });
    wait_for(LONG, "the waiter to be queued", || {
        (waiters(&mut probe, key) > before).then_some(())
    });
    handle
}

#[test]
fn free_lock_with_wait_behaves_as_without() {
    let server = Server::start();
    let mut c = server.conn();
    let fence = acquire_wait(&mut c, "k", "me", 5000, 100).expect("granted at once");
    assert_eq!(
        acquire_wait(&mut c, "k", "me", 5000, 100),
        Some(fence),
        "renewal"
    );
}

#[test]
fn waiters_are_granted_in_fifo_order_on_release() {
    let server = Server::start();
    let mut c = server.conn();
    let first = acquire(&mut c, "k", "holder", 60_000).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..8 {
        let mut probe = server.conn();
        let before = waiters(&mut probe, "k");
        let mut conn = server.conn();
        let order = Arc::clone(&order);
        handles.push(thread::spawn(move || {
            let token = format!("w{i}");
            let fence = acquire_wait(&mut conn, "k", &token, 60_000, 0).expect("granted");
            order.lock().unwrap().push((i, fence));
            assert_eq!(release(&mut conn, "k", &token), 1);
        }));
        wait_for(LONG, "queued", || {
            (waiters(&mut probe, "k") > before).then_some(())
        });
    }
    assert_eq!(waiters(&mut c, "k"), 8);
    assert_eq!(release(&mut c, "k", "holder"), 1);
    for h in handles {
        h.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    let indices: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..8).collect::<Vec<_>>(), "FIFO");
    let mut last = first;
    for (_, fence) in order {
        assert!(fence > last, "fences increase in grant order");
        last = fence;
    }
    assert_eq!(stat(&mut c, "handoffs"), 8);
    assert_eq!(info(&mut c, "k").get("held"), Some(&Value::Int(0)));
}

#[test]
fn timeout_replies_null_after_about_the_timeout() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let (reply, waited) = spawn_waiter(&server, "k", "w", 1000, 300).join().unwrap();
    assert_eq!(reply, None);
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(waiters(&mut c, "k"), 0);
    assert_eq!(stat(&mut c, "wait_timeouts"), 1);
    // The holder is untouched.
    let remaining: i64 = redis::cmd("LOCK.CHECK")
        .arg("k")
        .arg("holder")
        .query(&mut c)
        .unwrap();
    assert!(remaining > 0);
}

#[test]
fn expiry_hands_off_promptly_not_at_the_waiters_timeout() {
    let server = Server::start();
    let mut c = server.conn();
    let first = acquire(&mut c, "k", "holder", 400).unwrap();
    let (reply, waited) = spawn_waiter(&server, "k", "w", 5000, 30_000)
        .join()
        .unwrap();
    let fence = reply.expect("granted when the holder expired");
    assert!(fence > first);
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(check(&mut c, "k", "w") > 0, "the waiter holds it");
}

#[test]
fn a_killed_waiter_is_skipped_and_never_holds_the_lock() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let (id, doomed_thread) = doomed_waiter(&server, &mut c);
    let next = spawn_waiter(&server, "k", "next", 60_000, 0);
    assert_eq!(waiters(&mut c, "k"), 2);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut c)
        .unwrap();
    assert_eq!(killed, 1);
    wait_for(LONG, "the killed waiter to leave", || {
        (waiters(&mut c, "k") == 1).then_some(())
    });
    assert_eq!(
        doomed_thread.join().unwrap(),
        None,
        "no grant reaches a killed client"
    );
    assert_eq!(release(&mut c, "k", "holder"), 1);
    let (reply, _) = next.join().unwrap();
    assert!(reply.is_some(), "the live waiter behind it is granted");
    assert_eq!(check(&mut c, "k", "doomed"), 0);
    assert!(check(&mut c, "k", "next") > 0);
    assert_eq!(stat(&mut c, "wait_disconnects"), 1);
}

#[test]
fn a_grant_whose_client_dies_before_the_reply_passes_on() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let (id, doomed_thread) = doomed_waiter(&server, &mut c);
    let next = spawn_waiter(&server, "k", "next", 60_000, 0);
    // The release grants the lock to `doomed`; the kill in the same
    // transaction closes it before its reply can be written.
    release_and_kill(&mut c, id);
    assert_eq!(doomed_thread.join().unwrap(), None);
    let (reply, _) = next.join().unwrap();
    assert!(reply.is_some(), "the grant passed on to the next waiter");
    assert!(check(&mut c, "k", "next") > 0);
    assert_eq!(stat(&mut c, "grants_undelivered"), 1);
}

#[test]
fn an_undelivered_grant_with_nobody_behind_is_released() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let (id, doomed_thread) = doomed_waiter(&server, &mut c);
    release_and_kill(&mut c, id);
    let _ = doomed_thread.join();
    wait_for(LONG, "the orphaned lock to be released", || {
        let exists: i64 = redis::cmd("EXISTS").arg("k").query(&mut c).unwrap();
        (exists == 0).then_some(())
    });
}

#[test]
fn wait_inside_multi_and_scripts_does_not_block() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let start = Instant::now();
    let (r,): (Option<i64>,) = redis::pipe()
        .atomic()
        .cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("t")
        .arg(1000)
        .arg("WAIT")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<i64> = redis::cmd("EVAL")
        .arg("return redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], 1000, 'WAIT', 0)")
        .arg(1)
        .arg("k")
        .arg("t")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(waiters(&mut c, "k"), 0);
}

#[test]
fn bad_wait_timeouts_are_errors() {
    let server = Server::start();
    let mut c = server.conn();
    for bad in ["-1", "1.5", "abc", ""] {
        let r: redis::RedisResult<Value> = redis::cmd("LOCK.ACQUIRE")
            .arg("k")
            .arg("t")
            .arg(1000)
            .arg("WAIT")
            .arg(bad)
            .query(&mut c);
        let e = r.expect_err(bad);
        assert!(e.to_string().contains("WAIT"), "{e}");
    }
    let r: redis::RedisResult<Value> = redis::cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("t")
        .arg(1000)
        .arg("WAIT")
        .query(&mut c);
    assert!(r.is_err());
    assert_eq!(
        redis::cmd("EXISTS").arg("k").query::<i64>(&mut c).unwrap(),
        0
    );
}

#[test]
fn newcomers_cannot_jump_the_queue() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let waiter = spawn_waiter(&server, "k", "waiter", 60_000, 0);
    // The DEL frees the key; the newcomer in the same transaction finds it
    // free but promised to the queue.
    let (_, newcomer): (i64, Option<i64>) = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("k")
        .cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("newcomer")
        .arg(60_000)
        .query(&mut c)
        .unwrap();
    assert_eq!(newcomer, None);
    assert!(waiter.join().unwrap().0.is_some());
}

/// Every way a key can disappear serves its waiters promptly.
#[test]
fn waiters_are_served_when_the_key_goes_by_other_means() {
    let server = Server::start();
    let mut c = server.conn();
    let ops: Vec<(&str, Vec<&str>)> = vec![
        ("DEL", vec!["DEL", "k"]),
        ("UNLINK", vec!["UNLINK", "k"]),
        ("FLUSHDB", vec!["FLUSHDB"]),
        ("FLUSHALL", vec!["FLUSHALL"]),
        ("RENAME", vec!["RENAME", "k", "elsewhere"]),
        ("MOVE", vec!["MOVE", "k", "5"]),
        ("SWAPDB", vec!["SWAPDB", "0", "6"]),
        ("GETDEL", vec!["GETDEL", "k"]),
        ("PEXPIRE", vec!["PEXPIRE", "k", "50"]),
    ];
    for (name, op) in ops {
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        acquire(&mut c, "k", "holder", 60_000).unwrap();
        let waiter = spawn_waiter(&server, "k", "waiter", 60_000, 30_000);
        let mut cmd = redis::cmd(op[0]);
        for a in &op[1..] {
            cmd.arg(*a);
        }
        let _: Value = cmd.query(&mut c).unwrap();
        let (reply, waited) = waiter.join().unwrap();
        assert!(reply.is_some(), "{name}: waiter granted");
        assert!(waited < Duration::from_secs(10), "{name}: {waited:?}");
        assert!(check(&mut c, "k", "waiter") > 0, "{name}: waiter holds k");
    }
}

#[test]
fn two_hundred_waiters_each_granted_once_with_increasing_fences() {
    let server = Server::start();
    let mut c = server.conn();
    let first = acquire(&mut c, "k", "holder", 60_000).unwrap();
    let seq = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..200 {
        let mut conn = server.conn();
        let (seq, grants) = (Arc::clone(&seq), Arc::clone(&grants));
        handles.push(thread::spawn(move || {
            let token = format!("w{i}");
            let fence = acquire_wait(&mut conn, "k", &token, 60_000, 0).expect("granted");
            // Only the holder runs here: the sequence number is grant order.
            let n = seq.fetch_add(1, Ordering::SeqCst);
            grants.lock().unwrap().push((n, i, fence));
            assert_eq!(release(&mut conn, "k", &token), 1);
        }));
    }
    wait_for(LONG, "200 queued", || {
        (waiters(&mut c, "k") == 200).then_some(())
    });
    assert_eq!(release(&mut c, "k", "holder"), 1);
    for h in handles {
        h.join().unwrap();
    }
    let mut grants = grants.lock().unwrap().clone();
    grants.sort();
    assert_eq!(grants.len(), 200);
    let mut who: Vec<usize> = grants.iter().map(|g| g.1).collect();
    who.sort();
    who.dedup();
    assert_eq!(who.len(), 200, "each waiter granted exactly once");
    let mut last = first;
    for (_, _, fence) in grants {
        assert!(fence > last, "fences increase in grant order");
        last = fence;
    }
}

#[test]
fn a_hand_off_reaches_a_replica_without_the_module() {
    let master = Server::start();
    let replica = Server::with(
        Config::without_module().arg("replicaof", &format!("127.0.0.1 {}", master.port())),
    );
    let mut m = master.conn();
    let mut r = replica.conn();
    wait_for(LONG, "replica link", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
        info.contains("master_link_status:up").then_some(())
    });
    acquire(&mut m, "k", "holder", 60_000).unwrap();
    let waiter = spawn_waiter(&master, "k", "waiter", 60_000, 0);
    assert_eq!(release(&mut m, "k", "holder"), 1);
    assert!(waiter.join().unwrap().0.is_some());
    let on_master: Vec<u8> = redis::cmd("GET").arg("k").query(&mut m).unwrap();
    wait_for(LONG, "the new holder on the replica", || {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg("k").query(&mut r).unwrap();
        (v.as_deref() == Some(&on_master[..])).then_some(())
    });
    let pttl: i64 = redis::cmd("PTTL").arg("k").query(&mut r).unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    // And an expiry-driven hand-off too.
    acquire(&mut m, "e", "holder", 300).unwrap();
    let waiter = spawn_waiter(&master, "e", "waiter", 60_000, 0);
    assert!(waiter.join().unwrap().0.is_some());
    let on_master: Vec<u8> = redis::cmd("GET").arg("e").query(&mut m).unwrap();
    wait_for(LONG, "the expiry hand-off on the replica", || {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg("e").query(&mut r).unwrap();
        (v.as_deref() == Some(&on_master[..])).then_some(())
    });
    assert!(!replica.log().to_lowercase().contains("unknown command"));
}

#[test]
fn the_waiter_cap_refuses_extra_waiters_and_changes_nothing() {
    let server = Server::with(Config::default().module_arg("max-waiters", "2"));
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let a = spawn_waiter(&server, "k", "a", 60_000, 30_000);
    let b = spawn_waiter(&server, "k", "b", 60_000, 30_000);
    let r: redis::RedisResult<Option<i64>> = redis::cmd("LOCK.ACQUIRE")
        .arg("k")
        .arg("c")
        .arg(60_000)
        .arg("WAIT")
        .arg(1000)
        .query(&mut c);
    let e = r.expect_err("cap reached");
    assert!(e.to_string().contains("max-waiters"), "{e}");
    assert_eq!(waiters(&mut c, "k"), 2);
    let cap: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("lock.max-waiters")
        .query(&mut c)
        .unwrap();
    assert_eq!(cap[1], "2");
    assert_eq!(release(&mut c, "k", "holder"), 1);
    let fa = a.join().unwrap().0.unwrap();
    release(&mut c, "k", "a");
    let fb = b.join().unwrap().0.unwrap();
    assert!(fb > fa);
}

#[test]
fn lock_info_describes_without_revealing_the_token() {
    let server = Server::start();
    let mut c = server.conn();
    let free = info(&mut c, "k");
    assert_eq!(free.get("held"), Some(&Value::Int(0)));
    assert_eq!(free.get("ttl"), Some(&Value::Int(-2)));
    assert_eq!(free.get("fence"), Some(&Value::Nil));
    assert_eq!(free.get("waiters"), Some(&Value::Int(0)));
    let fence = acquire(&mut c, "k", "secret-token", 60_000).unwrap();
    let held = info(&mut c, "k");
    assert_eq!(held.get("held"), Some(&Value::Int(1)));
    assert_eq!(held.get("foreign"), Some(&Value::Int(0)));
    assert_eq!(held.get("fence"), Some(&Value::Int(fence)));
    match held.get("ttl") {
        Some(Value::Int(ms)) => assert!(*ms > 50_000 && *ms <= 60_000),
        other => panic!("{other:?}"),
    }
    let raw: Value = redis::cmd("LOCK.INFO").arg("k").query(&mut c).unwrap();
    assert!(
        !format!("{raw:?}").contains("secret"),
        "token revealed: {raw:?}"
    );
    let _: () = redis::cmd("SET")
        .arg("f")
        .arg("plain value")
        .query(&mut c)
        .unwrap();
    let foreign = info(&mut c, "f");
    assert_eq!(foreign.get("held"), Some(&Value::Int(1)));
    assert_eq!(foreign.get("foreign"), Some(&Value::Int(1)));
    assert_eq!(foreign.get("ttl"), Some(&Value::Int(-1)));
    assert_eq!(foreign.get("fence"), Some(&Value::Nil));
    let _: () = redis::cmd("RPUSH").arg("l").arg("x").query(&mut c).unwrap();
    let e = redis::cmd("LOCK.INFO")
        .arg("l")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
}

#[test]
fn info_counts_waits_and_current_waiters() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    let w = spawn_waiter(&server, "k", "w", 60_000, 0);
    assert_eq!(stat(&mut c, "waits"), 1);
    assert_eq!(stat(&mut c, "waiters"), 1);
    release(&mut c, "k", "holder");
    w.join().unwrap();
    assert_eq!(stat(&mut c, "waiters"), 0);
    assert_eq!(stat(&mut c, "handoffs"), 1);
}

#[test]
fn a_waiter_coming_back_after_its_timeout_keeps_its_place() {
    let server = Server::start();
    let mut c = server.conn();
    acquire(&mut c, "k", "holder", 60_000).unwrap();
    // A waits in 1 s slices with one token, as a client with a response
    // timeout does.
    let mut a_conn = server.conn();
    let a = thread::spawn(move || loop {
        if let Some(fence) = acquire_wait(&mut a_conn, "k", "a", 60_000, 1_000) {
            assert_eq!(release(&mut a_conn, "k", "a"), 1);
            return fence;
        }
    });
    wait_for(LONG, "a queued", || {
        (waiters(&mut c, "k") == 1).then_some(())
    });
    let b = spawn_waiter(&server, "k", "b", 60_000, 0);
    // Let A's slice end once: it comes back to its place. The release
    // follows A's return within a poll (10 ms), far from its next timeout.
    wait_for(LONG, "a's slice to end", || {
        (stat(&mut c, "wait_timeouts") >= 1 && waiters(&mut c, "k") == 2).then_some(())
    });
    assert_eq!(release(&mut c, "k", "holder"), 1);
    let fence_a = a.join().unwrap();
    let (fence_b, _) = b.join().unwrap();
    assert!(
        fence_b.unwrap() > fence_a,
        "A, queued first, was granted first"
    );
}
