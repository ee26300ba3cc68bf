//! Driving a server with redis-benchmark processes that run at the same time.

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// Pipeline depth and connections of every redis-benchmark process.
const PIPELINE: &str = "32";
const CLIENTS: &str = "20";

pub fn binary() -> String {
    std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into())
}

/// Starts one redis-benchmark process per command line at once, each `n`
/// calls over keys `0..r` (`__rand_int__`), and returns when the first ends,
/// stopping the others: what a snapshot taken around this sees is the time
/// they all ran.
pub fn run_together(port: u16, commands: &[&[&str]], n: u64, r: u64) {
    let mut children: Vec<Child> = commands
        .iter()
        .map(|args| {
            Command::new(binary())
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .args(["-P", PIPELINE, "-c", CLIENTS])
                .args(["-r", &r.to_string(), "-n", &n.to_string()])
                .args(*args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start redis-benchmark (set REDIS_BENCHMARK?): {e}"))
        })
        .collect();
    let first = loop {
        if let Some(s) = children
            .iter_mut()
            .find_map(|c| c.try_wait().expect("try_wait"))
        {
            break s;
        }
        thread::sleep(Duration::from_millis(2));
    };
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        first.success(),
        "redis-benchmark failed ({first}): {commands:?}"
    );
}

/// Sends each command once (`__rand_int__` as "probe"), so that a typo fails
/// loudly instead of measuring error replies.
pub fn probe(conn: &mut redis::Connection, commands: &[&[&str]]) {
    for args in commands {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(a.replace("__rand_int__", "probe"));
        }
        if let Err(e) = cmd.query::<redis::Value>(conn) {
            panic!("{}: {e}", args.join(" "));
        }
    }
}
