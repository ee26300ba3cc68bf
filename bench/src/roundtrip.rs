//! Client round trips: uncontended lock + unlock cycles per second of each
//! client API against bsm/redis-lock's `SET NX PX` + `EVALSHA`, with PING
//! round trips as the ceiling. The contenders take turns in short time
//! slices, all connections switching together, so a disturbance of the
//! machine hits all alike.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redis_fenced_lock::{Locker, Options};

use crate::redis_io::{connect, flushall, script_load, DEL_SCRIPT};
use crate::report::{Report, Target, Unit};
use crate::stats::thousands;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    /// One PING round trip: the ceiling.
    Ping,
    /// The client crate's `Locker`: `lock()` + `unlock()`.
    Locker,
    // NEW CLIENT API (bsm/redislock-style obtain + release): add a variant
    // here, to `CONTENDERS`, and its cycle in `run_slice`; its column, its
    // rows in the summary (against `SetNxEvalsha`) and its label follow.
    /// bsm/redis-lock's way: `SET key token NX PX 5000`, then `EVALSHA` of its release script.
    SetNxEvalsha,
}

const CONTENDERS: [Contender; 3] = [Contender::Ping, Contender::Locker, Contender::SetNxEvalsha];

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Ping => "PING",
            Contender::Locker => "`Locker` lock + unlock",
            Contender::SetNxEvalsha => "`SET NX PX` + `EVALSHA`",
        }
    }
}

/// Cycles of `c` on `key` until `end`.
fn run_slice(c: Contender, conn: &mut Connection, key: &str, sha: &str, end: Instant) -> u64 {
    let mut n = 0;
    match c {
        Contender::Ping => {
            while Instant::now() < end {
                let _: Value = redis::cmd("PING").query(conn).expect("PING");
                n += 1;
            }
        }
        Contender::Locker => {
            let mut locker = Locker::new(&mut *conn, key, Options::default());
            while Instant::now() < end {
                assert!(locker.lock().expect("lock()"), "uncontended lock refused");
                locker.unlock().expect("unlock()");
                n += 1;
            }
        }
        Contender::SetNxEvalsha => {
            while Instant::now() < end {
                // bsm/redis-lock makes a fresh token per Obtain().
                let token = redis_fenced_lock::new_token("");
                let set: Value = redis::cmd("SET")
                    .arg(key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(5000)
                    .query(conn)
                    .expect("SET");
                assert_eq!(set, Value::Okay, "uncontended SET NX PX refused");
                let del: i64 = redis::cmd("EVALSHA")
                    .arg(sha)
                    .arg(1)
                    .arg(key)
                    .arg(&token)
                    .query(conn)
                    .expect("EVALSHA");
                assert_eq!(del, 1, "bsm/redis-lock's release missed");
                n += 1;
            }
        }
    }
    n
}

/// Operations per second of each contender over `conns` connections, each
/// on its own key; `per_kind` slices of 100 ms each, in an order that
/// rotates so that none always comes first.
fn rates(url: &str, conns: usize, per_kind: usize, sha: &str) -> Vec<f64> {
    let slice = Duration::from_millis(100);
    let k = CONTENDERS.len();
    let barrier = Barrier::new(conns);
    let start = Instant::now() + Duration::from_millis(200);
    let totals = thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut conn = connect(url);
                    let mut counts = vec![0; k];
                    barrier.wait();
                    thread::sleep(start.saturating_duration_since(Instant::now()));
                    for j in 0..k * per_kind {
                        let which = (j + j / k) % k;
                        let end = start + slice * (j as u32 + 1);
                        counts[which] +=
                            run_slice(CONTENDERS[which], &mut conn, &format!("rt:{i}"), sha, end);
                    }
                    counts
                })
            })
            .collect();
        let mut totals = vec![0u64; k];
        for h in handles {
            for (t, c) in totals.iter_mut().zip(h.join().expect("round-trip thread")) {
                *t += c;
            }
        }
        totals
    });
    let secs = slice.as_secs_f64() * per_kind as f64;
    totals.iter().map(|t| *t as f64 / secs).collect()
}

pub fn round_trips(report: &mut Report, url: &str, per_kind: usize) {
    let mut conn = connect(url);
    let sha = script_load(&mut conn, DEL_SCRIPT);
    let raw = CONTENDERS
        .iter()
        .position(|c| *c == Contender::SetNxEvalsha)
        .expect("raw");
    let mut header = vec!["connections".to_owned()];
    header.extend(CONTENDERS.iter().map(|c| format!("{}/s", c.label())));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut id = b'a';
    for conns in [1, 16] {
        let r = rates(url, conns, per_kind, &sha);
        let ceiling = r[0] / 2.0;
        let mut cells = vec![conns.to_string()];
        cells.extend(r.iter().enumerate().map(|(i, v)| match i {
            0 => thousands(*v as u64),
            _ => format!(
                "{} ({:.0}% of PING ÷ 2)",
                thousands(*v as u64),
                100.0 * v / ceiling
            ),
        }));
        eprintln!("  {conns} connection(s): {cells:?}");
        report.detail(
            "Client round trips: uncontended cycles per second",
            &header,
            cells,
        );
        for (i, c) in CONTENDERS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 0 && *i != raw)
        {
            let what = format!(
                "client: {} cycles/s ÷ {}, {conns} connection{}",
                c.label(),
                Contender::SetNxEvalsha.label(),
                if conns == 1 { "" } else { "s" }
            );
            report.figure(
                &format!("2{}", id as char),
                &what,
                Unit::Ratio,
                Some(Target::AtLeast(1.0)),
                r[i] / r[raw],
            );
            id += 1;
        }
    }
    flushall(&mut conn);
}
