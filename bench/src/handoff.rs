//! Hand-off latency and fairness: clients on one key, waiting in the server
//! (`LOCK.ACQUIRE … WAIT`) or polling bsm/redis-lock's way (`SET NX PX`,
//! sleep the retry delay, try again).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use redis::{Connection, Value};

use crate::redis_io::{connect, flushall, take, RELEASE};
use crate::report::{Report, Unit};
use crate::stats::{median, ms, thousands, Latency};
use crate::Plan;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In the server's FIFO queue: `LOCK.ACQUIRE key token ttl WAIT ms`.
    Wait,
    /// bsm/redis-lock's way: `SET key token NX PX ttl`, sleeping this long between tries.
    Poll(Duration),
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Wait => "module WAIT".into(),
            Mode::Poll(d) => format!("bsm/redis-lock polling every {} ms", d.as_millis()),
        }
    }
}

/// Lock TTL in these runs: far above any hold, so no lock expires.
const TTL_MS: u64 = 10_000;
/// Server-side wait per `WAIT`: above the time 1,000 waiters take to drain.
const WAIT_MS: u64 = 30_000;
const HOLD: Duration = Duration::from_millis(1);
const FAIRNESS_CLIENTS: usize = 16;

/// What the clients of one run share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    /// Just before the last release was sent.
    last_release: Mutex<Option<Instant>>,
    /// Latencies in ms.
    samples: Mutex<Vec<f64>>,
    /// Acquisition commands sent: the load the waiting puts on the server.
    tries: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, e: String) {
        self.error.lock().expect("error").get_or_insert(e);
        self.stop.store(true, SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }

    fn push(&self, ms: f64) {
        self.samples.lock().expect("samples").push(ms);
    }

    fn samples(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// Sleeps `d`, returning early once stopped.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            thread::sleep((end - Instant::now()).min(Duration::from_millis(10)));
        }
    }

    fn result(self) -> Result<Latency, String> {
        match self.error.into_inner().expect("error") {
            Some(e) => Err(e),
            None => Ok(Latency::from_ms(
                self.samples.into_inner().expect("samples"),
            )),
        }
    }
}

/// Uniform in `[0, d)`: where a poller resumes within its retry period.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random::<f64>())
}

/// One try: `Ok(true)` granted, `Ok(false)` busy (poll) or timed out (wait).
fn try_acquire(conn: &mut Connection, mode: Mode, key: &str, token: &str) -> Result<bool, String> {
    let mut cmd = take(mode == Mode::Wait, key, token, TTL_MS);
    if mode == Mode::Wait {
        cmd.arg(("WAIT", WAIT_MS));
    }
    match cmd.query(conn) {
        Ok(Value::Int(_) | Value::Okay) => Ok(true),
        Ok(Value::Nil) => Ok(false),
        other => Err(format!("acquire answered {other:?}")),
    }
}

fn release(conn: &mut Connection, mode: Mode, key: &str, token: &str) -> Result<(), String> {
    let reply = match mode {
        Mode::Wait => redis::cmd("LOCK.RELEASE").arg((key, token)).query(conn),
        Mode::Poll(_) => RELEASE.key(key).arg(token).invoke(conn),
    };
    match reply {
        Ok(1) => Ok(()),
        other => Err(format!("release of a held lock answered {other:?}")),
    }
}

/// Takes the lock the way `mode` does, one token per attempt as
/// bsm/redis-lock does; the token, or None once stopped.
fn acquire_loop(conn: &mut Connection, mode: Mode, key: &str, sh: &Shared) -> Option<String> {
    let token = redis_fenced_lock::new_token("");
    loop {
        // Not queued yet: a stopped run takes no new waiters. (One queued
        // at the stop is granted the lock later and must release it.)
        if sh.stopped() {
            return None;
        }
        sh.tries.fetch_add(1, SeqCst);
        match (try_acquire(conn, mode, key, &token), mode) {
            (Ok(true), _) => return Some(token),
            (Ok(false), Mode::Wait) if sh.stopped() => return None,
            (Ok(false), Mode::Wait) => {}
            (Ok(false), Mode::Poll(d)) => sh.sleep(d),
            (Err(e), _) => {
                sh.fail(e);
                return None;
            }
        }
    }
}

/// `clients` clients contend for one key: each holder keeps it `HOLD`,
/// releases and tries again, for `time` or `samples` hand-offs, after a
/// warm-up that fills the queue. With `rejoin_late` a poller resumes at a
/// random point of its period after its release (else it mostly takes the
/// lock back at once, as bsm/redis-lock's clients do: no hand-off to time).
/// Returns the hand-off latencies (from just before a release is sent to
/// the reply granting the next holder), the acquisition commands sent per
/// second (the load the waiting puts on the server) and the acquisitions
/// per client.
fn contend(
    url: &str,
    mode: Mode,
    clients: usize,
    time: Duration,
    samples: usize,
    rejoin_late: bool,
) -> Result<(Latency, f64, Vec<u64>), String> {
    let key = format!("bench:contend:{}:{clients}", mode.label());
    let (sh, barrier) = (Shared::default(), Barrier::new(clients + 1));
    let counts: Vec<AtomicU64> = (0..clients).map(|_| AtomicU64::new(0)).collect();
    let tries_per_sec = thread::scope(|s| {
        for count in &counts {
            let (sh, key, barrier, mut conn) = (&sh, key.as_str(), &barrier, connect(url));
            let client = move || {
                barrier.wait();
                while let Some(token) = acquire_loop(&mut conn, mode, key, sh) {
                    let last = *sh.last_release.lock().expect("last");
                    if let (Some(t), true) = (last, sh.measuring.load(SeqCst)) {
                        sh.push(t.elapsed().as_secs_f64() * 1e3);
                        count.fetch_add(1, SeqCst);
                    }
                    if !sh.stopped() {
                        thread::sleep(HOLD);
                    }
                    *sh.last_release.lock().expect("last") = Some(Instant::now());
                    if let Err(e) = release(&mut conn, mode, key, &token) {
                        return sh.fail(e);
                    }
                    if let (Mode::Poll(d), true) = (mode, rejoin_late) {
                        sh.sleep(jitter(d));
                    }
                }
            };
            let thread = thread::Builder::new().stack_size(256 * 1024);
            thread.spawn_scoped(s, client).expect("spawn a client");
        }
        barrier.wait();
        thread::sleep(Duration::from_millis(300 + clients as u64 / 2));
        let (tries, start) = (sh.tries.load(SeqCst), Instant::now());
        sh.measuring.store(true, SeqCst);
        while start.elapsed() < time && sh.samples() < samples && !sh.stopped() {
            thread::sleep(Duration::from_millis(10));
        }
        sh.measuring.store(false, SeqCst);
        sh.stop.store(true, SeqCst);
        (sh.tries.load(SeqCst) - tries) as f64 / start.elapsed().as_secs_f64()
    });
    let counts = counts.iter().map(|c| c.load(SeqCst)).collect();
    Ok((sh.result()?, tries_per_sec, counts))
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Expiry hand-off: a holder takes the lock for a random 10–110 ms and never
/// releases it; one waiter waits. A sample is the time from the lock's
/// deadline (`PEXPIRETIME`, whole ms) to the waiter's grant. 4 keys at once.
fn expiry_run(url: &str, mode: Mode, plan: &Plan) -> Result<Latency, String> {
    let sh = Shared::default();
    let end = Instant::now() + plan.run_time;
    thread::scope(|s| {
        for p in 0..4 {
            let (sh, key) = (&sh, format!("bench:expiry:{p}"));
            let (mut holder, mut waiter) = (connect(url), connect(url));
            s.spawn(move || {
                while Instant::now() < end && sh.samples() < plan.samples / 8 && !sh.stopped() {
                    // The module's waiter waits on a module lock, a poller on a SET NX PX key.
                    let ttl = rand::rng().random_range(10..110);
                    let token = redis_fenced_lock::new_token("");
                    let taken =
                        take(mode == Mode::Wait, &key, &token, ttl).query::<Value>(&mut holder);
                    let at: i64 = redis::cmd("PEXPIRETIME")
                        .arg(&key)
                        .query(&mut holder)
                        .unwrap_or(-1);
                    if !matches!(taken, Ok(Value::Int(_) | Value::Okay)) || at <= 0 {
                        return sh.fail(format!("holder got {taken:?}, deadline {at}"));
                    }
                    if let Mode::Poll(d) = mode {
                        thread::sleep(jitter(d));
                    }
                    if acquire_loop(&mut waiter, mode, &key, sh).is_none() {
                        return;
                    }
                    sh.push((unix_ms() - at as f64).max(0.0));
                    let _: redis::RedisResult<Value> =
                        redis::cmd("DEL").arg(&key).query(&mut waiter);
                }
            });
        }
    });
    sh.result()
}

/// Hand-off and fairness of the module's WAIT; with `baselines`, also of
/// bsm/redis-lock's polling at 100 ms (its default) and 10 ms, for reference.
pub fn contention(report: &mut Report, url: &str, baselines: bool, plan: &Plan) {
    let mut conn = connect(url);
    let mut modes = vec![Mode::Wait];
    if baselines {
        modes.extend([100, 10].map(|d| Mode::Poll(Duration::from_millis(d))));
    }
    let ids = [["4a", "4b"], ["4c", "4d"], ["4e", "4f"], ["4g", "4h"]];
    for (waiters, ids) in [Some(1), Some(100), Some(1000), None].into_iter().zip(ids) {
        let case = match waiters {
            Some(1) => "release → next holder, 1 waiter".to_owned(),
            Some(n) => format!("release → next holder, {} waiters", thousands(n as u64)),
            None => "expiry: lock's deadline → its waiter holds".into(),
        };
        for &mode in &modes {
            let run = match waiters {
                Some(n) => contend(url, mode, n + 1, plan.run_time, plan.samples, true)
                    .map(|(l, rate, _)| (l, thousands(rate as u64))),
                None => expiry_run(url, mode, plan).map(|l| (l, String::new())),
            };
            let run =
                run.map_err(|e| report.note(format!("{case}, {}: failed: {e}", mode.label())));
            if let Ok((l, rate)) = &run {
                let (p50, p99, max, n, mode) =
                    (ms(l.p50), ms(l.p99), ms(l.max), l.samples, mode.label());
                let row = format!("{case} | {mode} | {p50} | {p99} | {max} | {n} | {rate}");
                report.detail(
                    "Hand-off latency",
                    "case | mode | p50 | p99 | max | samples | acquire commands/s",
                    row,
                );
            }
            if mode == Mode::Wait {
                let targets = if waiters.is_some() {
                    [1.0, 5.0]
                } else {
                    [2.0, 10.0]
                };
                report.latency(
                    ids,
                    &format!("hand-off, {case}"),
                    targets.map(Some),
                    run.ok().map(|r| r.0),
                );
            }
        }
    }
    let title = format!(
        "Fairness: acquisitions per client, {FAIRNESS_CLIENTS} clients on one key for {:?}",
        plan.fairness_time
    );
    for &mode in &modes {
        let counts = match contend(
            url,
            mode,
            FAIRNESS_CLIENTS,
            plan.fairness_time,
            usize::MAX,
            false,
        ) {
            Ok((_, _, counts)) => counts,
            Err(e) => {
                report.note(format!("fairness, {}: failed: {e}", mode.label()));
                continue;
            }
        };
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        let med = median(&counts.iter().map(|c| *c as f64).collect::<Vec<_>>());
        let (label, never) = (mode.label(), counts.iter().filter(|c| **c == 0).count());
        let row = format!("{label} | {min} | {med} | {max} | {never}");
        report.detail(
            &title,
            "mode | min | median | max | clients never served",
            row,
        );
        if mode == Mode::Wait {
            let what = format!("fairness: fewest ÷ most acquisitions per client, {FAIRNESS_CLIENTS} clients on one key");
            report.figure(
                "5",
                &what,
                Unit::Ratio,
                None,
                min as f64 / max.max(1) as f64,
            );
        }
    }
    flushall(&mut conn);
}
