//! Load: 10,000 concurrent connections acquire and release locks on 1,000
//! keys for `LOAD_SECONDS` (default 5; 30 by hand:
//! `LOAD_SECONDS=30 cargo test --release --test load -- --nocapture`),
//! some of them waiting in the server (`WAIT`). Checked: no error, no
//! overlapping holds, fences strictly increasing per key, no lock left
//! behind (no key, no waiter), `INFO lock_stats` in agreement with what the
//! clients saw, and the server's `used_memory` back to its start once the
//! connections are closed.
//!
//! Two threads (this machine has 2 cores) drive all the connections with
//! tokio. The server gets `--maxclients 10100`; the test raises its own
//! open-file limit first (the server inherits it), and skips only if the
//! hard limit is too low and cannot be raised.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{cmd, info, int, lock_stats, Config, Server};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Connection, Value};
use tokio::sync::Semaphore;

/// Keys the connections share: ~10 connections per key.
const KEYS: usize = 1_000;
/// Far longer than any run: a lock ends only by its release.
const TTL_MS: u64 = 120_000;
/// Percent of acquisitions that wait in the server, for 1 to 50 ms.
const WAIT_PERCENT: u64 = 10;
const WAIT_MAX_MS: u64 = 50;
/// Most `WAIT`s in flight at once. Redis 7.0 keeps two helper clients
/// (~30 KB) per concurrently blocked module client pooled at their peak
/// count for good; the test blocks this many once before it measures its
/// starting memory, and never more afterwards, so the pool cannot grow.
const MAX_WAITING: usize = 256;
/// Connections being opened at once (the listen backlog is 511).
const CONNECTING: usize = 200;
/// What `used_memory` may keep after all connections closed: hash tables
/// that shrink only by steps (the keyspace's, the module's queue index)
/// and a slow log of 128 entries take far less; one leaked client struct
/// per connection would be ~200 MB, one leaked lock per key ~150 KB.
const TOLERANCE: i64 = 1 << 20;
/// Generous bounds for anything the server does on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// Raises this process's open-file limit to at least `need` (the server,
/// started afterwards, inherits it). Err: impossible here, and why.
fn raise_fd_limit(need: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    let want = need as libc::rlim_t;
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let hard = lim.rlim_max;
    // A privileged process may raise the hard limit too.
    lim.rlim_max = lim.rlim_max.max(want);
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "the hard open-file limit is {hard} and cannot be raised to {need} ({}); \
             raise it (ulimit -Hn, /etc/security/limits.conf) to run this test",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn used_memory(c: &mut Connection) -> i64 {
    info(c, "memory")["used_memory"]
        .parse()
        .expect("used_memory")
}

fn connected_clients(c: &mut Connection) -> i64 {
    info(c, "clients")["connected_clients"]
        .parse()
        .expect("connected_clients")
}

/// Polls until `f` holds, or panics after `PATIENCE`.
fn settle(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// xorshift64, one per connection.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    /// Acquisitions granted (at once or after a wait), each released.
    grants: u64,
    /// Plain acquisitions refused.
    refused: u64,
    /// Waits that ended without the lock.
    wait_timeouts: u64,
    waits: u64,
    commands: u64,
}

/// Per key: who holds it (connection + 1, 0 = nobody, as the clients
/// see it) and the highest fence handed out.
struct Keys {
    holder: Vec<AtomicUsize>,
    fence: Vec<AtomicI64>,
}

fn key_name(k: usize) -> String {
    format!("load:{k}")
}

async fn connect(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    // A wait never takes more than WAIT_MAX_MS; anything near 60 s is a
    // lost reply, which the test must report rather than hang on.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PATIENCE))
        .set_response_timeout(Some(PATIENCE));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// One connection's loop until `end`.
async fn run_connection(
    id: usize,
    mut conn: MultiplexedConnection,
    end: Instant,
    keys: Arc<Keys>,
    waiting: Arc<Semaphore>,
) -> Result<Seen, String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x2545_F491));
    let mut seen = Seen::default();
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let k = rng.below(KEYS as u64) as usize;
        let key = key_name(k);
        let token = format!("c{id}-{n}");
        let permit = if rng.below(100) < WAIT_PERCENT {
            waiting.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let mut acquire = redis::cmd("LOCK.ACQUIRE");
        acquire.arg(&key).arg(&token).arg(TTL_MS);
        if permit.is_some() {
            acquire.arg("WAIT").arg(1 + rng.below(WAIT_MAX_MS));
            seen.waits += 1;
        }
        seen.commands += 1;
        let reply: Option<i64> = acquire
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{key} {token}: LOCK.ACQUIRE: {e}"))?;
        let waited = permit.is_some();
        drop(permit);
        let Some(fence) = reply else {
            if waited {
                seen.wait_timeouts += 1;
            } else {
                seen.refused += 1;
            }
            continue;
        };
        let before = keys.holder[k].swap(id + 1, SeqCst);
        if before != 0 {
            return Err(format!(
                "{key}: granted to connection {id} while connection {} held it",
                before - 1
            ));
        }
        let top = keys.fence[k].fetch_max(fence, SeqCst);
        if fence <= top {
            return Err(format!("{key}: fence {fence} after {top}"));
        }
        seen.grants += 1;
        // Hold it across a scheduling point, then give it back; the next
        // holder can only be granted after the RELEASE below is sent.
        tokio::task::yield_now().await;
        keys.holder[k].store(0, SeqCst);
        seen.commands += 1;
        let released: i64 = redis::cmd("LOCK.RELEASE")
            .arg(&key)
            .arg(&token)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{key} {token}: LOCK.RELEASE: {e}"))?;
        if released != 1 {
            return Err(format!("{key} {token}: LOCK.RELEASE replied {released}"));
        }
    }
    Ok(seen)
}

/// Blocks `count` clients in the server at once, then lets them through:
/// Redis's pool of helper clients for blocked module clients reaches that
/// peak before the starting memory is measured.
fn warm_up(rt: &tokio::runtime::Runtime, server: &Server, control: &mut Connection, count: usize) {
    let held = cmd(control, ("LOCK.ACQUIRE", "warm", "holder", TTL_MS));
    assert!(matches!(held, Value::Int(_)), "warm-up lock: {held:?}");
    let client = server.client();
    let tasks: Vec<_> = (0..count)
        .map(|j| {
            let client = client.clone();
            rt.spawn(async move {
                let mut conn = connect(&client).await.expect("connect");
                let token = format!("warm-{j}");
                let fence: Option<i64> = redis::cmd("LOCK.ACQUIRE")
                    .arg("warm")
                    .arg(&token)
                    .arg(TTL_MS)
                    .arg("WAIT")
                    .arg(0)
                    .query_async(&mut conn)
                    .await
                    .expect("warm-up wait");
                assert!(fence.is_some(), "a wait without limit ends with the lock");
                let released: i64 = redis::cmd("LOCK.RELEASE")
                    .arg("warm")
                    .arg(&token)
                    .query_async(&mut conn)
                    .await
                    .expect("warm-up release");
                assert_eq!(released, 1);
            })
        })
        .collect();
    settle("the warm-up waiters to queue", || {
        lock_stats(control)["waiters"] == count as u64
    });
    // Each release hands the lock to the next waiter.
    assert_eq!(int(&cmd(control, ("LOCK.RELEASE", "warm", "holder"))), 1);
    rt.block_on(async {
        for t in tasks {
            t.await.expect("warm-up task");
        }
    });
}

#[test]
fn ten_thousand_connections_acquire_and_release() {
    let connections = env_u64("LOAD_CONNECTIONS", 10_000) as usize;
    let seconds = env_u64("LOAD_SECONDS", 5);
    // This process: the connections, the warm-up's, a margin. The server:
    // maxclients + 32 (Redis's reserve).
    let need = (connections + MAX_WAITING + 256).max(connections + 100 + 32 + 64) as u64;
    if let Err(why) = raise_fd_limit(need) {
        eprintln!("load: SKIPPED, {connections} connections are impossible here: {why}");
        return;
    }
    let maxclients = connections + 100;
    let server = Server::with(Config::default().arg("maxclients", &maxclients.to_string()));
    let mut control = server.conn();
    let granted: Vec<String> =
        redis::from_redis_value(cmd(&mut control, ("CONFIG", "GET", "maxclients"))).unwrap();
    assert_eq!(
        granted[1],
        maxclients.to_string(),
        "the server lowered maxclients (its open-file limit is too low); log:\n{}",
        server.log()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let cold = used_memory(&mut control);
    warm_up(&rt, &server, &mut control, MAX_WAITING);
    settle("the warm-up connections to close", || {
        connected_clients(&mut control) == 1
    });
    let start_mem = used_memory(&mut control);

    // Open every connection before the clock starts.
    let client = server.client();
    let opening = Instant::now();
    let limit = Arc::new(Semaphore::new(CONNECTING));
    let conns: Vec<MultiplexedConnection> = rt.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let (client, limit) = (client.clone(), limit.clone());
                tokio::spawn(async move {
                    let _slot = limit.acquire_owned().await.expect("semaphore");
                    connect(&client).await
                })
            })
            .collect();
        let mut conns = Vec::with_capacity(connections);
        for t in tasks {
            conns.push(t.await.expect("connect task").expect("connect"));
        }
        conns
    });
    let open_secs = opening.elapsed().as_secs_f64();
    assert_eq!(connected_clients(&mut control), connections as i64 + 1);
    let connected_mem = used_memory(&mut control);
    let stats_before = lock_stats(&mut control);

    let keys = Arc::new(Keys {
        holder: (0..KEYS).map(|_| AtomicUsize::new(0)).collect(),
        fence: (0..KEYS).map(|_| AtomicI64::new(0)).collect(),
    });
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let began = Instant::now();
    let end = began + Duration::from_secs(seconds);
    let results: Vec<Result<Seen, String>> = rt.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(id, conn)| {
                tokio::spawn(run_connection(id, conn, end, keys.clone(), waiting.clone()))
            })
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(t.await.expect("connection task"));
        }
        results
    });
    let elapsed = began.elapsed().as_secs_f64();

    let mut total = Seen::default();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => {
                total.grants += s.grants;
                total.refused += s.refused;
                total.wait_timeouts += s.wait_timeouts;
                total.waits += s.waits;
                total.commands += s.commands;
            }
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {connections} connections failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let loaded_mem = used_memory(&mut control);

    // No lock left behind.
    assert_eq!(int(&cmd(&mut control, "DBSIZE")), 0, "keys left");
    for k in 0..KEYS {
        let info: HashMap<String, Value> = redis::cmd("LOCK.INFO")
            .arg(key_name(k))
            .query(&mut control)
            .unwrap();
        assert_eq!(info["held"], Value::Int(0), "{} held", key_name(k));
        assert_eq!(info["waiters"], Value::Int(0), "{} waiters", key_name(k));
    }

    // The server counted what the clients saw.
    let after = lock_stats(&mut control);
    let delta = |name: &str| after[name] - stats_before[name];
    let check = |name: &str, want: u64| assert_eq!(delta(name), want, "lock_{name}");
    check("released", total.grants);
    assert_eq!(
        delta("acquired") + delta("handoffs"),
        total.grants,
        "lock_acquired + lock_handoffs"
    );
    check("refused", total.refused);
    check("wait_timeouts", total.wait_timeouts);
    assert_eq!(
        delta("waits"),
        delta("handoffs") + delta("wait_timeouts"),
        "every blocked wait ended with the lock or its timeout"
    );
    for zero in [
        "renewed",
        "release_missed",
        "errors",
        "wait_disconnects",
        "grants_undelivered",
        "wait_redirects",
        "expiry_handoffs",
        "checks",
    ] {
        check(zero, 0);
    }
    assert_eq!(after["waiters"], 0, "lock_waiters");

    // Memory: back to the start once the connections are gone.
    drop(client);
    settle("the connections to close", || {
        connected_clients(&mut control) == 1
    });
    let mut end_mem = used_memory(&mut control);
    // Freed client memory is counted at once, but the keyspace's tables
    // shrink from the server's cron: give that a few seconds.
    let shrinking = Instant::now();
    while end_mem > start_mem + TOLERANCE && shrinking.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
        end_mem = used_memory(&mut control);
    }
    drop(rt);

    let commands = total.commands as f64;
    println!(
        "load: {connections} connections (opened in {open_secs:.1} s), {KEYS} keys, {elapsed:.1} s: \
         {} grants released ({:.0}/s, {} by hand-off after a wait), {} refused, \
         {} waits ({} timed out), {:.0} commands/s",
        total.grants,
        total.grants as f64 / elapsed,
        delta("handoffs"),
        total.refused,
        total.waits,
        total.wait_timeouts,
        commands / elapsed,
    );
    println!(
        "load: used_memory {} at start ({} before the warm-up of {MAX_WAITING} waiters), \
         {} with all connected ({:.1} KB per connection), {} at the end of the load, \
         {} after they closed: {:+} bytes (tolerance {} bytes)",
        mb(start_mem),
        mb(cold),
        mb(connected_mem),
        (connected_mem - start_mem) as f64 / connections as f64 / 1e3,
        mb(loaded_mem),
        mb(end_mem),
        end_mem - start_mem,
        TOLERANCE,
    );
    assert!(
        end_mem <= start_mem + TOLERANCE,
        "used_memory {end_mem} after the connections closed, {start_mem} at start"
    );
}
