//! Measurement 5: memory of a held lock against a plain `SET NX PX` key.

use std::thread;
use std::time::Duration;

use redis::Connection;

use crate::report::{RatioBar, Report, Row, Section, Table, Target};
use crate::util::{self, info_u64, thousands, Rng, FIXED_TOKEN};

/// TTL of the bulk-loaded locks: they must outlive measurement 6.
pub const BULK_TTL_MS: u64 = 900_000;

fn memory_usage(conn: &mut Connection, key: &str) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query(conn)
        .expect("MEMORY USAGE")
}

fn used_memory(conn: &mut Connection) -> u64 {
    // Let clientsCron shrink the loader's buffers first.
    thread::sleep(Duration::from_millis(300));
    info_u64(conn, "memory", "used_memory")
}

/// `n` keys `lock:{i}` with distinct tokens shaped like bsm/redis-lock's (same on both sides),
/// over a connection of its own that is closed before memory is read.
fn bulk_load(url: &str, n: u64, module: bool) {
    let mut conn = util::connect(url);
    let mut rng = Rng::new(42);
    util::pipelined(
        &mut conn,
        (0..n).map(|i| {
            let key = format!("lock:{i}");
            let token = rng.token();
            if module {
                let mut c = redis::cmd("LOCK.ACQUIRE");
                c.arg(key).arg(token).arg(BULK_TTL_MS);
                c
            } else {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(token).arg("NX").arg("PX").arg(BULK_TTL_MS);
                c
            }
        }),
        10_000,
    );
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Loads `n` held locks on `big` (they stay for measurement 6) and `n` plain
/// `SET NX PX` keys on `small` (flushed afterwards).
pub fn memory(report: &mut Report, big_url: &str, small_url: &str, n: u64) {
    let mut small = util::connect(small_url);
    let mut big = util::connect(big_url);

    // One key each, same token, same key length.
    let r: i64 = redis::cmd("LOCK.ACQUIRE")
        .arg("mem:lock:1")
        .arg(FIXED_TOKEN)
        .arg(60_000)
        .query(&mut small)
        .expect("LOCK.ACQUIRE");
    assert!(r > 0);
    let _: () = redis::cmd("SET")
        .arg("mem:setnx:1")
        .arg(FIXED_TOKEN)
        .arg("NX")
        .arg("PX")
        .arg(60_000)
        .query(&mut small)
        .expect("SET");
    let lock_bytes = memory_usage(&mut small, "mem:lock:1");
    let setnx_bytes = memory_usage(&mut small, "mem:setnx:1");
    util::flushall(&mut small);
    let one_ratio = lock_bytes as f64 / setnx_bytes as f64;

    // A million of each.
    let big0 = used_memory(&mut big);
    bulk_load(big_url, n, true);
    let big1 = used_memory(&mut big);
    let small0 = used_memory(&mut small);
    bulk_load(small_url, n, false);
    let small1 = used_memory(&mut small);
    assert_eq!(util::dbsize(&mut big), n, "locks loaded");
    assert_eq!(util::dbsize(&mut small), n, "keys loaded");
    util::flushall(&mut small);
    let lock_total = big1.saturating_sub(big0);
    let setnx_total = small1.saturating_sub(small0);
    let bulk_ratio = lock_total as f64 / setnx_total as f64;
    eprintln!(
        "  MEMORY USAGE {lock_bytes} vs {setnx_bytes} B; {n} keys: {} vs {}",
        mb(lock_total),
        mb(setnx_total)
    );

    report.rows.push(Row {
        id: "5a".into(),
        what: "MEMORY USAGE of a held lock vs a SET NX PX key, same token".into(),
        module: format!("{lock_bytes} B"),
        baseline: format!("{setnx_bytes} B"),
        value: one_ratio,
        unit: "×",
        target: Some(Target::at_most(1.25)),
        skipped: None,
    });
    report.rows.push(Row {
        id: "5b".into(),
        what: format!("used_memory growth with {} held locks", thousands(n)),
        module: format!("{} ({} B/lock)", mb(lock_total), lock_total / n.max(1)),
        baseline: format!("{} ({} B/key)", mb(setnx_total), setnx_total / n.max(1)),
        value: bulk_ratio,
        unit: "×",
        target: None,
        skipped: None,
    });
    report.ratio_bars.push(RatioBar::new(
        "MEMORY USAGE: lock ÷ SET NX PX key",
        one_ratio,
        1.25,
    ));
    let mut table = Table::new(&["figure", "module lock", "SET NX PX key", "ratio"]);
    table.push(vec![
        "MEMORY USAGE (one key, 24-char token)".into(),
        format!("{lock_bytes} B"),
        format!("{setnx_bytes} B"),
        format!("{one_ratio:.2}×"),
    ]);
    table.push(vec![
        format!("used_memory growth, {} keys", thousands(n)),
        mb(lock_total),
        mb(setnx_total),
        format!("{bulk_ratio:.2}×"),
    ]);
    table.push(vec![
        "per key".into(),
        format!("{} B", lock_total / n.max(1)),
        format!("{} B", setnx_total / n.max(1)),
        String::new(),
    ]);
    report.sections.push(Section {
        title: "5. Memory".into(),
        method: format!(
            "`MEMORY USAGE key SAMPLES 0` of `mem:lock:1` (LOCK.ACQUIRE) and `mem:setnx:1` (SET NX PX), both \
             with the same 24-character token. Then {} keys `lock:<i>` with distinct 24-character tokens are \
             loaded (pipelined, 10,000 per batch) on two fresh servers, one as held locks, one as `SET NX PX` \
             keys, and `used_memory` is read before and after (after the loader disconnected).",
            thousands(n)
        ),
        table,
    });
}
