//! Fencing tokens strictly increase with each new holder of a key: across
//! release, expiry and DEL, over hundreds of cycles. (Restarts: see
//! persistence.rs; failover: replication.rs.)

mod common;

use common::*;

#[test]
fn fence_increases_across_release_and_del() {
    let s = Server::start();
    let mut c = s.conn();
    let f1 = must_acquire(&mut c, b"k", b"a", 60_000);
    assert_eq!(release(&mut c, b"k", b"a"), 1);
    let f2 = must_acquire(&mut c, b"k", b"b", 60_000);
    assert!(f2 > f1, "after release: {f2} > {f1}");
    assert_eq!(int(&cmd(&mut c, ("DEL", "k"))), 1);
    let f3 = must_acquire(&mut c, b"k", b"c", 60_000);
    assert!(f3 > f2, "after DEL: {f3} > {f2}");
    // The same token coming back after a release is a new holder too.
    assert_eq!(release(&mut c, b"k", b"c"), 1);
    let f4 = must_acquire(&mut c, b"k", b"c", 60_000);
    assert!(f4 > f3, "same token re-acquiring: {f4} > {f3}");
    // UNLINK, and overwriting by SET then DEL, are operator removals too.
    assert_eq!(int(&cmd(&mut c, ("UNLINK", "k"))), 1);
    let f5 = must_acquire(&mut c, b"k", b"d", 60_000);
    assert!(f5 > f4, "after UNLINK: {f5} > {f4}");
    cmd(&mut c, ("SET", "k", "operator"));
    cmd(&mut c, ("DEL", "k"));
    let f6 = must_acquire(&mut c, b"k", b"d", 60_000);
    assert!(f6 > f5, "after SET + DEL: {f6} > {f5}");
    // FLUSHDB and FLUSHALL.
    cmd(&mut c, "FLUSHDB");
    let f7 = must_acquire(&mut c, b"k", b"d", 60_000);
    assert!(f7 > f6, "after FLUSHDB: {f7} > {f6}");
    cmd(&mut c, "FLUSHALL");
    let f8 = must_acquire(&mut c, b"k", b"d", 60_000);
    assert!(f8 > f7, "after FLUSHALL: {f8} > {f7}");
}

#[test]
fn renewal_keeps_the_fence() {
    let s = Server::start();
    let mut c = s.conn();
    let f = must_acquire(&mut c, b"k", b"a", 60_000);
    for ms in [1_000, 90_000, 5, 60_000] {
        assert_eq!(acquire(&mut c, b"k", b"a", ms), Some(f));
    }
    // Others acquiring meanwhile do not move it.
    must_acquire(&mut c, b"other", b"x", 60_000);
    assert_eq!(acquire(&mut c, b"k", b"a", 60_000), Some(f));
}

#[test]
fn fence_increases_across_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    let mut last = 0;
    for i in 0..3 {
        let token = format!("t{i}").into_bytes();
        let f = must_acquire(&mut c, b"k", &token, 50);
        assert!(f > last, "expiry cycle {i}: {f} > {last}");
        last = f;
        wait_gone(&mut c, b"k", WAIT);
    }
    // The same token after its lock expired is a new holder.
    let f = must_acquire(&mut c, b"k", b"t2", 60_000);
    assert!(f > last);
    // Expiry handled by the server's active cycle, not by our read.
    must_acquire(&mut c, b"k2", b"x", 60_000);
    let f_before = must_acquire(&mut c, b"k3", b"a", 30);
    // DBSIZE counts keys not yet removed, and reads no key.
    wait_for(WAIT, "active expiry of k3", || {
        (int(&cmd(&mut c, "DBSIZE")) == 2).then_some(())
    });
    let f_after = must_acquire(&mut c, b"k3", b"b", 60_000);
    assert!(f_after > f_before);
}

#[test]
fn fence_increases_over_hundreds_of_cycles() {
    let s = Server::start();
    let mut c = s.conn();
    let mut last = 0i64;
    let mut fences = Vec::new();
    for i in 0..400 {
        let token = format!("holder-{}", i % 7).into_bytes();
        let f = must_acquire(&mut c, b"k", &token, 60_000);
        assert!(f > last, "cycle {i}: {f} > {last}");
        // A renewal in the middle changes nothing.
        if i % 10 == 0 {
            assert_eq!(acquire(&mut c, b"k", &token, 60_000), Some(f));
        }
        // Another token is refused meanwhile.
        assert_eq!(acquire(&mut c, b"k", b"intruder", 60_000), None);
        last = f;
        fences.push(f);
        match i % 4 {
            0 | 1 => assert_eq!(release(&mut c, b"k", &token), 1),
            2 => assert_eq!(int(&cmd(&mut c, ("DEL", "k"))), 1),
            _ => {
                // A few short expiries (every 40th cycle), the rest DEL.
                if i % 40 == 3 {
                    cmd(&mut c, ("PEXPIRE", "k", 1));
                    wait_gone(&mut c, b"k", WAIT);
                } else {
                    assert_eq!(int(&cmd(&mut c, ("UNLINK", "k"))), 1);
                }
            }
        }
    }
    // Expiry by the lock's own TTL, a few times.
    for _ in 0..3 {
        let f = must_acquire(&mut c, b"k", b"short", 20);
        assert!(f > last);
        last = f;
        wait_gone(&mut c, b"k", WAIT);
    }
    let mut sorted = fences.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), fences.len(), "all fences distinct");
}

#[test]
fn fences_survive_interleaved_keys() {
    // Holders of other keys do not confuse a key's sequence.
    let s = Server::start();
    let mut c = s.conn();
    let mut last = [0i64; 3];
    let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
    for round in 0..50 {
        for (i, key) in keys.iter().enumerate() {
            let f = must_acquire(&mut c, key, b"t", 60_000);
            assert!(f > last[i], "round {round} key {i}");
            last[i] = f;
        }
        for key in keys {
            assert_eq!(release(&mut c, key, b"t"), 1);
        }
    }
    assert!(must_acquire(&mut c, b"a", b"t", 60_000) > last[0]);
}
