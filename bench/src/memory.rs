//! Memory of a held lock against a `SET NX PX` key with the same token.

use std::thread;
use std::time::Duration;

use redis::Connection;

use crate::redis_io::{connect, dbsize, flushall, info, pipelined, take, TOKEN};
use crate::report::{Report, Target, Unit};
use crate::stats::thousands;

/// TTL of the bulk-loaded locks: they must outlive the scale measurement.
const BULK_TTL_MS: u64 = 900_000;

fn memory_usage(conn: &mut Connection, key: &str) -> f64 {
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(conn)
        .expect("MEMORY USAGE");
    bytes as f64
}

fn used_memory(conn: &mut Connection) -> f64 {
    // Let clientsCron shrink the loader's buffers first.
    thread::sleep(Duration::from_millis(300));
    info(conn, "memory")["used_memory"]
        .parse()
        .expect("used_memory")
}

/// `used_memory` growth from `n` keys `lock:{i}`, each with its own token,
/// loaded over a connection that is closed before memory is read.
fn growth(conn: &mut Connection, url: &str, module: bool, n: u64) -> f64 {
    let before = used_memory(conn);
    let mut loader = connect(url);
    pipelined(
        &mut loader,
        (0..n).map(|i| {
            take(
                module,
                &format!("lock:{i}"),
                &redis_fenced_lock::new_token(""),
                BULK_TTL_MS,
            )
        }),
    );
    drop(loader);
    assert_eq!(dbsize(conn), n, "keys loaded");
    used_memory(conn) - before
}

/// Leaves `n` held locks on `big` for the scale measurement; `small` ends empty.
pub fn memory(report: &mut Report, big_url: &str, small_url: &str, n: u64) {
    let (mut big, mut small) = (connect(big_url), connect(small_url));
    let _: redis::Value = take(true, "mem:lock", TOKEN, 60_000)
        .query(&mut small)
        .expect("LOCK.ACQUIRE");
    let _: redis::Value = take(false, "mem:setk", TOKEN, 60_000)
        .query(&mut small)
        .expect("SET");
    let (lock, set) = (
        memory_usage(&mut small, "mem:lock"),
        memory_usage(&mut small, "mem:setk"),
    );
    flushall(&mut small);
    let lock_growth = growth(&mut big, big_url, true, n);
    let set_growth = growth(&mut small, small_url, false, n);
    flushall(&mut small);
    let per_key = |g: f64| g / n as f64;
    eprintln!("  MEMORY USAGE {lock} vs {set} B; {n} keys: {lock_growth} vs {set_growth} B");
    let header = [
        "MEMORY USAGE: lock",
        "SET NX PX key",
        "used_memory per key: lock",
        "SET NX PX key",
    ];
    let cells = [lock, set, per_key(lock_growth), per_key(set_growth)].map(|b| format!("{b:.0} B"));
    report.detail(
        &format!("Memory (24-character tokens; {} keys)", thousands(n)),
        &header,
        cells.to_vec(),
    );
    let what = "memory: `MEMORY USAGE` of a held lock − a `SET NX PX` key, same token";
    report.figure(
        "6a",
        what,
        Unit::Bytes,
        Some(Target::AtMost(16.0)),
        lock - set,
    );
    let what = format!(
        "memory: `used_memory` growth per key with {} locks − with as many `SET NX PX` keys",
        thousands(n)
    );
    report.figure(
        "6b",
        &what,
        Unit::Bytes,
        Some(Target::AtMost(16.0)),
        per_key(lock_growth - set_growth),
    );
}
