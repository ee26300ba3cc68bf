//! Server µs per call of the module's commands against their plain-Redis
//! counterparts: each pair runs at the same time on one server, the figures
//! are differences of two `INFO commandstats` snapshots, the ratio the
//! median over rounds.

use std::thread;
use std::time::Instant;

use redis::{Connection, Value};

use crate::redis_benchmark::{probe, run_together};
use crate::redis_io::{connect, flushall, hold, script_load, take, Delta, DEL_SCRIPT, TOKEN};
use crate::report::{Report, Target, Unit};
use crate::stats::median;
use crate::Plan;

/// Key space of the ACQUIRE pair; of the CHECK pair (half of it held).
const ACQUIRE_KEYS: u64 = 100_000;
const CHECK_KEYS: u64 = 200_000;

const ROUNDS: &str = "Server cost per call (µs, per round)";
const ROUND_HEADER: [&str; 6] = ["pair", "round", "module µs", "baseline µs", "ratio", "note"];

fn round_row(report: &mut Report, pair: &str, round: usize, m: f64, b: f64, note: String) {
    eprintln!(
        "  {pair}, round {round}: {m:.3} vs {b:.3} µs ({:.2}×)",
        m / b
    );
    let cells = [
        pair.into(),
        round.to_string(),
        format!("{m:.3}"),
        format!("{b:.3}"),
    ];
    let mut cells = cells.to_vec();
    cells.extend([format!("{:.2}×", m / b), note]);
    report.detail(ROUNDS, &ROUND_HEADER, cells);
}

pub fn server_cost(report: &mut Report, port: u16, url: &str, plan: &Plan) {
    let mut conn = connect(url);
    acquire(report, &mut conn, port, plan);
    cycle(report, &mut conn, url, plan);
    check(report, &mut conn, port, plan);
    flushall(&mut conn);
}

/// LOCK.ACQUIRE vs `SET NX PX`: random keys and a random token per call on
/// both sides, so both see the same mix of fresh grants and refusals.
fn acquire(report: &mut Report, conn: &mut Connection, port: u16, plan: &Plan) {
    let lock: &[&str] = &[
        "LOCK.ACQUIRE",
        "acq:lk:__rand_int__",
        "tok:__rand_int__",
        "5000",
    ];
    let set: &[&str] = &[
        "SET",
        "acq:sk:__rand_int__",
        "tok:__rand_int__",
        "NX",
        "PX",
        "5000",
    ];
    probe(conn, &[lock, set]);
    let mut ratios = Vec::new();
    for round in 1..=plan.rounds {
        flushall(conn);
        let (d, ()) = Delta::of(conn, || {
            run_together(port, &[lock, set], plan.calls, ACQUIRE_KEYS)
        });
        let (m, b) = (d.us("lock.acquire"), d.us("set"));
        round_row(
            report,
            "LOCK.ACQUIRE vs SET NX PX",
            round,
            m,
            b,
            d.acquire_mix(),
        );
        ratios.push(m / b);
    }
    let what = "LOCK.ACQUIRE ÷ `SET NX PX`, same mix of grants and refusals";
    report.figure(
        "1a",
        what,
        Unit::Ratio,
        Some(Target::AtMost(1.0)),
        median(&ratios),
    );
}

/// Cycles per pipeline batch in the cycle pair.
const BATCH: u64 = 50;

/// Full cycles on fresh keys, pipelined: `LOCK.ACQUIRE` + `LOCK.RELEASE` on
/// one side; `SET NX PX` + `DEL` and `SET NX PX` + bsm/redis-lock's
/// `EVALSHA` release taking turns on the other. Every call is a grant or a
/// successful release (checked).
fn cycle(report: &mut Report, conn: &mut Connection, url: &str, plan: &Plan) {
    let sha = script_load(conn, DEL_SCRIPT);
    let (mut cycles, mut releases) = (Vec::new(), Vec::new());
    for round in 1..=plan.rounds {
        flushall(conn);
        let end = Instant::now() + plan.cycle_time;
        let (d, ()) = Delta::of(conn, || {
            thread::scope(|s| {
                for module in [true, false] {
                    let sha = sha.as_str();
                    s.spawn(move || cycles_until(url, module, sha, end));
                }
            })
        });
        let [acq, rel, set, del, eval] =
            ["lock.acquire", "lock.release", "set", "del", "evalsha"].map(|c| d.us(c));
        round_row(
            report,
            "cycle: ACQUIRE + RELEASE vs SET NX PX + DEL",
            round,
            acq + rel,
            set + del,
            String::new(),
        );
        round_row(
            report,
            "LOCK.RELEASE vs EVALSHA compare-and-delete",
            round,
            rel,
            eval,
            String::new(),
        );
        cycles.push((acq + rel) / (set + del));
        releases.push(rel / eval);
    }
    let what = "full cycle: (LOCK.ACQUIRE + LOCK.RELEASE) ÷ (`SET NX PX` + `DEL`)";
    report.figure(
        "1b",
        what,
        Unit::Ratio,
        Some(Target::AtMost(1.25)),
        median(&cycles),
    );
    let what = "LOCK.RELEASE ÷ bsm/redis-lock's `EVALSHA` compare-and-delete";
    report.figure(
        "1c",
        what,
        Unit::Ratio,
        Some(Target::AtMost(0.5)),
        median(&releases),
    );
}

fn cycles_until(url: &str, module: bool, sha: &str, end: Instant) {
    let mut conn = connect(url);
    let mut i = 0u64;
    while Instant::now() < end {
        let mut pipe = redis::pipe();
        for _ in 0..BATCH {
            i += 1;
            let key = format!("cyc:{module}:{i}");
            let token = redis_fenced_lock::new_token("");
            pipe.add_command(take(module, &key, &token, 5000));
            match (module, i % 2) {
                (true, _) => pipe.cmd("LOCK.RELEASE").arg(&key).arg(&token),
                (false, 0) => pipe.cmd("DEL").arg(&key),
                (false, _) => pipe.cmd("EVALSHA").arg(sha).arg(1).arg(&key).arg(&token),
            };
        }
        let replies: Vec<Value> = pipe.query(&mut conn).expect("cycle pipeline");
        for pair in replies.chunks(2) {
            assert!(
                matches!(pair, [Value::Int(_) | Value::Okay, Value::Int(1)]),
                "a cycle on a fresh key was not grant + release: {pair:?}"
            );
        }
    }
}

/// LOCK.CHECK vs one `GET`: half of the key space holds locks (a `SET NX PX`
/// key on the `GET` side) with the token the calls carry.
fn check(report: &mut Report, conn: &mut Connection, port: u16, plan: &Plan) {
    let keys = CHECK_KEYS;
    flushall(conn);
    hold(conn, true, "chk:lk:", keys / 2, 900_000);
    hold(conn, false, "chk:sk:", keys / 2, 900_000);
    let check: &[&str] = &["LOCK.CHECK", "chk:lk:__rand_int__", TOKEN];
    let get: &[&str] = &["GET", "chk:sk:__rand_int__"];
    probe(conn, &[check, get]);
    let mut ratios = Vec::new();
    for round in 1..=plan.rounds {
        let (d, ()) = Delta::of(conn, || run_together(port, &[check, get], plan.calls, keys));
        let (m, b) = (d.us("lock.check"), d.us("get"));
        round_row(
            report,
            "LOCK.CHECK vs GET",
            round,
            m,
            b,
            "≈50% of calls hit a held key".into(),
        );
        ratios.push(m / b);
    }
    let what = "LOCK.CHECK ÷ one `GET` of the same kind of key";
    report.figure(
        "1d",
        what,
        Unit::Ratio,
        Some(Target::AtMost(1.2)),
        median(&ratios),
    );
}
