//! Client round trips: uncontended lock + unlock cycles per second of each
//! client API against bsm/redis-lock's `SET NX PX` + `EVALSHA`, with PING
//! round trips as the ceiling. The contenders take turns in short time
//! slices, all connections switching together, so a disturbance of the
//! machine hits all alike.

use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redis_fenced_lock::{LockClient, Locker, ObtainOptions, Options};
use tokio::runtime::Runtime;

use crate::redis_io::{connect, flushall, take, RELEASE};
use crate::report::{Report, Target, Unit};
use crate::stats::thousands;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    /// One PING round trip: the ceiling.
    Ping,
    /// The client crate's `Locker`: `lock()` + `unlock()`.
    Locker,
    /// The client crate's bsm/redislock-style API: `LockClient::obtain()` +
    /// `Lock::release()`, async over a `MultiplexedConnection`.
    LockClient,
    /// bsm/redis-lock's way: `SET key token NX PX 5000`, then `EVALSHA` of its release script.
    SetNxEvalsha,
}

const TITLE: &str = "Client round trips: uncontended cycles per second (% of PING ÷ 2)";

const CONTENDERS: [Contender; 4] = [
    Contender::Ping,
    Contender::Locker,
    Contender::LockClient,
    Contender::SetNxEvalsha,
];

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::Ping => "PING",
            Contender::Locker => "`Locker` lock + unlock",
            Contender::LockClient => "`LockClient` obtain + release",
            Contender::SetNxEvalsha => "`SET NX PX` + `EVALSHA`",
        }
    }
}

/// The async API's client and the runtime that drives it, one per thread.
struct AsyncSide {
    rt: Runtime,
    locks: LockClient,
}

impl AsyncSide {
    fn new(url: &str) -> AsyncSide {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let conn = rt
            .block_on(async {
                redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await
            })
            .expect("async connection");
        AsyncSide {
            rt,
            locks: LockClient::new(conn),
        }
    }

    fn cycle(&self, key: &str) {
        self.rt.block_on(async {
            let lock = self
                .locks
                .obtain(key, Duration::from_secs(5), &ObtainOptions::new())
                .await
                .expect("uncontended obtain()");
            lock.release().await.expect("release()");
        });
    }
}

/// Cycles of `c` on `key` until `end`.
fn run_slice(
    c: Contender,
    conn: &mut Connection,
    side: &AsyncSide,
    key: &str,
    end: Instant,
) -> u64 {
    let mut locker = Locker::new(conn, key, Options::default());
    let mut n = 0;
    while Instant::now() < end {
        match c {
            Contender::Ping => redis::cmd("PING")
                .query::<Value>(locker.get_mut())
                .map(drop)
                .expect("PING"),
            Contender::Locker => {
                assert!(locker.lock().expect("lock()"), "uncontended lock refused");
                locker.unlock().expect("unlock()");
            }
            Contender::LockClient => side.cycle(key),
            Contender::SetNxEvalsha => {
                // bsm/redis-lock makes a fresh token per Obtain().
                let (token, conn) = (redis_fenced_lock::new_token(""), locker.get_mut());
                let set: Value = take(false, key, &token, 5000)
                    .query(conn)
                    .expect("SET NX PX");
                let released: i64 = RELEASE.key(key).arg(&token).invoke(conn).expect("EVALSHA");
                assert!(
                    set == Value::Okay && released == 1,
                    "uncontended: {set:?}, {released}"
                );
            }
        }
        n += 1;
    }
    n
}

/// Cycles per second of each contender over `conns` connections, each on
/// its own key; `per_kind` slices of 100 ms each, in an order that rotates
/// so that none always comes first.
fn rates(url: &str, conns: usize, per_kind: usize) -> Vec<f64> {
    let (k, slice) = (CONTENDERS.len(), Duration::from_millis(100));
    let start = Instant::now() + Duration::from_millis(300);
    let mut totals = vec![0u64; k];
    thread::scope(|s| {
        let per_connection = |i: usize| {
            let mut conn = connect(url);
            let side = AsyncSide::new(url);
            thread::sleep(start.saturating_duration_since(Instant::now()));
            let mut counts = vec![0; k];
            for j in 0..k * per_kind {
                let (which, end) = ((j + j / k) % k, start + slice * (j as u32 + 1));
                let key = format!("rt:{i}");
                counts[which] += run_slice(CONTENDERS[which], &mut conn, &side, &key, end);
            }
            counts
        };
        let handles: Vec<_> = (0..conns)
            .map(|i| s.spawn(move || per_connection(i)))
            .collect();
        for h in handles {
            totals
                .iter_mut()
                .zip(h.join().expect("a client thread"))
                .for_each(|(t, c)| *t += c);
        }
    });
    totals
        .iter()
        .map(|t| *t as f64 / (slice.as_secs_f64() * per_kind as f64))
        .collect()
}

pub fn round_trips(report: &mut Report, url: &str, per_kind: usize) {
    let mut conn = connect(url);
    let raw = CONTENDERS
        .iter()
        .position(|c| *c == Contender::SetNxEvalsha)
        .expect("raw");
    let labels: Vec<String> = CONTENDERS
        .iter()
        .map(|c| format!("{}/s", c.label()))
        .collect();
    let header = format!("connections | {}", labels.join(" | "));
    let mut id = b'a';
    for conns in [1, 16] {
        let r = rates(url, conns, per_kind);
        // Two round trips per cycle: PING ÷ 2 is the ceiling.
        let of_ceiling = |v: f64| format!("{} ({:.0}%)", thousands(v as u64), 200.0 * v / r[0]);
        let mut cells: Vec<String> = r.iter().map(|v| of_ceiling(*v)).collect();
        cells[0] = thousands(r[0] as u64);
        report.detail(TITLE, &header, format!("{conns} | {}", cells.join(" | ")));
        for (i, c) in CONTENDERS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 0 && *i != raw)
        {
            let s = if conns == 1 { "" } else { "s" };
            let what = format!(
                "client: {} cycles/s ÷ {}, {conns} connection{s}",
                c.label(),
                Contender::SetNxEvalsha.label()
            );
            report.figure(
                &format!("2{}", id as char),
                &what,
                Unit::Ratio,
                // The async API also pays for its runtime and the
                // multiplexer, which the blocking baseline does not: no target.
                (*c == Contender::Locker).then_some(Target::AtLeast(1.0)),
                r[i] / r[raw],
            );
            id += 1;
        }
    }
    flushall(&mut conn);
}
