//! bsm/redis-lock's example, ported line for line.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --example basic
//! ```
//!
//! Against a server with the lock module it prints
//!
//! ```text
//! I have a lock!
//! My lock has expired!
//! I have renewed my lock!
//! ```
//!
//! and leaves no key behind. The second line is the Go example's own quirk,
//! kept so that the output matches: it is printed while the lock is still
//! held (see the comment where it is printed).

use std::thread;
use std::time::Duration;

use redis_fenced_lock::{Error, Locker, Options};

fn main() {
    // Connect to Redis
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let client = redis::Client::open(url).expect("a valid REDIS_URL");
    let conn = client.get_connection().expect("connect to Redis");

    // Create a new locker with default settings
    let mut locker = Locker::new(conn, "lock.foo", Options::default());

    // Try to obtain lock; the guard is Rust's `defer locker.Unlock()`:
    // it releases the lock when it goes out of scope.
    let mut locker = match locker.guard() {
        Ok(guard) => guard,
        Err(Error::NotObtained) => {
            println!("could not obtain lock!");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    println!("I have a lock!");

    // Sleep and check if still locked afterwards.
    thread::sleep(Duration::from_millis(200));
    if locker.is_locked() {
        // The message is bsm/redis-lock's, kept word for word, but it is
        // printed when the lock is still held (200 ms into a 5 s lock): the
        // Go example tests IsLocked() and prints the opposite. A real
        // program would ask the server: `locker.ttl()?` is None once expired.
        println!("My lock has expired!");
    }

    // Renew your lock
    match locker.lock() {
        Err(e) => panic!("{e}"),
        Ok(false) => {
            println!("could not renew lock!");
            return;
        }
        Ok(true) => {}
    }
    println!("I have renewed my lock!");
}
