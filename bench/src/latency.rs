//! Acquisition latency as one client sees it: a round trip per sample,
//! p50 and p99. The plain single-server acquisition is the reference for
//! the rows to come (replica-acknowledged, 5-server Redlock); adding one is
//! `time_each` over its acquisition plus a `report.latency` call, see
//! bench/README.md.

use redis::Value;

use crate::redis_io::{connect, flushall, take};
use crate::report::Report;
use crate::stats::time_each;

pub fn acquisition(report: &mut Report, url: &str, samples: usize) {
    let mut conn = connect(url);
    let mut i = 0;
    let plain = time_each(samples, || {
        i += 1;
        let token = redis_fenced_lock::new_token("");
        match take(true, &format!("lat:{i}"), &token, 10_000).query(&mut conn) {
            Ok(Value::Int(_)) => Ok(()),
            other => Err(format!("LOCK.ACQUIRE answered {other:?}")),
        }
    });
    if let Err(e) = &plain {
        report.note(format!("acquisition latency: {e}"));
    }
    report.latency(
        ["3a", "3b"],
        "latency: uncontended LOCK.ACQUIRE round trip",
        [None, None],
        plain.ok(),
    );
    flushall(&mut conn);
}
