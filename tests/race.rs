//! Concurrent clients: exactly one winner per race, mutual exclusion and
//! increasing fences under contention.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

fn random_token() -> Vec<u8> {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    let a = h.finish();
    let mut h = RandomState::new().build_hasher();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish()).into_bytes()
}

#[test]
fn hundred_clients_race_for_one_key_one_wins() {
    const CLIENTS: usize = 100;
    let s = Server::start();
    let mut c = s.conn();
    let mut last_fence = 0;
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let mut conn = s.conn();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let token = random_token();
                    barrier.wait();
                    let got = acquire(&mut conn, b"k", &token, 60_000);
                    (token, got)
                })
            })
            .collect();
        let results: Vec<(Vec<u8>, Option<i64>)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut tokens: Vec<&Vec<u8>> = results.iter().map(|(t, _)| t).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), CLIENTS, "tokens are distinct");

        let winners: Vec<&(Vec<u8>, Option<i64>)> =
            results.iter().filter(|(_, f)| f.is_some()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner");
        let (winner, fence) = winners[0];
        let fence = fence.unwrap();
        assert!(fence > last_fence, "round {round}: {fence} > {last_fence}");
        last_fence = fence;
        assert!(check(&mut c, b"k", winner) > 0);
        for (token, _) in results.iter().filter(|(t, _)| t != winner) {
            assert_eq!(check(&mut c, b"k", token), 0);
        }
        let st = lock_stats(&mut c);
        assert_eq!(st["acquired"], round + 1);
        assert_eq!(st["refused"], (round + 1) * (CLIENTS as u64 - 1));
        assert_eq!(release(&mut c, b"k", winner), 1);
    }
}

#[test]
fn contending_holders_are_exclusive_and_fences_increase() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 40;
    let s = Server::start();
    let in_section = Arc::new(AtomicBool::new(false));
    let last_fence = Arc::new(Mutex::new(0i64));
    let grants = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let mut conn = s.conn();
            let in_section = in_section.clone();
            let last_fence = last_fence.clone();
            let grants = grants.clone();
            thread::spawn(move || {
                let token = format!("worker-{i}").into_bytes();
                for _ in 0..ROUNDS {
                    let fence = loop {
                        if let Some(f) = acquire(&mut conn, b"k", &token, 60_000) {
                            break f;
                        }
                        thread::sleep(Duration::from_micros(300));
                    };
                    assert!(
                        !in_section.swap(true, Ordering::SeqCst),
                        "two holders at once"
                    );
                    {
                        let mut last = last_fence.lock().unwrap();
                        assert!(fence > *last, "fence {fence} after {}", *last);
                        *last = fence;
                    }
                    grants.fetch_add(1, Ordering::SeqCst);
                    assert!(check(&mut conn, b"k", &token) > 0);
                    assert_eq!(acquire(&mut conn, b"k", &token, 60_000), Some(fence));
                    in_section.store(false, Ordering::SeqCst);
                    assert_eq!(release(&mut conn, b"k", &token), 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(grants.load(Ordering::SeqCst), THREADS * ROUNDS);
    let mut c = s.conn();
    let st = lock_stats(&mut c);
    assert_eq!(st["acquired"], (THREADS * ROUNDS) as u64);
    assert_eq!(st["released"], (THREADS * ROUNDS) as u64);
    assert_eq!(st["renewed"], (THREADS * ROUNDS) as u64);
    assert!(!exists(&mut c, b"k"));
}
