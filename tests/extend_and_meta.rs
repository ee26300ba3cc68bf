//! `LOCK.EXTEND` (renews only a lock the token still holds, never creates
//! one) and `META` (a value stored with the lock, shown by `LOCK.INFO`).

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redis::{Connection, Value};

fn extend(c: &mut Connection, key: &[u8], token: &[u8], ms: u64) -> Option<i64> {
    match cmd(c, (&b"LOCK.EXTEND"[..], key, token, ms)) {
        Value::Nil => None,
        v => Some(int(&v)),
    }
}

fn lock_info(c: &mut Connection, key: &[u8]) -> HashMap<String, Value> {
    redis::cmd("LOCK.INFO").arg(key).query(c).unwrap()
}

fn meta_of(c: &mut Connection, key: &[u8]) -> Option<Vec<u8>> {
    bytes(&lock_info(c, key)["meta"])
}

#[test]
fn extend_renews_the_holders_lock_and_keeps_its_fence() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = must_acquire(&mut c, b"k", b"t", 1_000);
    let renewed = expires_in(&mut c, b"k", 60_000, |c| extend(c, b"k", b"t", 60_000));
    assert_eq!(renewed, Some(fence));
    // Shorter works too: the new expiry is from now.
    let renewed = expires_in(&mut c, b"k", 5_000, |c| extend(c, b"k", b"t", 5_000));
    assert_eq!(renewed, Some(fence));
    assert_eq!(lock_stats(&mut c)["renewed"], 2);
    assert_eq!(release(&mut c, b"k", b"t"), 1);
}

#[test]
fn extend_never_creates_a_lock() {
    let s = Server::start();
    let mut c = s.conn();
    // Never held.
    assert_eq!(extend(&mut c, b"k", b"t", 10_000), None);
    assert!(!exists(&mut c, b"k"));
    // Held, then lapsed.
    must_acquire(&mut c, b"k", b"t", 50);
    wait_gone(&mut c, b"k", Duration::from_secs(10));
    assert_eq!(extend(&mut c, b"k", b"t", 10_000), None);
    assert!(!exists(&mut c, b"k"));
    // Held, then deleted by an operator.
    must_acquire(&mut c, b"k", b"t", 60_000);
    cmd(&mut c, ("DEL", "k"));
    assert_eq!(extend(&mut c, b"k", b"t", 10_000), None);
    assert!(!exists(&mut c, b"k"));
    assert_eq!(lock_stats(&mut c)["extend_missed"], 3);
    assert_eq!(lock_stats(&mut c)["renewed"], 0);
}

#[test]
fn extend_by_another_token_changes_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"t", 60_000);
    let before = snapshot(&mut c, b"k");
    assert_eq!(extend(&mut c, b"k", b"other", 120_000), None);
    assert_eq!(snapshot(&mut c, b"k"), before);
    // A foreign string holding the same bytes as the token is not ours.
    cmd(&mut c, ("SET", "plain", "t", "PX", 60_000));
    let before = snapshot(&mut c, b"plain");
    assert_eq!(extend(&mut c, b"plain", b"t", 120_000), None);
    assert_eq!(snapshot(&mut c, b"plain"), before);
}

#[test]
fn extend_errors() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"t", 60_000);
    let before = snapshot(&mut c, b"k");
    for (args, prefix) in [
        (&["LOCK.EXTEND", "k"][..], "ERR wrong number of arguments"),
        (&["LOCK.EXTEND", "k", "t"], "ERR wrong number of arguments"),
        (
            &["LOCK.EXTEND", "k", "t", "100", "WAIT", "5"],
            "ERR wrong number of arguments",
        ),
        (
            &["LOCK.EXTEND", "k", "t", "0"],
            "ERR milliseconds must be a positive integer",
        ),
        (
            &["LOCK.EXTEND", "k", "t", "-5"],
            "ERR milliseconds must be a positive integer",
        ),
        (
            &["LOCK.EXTEND", "k", "t", "1.5"],
            "ERR milliseconds must be a positive integer",
        ),
        (
            &["LOCK.EXTEND", "k", "t", "99999999999999999999"],
            "ERR milliseconds is above lock.max-ttl",
        ),
        (
            &["LOCK.EXTEND", "k", "", "100"],
            "ERR token must not be empty",
        ),
    ] {
        let e = err(&mut c, args);
        assert!(e.starts_with(prefix), "{args:?}: {e}");
    }
    assert_eq!(snapshot(&mut c, b"k"), before);
    cmd(&mut c, ("RPUSH", "list", "x"));
    let e = err(&mut c, ("LOCK.EXTEND", "list", "t", 100));
    assert!(e.starts_with("WRONGTYPE"), "{e}");
}

#[test]
fn extend_works_when_memory_is_full() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = must_acquire(&mut c, b"k", b"t", 60_000);
    cmd(&mut c, ("CONFIG", "SET", "maxmemory", 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let e = err(&mut c, ("LOCK.ACQUIRE", "new", "t", 1000));
        assert!(e.starts_with("OOM"), "{e}");
        // A holder keeps its lock alive while new locks are refused.
        assert_eq!(extend(&mut c, b"k", b"t", 30_000), Some(fence));
    }));
    cmd(&mut c, ("CONFIG", "SET", "maxmemory", 0));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn extend_moves_the_waiters_hand_off() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"t", 2_000);
    let port = s.port();
    let waiter = thread::spawn(move || {
        let mut w = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let start = Instant::now();
        let fence = cmd(&mut w, ("LOCK.ACQUIRE", "k", "w", 10_000, "WAIT", 20_000));
        (fence, start.elapsed())
    });
    wait_for(WAIT, "the waiter to queue", || {
        (int(&lock_info(&mut c, b"k")["waiters"]) == 1).then_some(())
    });
    // Renewed well past the original 2 s.
    assert!(extend(&mut c, b"k", b"t", 5_000).is_some());
    let (fence, waited) = waiter.join().unwrap();
    assert!(int(&fence) > 0);
    assert!(
        waited >= Duration::from_millis(4_000),
        "handed off after {waited:?}, before the extended expiry"
    );
}

#[test]
fn extend_replicates_as_an_absolute_expiry() {
    let m = Server::with(Config::default().arg("repl-diskless-sync-delay", "0"));
    let replica =
        Server::with(Config::without_module().arg("replicaof", &format!("127.0.0.1 {}", m.port())));
    let mut r = replica.conn();
    wait_link_up(&mut r);
    let mut c = m.conn();
    must_acquire(&mut c, b"k", b"t", 2_000);
    assert!(extend(&mut c, b"k", b"t", 90_000).is_some());
    wait_replicated(&mut c);
    assert_eq!(snapshot(&mut r, b"k"), snapshot(&mut c, b"k"));
    // A replica without the module never saw a command it does not know.
    assert!(!replica.log().to_lowercase().contains("unknown command"));
}

#[test]
fn meta_is_stored_with_the_lock_and_shown_without_the_token() {
    let s = Server::start();
    let mut c = s.conn();
    let meta = b"host=web-1 pid=4242 \x00\xff";
    let token = b"secret-token-123";
    cmd(
        &mut c,
        (
            &b"LOCK.ACQUIRE"[..],
            &b"k"[..],
            &token[..],
            60_000,
            &b"META"[..],
            &meta[..],
        ),
    );
    let info = lock_info(&mut c, b"k");
    assert_eq!(bytes(&info["meta"]).as_deref(), Some(&meta[..]));
    assert_eq!(int(&info["held"]), 1);
    assert_eq!(int(&info["foreign"]), 0);
    let shown = format!("{info:?}");
    assert!(
        !shown.contains("secret-token"),
        "LOCK.INFO shows the token: {shown}"
    );
    // The holder is still recognised by every command.
    assert!(check(&mut c, b"k", token) > 0);
    // A renewal (either way) keeps the metadata, even when it names other.
    assert!(extend(&mut c, b"k", token, 60_000).is_some());
    cmd(
        &mut c,
        (
            &b"LOCK.ACQUIRE"[..],
            &b"k"[..],
            &token[..],
            60_000,
            &b"META"[..],
            &b"new"[..],
        ),
    );
    assert_eq!(meta_of(&mut c, b"k").as_deref(), Some(&meta[..]));
    // Someone else is refused, and the metadata stays.
    assert_eq!(
        cmd(
            &mut c,
            ("LOCK.ACQUIRE", "k", "other", 1_000, "META", "intruder")
        ),
        Value::Nil
    );
    assert_eq!(meta_of(&mut c, b"k").as_deref(), Some(&meta[..]));
    assert_eq!(release(&mut c, b"k", token), 1);
    assert!(!exists(&mut c, b"k"));
    // Without META the field is null.
    must_acquire(&mut c, b"k", b"t", 60_000);
    assert_eq!(lock_info(&mut c, b"k")["meta"], Value::Nil);
}

#[test]
fn a_waiters_meta_comes_with_its_grant() {
    let s = Server::start();
    let mut c = s.conn();
    cmd(&mut c, ("LOCK.ACQUIRE", "k", "a", 60_000, "META", "first"));
    let port = s.port();
    let waiter = thread::spawn(move || {
        let mut w = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        cmd(
            &mut w,
            (
                "LOCK.ACQUIRE",
                "k",
                "b",
                60_000,
                "WAIT",
                10_000,
                "META",
                "second",
            ),
        )
    });
    wait_for(WAIT, "the waiter to queue", || {
        (int(&lock_info(&mut c, b"k")["waiters"]) == 1).then_some(())
    });
    assert_eq!(release(&mut c, b"k", b"a"), 1);
    assert!(int(&waiter.join().unwrap()) > 0);
    assert_eq!(meta_of(&mut c, b"k").as_deref(), Some(&b"second"[..]));
    assert!(check(&mut c, b"k", b"b") > 0);
}

#[test]
fn meta_limits_and_errors() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"held", b"t", 60_000);
    let before = snapshot(&mut c, b"held");
    let long = vec![b'm'; 1025];
    for key in ["held", "absent"] {
        for (args, prefix) in [
            (
                vec![&b"LOCK.ACQUIRE"[..], key.as_bytes(), b"t", b"100", b"META", &long],
                "ERR META value is longer than lock.max-meta-length (1024 bytes)",
            ),
            (
                vec![&b"LOCK.ACQUIRE"[..], key.as_bytes(), b"t", b"100", b"META"],
                "ERR syntax error: META needs a value",
            ),
            (
                vec![&b"LOCK.ACQUIRE"[..], key.as_bytes(), b"t", b"100", b"META", b"a", b"meta", b"b"],
                "ERR syntax error: META given more than once",
            ),
            (
                vec![&b"LOCK.ACQUIRE"[..], key.as_bytes(), b"t", b"100", b"XX"],
                "ERR syntax error: unknown option, LOCK.ACQUIRE accepts META value and WAIT timeout-ms",
            ),
        ] {
            let e = err(&mut c, &args[..]);
            assert!(e.starts_with(prefix), "{e}");
        }
    }
    assert_eq!(snapshot(&mut c, b"held"), before);
    assert!(!exists(&mut c, b"absent"));
    // Exactly at the limit is accepted; the limit is a setting.
    cmd(
        &mut c,
        (
            &b"LOCK.ACQUIRE"[..],
            &b"a"[..],
            &b"t"[..],
            60_000,
            &b"META"[..],
            &long[..1024],
        ),
    );
    assert_eq!(meta_of(&mut c, b"a").map(|m| m.len()), Some(1024));
    cmd(&mut c, ("CONFIG", "SET", "lock.max-meta-length", 0));
    let e = err(&mut c, ("LOCK.ACQUIRE", "b", "t", 100, "META", "x"));
    assert!(e.contains("lock.max-meta-length (0 bytes)"), "{e}");
    // An empty value is no metadata, allowed even then.
    cmd(&mut c, ("LOCK.ACQUIRE", "b", "t", 60_000, "META", ""));
    assert_eq!(lock_info(&mut c, b"b")["meta"], Value::Nil);
}

#[test]
fn meta_reaches_a_replica_and_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("lock-meta-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::default()
        .arg("appendonly", "yes")
        .arg("dir", dir.to_str().unwrap())
        .arg("repl-diskless-sync-delay", "0");
    let m = Server::with(config.clone());
    let replica =
        Server::with(Config::default().arg("replicaof", &format!("127.0.0.1 {}", m.port())));
    let mut r = replica.conn();
    wait_link_up(&mut r);
    let mut c = m.conn();
    let fence = int(&cmd(
        &mut c,
        ("LOCK.ACQUIRE", "k", "t", 60_000, "META", "job=backup"),
    ));
    wait_replicated(&mut c);
    assert_eq!(meta_of(&mut r, b"k").as_deref(), Some(&b"job=backup"[..]));
    assert_eq!(int(&lock_info(&mut r, b"k")["fence"]), fence);
    drop(replica);
    drop(m);
    let m = Server::with(config);
    let mut c = m.conn();
    assert_eq!(meta_of(&mut c, b"k").as_deref(), Some(&b"job=backup"[..]));
    assert_eq!(extend(&mut c, b"k", b"t", 60_000), Some(fence));
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}
