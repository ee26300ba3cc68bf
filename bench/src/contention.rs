//! Measurements 3 (hand-off latency) and 4 (fairness): many clients on one
//! key, waiting in the server (`LOCK.ACQUIRE … WAIT`) or polling bsm/redis-lock's
//! way (`SET NX PX`, sleep the retry delay, try again).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Connection, Value};

use crate::report::{FairnessBar, LatencyBar, Report, Row, Section, Table, Target};
use crate::util::{self, median, ms, now_ns, thousands, Latency, Rng};

/// How a client waits for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the server's FIFO queue: `LOCK.ACQUIRE key token ttl WAIT ms`.
    Wait,
    /// The Go library's way: `SET key token NX PX ttl`, sleeping this long between tries.
    Poll(Duration),
}

impl Mode {
    pub fn label(&self) -> String {
        match self {
            Mode::Wait => "module WAIT".into(),
            Mode::Poll(d) => format!("bsm/redis-lock polling, {} ms", d.as_millis()),
        }
    }
}

/// Lock TTL in the contention runs: far above any hold, so no lock expires.
const TTL_MS: u64 = 10_000;
/// Server-side wait per `LOCK.ACQUIRE … WAIT`: above the time the longest
/// queue (1,000 waiters) takes to drain.
const WAIT_MS: u64 = 30_000;
/// Stack of the (many) client threads.
const STACK: usize = 256 * 1024;

struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    /// `now_ns()` just before the last release was sent; `u64::MAX` for none.
    last_release: AtomicU64,
    samples: Mutex<Vec<u64>>,
    /// Acquisition commands sent (tries), for the polling load.
    tries: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
            last_release: AtomicU64::new(u64::MAX),
            samples: Mutex::new(Vec::new()),
            tries: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    fn fail(&self, e: String) {
        self.error.lock().expect("error lock").get_or_insert(e);
        self.stop.store(true, SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }
}

/// Sleeps `d` in slices, returning early once `stop` is set.
fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let end = Instant::now() + d;
    loop {
        let now = Instant::now();
        if now >= end || shared.stopped() {
            return;
        }
        thread::sleep((end - now).min(Duration::from_millis(10)));
    }
}

/// One try to take `key`: `Ok(true)` granted, `Ok(false)` busy (poll) or
/// timed out (wait).
fn try_acquire(
    conn: &mut Connection,
    mode: Mode,
    key: &str,
    token: &str,
    ttl_ms: u64,
) -> Result<bool, String> {
    let reply = match mode {
        Mode::Wait => redis::cmd("LOCK.ACQUIRE")
            .arg(key)
            .arg(token)
            .arg(ttl_ms)
            .arg("WAIT")
            .arg(WAIT_MS)
            .query::<Value>(conn),
        Mode::Poll(_) => redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query::<Value>(conn),
    };
    match reply {
        Ok(Value::Int(_) | Value::Okay) => Ok(true),
        Ok(Value::Nil) => Ok(false),
        Ok(other) => Err(format!("unexpected acquire reply {other:?}")),
        Err(e) => Err(format!("acquire: {e}")),
    }
}

fn release(
    conn: &mut Connection,
    mode: Mode,
    key: &str,
    token: &str,
    sha: &str,
) -> Result<(), String> {
    let reply: redis::RedisResult<i64> = match mode {
        Mode::Wait => redis::cmd("LOCK.RELEASE").arg(key).arg(token).query(conn),
        Mode::Poll(_) => redis::cmd("EVALSHA")
            .arg(sha)
            .arg(1)
            .arg(key)
            .arg(token)
            .query(conn),
    };
    match reply {
        Ok(1) => Ok(()),
        Ok(n) => Err(format!("release of a held lock answered {n}")),
        Err(e) => Err(format!("release: {e}")),
    }
}

/// Takes the lock the way `mode` does, retrying until granted or stopped.
/// Returns the token, or None when stopped.
fn acquire_loop(
    conn: &mut Connection,
    mode: Mode,
    key: &str,
    rng: &mut Rng,
    shared: &Shared,
) -> Option<String> {
    // The Go library makes one token per Lock(); so does this loop.
    let token = rng.token();
    loop {
        if shared.stopped() && mode != Mode::Wait {
            return None;
        }
        shared.tries.fetch_add(1, SeqCst);
        match try_acquire(conn, mode, key, &token, TTL_MS) {
            Ok(true) => return Some(token),
            Ok(false) => match mode {
                Mode::Wait if shared.stopped() => return None,
                Mode::Wait => {}
                Mode::Poll(delay) => sleep_unless_stopped(shared, delay),
            },
            Err(e) => {
                shared.fail(e);
                return None;
            }
        }
    }
}

fn connections(url: &str, n: usize) -> Vec<Connection> {
    (0..n).map(|_| util::connect(url)).collect()
}

/// Result of one release hand-off run.
pub struct HandoffRun {
    pub latency: Latency,
    /// Acquisition commands per second while measuring.
    pub tries_per_sec: f64,
}

/// Release hand-off: `waiters + 1` clients contend for one key; each holder
/// keeps the lock `hold`, releases, and joins the waiters again. A sample is
/// the time from just before a release is sent to the next grant's reply.
fn handoff_run(
    url: &str,
    sha: &str,
    mode: Mode,
    waiters: usize,
    hold: Duration,
    max: Duration,
    want: usize,
) -> Result<HandoffRun, String> {
    let key = format!("bench:handoff:{}:{waiters}", mode.label());
    let shared = Arc::new(Shared::new());
    let barrier = Arc::new(Barrier::new(waiters + 2));
    let mut handles = Vec::new();
    for (i, mut conn) in connections(url, waiters + 1).into_iter().enumerate() {
        let (shared, barrier, key, sha) = (
            Arc::clone(&shared),
            Arc::clone(&barrier),
            key.clone(),
            sha.to_owned(),
        );
        let h = thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let mut rng = Rng::from_time(i as u64 + 1);
                barrier.wait();
                loop {
                    let Some(token) = acquire_loop(&mut conn, mode, &key, &mut rng, &shared) else {
                        return;
                    };
                    let now = now_ns();
                    let last = shared.last_release.load(SeqCst);
                    if last != u64::MAX && shared.measuring.load(SeqCst) {
                        shared
                            .samples
                            .lock()
                            .expect("samples")
                            .push(now.saturating_sub(last));
                    }
                    if !shared.stopped() {
                        thread::sleep(hold);
                    }
                    shared.last_release.store(now_ns(), SeqCst);
                    if let Err(e) = release(&mut conn, mode, &key, &token, &sha) {
                        shared.fail(e);
                        return;
                    }
                    if shared.stopped() {
                        return;
                    }
                    // Rejoin the waiters. In the server's queue that is the
                    // tail at once; a poller resumes at a random point of its
                    // retry period (else it would simply take the lock back).
                    if let Mode::Poll(delay) = mode {
                        sleep_unless_stopped(&shared, rng.duration_below(delay));
                    }
                }
            })
            .expect("spawn contender");
        handles.push(h);
    }
    barrier.wait();
    // Let the queue fill before measuring.
    thread::sleep(Duration::from_millis(300 + waiters as u64 / 2));
    let tries0 = shared.tries.load(SeqCst);
    shared.samples.lock().expect("samples").clear();
    shared.measuring.store(true, SeqCst);
    let start = Instant::now();
    while start.elapsed() < max
        && shared.samples.lock().expect("samples").len() < want
        && !shared.stopped()
    {
        thread::sleep(Duration::from_millis(10));
    }
    shared.measuring.store(false, SeqCst);
    let secs = start.elapsed().as_secs_f64();
    let tries = shared.tries.load(SeqCst) - tries0;
    shared.stop.store(true, SeqCst);
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = shared.error.lock().expect("error").take() {
        return Err(e);
    }
    let samples: Vec<f64> = shared
        .samples
        .lock()
        .expect("samples")
        .iter()
        .map(|ns| *ns as f64 / 1e6)
        .collect();
    Ok(HandoffRun {
        latency: Latency::from_ms(samples),
        tries_per_sec: tries as f64 / secs,
    })
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Expiry hand-off: a holder takes the lock for a random 10–110 ms and never
/// releases it; one waiter waits. A sample is the time from the lock's
/// deadline (`PEXPIRETIME`, in ms) to the waiter's grant reply. `pairs`
/// holder/waiter pairs run at once, each on its own key.
fn expiry_run(
    url: &str,
    mode: Mode,
    pairs: usize,
    max: Duration,
    want: usize,
) -> Result<Latency, String> {
    let shared = Arc::new(Shared::new());
    let deadline = Instant::now() + max;
    let mut handles = Vec::new();
    for p in 0..pairs {
        let shared = Arc::clone(&shared);
        let mut holder = util::connect(url);
        let mut waiter = util::connect(url);
        handles.push(thread::spawn(move || {
            let key = format!("bench:expiry:{p}");
            let mut rng = Rng::from_time(p as u64 + 100);
            while Instant::now() < deadline
                && shared.samples.lock().expect("samples").len() < want
                && !shared.stopped()
            {
                let ttl = 10 + rng.below(100);
                let token = rng.token();
                // The module's waiter waits on a module lock; bsm/redis-lock's on a SET NX PX key.
                let holder_mode = match mode {
                    Mode::Wait => None,
                    Mode::Poll(_) => Some(Mode::Poll(Duration::ZERO)),
                };
                let taken = match holder_mode {
                    None => redis::cmd("LOCK.ACQUIRE")
                        .arg(&key)
                        .arg(&token)
                        .arg(ttl)
                        .query::<Value>(&mut holder)
                        .map(|v| matches!(v, Value::Int(_)))
                        .map_err(|e| e.to_string()),
                    Some(m) => try_acquire(&mut holder, m, &key, &token, ttl),
                };
                match taken {
                    Ok(true) => {}
                    Ok(false) => {
                        shared.fail("holder found the key busy".into());
                        return;
                    }
                    Err(e) => {
                        shared.fail(e);
                        return;
                    }
                }
                let at: i64 = match redis::cmd("PEXPIRETIME").arg(&key).query(&mut holder) {
                    Ok(at) if at > 0 => at,
                    other => {
                        shared.fail(format!("PEXPIRETIME answered {other:?}"));
                        return;
                    }
                };
                let wtoken = rng.token();
                let granted_at = match mode {
                    Mode::Wait => {
                        shared.tries.fetch_add(1, SeqCst);
                        match try_acquire(&mut waiter, mode, &key, &wtoken, TTL_MS) {
                            Ok(true) => unix_ms(),
                            other => {
                                shared.fail(format!("expiry waiter: {other:?}"));
                                return;
                            }
                        }
                    }
                    Mode::Poll(delay) => {
                        // Arrive at a random point of the retry period.
                        thread::sleep(rng.duration_below(delay));
                        loop {
                            shared.tries.fetch_add(1, SeqCst);
                            match try_acquire(&mut waiter, mode, &key, &wtoken, TTL_MS) {
                                Ok(true) => break unix_ms(),
                                Ok(false) => thread::sleep(delay),
                                Err(e) => {
                                    shared.fail(e);
                                    return;
                                }
                            }
                        }
                    }
                };
                shared
                    .samples
                    .lock()
                    .expect("samples")
                    .push(((granted_at - at as f64).max(0.0) * 1e6) as u64);
                let _: redis::RedisResult<Value> = redis::cmd("DEL").arg(&key).query(&mut waiter);
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = shared.error.lock().expect("error").take() {
        return Err(e);
    }
    let samples = shared
        .samples
        .lock()
        .expect("samples")
        .iter()
        .map(|ns| *ns as f64 / 1e6)
        .collect();
    Ok(Latency::from_ms(samples))
}

/// Fairness: `clients` clients loop lock → hold → unlock on one key for
/// `dur`; acquisitions per client.
fn fairness_run(
    url: &str,
    sha: &str,
    mode: Mode,
    clients: usize,
    hold: Duration,
    dur: Duration,
) -> Result<Vec<u64>, String> {
    let key = format!("bench:fair:{}", mode.label());
    let shared = Arc::new(Shared::new());
    let barrier = Arc::new(Barrier::new(clients + 1));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    let end = Arc::new(Mutex::new(None::<Instant>));
    let mut handles = Vec::new();
    for (i, mut conn) in connections(url, clients).into_iter().enumerate() {
        let (shared, barrier, counts, end, key, sha) = (
            Arc::clone(&shared),
            Arc::clone(&barrier),
            Arc::clone(&counts),
            Arc::clone(&end),
            key.clone(),
            sha.to_owned(),
        );
        handles.push(thread::spawn(move || {
            let mut rng = Rng::from_time(i as u64 + 1000);
            barrier.wait();
            let end = end.lock().expect("end").expect("end set");
            loop {
                let Some(token) = acquire_loop(&mut conn, mode, &key, &mut rng, &shared) else {
                    return;
                };
                if Instant::now() < end {
                    counts[i].fetch_add(1, SeqCst);
                    thread::sleep(hold);
                }
                if let Err(e) = release(&mut conn, mode, &key, &token, &sha) {
                    shared.fail(e);
                    return;
                }
                if shared.stopped() {
                    return;
                }
            }
        }));
    }
    *end.lock().expect("end") = Some(Instant::now() + dur);
    barrier.wait();
    thread::sleep(dur);
    shared.stop.store(true, SeqCst);
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = shared.error.lock().expect("error").take() {
        return Err(e);
    }
    Ok(counts.iter().map(|c| c.load(SeqCst)).collect())
}

/// Sizes of measurements 3 and 4.
#[derive(Clone, Copy, Debug)]
pub struct ContentionSizes {
    pub waiter_counts: [usize; 3],
    /// Longest release hand-off run, and the samples that end it earlier.
    pub handoff_max: Duration,
    pub handoff_samples: usize,
    pub expiry_max: Duration,
    pub expiry_samples: usize,
    pub fairness_dur: Duration,
    pub fairness_clients: usize,
}

const HOLD: Duration = Duration::from_millis(1);

/// Measurements 3 and 4. Without WAIT in the module, the module's rows are
/// skipped and only the polling baselines run.
/// `skip_wait`: why the module's WAIT is not measured (None: it is).
pub fn contention(report: &mut Report, url: &str, skip_wait: Option<&str>, sizes: ContentionSizes) {
    let wait = skip_wait.is_none();
    let mut conn = util::connect(url);
    let sha = util::script_load(&mut conn, util::DEL_SCRIPT);
    let modes: Vec<Mode> = [
        Mode::Wait,
        Mode::Poll(Duration::from_millis(100)),
        Mode::Poll(Duration::from_millis(10)),
    ]
    .into_iter()
    .filter(|m| wait || *m != Mode::Wait)
    .collect();
    let no_wait = skip_wait.unwrap_or_default();

    // 3. Release hand-off.
    let mut table = Table::new(&[
        "waiters",
        "mode",
        "p50",
        "p99",
        "max",
        "samples",
        "acquire commands/s",
    ]);
    let mut wait_results: Vec<(usize, Option<Latency>)> = Vec::new();
    let mut poll_summary: Vec<(usize, String)> = Vec::new();
    let not_measured = |group: String| LatencyBar {
        group,
        mode: format!("module WAIT ({no_wait})"),
        p50: f64::NAN,
        p99: f64::NAN,
        targets: None,
    };
    let group_name = |n: usize| {
        format!(
            "release → next holder, {} waiter{}",
            thousands(n as u64),
            if n == 1 { "" } else { "s" }
        )
    };
    let expiry_group = "lock deadline → waiter holds (holder never releases)";
    for &n in &sizes.waiter_counts {
        let mut polls = Vec::new();
        if !wait {
            report.latency_bars.push(not_measured(group_name(n)));
        }
        for &mode in &modes {
            let r = handoff_run(
                url,
                &sha,
                mode,
                n,
                HOLD,
                sizes.handoff_max,
                sizes.handoff_samples,
            );
            match r {
                Ok(run) => {
                    let l = run.latency;
                    eprintln!(
                        "  hand-off, {n} waiter(s), {}: p50 {} p99 {} ({} samples)",
                        mode.label(),
                        ms(l.p50),
                        ms(l.p99),
                        l.samples
                    );
                    table.push(vec![
                        thousands(n as u64),
                        mode.label(),
                        ms(l.p50),
                        ms(l.p99),
                        ms(l.max),
                        thousands(l.samples as u64),
                        thousands(run.tries_per_sec as u64),
                    ]);
                    report.latency_bars.push(LatencyBar {
                        group: group_name(n),
                        mode: mode.label(),
                        p50: l.p50,
                        p99: l.p99,
                        targets: (mode == Mode::Wait).then_some((1.0, 5.0)),
                    });
                    match mode {
                        Mode::Wait => wait_results.push((n, Some(l))),
                        Mode::Poll(d) => polls.push(format!(
                            "poll {} ms: {} / {}",
                            d.as_millis(),
                            ms(l.p50),
                            ms(l.p99)
                        )),
                    }
                }
                Err(e) => {
                    eprintln!("  hand-off, {n} waiters, {}: FAILED: {e}", mode.label());
                    report.notes.push(format!(
                        "Hand-off with {n} waiters, {}: failed: {e}",
                        mode.label()
                    ));
                    if mode == Mode::Wait {
                        wait_results.push((n, None));
                    }
                }
            }
        }
        poll_summary.push((n, polls.join("; ")));
    }
    if !wait {
        for &n in &sizes.waiter_counts {
            wait_results.push((n, None));
        }
    }
    for (j, (n, l)) in wait_results.iter().enumerate() {
        let baseline = poll_summary
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        for (k, (p, target)) in [("p50", 1.0), ("p99", 5.0)].into_iter().enumerate() {
            let v = l.map(|l| if p == "p50" { l.p50 } else { l.p99 });
            report.rows.push(Row {
                id: format!("3{}", (b'a' + (2 * j + k) as u8) as char),
                what: format!(
                    "release → next holder {p}, {} waiter{}",
                    thousands(*n as u64),
                    if *n == 1 { "" } else { "s" }
                ),
                module: v.map(ms).unwrap_or_else(|| "—".into()),
                baseline: if p == "p50" {
                    format!("p50 / p99: {baseline}")
                } else {
                    "(same runs)".into()
                },
                value: v.unwrap_or(f64::NAN),
                unit: " ms",
                target: Some(Target::at_most(target)),
                skipped: if wait {
                    l.is_none().then(|| "run failed, see notes".into())
                } else {
                    Some(no_wait.into())
                },
            });
        }
    }

    // 3, expiry hand-off.
    let mut wait_expiry = None;
    let mut poll_expiry = Vec::new();
    if !wait {
        report.latency_bars.push(not_measured(expiry_group.into()));
    }
    for &mode in &modes {
        match expiry_run(url, mode, 4, sizes.expiry_max, sizes.expiry_samples) {
            Ok(l) => {
                eprintln!(
                    "  expiry hand-off, {}: p50 {} p99 {} ({} samples)",
                    mode.label(),
                    ms(l.p50),
                    ms(l.p99),
                    l.samples
                );
                table.push(vec![
                    "1 (expiry)".into(),
                    mode.label(),
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max),
                    thousands(l.samples as u64),
                    String::new(),
                ]);
                report.latency_bars.push(LatencyBar {
                    group: expiry_group.into(),
                    mode: mode.label(),
                    p50: l.p50,
                    p99: l.p99,
                    targets: (mode == Mode::Wait).then_some((2.0, 10.0)),
                });
                match mode {
                    Mode::Wait => wait_expiry = Some(l),
                    Mode::Poll(d) => poll_expiry.push(format!(
                        "poll {} ms: {} / {}",
                        d.as_millis(),
                        ms(l.p50),
                        ms(l.p99)
                    )),
                }
            }
            Err(e) => {
                eprintln!("  expiry hand-off, {}: FAILED: {e}", mode.label());
                report
                    .notes
                    .push(format!("Expiry hand-off, {}: failed: {e}", mode.label()));
            }
        }
    }
    for (p, target, id) in [("p50", 2.0, 'g'), ("p99", 10.0, 'h')] {
        let v = wait_expiry.map(|l| if p == "p50" { l.p50 } else { l.p99 });
        report.rows.push(Row {
            id: format!("3{id}"),
            what: format!("expiry: holder's deadline → next waiter holds, {p}"),
            module: v.map(ms).unwrap_or_else(|| "—".into()),
            baseline: if p == "p50" {
                format!("p50 / p99: {}", poll_expiry.join("; "))
            } else {
                "(same runs)".into()
            },
            value: v.unwrap_or(f64::NAN),
            unit: " ms",
            target: Some(Target::at_most(target)),
            skipped: if wait {
                v.is_none().then(|| "run failed, see notes".into())
            } else {
                Some(no_wait.into())
            },
        });
    }
    report.sections.push(Section {
        title: "3. Hand-off under contention".into(),
        method: format!(
            "Release hand-off: waiters + 1 clients (one blocking connection and thread each) contend for one key; \
             the holder keeps the lock {HOLD:?}, releases, and joins the waiters again. A sample is the time \
             from just before the release is sent to the reply that grants the lock to the next holder (one \
             monotonic clock in one process). WAIT clients send `LOCK.ACQUIRE key token {TTL_MS} WAIT {WAIT_MS}` \
             and queue again at once (FIFO tail). Polling clients do what bsm/redis-lock does: `SET key token NX PX \
             {TTL_MS}`, sleep the retry delay, try again, release with the compare-and-delete EVALSHA; after a \
             release a poller resumes at a random point of its retry period (otherwise it simply takes the lock \
             back at once). Each run stops after {} samples or {:?}, after a warm-up that lets the queue fill. \
             \"acquire commands/s\" is the load the waiting puts on the server; where it is high, the \
             polling clients and the server saturate the machine's CPUs, and the polling figures include that.\n\n\
             Expiry hand-off: a holder takes the lock for a random 10–110 ms and never releases it; one waiter \
             (WAIT, or polling from a random point of its period) waits for it. A sample is the time from the \
             lock's deadline (`PEXPIRETIME`, in whole ms) to the grant reply. Redis counts a key as live through its \
             deadline's millisecond (it expires when now > deadline), so any hand-off starts at the earliest \
             1 ms after the deadline as measured here; 4 keys at once, up to {} samples or {:?}. The server runs with default `hz` 10.",
            sizes.handoff_samples, sizes.handoff_max, sizes.expiry_samples, sizes.expiry_max
        ),
        table,
    });

    // 4. Fairness.
    let mut table = Table::new(&[
        "mode",
        "clients",
        "acquisitions: min",
        "median",
        "max",
        "total per s",
        "clients never served",
    ]);
    let mut module_row = None;
    let mut poll_rows = Vec::new();
    for &mode in &modes {
        match fairness_run(
            url,
            &sha,
            mode,
            sizes.fairness_clients,
            HOLD,
            sizes.fairness_dur,
        ) {
            Ok(counts) => {
                let v: Vec<f64> = counts.iter().map(|c| *c as f64).collect();
                let (min, max) = (
                    counts.iter().copied().min().unwrap_or(0),
                    counts.iter().copied().max().unwrap_or(0),
                );
                let med = median(&v);
                let total: u64 = counts.iter().sum();
                let starved = counts.iter().filter(|c| **c == 0).count();
                eprintln!(
                    "  fairness, {}: min {min} median {med} max {max} (total {total})",
                    mode.label()
                );
                table.push(vec![
                    mode.label(),
                    sizes.fairness_clients.to_string(),
                    thousands(min),
                    format!("{med:.0}"),
                    thousands(max),
                    format!("{:.0}", total as f64 / sizes.fairness_dur.as_secs_f64()),
                    starved.to_string(),
                ]);
                report.fairness_bars.push(FairnessBar {
                    mode: mode.label(),
                    min: min as f64,
                    median: med,
                    max: max as f64,
                });
                let text = format!("{min} / {med:.0} / {max}");
                match mode {
                    Mode::Wait => module_row = Some((text, min as f64 / max.max(1) as f64)),
                    Mode::Poll(d) => poll_rows.push(format!("poll {} ms: {text}", d.as_millis())),
                }
            }
            Err(e) => {
                eprintln!("  fairness, {}: FAILED: {e}", mode.label());
                report
                    .notes
                    .push(format!("Fairness, {}: failed: {e}", mode.label()));
            }
        }
    }
    report.rows.push(Row {
        id: "4".into(),
        what: format!(
            "fairness: acquisitions per client (min / median / max), {} clients, one key, {:?}; figure = min ÷ max",
            sizes.fairness_clients, sizes.fairness_dur
        ),
        module: module_row
            .as_ref()
            .map(|(t, _)| format!("WAIT: {t}"))
            .unwrap_or_else(|| "—".into()),
        baseline: poll_rows.join("; "),
        value: module_row.as_ref().map(|(_, r)| *r).unwrap_or(f64::NAN),
        unit: "×",
        target: None,
        skipped: if wait {
            module_row.is_none().then(|| "run failed, see notes".into())
        } else {
            Some(no_wait.into())
        },
    });
    report.sections.push(Section {
        title: "4. Fairness".into(),
        method: format!(
            "{} clients loop lock → hold {HOLD:?} → unlock → lock again on one key for {:?}, each on its own \
             connection and thread; WAIT clients queue in the server, polling clients retry bsm/redis-lock's way \
             (a new Lock() tries at once, then every retry delay).",
            sizes.fairness_clients, sizes.fairness_dur
        ),
        table,
    });
    util::flushall(&mut conn);
}
