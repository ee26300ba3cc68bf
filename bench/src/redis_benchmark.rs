//! Driving a server with redis-benchmark processes that run at the same time.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// Starts one redis-benchmark process per command (`-P 32 -c 20`, `n`
/// calls each, `__rand_int__` in `0..r`) at once, and returns when the
/// first ends, stopping the others: a snapshot taken around this covers
/// the time they all ran. Each command is sent once first, so that a typo
/// fails loudly instead of measuring error replies.
pub fn run_together(conn: &mut redis::Connection, port: u16, commands: &[&str], n: u64, r: u64) {
    for command in commands {
        let mut probe = redis::Cmd::new();
        for arg in command.replace("__rand_int__", "probe").split(' ') {
            probe.arg(arg);
        }
        if let Err(e) = probe.query::<redis::Value>(conn) {
            panic!("{command}: {e}");
        }
    }
    let bin = std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into());
    let options = format!("-h 127.0.0.1 -p {port} -q -P 32 -c 20 -r {r} -n {n}");
    let mut children: Vec<_> = commands
        .iter()
        .map(|command| {
            Command::new(&bin)
                .args(options.split(' ').chain(command.split(' ')))
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {bin} (set REDIS_BENCHMARK?): {e}"))
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
