//! Measurement 2: uncontended lock + unlock cycles per second over real
//! round trips: the client crate against the seed's SET NX PX + EVALSHA,
//! with PING round trips as the physical limit.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redis_lock::{Locker, Options};

use crate::report::{RatioBar, Report, Row, Section, Table, Target};
use crate::util::{self, median, thousands, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// One PING round trip.
    Ping,
    /// The client crate's `Locker::lock()` + `unlock()`.
    Client,
    /// The seed's way: `SET key token NX PX 5000`, then `EVALSHA` compare-and-delete.
    Seed,
}

/// Operations per second over `conns` connections, each on its own key.
fn rate(url: &str, kind: Kind, conns: usize, dur: Duration, sha: &str) -> f64 {
    let connections: Vec<Connection> = (0..conns).map(|_| util::connect(url)).collect();
    let barrier = Arc::new(Barrier::new(conns + 1));
    let mut handles = Vec::new();
    for (i, conn) in connections.into_iter().enumerate() {
        let barrier = Arc::clone(&barrier);
        let sha = sha.to_owned();
        handles.push(thread::spawn(move || {
            let key = format!("rt:{i}");
            barrier.wait();
            let end = Instant::now() + dur;
            let mut count = 0u64;
            match kind {
                Kind::Ping => {
                    let mut conn = conn;
                    let ping = redis::cmd("PING");
                    while Instant::now() < end {
                        let _: Value = ping.query(&mut conn).expect("PING");
                        count += 1;
                    }
                }
                Kind::Client => {
                    let mut locker = Locker::new(conn, key, Options::default());
                    while Instant::now() < end {
                        assert!(locker.lock().expect("lock()"), "uncontended lock refused");
                        locker.unlock().expect("unlock()");
                        count += 1;
                    }
                }
                Kind::Seed => {
                    let mut conn = conn;
                    let mut rng = Rng::from_time(i as u64);
                    while Instant::now() < end {
                        // The seed makes a fresh 16-byte token per Lock().
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
                        assert_eq!(n, 1, "seed release failed");
                        count += 1;
                    }
                }
            }
            count
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let total: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("round-trip thread"))
        .sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// Runs measurement 2: `rounds` rounds, each measuring every kind with 1 and
/// with 16 connections for `dur`, interleaved.
pub fn round_trips(report: &mut Report, url: &str, rounds: usize, dur: Duration) {
    let mut conn = util::connect(url);
    let sha = util::script_load(&mut conn, util::DEL_SCRIPT);
    let mut table = Table::new(&[
        "connections",
        "PING round trips/s",
        "ceiling: cycles/s (PING ÷ 2)",
        "client crate cycles/s",
        "seed SET NX PX + EVALSHA cycles/s",
        "ratio client ÷ seed",
    ]);
    for (row, conns) in [1usize, 16].into_iter().enumerate() {
        let mut ping = Vec::new();
        let mut client = Vec::new();
        let mut seed = Vec::new();
        let mut ratios = Vec::new();
        for round in 0..rounds {
            // Alternate the order so neither side always runs first.
            let order = if round % 2 == 0 {
                [Kind::Ping, Kind::Client, Kind::Seed]
            } else {
                [Kind::Seed, Kind::Client, Kind::Ping]
            };
            let mut got = [0.0f64; 3];
            for kind in order {
                let r = rate(url, kind, conns, dur, &sha);
                got[kind as usize] = r;
            }
            eprintln!(
                "  {conns} conn(s) round {}: PING {:.0}/s, client {:.0}/s, seed {:.0}/s",
                round + 1,
                got[0],
                got[1],
                got[2]
            );
            ping.push(got[0]);
            client.push(got[1]);
            seed.push(got[2]);
            ratios.push(got[1] / got[2]);
        }
        let (p, c, s, ratio) = (
            median(&ping),
            median(&client),
            median(&seed),
            median(&ratios),
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
                "lock + unlock cycles/s, {conns} connection{}, client crate vs seed (ceiling {}/s)",
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
        report.ratio_bars.push(RatioBar {
            label: format!("lock+unlock time, {conns} conn: client ÷ seed"),
            value: 1.0 / ratio,
            target: 1.0,
        });
    }
    util::flushall(&mut conn);
    report.sections.push(Section {
        title: "2. Client round trips (uncontended lock + unlock)".into(),
        method: format!(
            "One key per connection, blocking redis-rs connections, one thread each. Client crate: \
             `Locker::new(conn, key, Options::default())`, then `lock()` + `unlock()` in a loop \
             (LOCK.ACQUIRE + LOCK.RELEASE). Seed: a fresh 24-char token, `SET key token NX PX 5000`, then \
             `EVALSHA` of the seed's compare-and-delete script. Both need two round trips per cycle, so the \
             ceiling is PING round trips ÷ 2. {dur:?} per figure, {rounds} interleaved rounds, medians."
        ),
        table,
    });
}
