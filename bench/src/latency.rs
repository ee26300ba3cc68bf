//! Acquisition latency as one client sees it: a round trip per sample,
//! p50 and p99: a plain single-server acquisition (3a/3b), one
//! acknowledged by a replica through the client's `ReplicaAck` (3c/3d), and
//! a 5-server Redlock acquisition (3e/3f). Adding one is `time_each` over its
//! acquisition plus a `report.latency` call, see bench/README.md.

use std::time::Duration;

use redis::Value;
use redis_fenced_lock::{Locker, Options, Redlock, RedlockOptions, ReplicaAck};
use testkit::{Config, Server};

use crate::redis_io::{connect, flushall, take};
use crate::report::Report;
use crate::stats::{time_each, Latency};

pub fn acquisition(report: &mut Report, url: &str, port: u16, samples: usize) {
    let mut conn = connect(url);
    let mut i = 0;
    let mut row = |ids, what, l: Result<Latency, String>| {
        let l = l.map_err(|e| report.note(format!("acquisition latency: {e}")));
        report.latency(ids, &format!("latency: {what}"), [None, None], l.ok());
    };
    let plain = time_each(samples, || {
        i += 1;
        let token = redis_fenced_lock::new_token("");
        match take(true, &format!("lat:{i}"), &token, 10_000).query(&mut conn) {
            Ok(Value::Int(_)) => Ok(()),
            other => Err(format!("LOCK.ACQUIRE answered {other:?}")),
        }
    });
    row(["3a", "3b"], "uncontended LOCK.ACQUIRE round trip", plain);

    // Replica-acknowledged: the crate's Locker with `ReplicaAck`, which
    // pipelines WAIT 1 1000 after LOCK.ACQUIRE, against a replica of this server.
    let replica = Server::with(Config::default().arg("replicaof", &format!("127.0.0.1 {port}")));
    testkit::wait_for(
        Duration::from_secs(60),
        "the replica to acknowledge",
        || {
            let n: i64 = redis::cmd("WAIT").arg((1, 1000)).query(&mut conn).ok()?;
            (n == 1).then_some(())
        },
    );
    let options = Options {
        lock_timeout: Duration::from_secs(10),
        replica_ack: Some(ReplicaAck::replicas(1, Duration::from_secs(1))),
        ..Options::default()
    };
    let acked = time_each(samples, || {
        i += 1;
        match Locker::new(&mut conn, format!("lat:{i}"), options.clone()).lock() {
            Ok(true) => Ok(()),
            other => Err(format!("acknowledged acquisition: {other:?}")),
        }
    });
    let what = "acquisition + WAIT 1 (one replica, client's ReplicaAck)";
    row(["3c", "3d"], what, acked);
    drop(replica);

    // Redlock over five servers started here (the module, no persistence).
    let servers: Vec<Server> = (0..5).map(|_| Server::start()).collect();
    let redlock = Redlock::new(servers.iter().map(Server::url)).expect("redlock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (ttl, none) = (Duration::from_secs(10), RedlockOptions::new());
    let five = time_each(samples, || {
        i += 1;
        let obtained = rt.block_on(redlock.obtain(format!("lat:{i}"), ttl, &none));
        obtained.map(drop).map_err(|e| e.to_string())
    });
    let what = "5-server Redlock acquisition (redis_fenced_lock::Redlock)";
    row(["3e", "3f"], what, five);
    flushall(&mut conn);
}
