//! Load: 10,000 concurrent connections acquire and release locks on 2,500
//! keys for `LOAD_SECONDS` (default 5; 30 by hand:
//! `LOAD_SECONDS=30 cargo test --release --test load -- --nocapture`),
//! some of them waiting in the server (`WAIT`). Checked: no error, no
//! overlapping holds, fences strictly increasing per key, no lock left
//! behind (no key, no waiter), `INFO lock_stats` in agreement with what the
//! clients saw, and the server's `used_memory` back to its start once the
//! connections are closed.
//!
//! Two tokio worker threads (the test machine has 2 cores) drive all the
//! connections. The server gets `--maxclients 10100`; the test raises its own
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

/// Keys the connections share: ~4 connections per key.
const KEYS: usize = 2_500;
/// Far longer than any run: a lock ends only by its release.
const TTL_MS: u64 = 120_000;
/// Percent of acquisitions that wait in the server, for 1 to 50 ms.
const WAIT_PERCENT: u64 = 10;
const WAIT_MAX_MS: u64 = 50;
/// Most `WAIT`s in flight at once. Each blocked module client costs Redis
/// two helper clients (~35 KB), pooled after use; the server's cron frees
/// unused ones (up to 50 per 100 ms tick, keeping 8).
const MAX_WAITING: usize = 256;
/// Connections being opened at once (the listen backlog is 511).
const CONNECTING: usize = 200;
/// What `used_memory` may keep after all connections closed, over its
/// value before they opened: 8 pooled helper clients (~0.2 MB), hash
/// tables that shrink by steps (the keyspace's, the module's queue index)
/// and the slow log. Anything that grows with the load is far bigger: a
/// leaked client per connection would be ~370 MB, a leaked lock per key
/// ~0.4 MB, the helper clients of the waits in flight ~9 MB.
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

/// One connection's loop until `end`; gives the connection back open.
async fn run_connection(
    id: usize,
    mut conn: MultiplexedConnection,
    end: Instant,
    keys: Arc<Keys>,
    waiting: Arc<Semaphore>,
) -> Result<(Seen, MultiplexedConnection), String> {
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
    Ok((seen, conn))
}

#[test]
fn ten_thousand_connections_acquire_and_release() {
    let connections = env_u64("LOAD_CONNECTIONS", 10_000) as usize;
    let seconds = env_u64("LOAD_SECONDS", 5);
    let maxclients = connections + 100;
    // This process: the connections and a margin. The server, which
    // inherits the limit: maxclients + 32 (Redis's reserve).
    let need = (connections + 256).max(maxclients + 32 + 64) as u64;
    if let Err(why) = raise_fd_limit(need) {
        eprintln!("load: SKIPPED, {connections} connections are impossible here: {why}");
        return;
    }
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
    let start_mem = used_memory(&mut control);
    let stats_before = lock_stats(&mut control);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

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

    let keys = Arc::new(Keys {
        holder: (0..KEYS).map(|_| AtomicUsize::new(0)).collect(),
        fence: (0..KEYS).map(|_| AtomicI64::new(0)).collect(),
    });
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let began = Instant::now();
    let end = began + Duration::from_secs(seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| rt.spawn(run_connection(id, conn, end, keys.clone(), waiting.clone())))
        .collect();
    // The peak, sampled while the connections work.
    let mut peak_mem = connected_mem;
    while !tasks.iter().all(|t| t.is_finished()) {
        assert!(
            began.elapsed() < Duration::from_secs(seconds) + PATIENCE,
            "the connections did not stop"
        );
        peak_mem = peak_mem.max(used_memory(&mut control));
        thread::sleep(Duration::from_millis(200));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let results: Vec<_> = rt.block_on(async {
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(t.await.expect("connection task"));
        }
        results
    });

    // Every connection is still open: nothing below is hidden by a close.
    let mut total = Seen::default();
    let mut errors = Vec::new();
    let mut conns = Vec::with_capacity(connections);
    for r in results {
        match r {
            Ok((s, conn)) => {
                total.grants += s.grants;
                total.refused += s.refused;
                total.wait_timeouts += s.wait_timeouts;
                total.waits += s.waits;
                total.commands += s.commands;
                conns.push(conn);
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
    assert_eq!(connected_clients(&mut control), connections as i64 + 1);

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

    // Memory: back to the start once the connections are gone. Freed
    // clients count at once; the pooled helper clients and the keyspace's
    // tables go from the server's cron, so give that time.
    drop(conns);
    settle("the connections to close", || {
        connected_clients(&mut control) == 1
    });
    // Settled: unchanged for a second (the cron runs 10 times a second).
    let closing = Instant::now();
    let mut end_mem = used_memory(&mut control);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(1) && closing.elapsed() < PATIENCE {
        thread::sleep(Duration::from_millis(100));
        let now = used_memory(&mut control);
        if now != end_mem {
            (end_mem, still_since) = (now, Instant::now());
        }
    }
    let settled_secs = closing.elapsed().as_secs_f64() - 1.0;
    drop(rt);

    println!(
        "load: {connections} connections (opened in {open_secs:.1} s), {KEYS} keys, {elapsed:.1} s: \
         {} grants, each released ({:.0}/s; {} handed over to a waiter), {} refused, \
         {} waits ({} timed out), {:.0} commands/s",
        total.grants,
        total.grants as f64 / elapsed,
        delta("handoffs"),
        total.refused,
        total.waits,
        total.wait_timeouts,
        total.commands as f64 / elapsed,
    );
    println!(
        "load: used_memory {} at start, {} with all connected ({:.1} KB per connection), \
         {} at the peak, {} after they closed (settled in {settled_secs:.1} s): {:+} bytes \
         (tolerance {TOLERANCE})",
        mb(start_mem),
        mb(connected_mem),
        (connected_mem - start_mem) as f64 / connections as f64 / 1e3,
        mb(peak_mem),
        mb(end_mem),
        end_mem - start_mem,
    );
    assert!(
        end_mem <= start_mem + TOLERANCE,
        "used_memory {end_mem} after the connections closed, {start_mem} at start"
    );
}
