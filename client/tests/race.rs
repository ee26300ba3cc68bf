//! The Go library's fuzzing test: 1000 lockers racing for one key, each with a
//! short retry window; exactly one wins. Through threads (sync locker) and
//! tasks (async locker).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use rand::Rng;
use redis_fenced_lock::{AsyncLocker, Locker, Options};
use testkit::Server;

const KEY: &str = "__redis_lock_race__";
const LOCKERS: usize = 1000;

/// Long enough that the winner's lock outlives every other try.
fn race_options() -> Options {
    Options {
        lock_timeout: Duration::from_secs(10),
        ..go_library_options()
    }
}

#[test]
fn thousand_threads_one_winner() {
    let server = Server::start();
    let conns: Vec<_> = (0..LOCKERS).map(|_| server.conn()).collect();
    let wins = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(LOCKERS));
    let threads: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (wins, errors, start) = (wins.clone(), errors.clone(), start.clone());
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut locker = Locker::new(conn, KEY, race_options());
                    start.wait();
                    let pause = rand::rng().random_range(0..50);
                    thread::sleep(Duration::from_millis(pause));
                    match locker.lock() {
                        Ok(true) => {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
                .expect("spawn")
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(errors.load(Ordering::SeqCst), 0);
    assert_eq!(wins.load(Ordering::SeqCst), 1);
}

#[test]
fn thousand_tasks_one_winner() {
    let server = Server::start();
    let client = server.client();
    let wins = rt().block_on(async {
        let mut conns = Vec::with_capacity(LOCKERS);
        for _ in 0..LOCKERS {
            conns.push(client.get_multiplexed_async_connection().await.unwrap());
        }
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                tokio::spawn(async move {
                    let mut locker = AsyncLocker::new(conn, KEY, race_options());
                    let pause = rand::rng().random_range(0..50);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    locker.lock().await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await.unwrap().expect("no error") {
                wins += 1;
            }
        }
        wins
    });
    assert_eq!(wins, 1);
}
