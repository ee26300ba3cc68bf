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
use crate::stats::{percentile, thousands, Latency};
use crate::Plan;

/// `None`: in the server's FIFO queue (`LOCK.ACQUIRE key token ttl WAIT
/// ms`); `Some(d)`: bsm/redis-lock's `SET key token NX PX ttl`, sleeping
/// `d` between tries.
type Poll = Option<Duration>;

fn label(poll: Poll) -> String {
    let polling = |d: Duration| format!("bsm/redis-lock polling every {} ms", d.as_millis());
    poll.map_or("module WAIT".into(), polling)
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
        let samples = self.samples.into_inner().expect("samples");
        self.error
            .into_inner()
            .expect("error")
            .map_or(Ok(Latency::from_ms(&samples)), Err)
    }
}

/// Uniform in `[0, d)`: where a poller resumes within its retry period.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random::<f64>())
}

/// Takes the lock the way `poll` says, with a fresh token as bsm/redis-lock
/// does; the token, or None once stopped.
fn acquire(conn: &mut Connection, poll: Poll, key: &str, sh: &Shared) -> Option<String> {
    let token = redis_fenced_lock::new_token("");
    let mut cmd = take(poll.is_none(), key, &token, TTL_MS);
    if poll.is_none() {
        cmd.arg(("WAIT", WAIT_MS));
    }
    // Not queued yet: a stopped run takes no new waiters. (One queued at
    // the stop is granted the lock later and must release it.)
    while !sh.stopped() {
        sh.tries.fetch_add(1, SeqCst);
        match (cmd.query(conn), poll) {
            (Ok(Value::Int(_) | Value::Okay), _) => return Some(token),
            (Ok(Value::Nil), None) => {}
            (Ok(Value::Nil), Some(d)) => sh.sleep(d),
            (other, _) => sh.fail(format!("acquire answered {other:?}")),
        }
    }
    None
}

fn release(conn: &mut Connection, poll: Poll, key: &str, token: &str) -> Result<(), String> {
    let reply = match poll {
        None => redis::cmd("LOCK.RELEASE").arg((key, token)).query(conn),
        Some(_) => RELEASE.key(key).arg(token).invoke(conn),
    };
    match reply {
        Ok(1) => Ok(()),
        other => Err(format!("release of a held lock answered {other:?}")),
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
    poll: Poll,
    clients: usize,
    (time, samples): (Duration, usize),
    rejoin_late: bool,
) -> Result<(Latency, f64, Vec<u64>), String> {
    let key = format!("bench:contend:{}:{clients}", label(poll));
    let (sh, barrier) = (Shared::default(), Barrier::new(clients + 1));
    let counts: Vec<AtomicU64> = (0..clients).map(|_| AtomicU64::new(0)).collect();
    let tries_per_sec = thread::scope(|s| {
        for count in &counts {
            let (sh, key, barrier, mut conn) = (&sh, key.as_str(), &barrier, connect(url));
            let client = move || {
                barrier.wait();
                while let Some(token) = acquire(&mut conn, poll, key, sh) {
                    let last = *sh.last_release.lock().expect("last");
                    if let (Some(t), true) = (last, sh.measuring.load(SeqCst)) {
                        let sample = t.elapsed().as_secs_f64() * 1e3;
                        sh.samples.lock().expect("samples").push(sample);
                        count.fetch_add(1, SeqCst);
                    }
                    if !sh.stopped() {
                        thread::sleep(HOLD);
                    }
                    *sh.last_release.lock().expect("last") = Some(Instant::now());
                    if let Err(e) = release(&mut conn, poll, key, &token) {
                        return sh.fail(e);
                    }
                    if let (Some(d), true) = (poll, rejoin_late) {
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

/// Expiry hand-off: a holder takes the lock for a random 10–110 ms and never
/// releases it; one waiter waits. A sample is the time from the lock's
/// deadline (`PEXPIRETIME`, whole ms) to the waiter's grant. 8 keys at once,
/// half the samples of a release run in three times its time.
fn expiry_run(url: &str, poll: Poll, plan: &Plan) -> Result<Latency, String> {
    let (sh, end) = (Shared::default(), Instant::now() + plan.run_time * 3);
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    thread::scope(|s| {
        for p in 0..8 {
            let (sh, key) = (&sh, format!("bench:expiry:{p}"));
            let (mut holder, mut waiter) = (connect(url), connect(url));
            s.spawn(move || {
                while Instant::now() < end && sh.samples() < plan.samples / 2 && !sh.stopped() {
                    // The module's waiter waits on a module lock, a poller on a SET NX PX key.
                    let ttl = rand::rng().random_range(10..110);
                    let token = redis_fenced_lock::new_token("");
                    let taken = take(poll.is_none(), &key, &token, ttl).query::<Value>(&mut holder);
                    let at: i64 = redis::cmd("PEXPIRETIME")
                        .arg(&key)
                        .query(&mut holder)
                        .unwrap_or(-1);
                    if !matches!(taken, Ok(Value::Int(_) | Value::Okay)) || at <= 0 {
                        return sh.fail(format!("holder got {taken:?}, deadline {at}"));
                    }
                    if let Some(d) = poll {
                        thread::sleep(jitter(d));
                    }
                    if acquire(&mut waiter, poll, &key, sh).is_none() {
                        return;
                    }
                    let sample = (now_ms() - at as f64).max(0.0);
                    sh.samples.lock().expect("samples").push(sample);
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
    let mut modes = vec![None];
    if baselines {
        modes.extend([100, 10].map(|d| Some(Duration::from_millis(d))));
    }
    let run = (plan.run_time, plan.samples);
    // Waiters (none: expiry), row ids, targets in ms.
    let cases = [
        (Some(1), ["4a", "4b"], [1.0, 5.0]),
        (Some(100), ["4c", "4d"], [1.0, 5.0]),
        (Some(1000), ["4e", "4f"], [1.0, 5.0]),
        (None, ["4g", "4h"], [2.0, 10.0]),
    ];
    for (waiters, ids, targets) in cases {
        let case = match waiters {
            Some(1) => "release → next holder, 1 waiter".to_owned(),
            Some(n) => format!("release → next holder, {} waiters", thousands(n)),
            None => "expiry: lock's deadline → its waiter holds".into(),
        };
        for &poll in &modes {
            let result = match waiters {
                Some(n) => contend(url, poll, n as usize + 1, run, true)
                    .map(|(l, rate, _)| (l, thousands(rate as u64))),
                None => expiry_run(url, poll, plan).map(|l| (l, String::new())),
            };
            let (mode, result) = (label(poll), result.map_err(|e| format!("failed: {e}")));
            match &result {
                Ok((l, rate)) => {
                    let [p50, p99, max] = [l.p50, l.p99, l.max].map(|v| Unit::Ms.show(v));
                    let row = format!(
                        "{case} | {mode} | {p50} | {p99} | {max} | {} | {rate}",
                        l.samples
                    );
                    let header = "case | mode | p50 | p99 | max | samples | acquire commands/s";
                    report.detail("Hand-off latency", header, row);
                }
                Err(e) => report.note(format!("{case}, {mode}: {e}")),
            }
            if poll.is_none() {
                let what = format!("hand-off, {case}");
                report.latency(ids, &what, targets.map(Some), result.ok().map(|r| r.0));
            }
        }
    }
    let title = format!(
        "Fairness: acquisitions per client, {FAIRNESS_CLIENTS} clients on one key for {:?}",
        plan.fairness_time
    );
    for &poll in &modes {
        let run = (plan.fairness_time, usize::MAX);
        let counts = match contend(url, poll, FAIRNESS_CLIENTS, run, false) {
            Ok((_, _, counts)) => counts,
            Err(e) => {
                report.note(format!("fairness, {}: failed: {e}", label(poll)));
                continue;
            }
        };
        let counts: Vec<f64> = counts.iter().map(|c| *c as f64).collect();
        let [min, med, max] = [0.0, 0.5, 1.0].map(|q| percentile(&counts, q));
        let never = counts.iter().filter(|c| **c == 0.0).count();
        let row = format!("{} | {min} | {med} | {max} | {never}", label(poll));
        report.detail(
            &title,
            "mode | min | median | max | clients never served",
            row,
        );
        if poll.is_none() {
            let what = format!("fairness: fewest ÷ most acquisitions per client, {FAIRNESS_CLIENTS} clients on one key");
            report.figure("5", &what, Unit::Ratio, None, min / max.max(1.0));
        }
    }
    flushall(&mut connect(url));
}
