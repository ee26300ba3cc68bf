//! Talking to the servers: connections, INFO, commandstats deltas, bulk
//! loading, and bsm/redis-lock's release script.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{Cmd, Connection, Script, Value};

/// bsm/redis-lock's release script (compare-and-delete), verbatim;
/// `invoke` loads it where it is missing.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#,
    )
});

/// A token shaped like bsm/redis-lock's (16 random bytes, base64url, 24 chars).
pub const TOKEN: &str = "kZ4bNcP1X7vQm2LrT8sYwA==";

pub fn connect(url: &str) -> Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// `INFO section` as `field -> value`.
pub fn info(conn: &mut Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(conn).expect("INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// `INFO commandstats` counters of one phase, as differences of two
/// snapshots: `{command}.calls` and `{command}.usec`.
#[derive(Default)]
pub struct Delta(HashMap<String, f64>);

impl Delta {
    fn snapshot(conn: &mut Connection) -> HashMap<String, f64> {
        let mut m = HashMap::new();
        for (k, v) in info(conn, "commandstats") {
            let Some(cmd) = k.strip_prefix("cmdstat_") else {
                continue;
            };
            for (field, n) in v.split(',').filter_map(|p| p.split_once('=')) {
                if let ("calls" | "usec", Ok(n)) = (field, n.parse()) {
                    m.insert(format!("{cmd}.{field}"), n);
                }
            }
        }
        m
    }

    /// Runs `phase` between two snapshots of `conn`'s server.
    pub fn of(conn: &mut Connection, phase: impl FnOnce(&mut Connection)) -> Delta {
        let before = Delta::snapshot(conn);
        phase(conn);
        let mut after = Delta::snapshot(conn);
        after
            .iter_mut()
            .for_each(|(k, v)| *v -= before.get(k).copied().unwrap_or(0.0));
        Delta(after)
    }

    /// Server µs per call of `cmd` (lower case, as in commandstats).
    pub fn us(&self, cmd: &str) -> f64 {
        let get = |field: &str| self.0.get(&format!("{cmd}.{field}")).copied();
        get("usec").unwrap_or(0.0) / get("calls").unwrap_or(0.0)
    }
}

/// Sends `cmds` pipelined, 10,000 at a time, failing on any error reply.
pub fn pipelined(conn: &mut Connection, cmds: impl IntoIterator<Item = Cmd>) {
    let mut cmds = cmds.into_iter().peekable();
    while cmds.peek().is_some() {
        let mut pipe = redis::pipe();
        for c in cmds.by_ref().take(10_000) {
            pipe.add_command(c);
        }
        let replies: Vec<Value> = pipe.query(conn).expect("pipelined load");
        if let Some(e) = replies.iter().find(|v| matches!(v, Value::ServerError(_))) {
            panic!("pipelined load: {e:?}");
        }
    }
}

/// `LOCK.ACQUIRE key token ttl` (`module`) or bsm/redis-lock's `SET key token NX PX ttl`.
pub fn take(module: bool, key: &str, token: &str, ttl_ms: u64) -> Cmd {
    let mut cmd = redis::cmd(if module { "LOCK.ACQUIRE" } else { "SET" });
    cmd.arg((key, token));
    match module {
        true => cmd.arg(ttl_ms).clone(),
        false => cmd.arg(("NX", "PX", ttl_ms)).clone(),
    }
}

/// Takes `n` keys named as redis-benchmark's `{prefix}__rand_int__` expands
/// (12 zero-padded digits), all with one token.
pub fn hold(conn: &mut Connection, module: bool, prefix: &str, n: u64, ttl_ms: u64) {
    pipelined(
        conn,
        (0..n).map(|i| take(module, &format!("{prefix}{i:012}"), TOKEN, ttl_ms)),
    );
}

pub fn flushall(conn: &mut Connection) {
    let flushed = redis::cmd("FLUSHALL").arg("SYNC").exec(conn);
    flushed.expect("FLUSHALL");
}
