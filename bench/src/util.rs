//! Shared helpers: random tokens, statistics, INFO parsing, bulk loading,
//! bsm/redis-lock's scripts.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

/// The Go library's release script (compare-and-delete), verbatim.
pub const DEL_SCRIPT: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;

/// The check baseline: compare-and-PTTL.
pub const PTTL_SCRIPT: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pttl", KEYS[1]) else return 0 end"#;

/// A token shaped like bsm/redis-lock's (16 random bytes, base64 URL, 24 chars).
pub const FIXED_TOKEN: &str = "kZ4bNcP1X7vQm2LrT8sYwA==";

/// A small, fast, non-cryptographic generator (xorshift64*): tokens and
/// jitter for the bench, where speed and reproducibility matter more than
/// secrecy.
pub struct Rng(u64);

impl Rng {
    pub fn new(start: u64) -> Rng {
        // splitmix64 of the start value, never zero.
        let mut z = start.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Seeded from the clock and `salt`.
    pub fn from_time(salt: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng::new(nanos ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, d)`.
    pub fn duration_below(&mut self, d: Duration) -> Duration {
        let ns = d.as_nanos().max(1) as u64;
        Duration::from_nanos(self.below(ns))
    }

    /// A token shaped like bsm/redis-lock's (16 random bytes, base64url: 24 characters),
    /// made as the client crate makes them.
    pub fn token(&mut self) -> String {
        redis_fenced_lock::new_token("")
    }
}

/// Nanoseconds since the bench started (one monotonic clock for all threads).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Median of `v` (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (`q` in 0..=1) of sorted `s`; NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency summary in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Latency {
    pub fn from_ms(mut v: Vec<f64>) -> Latency {
        v.sort_by(f64::total_cmp);
        Latency {
            p50: percentile(&v, 0.50),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
            samples: v.len(),
        }
    }
}

pub fn connect(url: &str) -> Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// `INFO section` as a map of `field -> value`.
pub fn info(conn: &mut Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(conn).expect("INFO");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// An integer INFO field (0 when absent).
pub fn info_u64(conn: &mut Connection, section: &str, field: &str) -> u64 {
    info(conn, section)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One command's cumulative `calls` and `usec` from INFO commandstats.
#[derive(Clone, Copy, Debug, Default)]
pub struct CmdStat {
    pub calls: u64,
    pub usec: u64,
}

/// `INFO commandstats`: command name (lower case, e.g. `lock.acquire`) to stats.
pub fn commandstats(conn: &mut Connection) -> HashMap<String, CmdStat> {
    info(conn, "commandstats")
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?.to_owned();
            let mut stat = CmdStat::default();
            for part in v.split(',') {
                match part.split_once('=') {
                    Some(("calls", n)) => stat.calls = n.parse().ok()?,
                    Some(("usec", n)) => stat.usec = n.parse().ok()?,
                    _ => {}
                }
            }
            Some((name, stat))
        })
        .collect()
}

/// Calls and µs per call of `name` between two commandstats snapshots.
pub fn delta(
    before: &HashMap<String, CmdStat>,
    after: &HashMap<String, CmdStat>,
    name: &str,
) -> (u64, f64) {
    let b = before.get(name).copied().unwrap_or_default();
    let a = after.get(name).copied().unwrap_or_default();
    let calls = a.calls.saturating_sub(b.calls);
    let usec = a.usec.saturating_sub(b.usec);
    let per = if calls == 0 {
        f64::NAN
    } else {
        usec as f64 / calls as f64
    };
    (calls, per)
}

/// `SCRIPT LOAD`, returning the SHA1.
pub fn script_load(conn: &mut Connection, script: &str) -> String {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query(conn)
        .expect("SCRIPT LOAD")
}

/// Sends `cmds` pipelined in batches of `batch`, failing on the first error reply.
pub fn pipelined<I>(conn: &mut Connection, cmds: I, batch: usize)
where
    I: IntoIterator<Item = redis::Cmd>,
{
    let mut pipe = redis::pipe();
    let mut queued = 0;
    let flush = |pipe: &mut redis::Pipeline, conn: &mut Connection| {
        let replies: Vec<Value> = pipe.query(conn).expect("pipelined load");
        if let Some(err) = replies.iter().find(|v| matches!(v, Value::ServerError(_))) {
            panic!("pipelined load: {err:?}");
        }
        pipe.clear();
    };
    for cmd in cmds {
        pipe.add_command(cmd);
        queued += 1;
        if queued == batch {
            flush(&mut pipe, conn);
            queued = 0;
        }
    }
    if queued > 0 {
        flush(&mut pipe, conn);
    }
}

/// redis-benchmark's `__rand_int__` expansion of `i`: 12 zero-padded digits.
pub fn rand_int(i: u64) -> String {
    format!("{i:012}")
}

/// Holds `keys` locks `{prefix}{rand_int(i)}` with `token` for `ttl_ms`.
pub fn hold_locks(conn: &mut Connection, prefix: &str, keys: u64, token: &str, ttl_ms: u64) {
    pipelined(
        conn,
        (0..keys).map(|i| {
            let mut c = redis::cmd("LOCK.ACQUIRE");
            c.arg(format!("{prefix}{}", rand_int(i)))
                .arg(token)
                .arg(ttl_ms);
            c
        }),
        10_000,
    );
}

/// The Go library's way: `SET {prefix}{rand_int(i)} token NX PX ttl` for `keys` keys.
pub fn hold_setnx_locks(conn: &mut Connection, prefix: &str, keys: u64, token: &str, ttl_ms: u64) {
    pipelined(
        conn,
        (0..keys).map(|i| {
            let mut c = redis::cmd("SET");
            c.arg(format!("{prefix}{}", rand_int(i)))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms);
            c
        }),
        10_000,
    );
}

pub fn flushall(conn: &mut Connection) {
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query(conn)
        .expect("FLUSHALL");
}

pub fn dbsize(conn: &mut Connection) -> u64 {
    redis::cmd("DBSIZE").query(conn).expect("DBSIZE")
}

/// Does the module take `WAIT`? (`LOCK.ACQUIRE k t 100 WAIT 10` on a free key
/// answers an integer when it does, an error otherwise.)
pub fn wait_supported(conn: &mut Connection) -> bool {
    let key = "bench:wait-probe";
    let r: redis::RedisResult<Value> = redis::cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg("probe")
        .arg(100)
        .arg("WAIT")
        .arg(10)
        .query(conn);
    let _: redis::RedisResult<Value> = redis::cmd("LOCK.RELEASE").arg(key).arg("probe").query(conn);
    matches!(r, Ok(Value::Int(_)))
}

/// Output of a command, trimmed (empty on failure).
pub fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Human-readable count: 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in ms with sensible precision.
pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_bsm_redis_locks() {
        let mut r = Rng::new(1);
        let t = r.token();
        assert_eq!(t.len(), 24);
        assert!(t.ends_with("=="));
        assert_ne!(t, r.token());
    }

    #[test]
    fn stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rand_int(42), "000000000042");
    }
}
