//! Helpers shared by the integration tests: raw commands, typed wrappers
//! for the three LOCK.* commands, and snapshots of a key's state.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, ToRedisArgs, Value};
#[allow(unused_imports)]
pub use testkit::{wait_for, Config, Server};

/// A generous margin for anything that waits on the server.
pub const WAIT: Duration = Duration::from_secs(10);

/// Sends one command made of `args` (a tuple, a slice of byte strings...);
/// server errors come back as `Err`.
pub fn try_cmd(conn: &mut Connection, args: impl ToRedisArgs) -> Result<Value, RedisError> {
    let mut c = redis::Cmd::new();
    c.arg(args);
    c.query(conn)
}

/// Sends one command and panics on any error.
pub fn cmd(conn: &mut Connection, args: impl ToRedisArgs) -> Value {
    let mut c = redis::Cmd::new();
    c.arg(args);
    let desc = describe(&c);
    match c.query(conn) {
        Ok(v) => v,
        Err(e) => panic!("{desc} failed: {e}"),
    }
}

/// Sends one command that must fail; returns the full error text
/// (`CODE detail`, as the server sent it).
pub fn err(conn: &mut Connection, args: impl ToRedisArgs) -> String {
    let mut c = redis::Cmd::new();
    c.arg(args);
    let desc = describe(&c);
    match c.query::<Value>(conn) {
        Ok(v) => panic!("{desc}: expected an error, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// `CODE detail` of a server error.
pub fn error_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

fn describe(c: &redis::Cmd) -> String {
    let parts: Vec<String> = c
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Arg::Cursor => "<cursor>".to_owned(),
            _ => "<arg>".to_owned(),
        })
        .collect();
    parts.join(" ")
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

pub fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Nil => None,
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        other => panic!("expected a string or nil, got {other:?}"),
    }
}

pub fn text(v: &Value) -> String {
    String::from_utf8(bytes(v).expect("a string, not nil")).expect("utf-8")
}

/// `LOCK.ACQUIRE key token ms`: `Some(fence)` or `None` (refused).
pub fn acquire(conn: &mut Connection, key: &[u8], token: &[u8], ms: u64) -> Option<i64> {
    match cmd(conn, (&b"LOCK.ACQUIRE"[..], key, token, ms)) {
        Value::Nil => None,
        Value::Int(f) => {
            assert!(f >= 1, "a fence is >= 1, got {f}");
            Some(f)
        }
        other => panic!("LOCK.ACQUIRE replied {other:?}"),
    }
}

/// Acquires a lock that must be granted; returns its fence.
pub fn must_acquire(conn: &mut Connection, key: &[u8], token: &[u8], ms: u64) -> i64 {
    acquire(conn, key, token, ms).unwrap_or_else(|| {
        panic!(
            "LOCK.ACQUIRE {} {} {ms} was refused",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(token)
        )
    })
}

/// `LOCK.RELEASE key token`: 1 or 0.
pub fn release(conn: &mut Connection, key: &[u8], token: &[u8]) -> i64 {
    let r = int(&cmd(conn, (&b"LOCK.RELEASE"[..], key, token)));
    assert!(r == 0 || r == 1, "LOCK.RELEASE replied {r}");
    r
}

/// `LOCK.CHECK key token`: remaining ms, -1 or 0.
pub fn check(conn: &mut Connection, key: &[u8], token: &[u8]) -> i64 {
    int(&cmd(conn, (&b"LOCK.CHECK"[..], key, token)))
}

/// Everything about a key a LOCK.* call could change (except the idle time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// `TYPE`.
    pub kind: String,
    /// The value: a string's bytes, a list's items, a hash's sorted fields.
    pub value: Vec<Vec<u8>>,
    /// `PEXPIRETIME`: absolute expiry in Unix ms, -1 none, -2 no key.
    pub expire_at: i64,
}

pub fn snapshot(conn: &mut Connection, key: &[u8]) -> Snapshot {
    let kind = text(&cmd(conn, ("TYPE", key)));
    let value = match kind.as_str() {
        "none" => Vec::new(),
        "string" => vec![bytes(&cmd(conn, ("GET", key))).expect("GET")],
        "list" => redis::from_redis_value(cmd(conn, ("LRANGE", key, 0, -1))).unwrap(),
        "hash" => {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                redis::from_redis_value(cmd(conn, ("HGETALL", key))).unwrap();
            pairs.sort();
            pairs.into_iter().flat_map(|(f, v)| [f, v]).collect()
        }
        other => panic!("snapshot of a {other}"),
    };
    let expire_at = int(&cmd(conn, ("PEXPIRETIME", key)));
    Snapshot {
        kind,
        value,
        expire_at,
    }
}

/// `GET key` as bytes.
pub fn get(conn: &mut Connection, key: &[u8]) -> Option<Vec<u8>> {
    bytes(&cmd(conn, ("GET", key)))
}

pub fn pttl(conn: &mut Connection, key: &[u8]) -> i64 {
    int(&cmd(conn, ("PTTL", key)))
}

pub fn exists(conn: &mut Connection, key: &[u8]) -> bool {
    int(&cmd(conn, ("EXISTS", key))) == 1
}

/// Asserts that `ttl` (ms left) is close to `ms`: at most `ms`, and no more
/// than `slack` below it.
pub fn assert_ttl_near(ttl: i64, ms: i64, slack: i64) {
    assert!(
        ttl <= ms && ttl > ms - slack,
        "TTL {ttl} ms is not within {slack} ms below {ms}"
    );
}

/// `INFO section` parsed into `name -> value`.
pub fn info(conn: &mut Connection, section: &str) -> HashMap<String, String> {
    let raw = text(&cmd(conn, ("INFO", section)));
    raw.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The `lock_stats` counters, by their short names (`acquired`, ...). Redis
/// prefixes module INFO fields with the module name (`lock_acquired`).
pub fn lock_stats(conn: &mut Connection) -> HashMap<String, u64> {
    let raw = text(&cmd(conn, ("INFO", "lock_stats")));
    assert!(
        raw.contains("# lock_stats"),
        "INFO lock_stats has no lock_stats section:\n{raw}"
    );
    info(conn, "lock_stats")
        .into_iter()
        .map(|(k, v)| {
            let short = k.strip_prefix("lock_").unwrap_or(&k).to_owned();
            (short, v.parse().expect("a counter"))
        })
        .collect()
}

/// A connection authenticated as `user`.
pub fn conn_as(server: &Server, user: &str, password: &str) -> Connection {
    let mut c = server.conn();
    cmd(&mut c, ("AUTH", user, password));
    c
}

/// Waits until the replica's link to its master is up.
pub fn wait_link_up(replica: &mut Connection) {
    wait_for(WAIT, "master_link_status:up", || {
        (info(replica, "replication")
            .get("master_link_status")
            .map(String::as_str)
            == Some("up"))
        .then_some(())
    });
}

/// `WAIT 1 5000` on the master: the replica has everything sent so far.
pub fn wait_replicated(master: &mut Connection) {
    let acked = int(&cmd(master, ("WAIT", 1, 5000)));
    assert_eq!(acked, 1, "the replica did not acknowledge within 5 s");
}

/// Lines of the server's log that mention an unknown command or an error
/// loading data.
pub fn bad_log_lines(server: &Server) -> Vec<String> {
    server
        .log_lines()
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("unknown command")
                || l.contains("bad file format")
                || l.contains("error reading")
                || l.contains("unrecoverable error")
                || l.contains("wrong signature")
                || l.contains("module") && l.contains("not loaded")
                || l.contains("panic")
        })
        .collect()
}

/// A token unique in this process.
pub fn unique_token(prefix: &str) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}-{t:x}").into_bytes()
}

/// Polls until `key` no longer exists (reading it makes Redis expire it).
pub fn wait_gone(conn: &mut Connection, key: &[u8], timeout: Duration) {
    let start = Instant::now();
    wait_for(timeout, "the key to expire", || {
        (!exists(conn, key)).then_some(())
    });
    assert!(start.elapsed() <= timeout);
}

/// A free loopback TCP port (for a cluster bus).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server's clock (`TIME`) in Unix milliseconds.
pub fn server_ms(conn: &mut Connection) -> i64 {
    let (s, us): (i64, i64) = redis::from_redis_value(cmd(conn, "TIME")).unwrap();
    s * 1000 + us / 1000
}

/// Runs `f` and asserts that afterwards `key` expires `ms` after some
/// moment during the call (checked against the server's clock before and
/// after, so a slow machine cannot make it fail).
pub fn expires_in<R>(
    conn: &mut Connection,
    key: &[u8],
    ms: i64,
    f: impl FnOnce(&mut Connection) -> R,
) -> R {
    let t0 = server_ms(conn);
    let r = f(conn);
    let t1 = server_ms(conn);
    let at = int(&cmd(conn, ("PEXPIRETIME", key)));
    assert!(
        at >= t0 + ms && at <= t1 + ms,
        "expiry {at} not {ms} ms after a moment in [{t0}, {t1}]"
    );
    r
}
