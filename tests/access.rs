//! How the commands meet the rest of the server: ACL users, MULTI/EXEC,
//! Lua scripts and functions, a full memory, and cluster routing.

mod common;

use common::*;
use redis::{Connection, Value};

fn acl(c: &mut Connection, rules: &[&str]) {
    assert_eq!(cmd(c, (&["ACL", "SETUSER"][..], rules)), Value::Okay);
}

fn noperm(c: &mut Connection, args: &[&str]) {
    let e = err(c, args);
    assert!(e.starts_with("NOPERM"), "{args:?}: {e}");
}

#[test]
fn acl_key_patterns() {
    let s = Server::start();
    let mut admin = s.conn();
    acl(&mut admin, &["u", "on", ">pw", "~app:*", "+@all"]);
    must_acquire(&mut admin, b"other:held", b"admin", 60_000);
    let held = snapshot(&mut admin, b"other:held");

    let mut u = conn_as(&s, "u", "pw");
    let fence = must_acquire(&mut u, b"app:1", b"t", 60_000);
    assert_eq!(acquire(&mut u, b"app:1", b"t", 60_000), Some(fence));
    assert!(check(&mut u, b"app:1", b"t") > 0);
    assert_eq!(release(&mut u, b"app:1", b"t"), 1);

    noperm(&mut u, &["LOCK.ACQUIRE", "other:1", "t", "1000"]);
    noperm(&mut u, &["LOCK.ACQUIRE", "other:held", "admin", "1000"]);
    noperm(&mut u, &["LOCK.RELEASE", "other:held", "admin"]);
    noperm(&mut u, &["LOCK.CHECK", "other:held", "admin"]);
    assert!(!exists(&mut admin, b"other:1"));
    assert_eq!(snapshot(&mut admin, b"other:held"), held);

    // Granted command by command instead of +@all.
    acl(
        &mut admin,
        &[
            "v",
            "on",
            ">pw",
            "~app:*",
            "+lock.acquire",
            "+lock.release",
            "+lock.check",
        ],
    );
    let mut v = conn_as(&s, "v", "pw");
    must_acquire(&mut v, b"app:2", b"t", 60_000);
    assert!(check(&mut v, b"app:2", b"t") > 0);
    assert_eq!(release(&mut v, b"app:2", b"t"), 1);
    noperm(&mut v, &["LOCK.ACQUIRE", "other:2", "t", "1000"]);
    noperm(&mut v, &["GET", "app:2"]);
}

#[test]
fn acl_command_permission() {
    let s = Server::start();
    let mut admin = s.conn();
    must_acquire(&mut admin, b"app:held", b"admin", 60_000);
    let held = snapshot(&mut admin, b"app:held");
    // Only LOCK.CHECK among the three.
    acl(&mut admin, &["w", "on", ">pw", "~*", "+get", "+lock.check"]);
    let mut w = conn_as(&s, "w", "pw");
    noperm(&mut w, &["LOCK.ACQUIRE", "app:1", "t", "1000"]);
    noperm(&mut w, &["LOCK.ACQUIRE", "app:held", "admin", "1000"]);
    noperm(&mut w, &["LOCK.RELEASE", "app:held", "admin"]);
    assert!(check(&mut w, b"app:held", b"admin") > 0);
    assert!(!exists(&mut admin, b"app:1"));
    assert_eq!(snapshot(&mut admin, b"app:held"), held);

    // Everything but LOCK.ACQUIRE.
    acl(
        &mut admin,
        &["x", "on", ">pw", "~*", "+@all", "-lock.acquire"],
    );
    let mut x = conn_as(&s, "x", "pw");
    noperm(&mut x, &["LOCK.ACQUIRE", "app:1", "t", "1000"]);
    assert_eq!(release(&mut x, b"app:held", b"admin"), 1);
    assert!(!exists(&mut admin, b"app:1"));
}

#[test]
fn acl_read_only_key_permission() {
    let s = Server::start();
    let mut admin = s.conn();
    must_acquire(&mut admin, b"app:held", b"admin", 60_000);
    let held = snapshot(&mut admin, b"app:held");
    acl(&mut admin, &["ro", "on", ">pw", "%R~app:*", "+@all"]);
    let mut ro = conn_as(&s, "ro", "pw");
    assert!(check(&mut ro, b"app:held", b"admin") > 0);
    assert_eq!(check(&mut ro, b"app:free", b"t"), 0);
    noperm(&mut ro, &["LOCK.ACQUIRE", "app:free", "t", "1000"]);
    noperm(&mut ro, &["LOCK.ACQUIRE", "app:held", "admin", "1000"]);
    noperm(&mut ro, &["LOCK.RELEASE", "app:held", "admin"]);
    noperm(&mut ro, &["LOCK.CHECK", "other:held", "admin"]);
    assert!(!exists(&mut admin, b"app:free"));
    assert_eq!(snapshot(&mut admin, b"app:held"), held);

    // ACL DRYRUN agrees.
    let ok = cmd(
        &mut admin,
        ("ACL", "DRYRUN", "ro", "LOCK.CHECK", "app:held", "admin"),
    );
    assert_eq!(ok, Value::Okay);
    let denied = cmd(
        &mut admin,
        (
            "ACL",
            "DRYRUN",
            "ro",
            "LOCK.ACQUIRE",
            "app:held",
            "admin",
            "100",
        ),
    );
    assert_ne!(denied, Value::Okay, "{denied:?}");
}

/// Runs the queued commands in MULTI/EXEC; returns EXEC's replies.
fn transaction(c: &mut Connection, commands: &[&[&[u8]]]) -> Vec<Value> {
    assert_eq!(cmd(c, "MULTI"), Value::Okay);
    for args in commands {
        let queued = cmd(c, *args);
        assert_eq!(bytes(&queued).as_deref(), Some(&b"QUEUED"[..]));
    }
    match try_cmd(c, "EXEC") {
        Ok(Value::Array(replies)) => replies,
        other => panic!("EXEC replied {other:?}"),
    }
}

#[test]
fn multi_exec_runs_all_three() {
    let s = Server::start();
    let mut c = s.conn();
    let r = transaction(
        &mut c,
        &[
            &[b"LOCK.ACQUIRE", b"k", b"t", b"60000"],
            &[b"LOCK.ACQUIRE", b"k", b"t", b"30000"],
            &[b"LOCK.CHECK", b"k", b"t"],
            &[b"LOCK.ACQUIRE", b"k", b"other", b"1000"],
            &[b"LOCK.RELEASE", b"k", b"other"],
            &[b"LOCK.RELEASE", b"k", b"t"],
            &[b"LOCK.CHECK", b"k", b"t"],
            &[b"LOCK.ACQUIRE", b"k", b"other", b"60000"],
        ],
    );
    assert_eq!(r.len(), 8, "{r:?}");
    let fence = int(&r[0]);
    assert!(fence >= 1);
    assert_eq!(int(&r[1]), fence, "renewal in the same transaction");
    let left = int(&r[2]);
    assert!(left > 0 && left <= 30_000, "{left}");
    assert_eq!(r[3], Value::Nil);
    assert_eq!(int(&r[4]), 0);
    assert_eq!(int(&r[5]), 1);
    assert_eq!(int(&r[6]), 0);
    assert!(int(&r[7]) > fence);
    assert!(check(&mut c, b"k", b"other") > 0);

    // An error inside the transaction is that command's reply only.
    cmd(&mut c, ("RPUSH", "list", "a"));
    assert_eq!(cmd(&mut c, "MULTI"), Value::Okay);
    cmd(&mut c, ("LOCK.ACQUIRE", "list", "t", 1000));
    cmd(&mut c, ("LOCK.ACQUIRE", "k2", "t", 1000));
    match try_cmd(&mut c, "EXEC") {
        Ok(Value::Array(replies)) => {
            assert!(
                matches!(&replies[0], Value::ServerError(e) if e.code() == "WRONGTYPE"),
                "{replies:?}"
            );
            assert!(int(&replies[1]) > 0);
        }
        // A client library may turn the whole reply into the first error.
        Err(e) => assert!(error_text(&e).starts_with("WRONGTYPE"), "{e}"),
        Ok(other) => panic!("EXEC replied {other:?}"),
    }
    assert!(exists(&mut c, b"k2"));

    // A wrong-arity command aborts the whole transaction.
    assert_eq!(cmd(&mut c, "MULTI"), Value::Okay);
    cmd(&mut c, ("LOCK.ACQUIRE", "k3", "t", 1000));
    let e = err(&mut c, ("LOCK.ACQUIRE", "k3"));
    assert!(e.starts_with("ERR wrong number of arguments"), "{e}");
    let e = err(&mut c, "EXEC");
    assert!(e.starts_with("EXECABORT"), "{e}");
    assert!(!exists(&mut c, b"k3"));
}

const ACQUIRE_LUA: &str = "return redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], ARGV[2])";

#[test]
fn lua_scripts_use_the_commands() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = expires_in(&mut c, b"k", 30_000, |c| {
        int(&cmd(c, ("EVAL", ACQUIRE_LUA, 1, "k", "t", 30_000)))
    });
    assert!(fence >= 1);
    let renewed = expires_in(&mut c, b"k", 60_000, |c| {
        int(&cmd(c, ("EVAL", ACQUIRE_LUA, 1, "k", "t", 60_000)))
    });
    assert_eq!(renewed, fence);
    // Refused: nil becomes false in Lua, and nil again in the reply.
    assert_eq!(
        cmd(&mut c, ("EVAL", ACQUIRE_LUA, 1, "k", "other", 1000)),
        Value::Nil
    );

    // All three in one script.
    let script = "
        local f = redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], 5000)
        local left = redis.call('LOCK.CHECK', KEYS[1], ARGV[1])
        local refused = redis.call('LOCK.ACQUIRE', KEYS[1], 'someone-else', 5000)
        local released = redis.call('LOCK.RELEASE', KEYS[1], ARGV[1])
        local after = redis.call('LOCK.CHECK', KEYS[1], ARGV[1])
        return {f, left, refused == false and 1 or 0, released, after}";
    let r: Vec<i64> =
        redis::from_redis_value(cmd(&mut c, ("EVAL", script, 1, "s", "tok"))).unwrap();
    assert!(r[0] >= 1);
    assert!(r[1] > 0 && r[1] <= 5000, "{r:?}");
    assert_eq!(&r[2..], &[1, 1, 0]);
    assert!(!exists(&mut c, b"s"));

    // Errors reach the script: redis.call raises, redis.pcall returns them.
    cmd(&mut c, ("RPUSH", "list", "a"));
    let e = err(&mut c, ("EVAL", ACQUIRE_LUA, 1, "list", "t", 1000));
    assert!(e.contains("WRONGTYPE"), "{e}");
    let caught = "local r = redis.pcall('LOCK.ACQUIRE', KEYS[1], 't', 0)
                  if type(r) == 'table' and r.err then return 'caught' end
                  return 'no error'";
    assert_eq!(text(&cmd(&mut c, ("EVAL", caught, 1, "k9"))), "caught");
    assert!(!exists(&mut c, b"k9"));

    // A read-only script may check, not acquire.
    let e = err(&mut c, ("EVAL_RO", ACQUIRE_LUA, 1, "k2", "t", 1000));
    assert!(e.contains("Write commands are not allowed"), "{e}");
    assert!(!exists(&mut c, b"k2"));
    let ro = "return redis.call('LOCK.CHECK', KEYS[1], ARGV[1])";
    assert!(int(&cmd(&mut c, ("EVAL_RO", ro, 1, "k", "t"))) > 0);
}

#[test]
fn functions_use_the_commands() {
    let s = Server::start();
    let mut c = s.conn();
    let lib = "#!lua name=locklib
        redis.register_function('lock_acquire', function(keys, args)
            return redis.call('LOCK.ACQUIRE', keys[1], args[1], args[2])
        end)
        redis.register_function{function_name='lock_check', callback=function(keys, args)
            return redis.call('LOCK.CHECK', keys[1], args[1])
        end, flags={'no-writes'}}";
    assert_eq!(text(&cmd(&mut c, ("FUNCTION", "LOAD", lib))), "locklib");
    let fence = int(&cmd(&mut c, ("FCALL", "lock_acquire", 1, "k", "t", 60_000)));
    assert!(fence >= 1);
    assert_eq!(
        cmd(&mut c, ("FCALL", "lock_acquire", 1, "k", "u", 60_000)),
        Value::Nil
    );
    assert!(int(&cmd(&mut c, ("FCALL_RO", "lock_check", 1, "k", "t"))) > 0);
    assert_eq!(release(&mut c, b"k", b"t"), 1);
}

#[test]
fn release_works_when_memory_is_full() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = must_acquire(&mut c, b"k", b"t", 60_000);
    must_acquire(&mut c, b"k2", b"t", 60_000);
    cmd(&mut c, ("CONFIG", "SET", "maxmemory", 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let e = err(&mut c, ("LOCK.ACQUIRE", "new", "t", 1000));
        assert!(e.starts_with("OOM"), "{e}");
        // Renewing is a write that may need memory: refused too.
        let e = err(&mut c, ("LOCK.ACQUIRE", "k", "t", 1000));
        assert!(e.starts_with("OOM"), "{e}");
        assert!(!exists(&mut c, b"new"));
        assert!(check(&mut c, b"k", b"t") > 0);
        assert_eq!(release(&mut c, b"k", b"other"), 0);
        assert_eq!(release(&mut c, b"k", b"t"), 1);
        assert!(!exists(&mut c, b"k"));
        // Also from a script.
        let rel = "return redis.call('LOCK.RELEASE', KEYS[1], ARGV[1])";
        assert_eq!(int(&cmd(&mut c, ("EVAL", rel, 1, "k2", "t"))), 1);
    }));
    cmd(&mut c, ("CONFIG", "SET", "maxmemory", 0));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    let f = must_acquire(&mut c, b"k", b"t", 60_000);
    assert!(f > fence);
}

fn cluster_node() -> Server {
    Server::with(
        Config::default()
            .arg("cluster-enabled", "yes")
            .arg("cluster-config-file", "nodes.conf")
            .arg("cluster-port", &free_port().to_string())
            .arg("cluster-node-timeout", "5000"),
    )
}

fn cluster_ok(c: &mut Connection, nodes: usize) {
    wait_for(
        std::time::Duration::from_secs(20),
        "cluster_state:ok",
        || {
            let raw = text(&cmd(c, ("CLUSTER", "INFO")));
            let ok = raw.contains("cluster_state:ok")
                && raw.contains(&format!("cluster_known_nodes:{nodes}\r"));
            ok.then_some(())
        },
    );
}

fn slot(c: &mut Connection, key: &str) -> i64 {
    int(&cmd(c, ("CLUSTER", "KEYSLOT", key)))
}

#[test]
fn cluster_single_node_owning_all_slots() {
    let s = cluster_node();
    let mut c = s.conn();
    assert_eq!(
        cmd(&mut c, ("CLUSTER", "ADDSLOTSRANGE", 0, 16383)),
        Value::Okay
    );
    cluster_ok(&mut c, 1);
    for key in ["a", "b", "{user:1}:lock", "lock:\u{0}x"] {
        let f = must_acquire(&mut c, key.as_bytes(), b"t", 60_000);
        assert_eq!(acquire(&mut c, key.as_bytes(), b"t", 60_000), Some(f));
        assert_eq!(acquire(&mut c, key.as_bytes(), b"u", 60_000), None);
        assert!(check(&mut c, key.as_bytes(), b"t") > 0);
        assert_eq!(release(&mut c, key.as_bytes(), b"t"), 1);
        assert!(!exists(&mut c, key.as_bytes()));
    }
    // Keys are counted in their slot.
    must_acquire(&mut c, b"{user:1}:lock", b"t", 60_000);
    let sl = slot(&mut c, "{user:1}:lock");
    assert_eq!(int(&cmd(&mut c, ("CLUSTER", "COUNTKEYSINSLOT", sl))), 1);
}

/// Two cluster nodes: a serves slots 0–8191, b 8192–16383.
fn two_node_cluster() -> (Server, Server, Connection, Connection) {
    let a = cluster_node();
    let b = cluster_node();
    let mut ca = a.conn();
    let mut cb = b.conn();
    cmd(&mut ca, ("CLUSTER", "ADDSLOTSRANGE", 0, 8191));
    cmd(&mut cb, ("CLUSTER", "ADDSLOTSRANGE", 8192, 16383));
    // The bus port of b, from its own view of itself.
    let myself = text(&cmd(&mut cb, ("CLUSTER", "NODES")))
        .lines()
        .find(|l| l.contains("myself"))
        .expect("myself line")
        .to_owned();
    let addr = myself.split(' ').nth(1).unwrap(); // ip:port@cport[,hostname]
    let cport = addr
        .split('@')
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    cmd(&mut ca, ("CLUSTER", "MEET", "127.0.0.1", b.port(), cport));
    cluster_ok(&mut ca, 2);
    cluster_ok(&mut cb, 2);
    (a, b, ca, cb)
}

#[test]
fn cluster_two_nodes_redirect_with_moved() {
    let (a, b, mut ca, mut cb) = two_node_cluster();
    let _ = &a;

    // A key in b's half.
    let key = (0..)
        .map(|i| format!("lock:{i}"))
        .find(|k| slot(&mut ca, k) >= 8192)
        .unwrap();
    let sl = slot(&mut ca, &key);
    let moved = format!("MOVED {sl} 127.0.0.1:{}", b.port());
    for args in [
        vec!["LOCK.ACQUIRE", key.as_str(), "t", "1000"],
        vec!["LOCK.RELEASE", key.as_str(), "t"],
        vec!["LOCK.CHECK", key.as_str(), "t"],
    ] {
        let e = err(&mut ca, &args[..]);
        assert_eq!(e, moved, "{args:?}");
    }
    let f = must_acquire(&mut cb, key.as_bytes(), b"t", 60_000);
    assert_eq!(acquire(&mut cb, key.as_bytes(), b"t", 60_000), Some(f));
    assert!(check(&mut cb, key.as_bytes(), b"t") > 0);
    let e = err(&mut ca, ("LOCK.CHECK", &key, "t"));
    assert_eq!(e, moved);
    assert_eq!(release(&mut cb, key.as_bytes(), b"t"), 1);

    // And a key of a's half works on a, moves from b.
    let key = (0..)
        .map(|i| format!("lock:{i}"))
        .find(|k| slot(&mut ca, k) < 8192)
        .unwrap();
    must_acquire(&mut ca, key.as_bytes(), b"t", 60_000);
    let e = err(&mut cb, ("LOCK.CHECK", &key, "t"));
    assert!(e.starts_with("MOVED"), "{e}");
}

/// A lock whose slot migrates while a client waits for it on the old node:
/// the old node must not grant it there (the holder keeps it on the new
/// node); the waiter is told to retry, and the cluster redirects it.
#[test]
fn cluster_waiters_on_a_migrated_slot_are_sent_to_retry_not_granted() {
    let (a, b, mut ca, mut cb) = two_node_cluster();
    let key = (0..)
        .map(|i| format!("lock:{i}"))
        .find(|k| slot(&mut ca, k) < 8192)
        .unwrap();
    let sl = slot(&mut ca, &key);
    let holder_fence = must_acquire(&mut ca, key.as_bytes(), b"holder", 60_000);

    let mut waiter = a.conn();
    let waiting_key = key.clone();
    let waiter_thread = std::thread::spawn(move || {
        try_cmd(
            &mut waiter,
            (
                "LOCK.ACQUIRE",
                waiting_key.as_str(),
                "waiter",
                60_000,
                "WAIT",
                30_000,
            ),
        )
    });
    wait_for(
        std::time::Duration::from_secs(20),
        "the waiter queued",
        || (lock_stats(&mut ca).get("waiters") == Some(&1)).then_some(()),
    );

    // Move the slot, with the lock in it, from a to b.
    let a_id = text(&cmd(&mut ca, ("CLUSTER", "MYID")));
    let b_id = text(&cmd(&mut cb, ("CLUSTER", "MYID")));
    cmd(
        &mut cb,
        ("CLUSTER", "SETSLOT", sl, "IMPORTING", a_id.as_str()),
    );
    cmd(
        &mut ca,
        ("CLUSTER", "SETSLOT", sl, "MIGRATING", b_id.as_str()),
    );
    cmd(
        &mut ca,
        ("MIGRATE", "127.0.0.1", b.port(), key.as_str(), 0, 5000),
    );
    for c in [&mut ca, &mut cb] {
        cmd(c, ("CLUSTER", "SETSLOT", sl, "NODE", b_id.as_str()));
    }

    let reply = waiter_thread.join().unwrap();
    let e = reply.expect_err("the waiter is not granted on the old node");
    assert!(error_text(&e).starts_with("TRYAGAIN"), "{}", error_text(&e));
    // The holder still holds it, on b, with its fence; a has no stray copy.
    assert!(check(&mut cb, key.as_bytes(), b"holder") > 0);
    assert_eq!(
        must_acquire(&mut cb, key.as_bytes(), b"holder", 60_000),
        holder_fence
    );
    assert_eq!(int(&cmd(&mut ca, ("DBSIZE",))), 0);
    assert_eq!(lock_stats(&mut ca).get("wait_redirects"), Some(&1));
}
