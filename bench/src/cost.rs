//! Server µs per call of the module's commands against their plain-Redis
//! counterparts: each pair runs at the same time on one server, the figures
//! are differences of two `INFO commandstats` snapshots, the ratio the
//! median over rounds.

use std::thread;
use std::time::Instant;

use redis::Value;

use crate::redis_benchmark::run_together;
use crate::redis_io::{connect, flushall, hold, take, Delta, RELEASE, TOKEN};
use crate::report::{Report, Target, Unit};
use crate::stats::median;
use crate::Plan;

const COST: &str = "Server µs per call, per round";

/// A summary row: the module's µs per call against the baseline's, from one round's counters.
struct Pair {
    id: &'static str,
    what: &'static str,
    target: f64,
    us: fn(&Delta) -> (f64, f64),
}

/// Runs `round` `plan.rounds` times, each returning its counters; a detail
/// row per pair and round, then a summary row per pair: the median ratio.
fn rounds(report: &mut Report, plan: &Plan, pairs: &[Pair], mut round: impl FnMut() -> Delta) {
    let mut ratios = vec![Vec::new(); pairs.len()];
    for n in 1..=plan.rounds {
        let d = round();
        for (p, ratios) in pairs.iter().zip(&mut ratios) {
            let (m, b) = (p.us)(&d);
            let row = format!("{} | {n} | {m:.3} | {b:.3} | {:.2}×", p.what, m / b);
            report.detail(
                COST,
                "figure | round | module µs | baseline µs | ratio",
                row,
            );
            ratios.push(m / b);
        }
    }
    for (p, ratios) in pairs.iter().zip(&ratios) {
        report.figure(
            p.id,
            p.what,
            Unit::Ratio,
            Some(Target::AtMost(p.target)),
            median(ratios),
        );
    }
}

pub fn server_cost(report: &mut Report, port: u16, url: &str, plan: &Plan) {
    let conn = &mut connect(url);
    // Random keys and a random token per call on both sides, so that both
    // see the same mix of fresh grants and refusals.
    let acquire = Pair {
        id: "1a",
        what: "LOCK.ACQUIRE ÷ `SET NX PX`, same mix of grants and refusals",
        target: 1.0,
        us: |d| (d.us("lock.acquire"), d.us("set")),
    };
    let commands = [
        "LOCK.ACQUIRE acq:lk:__rand_int__ tok:__rand_int__ 5000",
        "SET acq:sk:__rand_int__ tok:__rand_int__ NX PX 5000",
    ];
    rounds(report, plan, &[acquire], || {
        flushall(conn);
        Delta::of(conn, |c| {
            run_together(c, port, &commands, plan.calls, 100_000)
        })
    });

    let cycle = Pair {
        id: "1b",
        what: "full cycle: (LOCK.ACQUIRE + LOCK.RELEASE) ÷ (`SET NX PX` + `DEL`)",
        target: 1.25,
        us: |d| {
            (
                d.us("lock.acquire") + d.us("lock.release"),
                d.us("set") + d.us("del"),
            )
        },
    };
    let release = Pair {
        id: "1c",
        what: "LOCK.RELEASE ÷ bsm/redis-lock's `EVALSHA` compare-and-delete",
        target: 0.5,
        us: |d| (d.us("lock.release"), d.us("evalsha")),
    };
    RELEASE.load(conn).expect("SCRIPT LOAD");
    rounds(report, plan, &[cycle, release], || {
        flushall(conn);
        let end = Instant::now() + plan.cycle_time;
        Delta::of(conn, |_| {
            thread::scope(|s| {
                for module in [true, false] {
                    s.spawn(move || cycles_until(url, module, end));
                }
            })
        })
    });

    // Half of the key space holds locks (`SET NX PX` keys on the `GET`
    // side) with the token the calls carry.
    let check = Pair {
        id: "1d",
        what: "LOCK.CHECK ÷ one `GET` of the same kind of key",
        target: 1.2,
        us: |d| (d.us("lock.check"), d.us("get")),
    };
    flushall(conn);
    hold(conn, true, "chk:lk:", 100_000, 900_000);
    hold(conn, false, "chk:sk:", 100_000, 900_000);
    let commands = [
        format!("LOCK.CHECK chk:lk:__rand_int__ {TOKEN}"),
        "GET chk:sk:__rand_int__".into(),
    ];
    let commands = commands.each_ref().map(String::as_str);
    rounds(report, plan, &[check], || {
        Delta::of(conn, |c| {
            run_together(c, port, &commands, plan.calls, 200_000)
        })
    });
    flushall(conn);
}

/// Full cycles on fresh keys, pipelined 50 at a time, until `end`:
/// `LOCK.ACQUIRE` + `LOCK.RELEASE` (`module`), else `SET NX PX` + `DEL`
/// and `SET NX PX` + bsm/redis-lock's `EVALSHA` release taking turns.
/// Every call must be a grant or a successful release.
fn cycles_until(url: &str, module: bool, end: Instant) {
    let mut conn = connect(url);
    let mut i = 0u64;
    while Instant::now() < end {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            i += 1;
            let (key, token) = (
                format!("cyc:{module}:{i}"),
                redis_fenced_lock::new_token(""),
            );
            pipe.add_command(take(module, &key, &token, 5000));
            match (module, i % 2) {
                (true, _) => pipe.cmd("LOCK.RELEASE").arg((&key, &token)),
                (false, 0) => pipe.cmd("DEL").arg(&key),
                (false, _) => pipe
                    .cmd("EVALSHA")
                    .arg((RELEASE.get_hash(), 1, &key, &token)),
            };
        }
        let replies: Vec<Value> = pipe.query(&mut conn).expect("cycle pipeline");
        for pair in replies.chunks(2) {
            let ok = matches!(pair, [Value::Int(_) | Value::Okay, Value::Int(1)]);
            assert!(
                ok,
                "a cycle on a fresh key was not grant + release: {pair:?}"
            );
        }
    }
}
