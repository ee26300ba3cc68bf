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

/// A summary row: the module's µs per call against the baseline's, each
/// the sum over its commands (lower case, as in commandstats).
struct Pair {
    id: &'static str,
    what: &'static str,
    target: f64,
    module: &'static [&'static str],
    baseline: &'static [&'static str],
}

/// Runs `round` `plan.rounds` times, each returning its counters; a detail
/// row per pair and round, then a summary row per pair: the median ratio.
fn rounds(report: &mut Report, plan: &Plan, pairs: &[Pair], mut round: impl FnMut() -> Delta) {
    let mut ratios = vec![Vec::new(); pairs.len()];
    for n in 1..=plan.rounds {
        let d = round();
        for (p, ratios) in pairs.iter().zip(&mut ratios) {
            let us = |cmds: &[&str]| cmds.iter().map(|c| d.us(c)).sum::<f64>();
            let (m, b) = (us(p.module), us(p.baseline));
            let row = format!("{} | {n} | {m:.3} | {b:.3} | {:.2}×", p.what, m / b);
            let header = "figure | round | module µs | baseline µs | ratio";
            report.detail("Server µs per call, per round", header, row);
            ratios.push(m / b);
        }
    }
    for (p, ratios) in pairs.iter().zip(&ratios) {
        let target = Some(Target::AtMost(p.target));
        report.figure(p.id, p.what, Unit::Ratio, target, median(ratios));
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
        module: &["lock.acquire"],
        baseline: &["set"],
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
        module: &["lock.acquire", "lock.release"],
        baseline: &["set", "del"],
    };
    let release = Pair {
        id: "1c",
        what: "LOCK.RELEASE ÷ bsm/redis-lock's `EVALSHA` compare-and-delete",
        target: 0.5,
        module: &["lock.release"],
        baseline: &["evalsha"],
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
        module: &["lock.check"],
        baseline: &["get"],
    };
    flushall(conn);
    hold(conn, true, "chk:lk:", 100_000, 900_000);
    hold(conn, false, "chk:sk:", 100_000, 900_000);
    let check_lock = format!("LOCK.CHECK chk:lk:__rand_int__ {TOKEN}");
    let commands = [check_lock.as_str(), "GET chk:sk:__rand_int__"];
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
