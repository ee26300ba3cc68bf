//! Memory of a held lock against a `SET NX PX` key with the same token.

use std::thread;
use std::time::Duration;

use redis::Connection;

use crate::redis_io::{connect, flushall, info, pipelined, take, TOKEN};
use crate::report::{Report, Target, Unit};
use crate::stats::thousands;

/// TTL of the bulk-loaded locks: they must outlive the scale measurement.
const BULK_TTL_MS: u64 = 900_000;

fn used_memory(conn: &mut Connection) -> f64 {
    // Let clientsCron shrink the loader's buffers first.
    thread::sleep(Duration::from_millis(300));
    info(conn, "memory")["used_memory"]
        .parse()
        .expect("used_memory")
}

/// `used_memory` growth per key from `n` keys `lock:{i}`, each with its own
/// token, loaded over a connection that is closed before memory is read.
fn growth_per_key(url: &str, module: bool, n: u64) -> f64 {
    let conn = &mut connect(url);
    let before = used_memory(conn);
    let keys = (0..n).map(|i| (format!("lock:{i}"), redis_fenced_lock::new_token("")));
    pipelined(
        &mut connect(url),
        keys.map(|(k, t)| take(module, &k, &t, BULK_TTL_MS)),
    );
    let keys: u64 = redis::cmd("DBSIZE").query(conn).expect("DBSIZE");
    assert_eq!(keys, n, "keys loaded");
    (used_memory(conn) - before) / n as f64
}

/// Leaves `n` held locks on `big` for the scale measurement; `small` ends empty.
pub fn memory(report: &mut Report, big_url: &str, small_url: &str, n: u64) {
    let small = &mut connect(small_url);
    let mut usage = |module: bool| {
        let key = format!("mem:{module}");
        let _: redis::Value = take(module, &key, TOKEN, 60_000)
            .query(small)
            .expect("take");
        let usage = redis::cmd("MEMORY")
            .arg(("USAGE", &key, "SAMPLES", 0))
            .query(small);
        usage.expect("MEMORY USAGE")
    };
    let (lock, set): (f64, f64) = (usage(true), usage(false));
    flushall(small);
    let lock_key = growth_per_key(big_url, true, n);
    let set_key = growth_per_key(small_url, false, n);
    flushall(small);
    let n = thousands(n);
    report.detail(
        &format!("Memory, bytes (24-character tokens; used_memory per key of {n})"),
        "MEMORY USAGE: lock | SET NX PX key | used_memory: lock | SET NX PX key",
        format!("{lock} | {set} | {lock_key:.1} | {set_key:.1}"),
    );
    let what = "memory: `MEMORY USAGE` of a held lock − a `SET NX PX` key, same token";
    report.figure(
        "6a",
        what,
        Unit::Bytes,
        Some(Target::AtMost(16.0)),
        lock - set,
    );
    let what = format!("memory: `used_memory` per key, {n} locks − as many `SET NX PX` keys");
    let growth = lock_key - set_key;
    report.figure("6b", &what, Unit::Bytes, Some(Target::AtMost(16.0)), growth);
}
