//! Measurement 2: uncontended lock + unlock cycles per second over real
//! round trips: the client crate against bsm/redis-lock's SET NX PX + EVALSHA,
//! with PING round trips as the physical limit.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redis_fenced_lock::{Locker, Options};

use crate::report::{RatioBar, Report, Row, Section, Table, Target};
use crate::util::{self, thousands, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// One PING round trip.
    Ping,
    /// The client crate's `Locker::lock()` + `unlock()`.
    Client,
    /// The Go library's way: `SET key token NX PX 5000`, then `EVALSHA` compare-and-delete.
    GoLibrary,
}

const KINDS: [Kind; 3] = [Kind::Ping, Kind::Client, Kind::GoLibrary];

/// The kind measured in slice `k`: every three slices hold one of each
/// kind, in an order that rotates so none always comes first.
fn kind_of(k: usize) -> Kind {
    KINDS[(k + k / 3) % 3]
}

/// Operations per second of each kind (indexed by `Kind as usize`) over
/// `conns` connections, each on its own key. The kinds take turns in
/// `slice`-long time slices, `per_kind` each, all connections switching
/// together: a disturbance of the machine hits all kinds alike.
fn rates(url: &str, conns: usize, per_kind: usize, slice: Duration, sha: &str) -> [f64; 3] {
    let connections: Vec<Connection> = (0..conns).map(|_| util::connect(url)).collect();
    let barrier = Arc::new(Barrier::new(conns + 1));
    let start = Instant::now() + Duration::from_millis(100);
    let slices = 3 * per_kind;
    let mut handles = Vec::new();
    for (i, mut conn) in connections.into_iter().enumerate() {
        let barrier = Arc::clone(&barrier);
        let sha = sha.to_owned();
        handles.push(thread::spawn(move || {
            let key = format!("rt:{i}");
            let mut rng = Rng::from_time(i as u64);
            let mut counts = [0u64; 3];
            let ping = redis::cmd("PING");
            barrier.wait();
            thread::sleep(start.saturating_duration_since(Instant::now()));
            for k in 0..slices {
                let end = start + slice * (k as u32 + 1);
                let kind = kind_of(k);
                let count = &mut counts[kind as usize];
                match kind {
                    Kind::Ping => {
                        while Instant::now() < end {
                            let _: Value = ping.query(&mut conn).expect("PING");
                            *count += 1;
                        }
                    }
                    Kind::Client => {
                        let mut locker = Locker::new(&mut conn, key.as_str(), Options::default());
                        while Instant::now() < end {
                            assert!(locker.lock().expect("lock()"), "uncontended lock refused");
                            locker.unlock().expect("unlock()");
                            *count += 1;
                        }
                    }
                    Kind::GoLibrary => {
                        while Instant::now() < end {
                            // The Go library makes a fresh 16-byte token per Lock().
                            let token = rng.token();
                            let ok: Value = redis::cmd("SET")
                                .arg(&key)
                                .arg(&token)
                                .arg("NX")
                                .arg("PX")
                                .arg(5000)
                                .query(&mut conn)
                                .expect("SET NX PX");
                            assert_eq!(ok, Value::Okay, "uncontended SET NX refused");
                            let n: i64 = redis::cmd("EVALSHA")
                                .arg(&sha)
                                .arg(1)
                                .arg(&key)
                                .arg(&token)
                                .query(&mut conn)
                                .expect("EVALSHA");
                            assert_eq!(n, 1, "bsm/redis-lock release failed");
                            *count += 1;
                        }
                    }
                }
            }
            counts
        }));
    }
    barrier.wait();
    let mut total = [0u64; 3];
    for h in handles {
        let c = h.join().expect("round-trip thread");
        for (t, c) in total.iter_mut().zip(c) {
            *t += c;
        }
    }
    let secs = slice.as_secs_f64() * per_kind as f64;
    total.map(|t| t as f64 / secs)
}

/// Runs measurement 2 with 1 and with 16 connections.
pub fn round_trips(report: &mut Report, url: &str, per_kind: usize, slice: Duration) {
    let mut conn = util::connect(url);
    let sha = util::script_load(&mut conn, util::DEL_SCRIPT);
    let mut table = Table::new(&[
        "connections",
        "PING round trips/s",
        "ceiling: cycles/s (PING ÷ 2)",
        "client crate cycles/s",
        "bsm/redis-lock SET NX PX + EVALSHA cycles/s",
        "ratio client ÷ bsm/redis-lock",
    ]);
    for (row, conns) in [1usize, 16].into_iter().enumerate() {
        let [p, c, s] = rates(url, conns, per_kind, slice, &sha);
        let ratio = c / s;
        eprintln!(
            "  {conns} connection(s): PING {p:.0}/s, client {c:.0}/s, bsm/redis-lock {s:.0}/s"
        );
        let ceiling = p / 2.0;
        let of = |v: f64| {
            format!(
                "{} ({:.0}% of ceiling)",
                thousands(v as u64),
                100.0 * v / ceiling
            )
        };
        table.push(vec![
            conns.to_string(),
            thousands(p as u64),
            thousands(ceiling as u64),
            of(c),
            of(s),
            format!("{ratio:.2}×"),
        ]);
        report.rows.push(Row {
            id: format!("2{}", ['a', 'b'][row]),
            what: format!(
                "lock + unlock cycles/s, {conns} connection{}, client crate vs bsm/redis-lock (ceiling {}/s)",
                if conns == 1 { "" } else { "s" },
                thousands(ceiling as u64)
            ),
            module: format!("{}/s ({:.0}%)", thousands(c as u64), 100.0 * c / ceiling),
            baseline: format!("{}/s ({:.0}%)", thousands(s as u64), 100.0 * s / ceiling),
            value: ratio,
            unit: "×",
            target: Some(Target::at_least(1.0)),
            skipped: None,
        });
        report.ratio_bars.push(RatioBar::new(
            format!("lock+unlock, {conns} conn: client ÷ bsm/redis-lock"),
            1.0 / ratio,
            1.0,
        ));
    }
    util::flushall(&mut conn);
    report.sections.push(Section {
        title: "2. Client round trips (uncontended lock + unlock)".into(),
        method: format!(
            "One key per connection, blocking redis-rs connections, one thread each. Client crate: \
             `Locker::new(conn, key, Options::default())`, then `lock()` + `unlock()` in a loop \
             (LOCK.ACQUIRE + LOCK.RELEASE). bsm/redis-lock: a fresh 24-char token, `SET key token NX PX 5000`, then \
             `EVALSHA` of bsm/redis-lock's compare-and-delete script. Both need two round trips per cycle, so the \
             ceiling is PING round trips ÷ 2. PING, client and bsm/redis-lock take turns in {slice:?} slices, all \
             connections switching together, {per_kind} slices each ({:?} per figure), so a disturbance of the \
             machine hits all three alike.",
            slice * per_kind as u32
        ),
        table,
    });
}
