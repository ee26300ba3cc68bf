//! Locks survive restarts from AOF and RDB with their value, remaining TTL
//! and fence, and the files load in a server without the module.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use redis::Connection;

fn aof() -> Config {
    Config::default().arg("appendonly", "yes")
}

/// The state kept across a restart.
struct Kept {
    fence: i64,
    value: Vec<u8>,
    expire_at: i64,
    renewed_expire_at: i64,
}

/// Writes: `k` held by `tok` for 60 s, `renewed` acquired then renewed,
/// `released` released, `deleted` removed by DEL, `foreign` a plain SET.
fn write_locks(c: &mut Connection) -> Kept {
    let fence = must_acquire(c, b"k", b"tok", 60_000);
    let renewed = must_acquire(c, b"renewed", b"tok", 10_000);
    assert_eq!(acquire(c, b"renewed", b"tok", 50_000), Some(renewed));
    must_acquire(c, b"released", b"tok", 60_000);
    assert_eq!(release(c, b"released", b"tok"), 1);
    must_acquire(c, b"deleted", b"tok", 60_000);
    assert_eq!(int(&cmd(c, ("DEL", "deleted"))), 1);
    cmd(
        c,
        ("SET", "foreign", "abcdefghijklmnopqrstuvwx", "PX", 60_000),
    );
    let foreign = must_acquire(c, b"lock:\x00\xff", b"t\r\n\x00", 60_000);
    assert!(foreign > 0);
    Kept {
        fence,
        value: get(c, b"k").unwrap(),
        expire_at: snapshot(c, b"k").expire_at,
        renewed_expire_at: snapshot(c, b"renewed").expire_at,
    }
}

/// Checks what `write_locks` left, in a server with or without the module.
fn assert_kept_data(c: &mut Connection, kept: &Kept) {
    assert_eq!(get(c, b"k").as_deref(), Some(&kept.value[..]), "value");
    assert_eq!(
        snapshot(c, b"k").expire_at,
        kept.expire_at,
        "absolute expiry kept, not reset"
    );
    let ttl = pttl(c, b"k");
    assert!(ttl > 0 && ttl <= 60_000 - 1_000, "PTTL {ttl} after restart");
    assert_eq!(snapshot(c, b"renewed").expire_at, kept.renewed_expire_at);
    assert!(!exists(c, b"released"));
    assert!(!exists(c, b"deleted"));
    assert_eq!(
        get(c, b"foreign").as_deref(),
        Some(&b"abcdefghijklmnopqrstuvwx"[..])
    );
    assert!(exists(c, b"lock:\x00\xff"));
}

/// Checks the restarted module knows the locks as before.
fn assert_locks_work(c: &mut Connection, kept: &Kept) {
    let left = check(c, b"k", b"tok");
    assert!(left > 0 && left <= 59_000, "CHECK {left}");
    assert!(check(c, b"lock:\x00\xff", b"t\r\n\x00") > 0);
    assert_eq!(acquire(c, b"k", b"other", 60_000), None);
    assert_eq!(acquire(c, b"foreign", b"abcdefghijkl", 60_000), None);
    // Renewal: same fence.
    assert_eq!(acquire(c, b"k", b"tok", 60_000), Some(kept.fence));
    // A new holder after release: a bigger fence.
    assert_eq!(release(c, b"k", b"tok"), 1);
    let next = must_acquire(c, b"k", b"other", 60_000);
    assert!(next > kept.fence, "{next} > {}", kept.fence);
    // Also for a key freed before the restart.
    let f = must_acquire(c, b"released", b"other", 60_000);
    assert!(f > kept.fence);
}

fn assert_clean_log(s: &Server) {
    let bad = bad_log_lines(s);
    assert!(bad.is_empty(), "log: {bad:#?}");
}

#[test]
fn aof_restart_keeps_lock_ttl_and_fence() {
    let mut s = Server::with(aof());
    let mut c = s.conn();
    let kept = write_locks(&mut c);
    // Time passes: the restarted lock must not get its full TTL back.
    thread::sleep(Duration::from_millis(1_500));
    drop(c);
    s.restart_with(aof());
    let mut c = s.conn();
    assert_kept_data(&mut c, &kept);
    assert_locks_work(&mut c, &kept);
    assert_clean_log(&s);
}

#[test]
fn aof_rewrite_then_restart_keeps_locks() {
    let mut s = Server::with(aof());
    let mut c = s.conn();
    let kept = write_locks(&mut c);
    thread::sleep(Duration::from_millis(1_100));
    cmd(&mut c, "BGREWRITEAOF");
    wait_for(WAIT, "the AOF rewrite", || {
        let i = info(&mut c, "persistence");
        (i["aof_rewrite_in_progress"] == "0"
            && i["aof_rewrite_scheduled"] == "0"
            && i["aof_last_bgrewrite_status"] == "ok"
            && i["aof_rewrites"] != "0")
            .then_some(())
    });
    drop(c);
    s.restart_with(aof());
    let mut c = s.conn();
    assert_kept_data(&mut c, &kept);
    assert_locks_work(&mut c, &kept);
    assert_clean_log(&s);
}

#[test]
fn rdb_restart_keeps_lock_ttl_and_fence() {
    let mut s = Server::start();
    let mut c = s.conn();
    let kept = write_locks(&mut c);
    thread::sleep(Duration::from_millis(1_100));
    assert_eq!(cmd(&mut c, "SAVE"), redis::Value::Okay);
    drop(c);
    s.restart_with(Config::default().arg("appendonly", "no"));
    let mut c = s.conn();
    assert_kept_data(&mut c, &kept);
    assert_locks_work(&mut c, &kept);
    assert_clean_log(&s);
}

#[test]
fn aof_and_rdb_load_without_the_module() {
    let mut s = Server::with(aof());
    let mut c = s.conn();
    let kept = write_locks(&mut c);
    thread::sleep(Duration::from_millis(1_100));
    drop(c);

    // The AOF holds only plain commands.
    s.restart_with(Config::without_module().arg("appendonly", "yes"));
    let mut c = s.conn();
    assert_kept_data(&mut c, &kept);
    let e = err(&mut c, ("LOCK.CHECK", "k", "tok"));
    assert!(e.to_lowercase().contains("unknown command"), "{e}");
    // Not loaded (Redis 8 still lists its built-in modules).
    let modules = format!("{:?}", cmd(&mut c, ("MODULE", "LIST")));
    assert!(!modules.contains("liblock"), "{modules}");
    assert_clean_log(&s);

    // An RDB saved by that server loads too, and back with the module the
    // locks work as before.
    assert_eq!(cmd(&mut c, "SAVE"), redis::Value::Okay);
    drop(c);
    s.restart_with(Config::without_module().arg("appendonly", "no"));
    let mut c = s.conn();
    assert_kept_data(&mut c, &kept);
    drop(c);
    s.restart_with(aof());
    let mut c = s.conn();
    assert_kept_data(&mut c, &kept);
    assert_locks_work(&mut c, &kept);
    assert_clean_log(&s);
}
