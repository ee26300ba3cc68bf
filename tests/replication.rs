//! Replication: locks reach replicas as plain commands (a replica without
//! the module keeps them), a replica with the module refuses writes and
//! answers LOCK.CHECK, and fences keep increasing after a failover.

mod common;

use common::*;
use redis::Connection;

fn master() -> Server {
    // No 5 s wait before a diskless full sync.
    Server::with(Config::default().arg("repl-diskless-sync-delay", "0"))
}

fn replica_of(master: &Server, config: Config) -> (Server, Connection) {
    let replica = Server::with(config.arg("replicaof", &format!("127.0.0.1 {}", master.port())));
    let mut c = replica.conn();
    wait_link_up(&mut c);
    (replica, c)
}

fn assert_same(m: &mut Connection, r: &mut Connection, key: &[u8]) {
    let on_master = snapshot(m, key);
    assert_eq!(snapshot(r, key), on_master, "replica and master differ");
}

#[test]
fn replica_without_module_receives_acquire_renew_release() {
    let m = master();
    let (replica, mut r) = replica_of(&m, Config::without_module());
    let mut c = m.conn();

    // Acquisition: same bytes, same absolute expiry.
    let fence = must_acquire(&mut c, b"k", b"tok", 60_000);
    wait_replicated(&mut c);
    assert!(get(&mut r, b"k").is_some());
    assert_same(&mut c, &mut r, b"k");
    assert!(pttl(&mut r, b"k") > 0);

    // Renewal: the new expiry.
    let before = snapshot(&mut r, b"k").expire_at;
    assert_eq!(acquire(&mut c, b"k", b"tok", 30_000), Some(fence));
    wait_replicated(&mut c);
    assert_same(&mut c, &mut r, b"k");
    assert!(snapshot(&mut r, b"k").expire_at < before, "TTL updated");
    let ttl = pttl(&mut r, b"k");
    assert!(ttl > 0 && ttl <= 30_000, "replica PTTL {ttl}");
    assert_eq!(acquire(&mut c, b"k", b"tok", 90_000), Some(fence));
    wait_replicated(&mut c);
    assert_same(&mut c, &mut r, b"k");
    assert!(pttl(&mut r, b"k") > 60_000);

    // Refusals and misses send nothing that changes the replica.
    let kept = snapshot(&mut r, b"k");
    assert_eq!(acquire(&mut c, b"k", b"other", 60_000), None);
    assert_eq!(release(&mut c, b"k", b"other"), 0);
    wait_replicated(&mut c);
    assert_eq!(snapshot(&mut r, b"k"), kept);

    // Release: gone.
    assert_eq!(release(&mut c, b"k", b"tok"), 1);
    wait_replicated(&mut c);
    assert!(!exists(&mut r, b"k"));

    // Binary keys and tokens, and another database.
    let key: &[u8] = b"bin:\x00\xff\r\n:k";
    must_acquire(&mut c, key, b"t\x00\xff\r\n:", 60_000);
    cmd(&mut c, ("SELECT", 2));
    must_acquire(&mut c, b"db2", b"tok", 60_000);
    wait_replicated(&mut c);
    cmd(&mut c, ("SELECT", 0));
    assert_same(&mut c, &mut r, key);
    assert!(!exists(&mut r, b"db2"));
    cmd(&mut r, ("SELECT", 2));
    cmd(&mut c, ("SELECT", 2));
    assert_same(&mut c, &mut r, b"db2");
    assert_eq!(release(&mut c, b"db2", b"tok"), 1);
    wait_replicated(&mut c);
    assert!(!exists(&mut r, b"db2"));
    cmd(&mut r, ("SELECT", 0));
    cmd(&mut c, ("SELECT", 0));

    // Expiry on the master reaches the replica.
    must_acquire(&mut c, b"short", b"tok", 50);
    wait_gone(&mut c, b"short", WAIT);
    wait_replicated(&mut c);
    assert!(!exists(&mut r, b"short"));

    // The replica never saw a command it does not know.
    let log = replica.log().to_lowercase();
    assert!(!log.contains("unknown command"), "replica log:\n{log}");
    let bad = bad_log_lines(&replica);
    assert!(bad.is_empty(), "{bad:#?}");
    let i = info(&mut r, "replication");
    assert_eq!(i["master_link_status"], "up");
}

#[test]
fn replica_without_module_full_sync_has_existing_locks() {
    // Locks taken before the replica attached arrive with the full sync.
    let m = master();
    let mut c = m.conn();
    must_acquire(&mut c, b"k", b"tok", 60_000);
    let (replica, mut r) = replica_of(&m, Config::without_module());
    assert_same(&mut c, &mut r, b"k");
    assert!(bad_log_lines(&replica).is_empty());
}

#[test]
fn replica_with_module_refuses_writes_and_answers_check() {
    let m = master();
    let (_replica, mut r) = replica_of(&m, Config::default());
    let mut c = m.conn();
    let fence = must_acquire(&mut c, b"k", b"tok", 60_000);
    wait_replicated(&mut c);

    for args in [
        vec!["LOCK.ACQUIRE", "k", "tok", "1000"],
        vec!["LOCK.ACQUIRE", "free", "tok", "1000"],
        vec!["LOCK.RELEASE", "k", "tok"],
    ] {
        let e = err(&mut r, &args[..]);
        assert!(e.starts_with("READONLY"), "{args:?}: {e}");
    }
    assert!(!exists(&mut r, b"free"));
    assert_same(&mut c, &mut r, b"k");

    let left = check(&mut r, b"k", b"tok");
    assert!(left > 50_000 && left <= 60_000, "CHECK on replica: {left}");
    assert_eq!(check(&mut r, b"k", b"other"), 0);
    assert_eq!(check(&mut r, b"absent", b"tok"), 0);

    // The replica follows renewals and releases.
    assert_eq!(acquire(&mut c, b"k", b"tok", 10_000), Some(fence));
    wait_replicated(&mut c);
    let left = check(&mut r, b"k", b"tok");
    assert!(left > 0 && left <= 10_000, "after renewal: {left}");
    assert_eq!(release(&mut c, b"k", b"tok"), 1);
    wait_replicated(&mut c);
    assert_eq!(check(&mut r, b"k", b"tok"), 0);
}

#[test]
fn fences_keep_increasing_after_failover() {
    let m = master();
    let (replica, mut r) = replica_of(&m, Config::default());
    let mut c = m.conn();
    let f1 = must_acquire(&mut c, b"k", b"a", 60_000);
    wait_replicated(&mut c);
    drop(m);

    assert_eq!(cmd(&mut r, ("REPLICAOF", "NO", "ONE")), redis::Value::Okay);
    wait_for(WAIT, "the replica to become a master", || {
        (info(&mut r, "replication")["role"] == "master").then_some(())
    });
    // The holder renews on the new master with its fence.
    assert_eq!(acquire(&mut r, b"k", b"a", 60_000), Some(f1));
    assert_eq!(acquire(&mut r, b"k", b"b", 60_000), None);
    assert_eq!(release(&mut r, b"k", b"a"), 1);
    let f2 = must_acquire(&mut r, b"k", b"b", 60_000);
    assert!(f2 > f1, "{f2} > {f1}");
    drop(replica);
}

#[test]
fn transactions_and_scripts_replicate_as_plain_commands() {
    let m = master();
    let (replica, mut r) = replica_of(&m, Config::without_module());
    let mut c = m.conn();

    assert_eq!(cmd(&mut c, "MULTI"), redis::Value::Okay);
    cmd(&mut c, ("LOCK.ACQUIRE", "tx", "tok", 60_000));
    cmd(&mut c, ("LOCK.ACQUIRE", "tx", "tok", 30_000));
    cmd(&mut c, ("LOCK.ACQUIRE", "tx:gone", "tok", 60_000));
    cmd(&mut c, ("LOCK.RELEASE", "tx:gone", "tok"));
    let replies = cmd(&mut c, "EXEC");
    let redis::Value::Array(replies) = replies else {
        panic!("EXEC replied {replies:?}")
    };
    assert_eq!(int(&replies[0]), int(&replies[1]));
    assert_eq!(int(&replies[3]), 1);

    let script = "local f = redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], 60000)
                  redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], 20000)
                  redis.call('LOCK.ACQUIRE', KEYS[2], ARGV[1], 60000)
                  redis.call('LOCK.RELEASE', KEYS[2], ARGV[1])
                  return f";
    let f = int(&cmd(&mut c, ("EVAL", script, 2, "lua", "lua:gone", "tok")));
    assert!(f >= 1);
    wait_replicated(&mut c);

    for key in [&b"tx"[..], b"lua"] {
        assert!(exists(&mut r, key));
        assert_same(&mut c, &mut r, key);
    }
    let ttl = pttl(&mut r, b"tx");
    assert!(ttl > 0 && ttl <= 30_000, "tx renewal replicated: {ttl}");
    let ttl = pttl(&mut r, b"lua");
    assert!(ttl > 0 && ttl <= 20_000, "lua renewal replicated: {ttl}");
    assert!(!exists(&mut r, b"tx:gone"));
    assert!(!exists(&mut r, b"lua:gone"));
    let log = replica.log().to_lowercase();
    assert!(!log.contains("unknown command"), "replica log:\n{log}");
}

#[test]
fn replica_check_sees_expiry_before_the_masters_del_arrives() {
    let m = master();
    let (_replica, mut r) = replica_of(&m, Config::default());
    let mut c = m.conn();
    // The master removes expired keys only when they are read.
    cmd(&mut c, ("DEBUG", "SET-ACTIVE-EXPIRE", 0));
    let f1 = must_acquire(&mut c, b"k", b"a", 300);
    wait_replicated(&mut c);
    wait_for(WAIT, "the lock to expire on the replica", || {
        (check(&mut r, b"k", b"a") == 0).then_some(())
    });
    // Nobody deleted it yet: it is only past its expiry.
    assert_eq!(int(&cmd(&mut c, "DBSIZE")), 1);
    assert_eq!(int(&cmd(&mut r, "DBSIZE")), 1);
    assert_eq!(check(&mut r, b"k", b"b"), 0);
    // A new holder on the master; the replica follows.
    let f2 = must_acquire(&mut c, b"k", b"b", 60_000);
    assert!(f2 > f1);
    wait_replicated(&mut c);
    assert!(check(&mut r, b"k", b"b") > 0);
    assert_eq!(check(&mut r, b"k", b"a"), 0);
}
