//! Measurements 1 (server cost per command) and 6 (scale): redis-benchmark
//! drives each pair at the same time, and the figures are differences of
//! two `INFO commandstats` snapshots.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::Connection;

use crate::report::{RatioBar, Report, Row, Section, Table, Target};
use crate::util::{self, commandstats, delta, info, median, thousands, FIXED_TOKEN};

/// Pipeline depth and connections of every redis-benchmark process.
pub const PIPELINE: &str = "32";
pub const CLIENTS: &str = "20";

fn benchmark_binary() -> String {
    std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".to_owned())
}

/// The redis-benchmark command line for one side (for the report).
pub fn command_line(n: u64, r: u64, args: &[String]) -> String {
    format!(
        "redis-benchmark -P {PIPELINE} -c {CLIENTS} -r {r} -n {n} {}",
        args.join(" ")
    )
}

fn spawn(port: u16, n: u64, r: u64, args: &[String]) -> Child {
    Command::new(benchmark_binary())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-P", PIPELINE, "-c", CLIENTS, "-q"])
        .args(["-r", &r.to_string(), "-n", &n.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn redis-benchmark (set REDIS_BENCHMARK?): {e}"))
}

/// One side of a pair: the server it runs on and the command it sends.
pub struct Side<'a> {
    pub port: u16,
    pub conn: &'a mut Connection,
    /// Name in commandstats, e.g. `lock.acquire`.
    pub cmdstat: &'a str,
    pub args: Vec<String>,
}

/// When the figures are taken.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Only while both processes run: the snapshot is taken when the first
    /// one ends and the other is stopped.
    WhileBoth,
    /// Both run their `n` calls to the end (so both see the same sequence
    /// of hits and misses on keys that the calls consume).
    UntilBothDone,
}

/// One side's figures over the window.
pub struct SideResult {
    pub calls: u64,
    pub us_per_call: f64,
    /// Changes of the side's server's `lock_stats` (shared by the sides on
    /// one server).
    pub lock_stats: HashMap<String, i64>,
}

/// Calls and µs per call of each side of a pair.
pub struct PairResult {
    pub a: (u64, f64),
    pub b: (u64, f64),
    pub a_lock_stats: HashMap<String, i64>,
    pub secs: f64,
}

impl PairResult {
    pub fn ratio(&self) -> f64 {
        self.a.1 / self.b.1
    }
}

fn lock_stats(conn: &mut Connection) -> HashMap<String, i64> {
    info(conn, "lock_stats")
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.parse::<i64>().ok()?)))
        .collect()
}

fn finish(child: &mut Child, what: &str) {
    let status = child.wait().expect("wait for redis-benchmark");
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("redis-benchmark for {what} failed ({status}): {err}");
    }
}

/// Runs all sides at the same time, `n` calls each over keys `0..r`.
pub fn run_sides(sides: &mut [Side], n: u64, r: u64, window: Window) -> (Vec<SideResult>, f64) {
    let before: Vec<_> = sides
        .iter_mut()
        .map(|s| (commandstats(s.conn), lock_stats(s.conn)))
        .collect();
    let start = Instant::now();
    let mut children: Vec<Child> = sides.iter().map(|s| spawn(s.port, n, r, &s.args)).collect();
    if window == Window::WhileBoth {
        while !children
            .iter_mut()
            .any(|c| c.try_wait().expect("try_wait").is_some())
        {
            thread::sleep(Duration::from_millis(2));
        }
    } else {
        for (c, s) in children.iter_mut().zip(sides.iter()) {
            finish(c, s.cmdstat);
        }
    }
    let after: Vec<_> = sides
        .iter_mut()
        .map(|s| (commandstats(s.conn), lock_stats(s.conn)))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    for (c, s) in children.iter_mut().zip(sides.iter()) {
        if c.try_wait().expect("try_wait").is_none() {
            let _ = c.kill();
            let _ = c.wait();
        } else {
            finish(c, s.cmdstat);
        }
    }
    let results = sides
        .iter()
        .zip(before.iter().zip(after.iter()))
        .map(|(s, ((c0, l0), (c1, l1)))| {
            let (calls, us_per_call) = delta(c0, c1, s.cmdstat);
            SideResult {
                calls,
                us_per_call,
                lock_stats: l1
                    .iter()
                    .map(|(k, v)| (k.clone(), v - l0.get(k).copied().unwrap_or(0)))
                    .collect(),
            }
        })
        .collect();
    (results, secs)
}

/// Runs both sides at the same time; `n` calls each over keys `0..r`.
pub fn run_pair(a: &mut Side, b: &mut Side, n: u64, r: u64, window: Window) -> PairResult {
    let mut sides = [
        Side {
            port: a.port,
            conn: &mut *a.conn,
            cmdstat: a.cmdstat,
            args: a.args.clone(),
        },
        Side {
            port: b.port,
            conn: &mut *b.conn,
            cmdstat: b.cmdstat,
            args: b.args.clone(),
        },
    ];
    let (mut res, secs) = run_sides(&mut sides, n, r, window);
    let b = res.pop().expect("side b");
    let a = res.pop().expect("side a");
    PairResult {
        a: (a.calls, a.us_per_call),
        b: (b.calls, b.us_per_call),
        a_lock_stats: a.lock_stats,
        secs,
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn pct(part: i64, whole: i64) -> String {
    if whole <= 0 {
        "n/a".into()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}

/// Sizes of the server-cost phases.
#[derive(Clone, Copy, Debug)]
pub struct CostSizes {
    pub rounds: usize,
    /// Calls per side for ACQUIRE and CHECK (the window ends when the faster side ends).
    pub calls: u64,
    /// Key space of the ACQUIRE pair (random keys, random tokens).
    pub acquire_keys: u64,
    /// Locks held before each RELEASE round; each side makes as many calls.
    pub release_keys: u64,
    /// Key space of the CHECK pair; half of it holds locks.
    pub check_keys: u64,
    /// Rounds of measurement 6, and calls per process in each turn.
    pub scale_rounds: usize,
    pub scale_calls: u64,
}

/// A pair's rounds, summarised.
struct PairSummary {
    module_us: f64,
    baseline_us: f64,
    ratio: f64,
}

fn summarise(
    table: &mut Table,
    name: &str,
    results: &[PairResult],
    mut mix: impl FnMut(&PairResult) -> String,
) -> PairSummary {
    for (i, r) in results.iter().enumerate() {
        table.push(vec![
            name.to_owned(),
            format!("{}", i + 1),
            format!("{:.3}", r.a.1),
            format!("{:.3}", r.b.1),
            format!("{:.2}×", r.ratio()),
            thousands(r.a.0),
            thousands(r.b.0),
            mix(r),
        ]);
    }
    let s = PairSummary {
        module_us: median(&results.iter().map(|r| r.a.1).collect::<Vec<_>>()),
        baseline_us: median(&results.iter().map(|r| r.b.1).collect::<Vec<_>>()),
        ratio: median(&results.iter().map(PairResult::ratio).collect::<Vec<_>>()),
    };
    table.push(vec![
        name.to_owned(),
        "median".into(),
        format!("**{:.3}**", s.module_us),
        format!("**{:.3}**", s.baseline_us),
        format!("**{:.2}×**", s.ratio),
        String::new(),
        String::new(),
        String::new(),
    ]);
    s
}

/// Checks that each command of a pair works before hammering it.
fn probe(conn: &mut Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(a.replace("__rand_int__", "probe"));
    }
    let r: redis::RedisResult<redis::Value> = cmd.query(conn);
    if let Err(e) = r {
        panic!("{}: {e}", args.join(" "));
    }
}

/// Measurement 1: LOCK.ACQUIRE vs SET NX PX, LOCK.RELEASE vs bsm/redis-lock's
/// compare-and-delete EVALSHA, LOCK.CHECK vs a compare-and-PTTL EVALSHA.
pub fn server_cost(report: &mut Report, port: u16, url: &str, sizes: CostSizes) {
    let mut ca = util::connect(url);
    let mut cb = util::connect(url);
    let del_sha = util::script_load(&mut ca, util::DEL_SCRIPT);
    let pttl_sha = util::script_load(&mut ca, util::PTTL_SCRIPT);
    let mut table = Table::new(&[
        "pair",
        "round",
        "module µs/call",
        "baseline µs/call",
        "ratio",
        "module calls",
        "baseline calls",
        "module side's mix",
    ]);

    // ACQUIRE vs SET NX PX: random keys, a random token per call on both sides.
    let acq = strings(&[
        "LOCK.ACQUIRE",
        "acq:lk:__rand_int__",
        "tok:__rand_int__",
        "5000",
    ]);
    let set = strings(&[
        "SET",
        "acq:sk:__rand_int__",
        "tok:__rand_int__",
        "NX",
        "PX",
        "5000",
    ]);
    probe(&mut ca, &acq.iter().map(String::as_str).collect::<Vec<_>>());
    probe(&mut ca, &set.iter().map(String::as_str).collect::<Vec<_>>());
    let mut results = Vec::new();
    for round in 0..sizes.rounds {
        util::flushall(&mut ca);
        let r = run_pair(
            &mut Side {
                port,
                conn: &mut ca,
                cmdstat: "lock.acquire",
                args: acq.clone(),
            },
            &mut Side {
                port,
                conn: &mut cb,
                cmdstat: "set",
                args: set.clone(),
            },
            sizes.calls,
            sizes.acquire_keys,
            Window::WhileBoth,
        );
        eprintln!(
            "  acquire round {}: {:.3} vs {:.3} µs/call ({:.2}×, {:.1} s)",
            round + 1,
            r.a.1,
            r.b.1,
            r.ratio(),
            r.secs
        );
        results.push(r);
    }
    let acquire = summarise(&mut table, "ACQUIRE vs SET NX PX", &results, |r| {
        let g = r.a_lock_stats.get("lock_acquired").copied().unwrap_or(0);
        let n = r.a_lock_stats.get("lock_renewed").copied().unwrap_or(0);
        let f = r.a_lock_stats.get("lock_refused").copied().unwrap_or(0);
        format!(
            "{} granted, {} renewed, {} refused",
            pct(g, g + n + f),
            pct(n, g + n + f),
            pct(f, g + n + f)
        )
    });

    // RELEASE vs EVALSHA compare-and-delete: both sides start with the same
    // number of held locks (same token) and make as many calls on random keys.
    let k = sizes.release_keys;
    let rel = strings(&["LOCK.RELEASE", "rel:lk:__rand_int__", FIXED_TOKEN]);
    let evs = strings(&["EVALSHA", &del_sha, "1", "rel:sk:__rand_int__", FIXED_TOKEN]);
    probe(&mut ca, &rel.iter().map(String::as_str).collect::<Vec<_>>());
    probe(&mut ca, &evs.iter().map(String::as_str).collect::<Vec<_>>());
    let mut results = Vec::new();
    let mut hit_notes = Vec::new();
    for round in 0..sizes.rounds {
        util::flushall(&mut ca);
        util::hold_locks(&mut ca, "rel:lk:", k, FIXED_TOKEN, 900_000);
        util::hold_setnx_locks(&mut ca, "rel:sk:", k, FIXED_TOKEN, 900_000);
        let r = run_pair(
            &mut Side {
                port,
                conn: &mut ca,
                cmdstat: "lock.release",
                args: rel.clone(),
            },
            &mut Side {
                port,
                conn: &mut cb,
                cmdstat: "evalsha",
                args: evs.clone(),
            },
            k,
            k,
            Window::UntilBothDone,
        );
        let module_hits = r.a_lock_stats.get("lock_released").copied().unwrap_or(0);
        let remaining = util::dbsize(&mut ca) as i64;
        let setnx_remaining = remaining - (k as i64 - module_hits);
        let setnx_hits = k as i64 - setnx_remaining;
        hit_notes.push((module_hits, setnx_hits));
        eprintln!(
            "  release round {}: {:.3} vs {:.3} µs/call ({:.2}×, {:.1} s; hits {} vs {})",
            round + 1,
            r.a.1,
            r.b.1,
            r.ratio(),
            r.secs,
            pct(module_hits, k as i64),
            pct(setnx_hits, k as i64)
        );
        results.push(r);
    }
    let mut i = 0;
    let release = summarise(
        &mut table,
        "RELEASE vs EVALSHA del",
        &results,
        |_| -> String {
            let (m, s) = hit_notes[i.min(hit_notes.len() - 1)];
            i += 1;
            format!(
                "{} released (baseline deleted {})",
                pct(m, k as i64),
                pct(s, k as i64)
            )
        },
    );

    // CHECK vs EVALSHA compare-and-PTTL: half of the key space holds locks
    // with the token the calls carry, on both sides.
    let ck = sizes.check_keys;
    util::flushall(&mut ca);
    util::hold_locks(&mut ca, "chk:lk:", ck / 2, FIXED_TOKEN, 900_000);
    util::hold_setnx_locks(&mut ca, "chk:sk:", ck / 2, FIXED_TOKEN, 900_000);
    let chk = strings(&["LOCK.CHECK", "chk:lk:__rand_int__", FIXED_TOKEN]);
    let evp = strings(&[
        "EVALSHA",
        &pttl_sha,
        "1",
        "chk:sk:__rand_int__",
        FIXED_TOKEN,
    ]);
    probe(&mut ca, &chk.iter().map(String::as_str).collect::<Vec<_>>());
    probe(&mut ca, &evp.iter().map(String::as_str).collect::<Vec<_>>());
    let mut results = Vec::new();
    for round in 0..sizes.rounds {
        let r = run_pair(
            &mut Side {
                port,
                conn: &mut ca,
                cmdstat: "lock.check",
                args: chk.clone(),
            },
            &mut Side {
                port,
                conn: &mut cb,
                cmdstat: "evalsha",
                args: evp.clone(),
            },
            sizes.calls,
            ck,
            Window::WhileBoth,
        );
        eprintln!(
            "  check round {}: {:.3} vs {:.3} µs/call ({:.2}×, {:.1} s)",
            round + 1,
            r.a.1,
            r.b.1,
            r.ratio(),
            r.secs
        );
        results.push(r);
    }
    let check = summarise(&mut table, "CHECK vs EVALSHA pttl", &results, |_| {
        "≈50% of calls hit a held lock".into()
    });
    util::flushall(&mut ca);

    for (id, what, s, target) in [
        (
            "1a",
            "LOCK.ACQUIRE vs SET NX PX (server µs/call)",
            &acquire,
            1.0,
        ),
        (
            "1b",
            "LOCK.RELEASE vs EVALSHA compare-and-delete (server µs/call)",
            &release,
            0.5,
        ),
        (
            "1c",
            "LOCK.CHECK vs EVALSHA compare-and-PTTL (server µs/call)",
            &check,
            0.5,
        ),
    ] {
        report.rows.push(Row {
            id: id.into(),
            what: what.into(),
            module: format!("{:.3} µs", s.module_us),
            baseline: format!("{:.3} µs", s.baseline_us),
            value: s.ratio,
            unit: "×",
            target: Some(Target::at_most(target)),
            skipped: None,
        });
    }
    report.ratio_bars.push(RatioBar::new(
        "LOCK.ACQUIRE ÷ SET NX PX (server µs)",
        acquire.ratio,
        1.0,
    ));
    report.ratio_bars.push(RatioBar::new(
        "LOCK.RELEASE ÷ EVALSHA del (server µs)",
        release.ratio,
        0.5,
    ));
    report.ratio_bars.push(RatioBar::new(
        "LOCK.CHECK ÷ EVALSHA pttl (server µs)",
        check.ratio,
        0.5,
    ));
    let method = format!(
        "Each pair runs as two redis-benchmark processes at the same time against one server \
         (`-P {PIPELINE} -c {CLIENTS}`); a side's µs/call is the change of `usec` over the change of `calls` \
         between two `INFO commandstats` snapshots; {rounds} rounds, the ratio quoted is the median of the \
         rounds' ratios.\n\n\
         - ACQUIRE: `{acq}` against `{set}`: random keys and a random token per call on both sides, so both \
         see the same mix of fresh acquisitions and refusals; figures cover the time both ran (snapshot when \
         the first ends).\n\
         - RELEASE: before each round {k} locks are held on each side with one token (`LOCK.ACQUIRE` on one \
         side, `SET NX PX` on the other); then `{rel}` against `{evs}`, {k} calls each on random keys of the same \
         {k}, both run to the end so both see the same share of hits (a key's first release deletes it, \
         later ones miss).\n\
         - CHECK: {half} of {ck} keys hold a lock with the token the calls carry, on each side; `{chk}` against \
         `{evp}`.",
        rounds = sizes.rounds,
        acq = command_line(sizes.calls, sizes.acquire_keys, &acq),
        set = command_line(sizes.calls, sizes.acquire_keys, &set),
        rel = command_line(k, k, &rel),
        evs = command_line(k, k, &evs).replace(&del_sha, "<sha1>"),
        chk = command_line(sizes.calls, ck, &chk),
        evp = command_line(sizes.calls, ck, &evp).replace(&pttl_sha, "<sha1>"),
        half = thousands(ck / 2),
        ck = thousands(ck),
        k = thousands(k),
    );
    report.sections.push(Section {
        title: "1. Server cost per command".into(),
        method,
        table,
    });
}

/// Measurement 6: server cost of LOCK.ACQUIRE with 1 000 vs 1 000 000 live
/// locks, on two servers driven at the same time; and, as the baseline, the
/// same for `SET NX PX`, which shows what the database's size costs Redis
/// itself.
pub fn scale(
    report: &mut Report,
    big: (u16, &str),
    small: (u16, &str),
    big_locks: u64,
    sizes: CostSizes,
) {
    let mut cb = util::connect(big.1);
    let mut cs = util::connect(small.1);
    let mut cb2 = util::connect(big.1);
    let mut cs2 = util::connect(small.1);
    let churn_keys = 1000;
    // A random token per call, and DEL as the other process on both sides:
    // an ACQUIRE (or SET NX) is a fresh grant when the key was just
    // deleted, a refusal otherwise; the same mix of operations on both
    // sides, and nothing expires.
    let acq = strings(&[
        "LOCK.ACQUIRE",
        "churn:__rand_int__",
        "tok:__rand_int__",
        "600000",
    ]);
    let rel = strings(&["DEL", "churn:__rand_int__"]);
    let set = strings(&[
        "SET",
        "setchurn:__rand_int__",
        "tok:__rand_int__",
        "NX",
        "PX",
        "600000",
    ]);
    let del = strings(&["DEL", "setchurn:__rand_int__"]);
    for c in [&mut cb, &mut cs] {
        for args in [&acq, &rel, &set, &del] {
            probe(c, &args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        util::hold_locks(c, "churn:", churn_keys, FIXED_TOKEN, 600_000);
        util::hold_setnx_locks(c, "setchurn:", churn_keys, FIXED_TOKEN, 600_000);
    }
    let big_label = thousands(big_locks);
    let mut table = Table::new(&[
        "round",
        "command",
        &format!("µs/call with {big_label} locks"),
        "µs/call with 1,000 locks",
        "ratio",
        "keys (big / small server)",
        "ACQUIRE grants / refusals (big; small)",
    ]);
    let mut module_ratios = Vec::new();
    let mut set_ratios = Vec::new();
    // µs per call a big database adds, per round.
    let mut set_added = Vec::new();
    let mut bigs = Vec::new();
    let mut smalls = Vec::new();
    let calls = sizes.scale_calls;
    for round in 0..sizes.scale_rounds {
        for (cmdstat, add, remove) in [("lock.acquire", &acq, &rel), ("set", &set, &del)] {
            let remover = "del";
            // One server at a time (two servers at once on a small machine
            // preempt each other inside commands, which swamps the figure),
            // alternating which goes first.
            let mut us = [0.0f64; 2];
            let mut mixes = [String::new(), String::new()];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let (port, conn, conn2) = if which == 0 {
                    (big.0, &mut cb, &mut cb2)
                } else {
                    (small.0, &mut cs, &mut cs2)
                };
                let (res, _) = run_sides(
                    &mut [
                        Side {
                            port,
                            conn,
                            cmdstat,
                            args: add.clone(),
                        },
                        Side {
                            port,
                            conn: conn2,
                            cmdstat: remover,
                            args: remove.clone(),
                        },
                    ],
                    calls,
                    churn_keys,
                    Window::WhileBoth,
                );
                us[which] = res[0].us_per_call;
                let m = &res[0].lock_stats;
                let g = m.get("lock_acquired").copied().unwrap_or(0);
                let n = m.get("lock_refused").copied().unwrap_or(0);
                mixes[which] = format!("{} / {}", pct(g, g + n), pct(n, g + n));
            }
            let ratio = us[0] / us[1];
            let (kb, ks) = (util::dbsize(&mut cb), util::dbsize(&mut cs));
            eprintln!(
                "  scale round {}, {cmdstat}: {:.3} vs {:.3} µs/call ({ratio:.2}×)",
                round + 1,
                us[0],
                us[1],
            );
            table.push(vec![
                format!("{}", round + 1),
                cmdstat.to_uppercase(),
                format!("{:.3}", us[0]),
                format!("{:.3}", us[1]),
                format!("{ratio:.2}×"),
                format!("{} / {}", thousands(kb), thousands(ks)),
                if cmdstat == "set" {
                    String::new()
                } else {
                    format!("{}; {}", mixes[0], mixes[1])
                },
            ]);
            if cmdstat == "set" {
                set_ratios.push(ratio);
                set_added.push(us[0] - us[1]);
            } else {
                module_ratios.push(ratio);
                bigs.push(us[0]);
                smalls.push(us[1]);
            }
        }
    }
    let small_us = median(&smalls);
    let (module_ratio, set_ratio) = (median(&module_ratios), median(&set_ratios));
    let module_added: Vec<f64> = bigs.iter().zip(&smalls).map(|(b, s)| b - s).collect();
    // The module's extra cost beyond what the same growth costs SET NX PX,
    // per round (both measured minutes apart at most), then the median.
    let beyond = median(
        &module_added
            .iter()
            .zip(&set_added)
            .map(|(m, s)| m - s)
            .collect::<Vec<_>>(),
    );
    let (m_add, s_add) = (median(&module_added), median(&set_added));
    for (what, r, a) in [
        ("LOCK.ACQUIRE", module_ratio, m_add),
        ("SET (NX PX)", set_ratio, s_add),
    ] {
        table.push(vec![
            "median".into(),
            what.into(),
            String::new(),
            String::new(),
            format!("**{r:.2}×** ({a:+.2} µs)"),
            String::new(),
            String::new(),
        ]);
    }
    let tolerance = 0.15;
    report.rows.push(Row {
        id: "6".into(),
        what: format!(
            "LOCK.ACQUIRE server µs/call, {big_label} vs 1,000 live locks; figure = µs it adds beyond what SET NX PX adds"
        ),
        module: format!("{small_us:.2} µs, {m_add:+.2} µs at {big_label} ({module_ratio:.2}×)"),
        baseline: format!("SET NX PX: {s_add:+.2} µs ({set_ratio:.2}×)"),
        value: beyond,
        unit: " µs",
        target: Some(Target::at_most(tolerance)),
        skipped: None,
    });
    let mut bar = RatioBar::new(
        format!("ACQUIRE with {big_label} ÷ 1,000 locks"),
        module_ratio,
        set_ratio,
    );
    bar.met = Some(beyond <= tolerance);
    bar.caption = Some(format!(
        "{module_ratio:.2}× (dashed: SET's {set_ratio:.2}×; {beyond:+.2} µs, {})",
        if beyond <= tolerance { "met" } else { "MISSED" }
    ));
    report.ratio_bars.push(bar);
    report.sections.push(Section {
        title: format!("6. Scale: ACQUIRE cost with 1,000 vs {big_label} live locks"),
        method: format!(
            "Two servers with the module: one also holds the {big_label} locks of measurement 5 (15-minute \
             TTL), the other nothing else. On each, 1,000 churn locks are held; then two redis-benchmark \
             processes run at once against one server, then against the other (alternating which goes \
             first): `{}` and `{}`. An ACQUIRE is a fresh grant when the key was just deleted, a refusal \
             otherwise; no lock expires during the run, so no expiry work (done by the cron on one server, inside commands on the other) skews the \
             figures. The servers take turns rather than run together: two busy servers on a small machine \
             preempt each other in the middle of commands, which swamps the difference sought. The \
             LOCK.ACQUIRE µs/call of the two servers are compared. As the baseline, each round \
             then does the same with `SET key tok:__rand_int__ NX PX 600000` and `DEL` on 1,000 other keys \
             (the same mix of fresh keys and refusals): a bigger database \
             costs Redis itself more per command (hash-table and cache misses, a roughly fixed number of µs \
             per call, so a ratio flatters the costlier command). The module counts as flat when the µs per \
             call it gains with the big database exceed SET NX PX's gain by at most {tolerance} µs (median \
             over rounds of the per-round difference). {} rounds.",
            command_line(calls, churn_keys, &acq),
            command_line(calls, churn_keys, &rel),
            sizes.scale_rounds
        ),
        table,
    });
}
