//! Client round trips: uncontended lock + unlock cycles per second of each
//! client API against bsm/redis-lock's `SET NX PX` + `EVALSHA`, with PING
//! round trips as the ceiling. The contenders take turns in short time
//! slices, all connections switching together, so a disturbance of the
//! machine hits all alike.

use std::thread;
use std::time::{Duration, Instant};

use redis::Value;
use redis_fenced_lock::{LockClient, Locker, ObtainOptions, Options};

use crate::redis_io::{connect, flushall, take, RELEASE};
use crate::report::{Report, Target, Unit};
use crate::stats::thousands;

/// The contenders, in the order of the table's columns.
#[derive(Clone, Copy)]
enum Contender {
    /// One PING round trip: the ceiling.
    Ping,
    /// The client crate's `Locker`: `lock()` + `unlock()`.
    CrateLocker,
    /// The crate's bsm/redislock-style API: `LockClient::obtain()` +
    /// `Lock::release()`, async over a `MultiplexedConnection`.
    CrateLockClient,
    /// bsm/redis-lock's way: `SET key token NX PX 5000`, then `EVALSHA` of its release script.
    Baseline,
}

use Contender::*;

const CONTENDERS: [Contender; 4] = [Ping, CrateLocker, CrateLockClient, Baseline];
const SLICE: Duration = Duration::from_millis(100);

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Ping => "PING",
            CrateLocker => "`Locker` lock + unlock",
            CrateLockClient => "`LockClient` obtain + release",
            Baseline => "`SET NX PX` + `EVALSHA`",
        }
    }
}

/// One connection's cycles of each contender on `key`: `per_kind` slices
/// each, slice `j` ending at `start + (j + 1) × SLICE` on every connection,
/// in an order that rotates so that none always comes first.
fn connection(url: &str, key: &str, start: Instant, per_kind: usize) -> [u64; 4] {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = redis::Client::open(url).expect("url");
    let async_conn = rt.block_on(client.get_multiplexed_async_connection());
    let locks = LockClient::new(async_conn.expect("async connection"));
    let mut conn = connect(url);
    let mut locker = Locker::new(&mut conn, key, Options::default());
    let mut cycle = |c: Contender| match c {
        Ping => {
            let pong = redis::cmd("PING").query::<Value>(locker.get_mut());
            pong.map(drop).expect("PING")
        }
        CrateLocker => {
            assert!(locker.lock().expect("lock()"), "uncontended lock refused");
            locker.unlock().expect("unlock()");
        }
        CrateLockClient => rt.block_on(async {
            let ttl = Duration::from_secs(5);
            let lock = locks.obtain(key, ttl, &ObtainOptions::new()).await;
            lock.expect("uncontended obtain()")
                .release()
                .await
                .expect("release()");
        }),
        Baseline => {
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
    };
    thread::sleep(start.saturating_duration_since(Instant::now()));
    let (k, mut counts) = (CONTENDERS.len(), [0; 4]);
    for j in 0..k * per_kind {
        let (which, end) = ((j + j / k) % k, start + SLICE * (j as u32 + 1));
        while Instant::now() < end {
            cycle(CONTENDERS[which]);
            counts[which] += 1;
        }
    }
    counts
}

/// Cycles per second of each contender over `conns` connections, each on its own key.
fn rates(url: &str, conns: usize, per_kind: usize) -> [f64; 4] {
    let start = Instant::now() + Duration::from_millis(300);
    let counts: Vec<[u64; 4]> = thread::scope(|s| {
        let per_connection = |i| move || connection(url, &format!("rt:{i}"), start, per_kind);
        let handles: Vec<_> = (0..conns).map(|i| s.spawn(per_connection(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    let seconds = SLICE.as_secs_f64() * per_kind as f64;
    std::array::from_fn(|c| counts.iter().map(|n| n[c]).sum::<u64>() as f64 / seconds)
}

pub fn round_trips(report: &mut Report, url: &str, per_kind: usize) {
    let title = "Client round trips: uncontended cycles per second (% of PING ÷ 2)";
    let labels = CONTENDERS.map(|c| format!("{}/s", c.label()));
    let header = format!("connections | {}", labels.join(" | "));
    for (conns, ids) in [(1, ["2a", "2b"]), (16, ["2c", "2d"])] {
        let r = rates(url, conns, per_kind);
        // Two round trips per cycle: PING ÷ 2 is the ceiling.
        let of_ceiling = |v: f64| format!("{} ({:.0}%)", thousands(v as u64), 200.0 * v / r[0]);
        let cells = [
            thousands(r[0] as u64),
            of_ceiling(r[1]),
            of_ceiling(r[2]),
            of_ceiling(r[3]),
        ];
        report.detail(title, &header, format!("{conns} | {}", cells.join(" | ")));
        let s = if conns == 1 { "" } else { "s" };
        // The async API also pays for its runtime and the multiplexer,
        // which the blocking baseline does not: no target.
        let rows = [
            (CrateLocker, Some(Target::AtLeast(1.0))),
            (CrateLockClient, None),
        ];
        for (id, (c, target)) in ids.into_iter().zip(rows) {
            let (label, base) = (c.label(), Baseline.label());
            let what = format!("client: {label} cycles/s ÷ {base}, {conns} connection{s}");
            let ratio = r[c as usize] / r[Baseline as usize];
            report.figure(id, &what, Unit::Ratio, target, ratio);
        }
    }
    flushall(&mut connect(url));
}
