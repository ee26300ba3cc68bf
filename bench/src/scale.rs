//! Scale: what LOCK.ACQUIRE costs with 1,000,000 live locks against 1,000,
//! beyond what the same growth costs `SET NX PX`.

use crate::redis_benchmark::run_together;
use crate::redis_io::{connect, hold, Delta};
use crate::report::{Report, Target, Unit};
use crate::stats::{median, thousands};
use crate::Plan;
use testkit::Server;

/// Keys that the churn runs on, on both servers.
const CHURN_KEYS: u64 = 1000;
const CALLS: u64 = 300_000;

/// `servers`: one holding the bulk-loaded locks, one holding nothing else.
pub fn scale(report: &mut Report, servers: [&Server; 2], plan: &Plan) {
    // A random token per call, and DEL running alongside: an ACQUIRE (or
    // SET NX) is a fresh grant when the key was just deleted, a refusal
    // otherwise; the same mix on both servers, and nothing expires.
    let acquire = [
        "LOCK.ACQUIRE churn:__rand_int__ tok:__rand_int__ 600000",
        "DEL churn:__rand_int__",
    ];
    let set = [
        "SET setchurn:__rand_int__ tok:__rand_int__ NX PX 600000",
        "DEL setchurn:__rand_int__",
    ];
    let mut conns = servers.map(|s| connect(&s.url()));
    for c in &mut conns {
        hold(c, true, "churn:", CHURN_KEYS, 600_000);
        hold(c, false, "setchurn:", CHURN_KEYS, 600_000);
    }
    let title = format!(
        "Scale: µs per call with {} live locks and with 1,000",
        thousands(plan.bulk)
    );
    // Per round: µs per call the big database adds to ACQUIRE, and to SET.
    let mut added = [Vec::new(), Vec::new()];
    for round in 1..=plan.rounds + 2 {
        for (cmd, pair) in [("lock.acquire", acquire), ("set", set)] {
            // One server at a time: two busy servers on a small machine
            // preempt each other inside commands, which swamps the
            // difference sought. Which goes first alternates.
            let mut us = [0.0; 2];
            for i in if round % 2 == 0 { [1, 0] } else { [0, 1] } {
                let port = servers[i].port();
                us[i] = Delta::of(&mut conns[i], |c| {
                    run_together(c, port, &pair, CALLS, CHURN_KEYS)
                })
                .us(cmd);
            }
            let ([big, small], c) = (us, cmd.to_uppercase());
            report.detail(
                &title,
                "round | command | µs, big database | µs, 1,000 keys",
                format!("{round} | {c} | {big:.3} | {small:.3}"),
            );
            added[usize::from(cmd == "set")].push(big - small);
        }
    }
    let beyond: Vec<f64> = added[0].iter().zip(&added[1]).map(|(m, s)| m - s).collect();
    let what = format!(
        "scale: µs that {} live locks add to LOCK.ACQUIRE (against 1,000), beyond what they add to `SET NX PX`",
        thousands(plan.bulk)
    );
    report.figure(
        "7",
        &what,
        Unit::Us,
        Some(Target::AtMost(0.15)),
        median(&beyond),
    );
}
