//! Memory of a held lock against a `SET NX PX` key with the same token.

use std::thread;
use std::time::Duration;

use redis::Connection;

use crate::redis_io::{connect, flushall, info, pipelined, take, TOKEN};
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
    let keys: u64 = redis::cmd("DBSIZE").query(conn).expect("DBSIZE");
    assert_eq!(keys, n, "keys loaded");
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
    let (lock_key, set_key) = (lock_growth / n as f64, set_growth / n as f64);
    let title = format!(
        "Memory, bytes (24-character tokens; used_memory per key of {})",
        thousands(n)
    );
    let row = format!("{lock} | {set} | {lock_key:.1} | {set_key:.1}");
    report.detail(
        &title,
        "MEMORY USAGE: lock | SET NX PX key | used_memory: lock | SET NX PX key",
        row,
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
        "memory: `used_memory` per key, {} locks − as many `SET NX PX` keys",
        thousands(n)
    );
    report.figure(
        "6b",
        &what,
        Unit::Bytes,
        Some(Target::AtMost(16.0)),
        lock_key - set_key,
    );
}
