//! The command contract on one server: acquire / renew / refuse, release,
//! check, foreign values, other types, binary safety, WATCH, keyspace
//! events, INFO, COMMAND and MODULE introspection.

mod common;

use common::*;
use redis::Value;

#[test]
fn acquire_free_key_grants_a_fence_and_sets_the_ttl() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = expires_in(&mut c, b"k", 10_000, |c| {
        must_acquire(c, b"k", b"tok", 10_000)
    });
    assert!(fence >= 1);
    assert!(exists(&mut c, b"k"), "the key holds the lock");
    assert_eq!(text(&cmd(&mut c, ("TYPE", "k"))), "string");
    assert_ttl_near(pttl(&mut c, b"k"), 10_000, 5_000);
    assert!(check(&mut c, b"k", b"tok") > 0);

    // Short and long TTLs are honoured too.
    must_acquire(&mut c, b"short", b"tok", 1);
    expires_in(&mut c, b"long", 86_400_000, |c| {
        must_acquire(c, b"long", b"tok", 86_400_000)
    });
}

#[test]
fn renewal_resets_the_ttl_and_keeps_the_fence() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = must_acquire(&mut c, b"k", b"tok", 60_000);
    let value = get(&mut c, b"k");

    // Shorter: the TTL is reset, not kept at the larger value.
    let renewed = expires_in(&mut c, b"k", 5_000, |c| acquire(c, b"k", b"tok", 5_000));
    assert_eq!(renewed, Some(fence));
    // Longer again.
    let renewed = expires_in(&mut c, b"k", 30_000, |c| acquire(c, b"k", b"tok", 30_000));
    assert_eq!(renewed, Some(fence));
    assert_ttl_near(pttl(&mut c, b"k"), 30_000, 5_000);
    assert_eq!(get(&mut c, b"k"), value, "renewal keeps the value");

    // Renewing from another connection with the same token works too.
    let mut other = s.conn();
    let renewed = expires_in(&mut other, b"k", 20_000, |o| {
        acquire(o, b"k", b"tok", 20_000)
    });
    assert_eq!(renewed, Some(fence));

    // A lock whose expiry an operator removed gets one again on renewal.
    assert_eq!(int(&cmd(&mut c, ("PERSIST", "k"))), 1);
    assert_eq!(pttl(&mut c, b"k"), -1);
    let renewed = expires_in(&mut c, b"k", 7_000, |c| acquire(c, b"k", b"tok", 7_000));
    assert_eq!(renewed, Some(fence));
    assert_eq!(get(&mut c, b"k"), value, "renewal keeps the value");
}

#[test]
fn another_token_is_refused_and_nothing_changes() {
    let s = Server::start();
    let mut c = s.conn();
    let fence = must_acquire(&mut c, b"k", b"alice", 60_000);
    let before = snapshot(&mut c, b"k");
    let ttl = pttl(&mut c, b"k");

    assert_eq!(acquire(&mut c, b"k", b"bob", 60_000), None);
    assert_eq!(acquire(&mut c, b"k", b"bob", 1), None);
    // Tokens that are prefixes / extensions of the holder's are others too.
    assert_eq!(acquire(&mut c, b"k", b"alic", 60_000), None);
    assert_eq!(acquire(&mut c, b"k", b"alicee", 60_000), None);
    assert_eq!(acquire(&mut c, b"k", b"ALICE", 60_000), None);

    assert_eq!(snapshot(&mut c, b"k"), before, "value and expiry unchanged");
    let after = pttl(&mut c, b"k");
    assert!(after <= ttl, "TTL not extended: {after} > {ttl}");
    assert_eq!(check(&mut c, b"k", b"bob"), 0);
    assert!(check(&mut c, b"k", b"alice") > 0);
    assert_eq!(acquire(&mut c, b"k", b"alice", 60_000), Some(fence));
}

/// Strings written by someone else: `(value, ttl_ms or 0)`.
fn foreign_values() -> Vec<(Vec<u8>, u64)> {
    let mut forged_zero_fence = vec![0xC1, b'L', b'K', 0x01];
    forged_zero_fence.extend([0u8; 8]);
    forged_zero_fence.extend(b"tok");
    let mut forged_other_version = vec![0xC1, b'L', b'K', 0x02];
    forged_other_version.extend(1u64.to_be_bytes());
    forged_other_version.extend(b"tok");
    vec![
        (b"ABCD".to_vec(), 1_500),
        (b"ABCD".to_vec(), 0),
        // Another library's 24-character token.
        (b"0123456789abcdefghijklmn".to_vec(), 5_000),
        (b"1:tok".to_vec(), 5_000),
        (b"tok:1".to_vec(), 0),
        (b"tok".to_vec(), 5_000),
        (b"".to_vec(), 5_000),
        (b"123456789012345".to_vec(), 5_000),
        (forged_zero_fence, 5_000),
        (forged_other_version, 5_000),
    ]
}

#[test]
fn foreign_strings_are_never_taken_released_or_touched() {
    let s = Server::start();
    let mut c = s.conn();
    for (i, (value, ttl)) in foreign_values().into_iter().enumerate() {
        let key = format!("foreign:{i}").into_bytes();
        if ttl > 0 {
            cmd(&mut c, ("SET", &key[..], &value[..], "NX", "PX", ttl));
        } else {
            cmd(&mut c, ("SET", &key[..], &value[..]));
        }
        let before = snapshot(&mut c, &key);
        // Callers whose token equals the value, is part of it, or has the
        // length a lock of this value's size would have.
        let mut tokens: Vec<Vec<u8>> = vec![b"tok".to_vec(), b"x".to_vec()];
        if !value.is_empty() {
            tokens.push(value.clone());
        }
        if value.len() > 12 {
            tokens.push(vec![b'z'; value.len() - 12]);
            tokens.push(value[12..].to_vec());
        }
        for token in &tokens {
            let what = format!(
                "value {:?} token {:?}",
                String::from_utf8_lossy(&value),
                String::from_utf8_lossy(token)
            );
            assert_eq!(acquire(&mut c, &key, token, 60_000), None, "{what}");
            assert_eq!(release(&mut c, &key, token), 0, "{what}");
            assert_eq!(check(&mut c, &key, token), 0, "{what}");
            assert_eq!(snapshot(&mut c, &key), before, "{what}");
        }
        if ttl > 0 {
            assert!(pttl(&mut c, &key) <= ttl as i64);
        } else {
            assert_eq!(pttl(&mut c, &key), -1);
        }
    }
}

#[test]
fn a_foreign_lock_equal_to_the_callers_token_is_not_the_callers() {
    // What another client library does: SET key <token> NX PX 5000, and
    // then our caller, using the very same token, tries the module.
    let s = Server::start();
    let mut c = s.conn();
    let token = b"abcdefghijklmnopqrstuvwx"; // 24 characters
    assert_eq!(
        cmd(&mut c, ("SET", "k", &token[..], "NX", "PX", 5_000)),
        Value::Okay
    );
    let before = snapshot(&mut c, b"k");
    assert_eq!(acquire(&mut c, b"k", token, 60_000), None);
    assert_eq!(acquire(&mut c, b"k", &token[..12], 60_000), None);
    assert_eq!(check(&mut c, b"k", token), 0);
    assert_eq!(release(&mut c, b"k", token), 0);
    assert_eq!(snapshot(&mut c, b"k"), before);
    assert_eq!(get(&mut c, b"k").as_deref(), Some(&token[..]));
    let ttl = pttl(&mut c, b"k");
    assert!(ttl > 0 && ttl <= 5_000, "TTL {ttl}");
}

#[test]
fn other_types_answer_wrongtype_and_stay_unchanged() {
    let s = Server::start();
    let mut c = s.conn();
    cmd(&mut c, ("RPUSH", "list", "a", "b"));
    cmd(&mut c, ("PEXPIRE", "list", 50_000));
    cmd(&mut c, ("HSET", "hash", "f", "v", "tok", "x"));
    cmd(&mut c, ("SADD", "set", "tok"));
    for key in [&b"list"[..], b"hash", b"set"] {
        let before = if key == b"set" {
            None
        } else {
            Some(snapshot(&mut c, key))
        };
        for args in [
            vec![&b"LOCK.ACQUIRE"[..], key, b"tok", b"1000"],
            vec![b"LOCK.RELEASE", key, b"tok"],
            vec![b"LOCK.CHECK", key, b"tok"],
        ] {
            let e = err(&mut c, &args[..]);
            assert!(e.starts_with("WRONGTYPE"), "{args:?}: {e}");
        }
        if let Some(before) = before {
            assert_eq!(snapshot(&mut c, key), before);
        }
    }
    assert_eq!(int(&cmd(&mut c, ("SCARD", "set"))), 1);
}

#[test]
fn release_by_the_holder_deletes_the_key() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"tok", 60_000);
    assert_eq!(release(&mut c, b"k", b"tok"), 1);
    assert!(!exists(&mut c, b"k"), "the key is gone");
    assert_eq!(check(&mut c, b"k", b"tok"), 0);
    // A second release finds nothing.
    assert_eq!(release(&mut c, b"k", b"tok"), 0);
    // And the lock is free for anyone.
    must_acquire(&mut c, b"k", b"other", 60_000);
}

#[test]
fn release_misses_answer_zero_and_change_nothing() {
    let s = Server::start();
    let mut c = s.conn();
    // Absent key: 0, and it is not created.
    assert_eq!(release(&mut c, b"absent", b"tok"), 0);
    assert!(!exists(&mut c, b"absent"));

    // Someone else's lock.
    must_acquire(&mut c, b"k", b"alice", 60_000);
    let before = snapshot(&mut c, b"k");
    for token in [&b"bob"[..], b"alic", b"alice2", b"ALICE"] {
        assert_eq!(release(&mut c, b"k", token), 0);
    }
    assert_eq!(snapshot(&mut c, b"k"), before);
    assert!(check(&mut c, b"k", b"alice") > 0);
}

#[test]
fn check_reports_the_remaining_time_only_to_the_holder() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(check(&mut c, b"k", b"tok"), 0, "absent key");
    assert!(!exists(&mut c, b"k"), "CHECK does not create the key");

    must_acquire(&mut c, b"k", b"tok", 30_000);
    let before = snapshot(&mut c, b"k");
    let left = check(&mut c, b"k", b"tok");
    assert!(
        (1..=30_000).contains(&left) && left > 28_000,
        "remaining {left}"
    );
    assert_eq!(check(&mut c, b"k", b"other"), 0);
    assert_eq!(snapshot(&mut c, b"k"), before, "CHECK is read-only");

    // A lock about to expire still reports at least 1 ms.
    must_acquire(&mut c, b"soon", b"tok", 5_000);
    let left = check(&mut c, b"soon", b"tok");
    assert!((1..=5_000).contains(&left), "remaining {left}");

    // An operator removed the expiry: -1.
    assert_eq!(int(&cmd(&mut c, ("PERSIST", "k"))), 1);
    assert_eq!(check(&mut c, b"k", b"tok"), -1);
    assert_eq!(check(&mut c, b"k", b"other"), 0);
    assert_eq!(pttl(&mut c, b"k"), -1, "CHECK does not add an expiry");
    // The holder can still release it.
    assert_eq!(release(&mut c, b"k", b"tok"), 1);
    assert!(!exists(&mut c, b"k"));
}

#[test]
fn an_expired_lock_not_yet_removed_is_free() {
    let s = Server::start();
    let mut c = s.conn();
    // Expired keys are then removed only when read.
    cmd(&mut c, ("DEBUG", "SET-ACTIVE-EXPIRE", 0));
    let f1 = must_acquire(&mut c, b"k", b"a", 100);
    must_acquire(&mut c, b"k2", b"a", 100);
    must_acquire(&mut c, b"k3", b"a", 100);
    wait_for(WAIT, "the locks to pass their expiry", || {
        (check(&mut c, b"k", b"a") == 0).then_some(())
    });
    wait_for(WAIT, "the locks to pass their expiry", || {
        (int(&cmd(&mut c, ("PTTL", "k3"))) == -2).then_some(())
    });
    // k2 was never read since: still stored, yet free.
    assert_eq!(int(&cmd(&mut c, "DBSIZE")), 1);
    assert_eq!(release(&mut c, b"k2", b"a"), 0);
    let f2 = must_acquire(&mut c, b"k", b"b", 60_000);
    assert!(f2 > f1);
    let f3 = must_acquire(&mut c, b"k2", b"a", 60_000);
    assert!(f3 > f2, "the same token after expiry is a new holder");
}

#[test]
fn check_is_allowed_on_a_read_only_connection_path() {
    // LOCK.CHECK is flagged readonly: it runs inside a read-only script.
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"tok", 30_000);
    let left = int(&cmd(
        &mut c,
        (
            "EVAL_RO",
            "return redis.call('LOCK.CHECK', KEYS[1], ARGV[1])",
            1,
            "k",
            "tok",
        ),
    ));
    assert!(left > 0);
}

#[test]
fn keys_and_tokens_are_binary_safe() {
    let s = Server::start();
    let mut c = s.conn();
    let key: &[u8] = b"lock:\x00\xff\r\n:key";
    let token: &[u8] = b"t:\x00\xff\r\n:a";
    let same_until_nul: &[u8] = b"t:\x00\xff\r\n:b";
    let truncated: &[u8] = b"t:";
    let fence = must_acquire(&mut c, key, token, 60_000);
    assert!(exists(&mut c, key));
    // The key is exactly these bytes, not a truncation of them.
    for near in [&b"lock:"[..], b"lock:\x00", b"lock:\x00\xff\r\n:ke"] {
        assert!(!exists(&mut c, near), "{near:?}");
    }
    assert_eq!(acquire(&mut c, key, same_until_nul, 60_000), None);
    assert_eq!(acquire(&mut c, key, truncated, 60_000), None);
    assert_eq!(release(&mut c, key, same_until_nul), 0);
    assert_eq!(check(&mut c, key, same_until_nul), 0);
    assert!(check(&mut c, key, token) > 0);
    assert_eq!(acquire(&mut c, key, token, 60_000), Some(fence));
    // Another key differing only after a NUL is another lock.
    let key2: &[u8] = b"lock:\x00\xff\r\n:kez";
    must_acquire(&mut c, key2, same_until_nul, 60_000);
    assert_eq!(release(&mut c, key, token), 1);
    assert!(!exists(&mut c, key));
    assert!(check(&mut c, key2, same_until_nul) > 0);
    // Every byte value in a token.
    let all: Vec<u8> = (0..=255u8).collect();
    must_acquire(&mut c, b"all", &all, 60_000);
    assert!(check(&mut c, b"all", &all) > 0);
    assert_eq!(release(&mut c, b"all", &all[..255]), 0);
    assert_eq!(release(&mut c, b"all", &all), 1);
}

#[test]
fn locks_are_per_database() {
    let s = Server::start();
    let mut c0 = s.conn();
    let mut c1 = s.conn();
    cmd(&mut c1, ("SELECT", 1));
    must_acquire(&mut c0, b"k", b"a", 60_000);
    must_acquire(&mut c1, b"k", b"b", 60_000);
    assert_eq!(check(&mut c0, b"k", b"b"), 0);
    assert_eq!(check(&mut c1, b"k", b"a"), 0);
    assert_eq!(release(&mut c1, b"k", b"b"), 1);
    assert!(exists(&mut c0, b"k"));
    assert!(!exists(&mut c1, b"k"));
}

/// Runs `call` on another connection between WATCH and EXEC; true if the
/// transaction committed.
fn watch_survives(s: &Server, key: &[u8], call: impl FnOnce(&mut redis::Connection)) -> bool {
    let mut watcher = s.conn();
    let mut other = s.conn();
    assert_eq!(cmd(&mut watcher, ("WATCH", key)), Value::Okay);
    call(&mut other);
    assert_eq!(cmd(&mut watcher, "MULTI"), Value::Okay);
    cmd(&mut watcher, ("SET", "watch:probe", "1"));
    match cmd(&mut watcher, "EXEC") {
        Value::Nil => false,
        Value::Array(replies) => {
            assert_eq!(replies, vec![Value::Okay]);
            true
        }
        other => panic!("EXEC replied {other:?}"),
    }
}

#[test]
fn calls_that_change_nothing_keep_watch_valid() {
    let s = Server::start();
    let mut c = s.conn();
    must_acquire(&mut c, b"k", b"alice", 60_000);
    cmd(
        &mut c,
        ("SET", "foreign", "abcdefghijklmnopqrstuvwx", "PX", 60_000),
    );
    cmd(&mut c, ("RPUSH", "list", "a"));

    assert!(watch_survives(&s, b"k", |o| {
        assert_eq!(acquire(o, b"k", b"bob", 1_000), None)
    }));
    assert!(watch_survives(&s, b"k", |o| assert_eq!(
        release(o, b"k", b"bob"),
        0
    )));
    assert!(watch_survives(&s, b"k", |o| assert!(
        check(o, b"k", b"alice") > 0
    )));
    assert!(watch_survives(&s, b"k", |o| assert_eq!(
        check(o, b"k", b"bob"),
        0
    )));
    // On a foreign value, including one whose length fits a lock of the
    // caller's token (so the module reads it).
    for token in [&b"tok"[..], b"abcdefghijkl", b"abcdefghijklmnopqrstuvwx"] {
        assert!(watch_survives(&s, b"foreign", |o| {
            assert_eq!(acquire(o, b"foreign", token, 1_000), None)
        }));
        assert!(watch_survives(&s, b"foreign", |o| {
            assert_eq!(release(o, b"foreign", token), 0)
        }));
        assert!(watch_survives(&s, b"foreign", |o| {
            assert_eq!(check(o, b"foreign", token), 0)
        }));
    }
    // On an integer-encoded string of the length a lock of a 3-byte token has.
    cmd(&mut c, ("SET", "counter", "123456789012345"));
    assert!(watch_survives(&s, b"counter", |o| {
        assert_eq!(acquire(o, b"counter", b"abc", 1_000), None)
    }));
    assert!(watch_survives(&s, b"counter", |o| {
        assert_eq!(release(o, b"counter", b"abc"), 0);
        assert_eq!(check(o, b"counter", b"abc"), 0);
    }));
    assert_eq!(
        get(&mut c, b"counter").as_deref(),
        Some(&b"123456789012345"[..])
    );
    // On an absent key.
    assert!(watch_survives(&s, b"absent", |o| assert_eq!(
        release(o, b"absent", b"x"),
        0
    )));
    assert!(watch_survives(&s, b"absent", |o| assert_eq!(
        check(o, b"absent", b"x"),
        0
    )));
    // Errors change nothing either.
    assert!(watch_survives(&s, b"k", |o| {
        err(o, ("LOCK.ACQUIRE", "k", "bob", 0));
    }));
    assert!(watch_survives(&s, b"list", |o| {
        assert!(err(o, ("LOCK.ACQUIRE", "list", "bob", 100)).starts_with("WRONGTYPE"));
        assert!(err(o, ("LOCK.RELEASE", "list", "bob")).starts_with("WRONGTYPE"));
    }));
    // A sanity check that WATCH works at all here.
    assert!(!watch_survives(&s, b"k", |o| {
        cmd(o, ("PEXPIRE", "k", 60_000));
    }));
}

#[test]
fn real_changes_invalidate_watch() {
    let s = Server::start();
    assert!(
        !watch_survives(&s, b"k", |o| {
            must_acquire(o, b"k", b"alice", 60_000);
        }),
        "acquire"
    );
    assert!(
        !watch_survives(&s, b"k", |o| {
            must_acquire(o, b"k", b"alice", 60_000);
        }),
        "renew"
    );
    assert!(
        !watch_survives(&s, b"k", |o| assert_eq!(release(o, b"k", b"alice"), 1)),
        "release"
    );
}

/// Keyspace events for `k` up to a marker published after them (events are
/// published while the command runs, so they come before the marker).
fn events_until_marker(c: &mut redis::Connection, ps: &mut redis::PubSub) -> Vec<String> {
    cmd(c, ("PUBLISH", "__keyspace@0__:k", "marker"));
    let mut got = Vec::new();
    loop {
        let m = ps.get_message().expect("a keyspace message");
        let payload: String = m.get_payload().unwrap();
        if payload == "marker" {
            return got;
        }
        got.push(payload);
    }
}

#[test]
fn keyspace_events_only_for_real_changes() {
    let s = Server::start();
    let mut c = s.conn();
    cmd(&mut c, ("CONFIG", "SET", "notify-keyspace-events", "KA"));
    let mut sub = s.conn();
    sub.set_read_timeout(Some(WAIT)).unwrap();
    let mut ps = sub.as_pubsub();
    ps.subscribe("__keyspace@0__:k").unwrap();

    must_acquire(&mut c, b"k", b"alice", 60_000);
    let got = events_until_marker(&mut c, &mut ps);
    assert!(got.contains(&"set".to_owned()), "acquire: {got:?}");

    assert_eq!(acquire(&mut c, b"k", b"bob", 60_000), None);
    assert_eq!(release(&mut c, b"k", b"bob"), 0);
    assert!(check(&mut c, b"k", b"alice") > 0);
    err(&mut c, ("LOCK.ACQUIRE", "k", "bob", 0));
    let got = events_until_marker(&mut c, &mut ps);
    assert!(got.is_empty(), "calls that changed nothing fired {got:?}");

    must_acquire(&mut c, b"k", b"alice", 30_000);
    let got = events_until_marker(&mut c, &mut ps);
    assert!(got.contains(&"expire".to_owned()), "renew: {got:?}");
    assert!(!got.contains(&"set".to_owned()), "renew: {got:?}");

    assert_eq!(release(&mut c, b"k", b"alice"), 1);
    let got = events_until_marker(&mut c, &mut ps);
    assert_eq!(got, vec!["del".to_owned()], "release");
}

#[test]
fn info_lock_stats_counts_each_outcome() {
    let s = Server::start();
    let mut c = s.conn();
    let zero = lock_stats(&mut c);
    for name in [
        "acquired",
        "renewed",
        "refused",
        "released",
        "release_missed",
        "checks",
        "errors",
    ] {
        assert_eq!(zero.get(name), Some(&0), "{name} in {zero:?}");
    }

    must_acquire(&mut c, b"a", b"t", 60_000); // acquired 1
    must_acquire(&mut c, b"b", b"t", 60_000); // acquired 2
    must_acquire(&mut c, b"a", b"t", 60_000); // renewed 1
    assert_eq!(acquire(&mut c, b"a", b"u", 60_000), None); // refused 1
    assert_eq!(acquire(&mut c, b"b", b"u", 60_000), None); // refused 2
    cmd(&mut c, ("SET", "foreign", "x"));
    assert_eq!(acquire(&mut c, b"foreign", b"u", 60_000), None); // refused 3
    assert_eq!(release(&mut c, b"a", b"u"), 0); // missed 1
    assert_eq!(release(&mut c, b"absent", b"u"), 0); // missed 2
    assert_eq!(release(&mut c, b"a", b"t"), 1); // released 1
    check(&mut c, b"b", b"t"); // checks 1
    check(&mut c, b"b", b"u"); // checks 2
    check(&mut c, b"absent", b"u"); // checks 3
    err(&mut c, ("LOCK.ACQUIRE", "x", "t", 0)); // errors 1
    err(&mut c, ("LOCK.ACQUIRE", "x", "", 10)); // errors 2
    cmd(&mut c, ("RPUSH", "list", "a"));
    err(&mut c, ("LOCK.ACQUIRE", "list", "t", 10)); // errors 3
    err(&mut c, ("LOCK.RELEASE", "list", "t")); // errors 4

    let st = lock_stats(&mut c);
    let expect = [
        ("acquired", 2),
        ("renewed", 1),
        ("refused", 3),
        ("released", 1),
        ("release_missed", 2),
        ("checks", 3),
        ("errors", 4),
    ];
    for (name, n) in expect {
        assert_eq!(st.get(name), Some(&n), "{name} in {st:?}");
    }
    // The section is also part of INFO everything / INFO modules.
    let all = text(&cmd(&mut c, ("INFO", "everything")));
    assert!(all.contains("# lock_stats"), "INFO everything");
}

#[test]
fn module_list_shows_lock() {
    let s = Server::start();
    let mut c = s.conn();
    let list = cmd(&mut c, ("MODULE", "LIST"));
    let Value::Array(modules) = list else {
        panic!("MODULE LIST replied {list:?}")
    };
    let names: Vec<String> = modules
        .iter()
        .map(|m| {
            let fields: Vec<Value> = match m {
                Value::Array(f) => f.clone(),
                Value::Map(pairs) => pairs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
                other => panic!("module entry {other:?}"),
            };
            let i = fields
                .iter()
                .position(|f| bytes(f).as_deref() == Some(b"name"))
                .expect("a name field");
            text(&fields[i + 1])
        })
        .collect();
    // Redis 8 also lists its built-in modules (vectorset, ...).
    assert_eq!(
        names.iter().filter(|n| *n == "lock").count(),
        1,
        "{names:?}"
    );
}

fn flags_of(c: &mut redis::Connection, command: &str) -> (i64, Vec<String>) {
    let v = cmd(c, ("COMMAND", "INFO", command));
    let Value::Array(entries) = v else {
        panic!("COMMAND INFO replied {v:?}")
    };
    let Value::Array(info) = &entries[0] else {
        panic!("COMMAND INFO {command}: {entries:?}")
    };
    assert_eq!(text(&info[0]), command);
    let arity = int(&info[1]);
    let Value::Array(flags) = &info[2] else {
        panic!("flags: {info:?}")
    };
    let mut flags: Vec<String> = flags.iter().map(text).collect();
    flags.sort();
    // first key, last key, step
    assert_eq!(
        (int(&info[3]), int(&info[4]), int(&info[5])),
        (1, 1, 1),
        "{command} key positions"
    );
    (arity, flags)
}

#[test]
fn command_introspection() {
    let s = Server::start();
    let mut c = s.conn();
    for args in [
        &["lock.acquire", "k", "t", "100"][..],
        &["lock.extend", "k", "t", "100"],
        &["lock.release", "k", "t"],
        &["lock.check", "k", "t"],
    ] {
        let keys = cmd(&mut c, (&["COMMAND", "GETKEYS"][..], args));
        let keys: Vec<Vec<u8>> = redis::from_redis_value(keys).unwrap();
        assert_eq!(keys, vec![b"k".to_vec()], "{args:?}");
    }
    let keys = cmd(
        &mut c,
        ("COMMAND", "GETKEYS", "lock.release", "my:key", "t"),
    );
    let keys: Vec<Vec<u8>> = redis::from_redis_value(keys).unwrap();
    assert_eq!(keys, vec![b"my:key".to_vec()]);

    let (arity, flags) = flags_of(&mut c, "lock.acquire");
    assert_eq!(arity, -4);
    for f in ["write", "denyoom", "blocking"] {
        assert!(flags.contains(&f.to_owned()), "acquire: {flags:?}");
    }
    // It can block (WAIT), so it is not `fast`.
    assert!(!flags.contains(&"fast".to_owned()), "acquire: {flags:?}");
    assert!(!flags.contains(&"readonly".to_owned()));

    let (arity, flags) = flags_of(&mut c, "lock.release");
    assert_eq!(arity, 3);
    for f in ["write", "fast"] {
        assert!(flags.contains(&f.to_owned()), "release: {flags:?}");
    }
    assert!(
        !flags.contains(&"denyoom".to_owned()),
        "release must run when memory is full: {flags:?}"
    );

    let (arity, flags) = flags_of(&mut c, "lock.extend");
    assert_eq!(arity, 4);
    for f in ["write", "fast"] {
        assert!(flags.contains(&f.to_owned()), "extend: {flags:?}");
    }
    assert!(
        !flags.contains(&"denyoom".to_owned()),
        "a holder must be able to renew when memory is full: {flags:?}"
    );

    let (arity, flags) = flags_of(&mut c, "lock.check");
    assert_eq!(arity, 3);
    for f in ["readonly", "fast"] {
        assert!(flags.contains(&f.to_owned()), "check: {flags:?}");
    }
    assert!(!flags.contains(&"write".to_owned()), "check: {flags:?}");
    assert!(!flags.contains(&"denyoom".to_owned()), "check: {flags:?}");

    // The commands are listed under their names.
    let v = cmd(&mut c, ("COMMAND", "LIST", "FILTERBY", "MODULE", "lock"));
    let mut names: Vec<String> = redis::from_redis_value(v).unwrap();
    names.sort();
    for name in [
        "lock.acquire",
        "lock.check",
        "lock.extend",
        "lock.info",
        "lock.release",
    ] {
        assert!(names.contains(&name.to_owned()), "{names:?}");
    }
}

/// `COMMAND DOCS` lists every argument (what `redis-cli HELP` shows), and
/// MODULE LIST, INFO and Cargo report one version.
#[test]
fn command_docs_and_version() {
    let s = Server::start();
    let mut c = s.conn();
    let docs = format!("{:?}", cmd(&mut c, ("COMMAND", "DOCS", "lock.acquire")));
    for part in [
        "key",
        "token",
        "milliseconds",
        "WAIT",
        "timeout-ms",
        "META",
        "value",
        "optional",
        "block",
    ] {
        assert!(docs.contains(part), "{part} missing from {docs}");
    }
    for name in ["lock.extend", "lock.release", "lock.check", "lock.info"] {
        let docs = format!("{:?}", cmd(&mut c, ("COMMAND", "DOCS", name)));
        assert!(docs.contains("arguments") && docs.contains("key"), "{docs}");
    }

    let version = env!("CARGO_PKG_VERSION");
    let number: i64 = version
        .split('.')
        .map(|p| p.parse::<i64>().unwrap())
        .fold(0, |n, p| n * 100 + p);
    let modules = format!("{:?}", cmd(&mut c, ("MODULE", "LIST")));
    assert!(modules.contains(&format!("int({number})")), "{modules}");
    assert_eq!(info(&mut c, "lock_module")["lock_version"], version);
}
