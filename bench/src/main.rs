//! `lock-bench [REDIS_SERVER_BINARY...]`: the lock module against plain
//! Redis commands and bsm/redis-lock's way (`SET NX PX` + `EVALSHA`), on each
//! server in turn, every comparison within one run on one server. Prints the
//! results as Markdown; a full run writes them to `bench/results/latest.md`
//! and README.md. Options, and how each figure is measured: bench/README.md.

mod cost;
mod handoff;
mod latency;
mod memory;
mod redis_benchmark;
mod redis_io;
mod report;
mod roundtrip;
mod scale;
mod stats;

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::{Config, Server};

use crate::report::Report;

/// Sizes of the measurements on one server.
pub struct Plan {
    /// Rounds of each server-cost pair (the scale measurement takes two
    /// more), calls per redis-benchmark process, and how long the cycle pair
    /// runs per round.
    pub rounds: usize,
    pub calls: u64,
    pub cycle_time: Duration,
    /// 100 ms time slices per contender in the round-trip measurement.
    pub slices: usize,
    /// Samples of a latency row or a release hand-off run, and the longest
    /// time such a run may take (an expiry run: half, in three times that).
    pub samples: usize,
    pub run_time: Duration,
    pub fairness_time: Duration,
    /// Keys of the memory measurement, left in place for the scale rounds.
    pub bulk: u64,
}

const FULL: Plan = Plan {
    rounds: 3,
    calls: 1_000_000,
    cycle_time: Duration::from_secs(3),
    slices: 30,
    samples: 2000,
    run_time: Duration::from_secs(4),
    fairness_time: Duration::from_secs(10),
    bulk: 1_000_000,
};

const QUICK: Plan = Plan {
    rounds: 1,
    calls: 200_000,
    cycle_time: Duration::from_secs(1),
    slices: 4,
    samples: 300,
    run_time: Duration::from_secs(1),
    fairness_time: Duration::from_secs(1),
    bulk: 100_000,
};

/// "Redis 7.0.15" or "Valkey 8.1.8", from `--version`.
fn server_label(binary: &str) -> String {
    let out = command_output(binary, &["--version"]);
    let version = out.split_whitespace().find_map(|w| w.strip_prefix("v="));
    match (out.split_whitespace().next(), version) {
        (Some(name), Some(v)) => format!("{name} {v}"),
        _ => panic!("{binary} --version answered {out:?}"),
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn bench_server(
    report: &mut Report,
    plan: &Plan,
    first: bool,
    only: &dyn Fn(&str) -> bool,
    t0: Instant,
) {
    let phase = |name: &str| eprintln!("[{:>4.0} s] {name}", t0.elapsed().as_secs_f64());
    // Configured as redis.conf.example recommends for a lock service: with
    // the AOF on, native writes pay for propagation as the module's do.
    let server = Server::with(
        Config::default()
            .arg("appendonly", "yes")
            .arg("appendfsync", "everysec"),
    );
    let url = server.url();
    if only("cost") {
        phase("server cost per call");
        cost::server_cost(report, server.port(), &url, plan);
    }
    if only("client") {
        phase("client round trips and latency");
        roundtrip::round_trips(report, &url, plan.slices);
        latency::acquisition(report, &url, server.port(), plan.samples);
    }
    if only("handoff") {
        phase("hand-off and fairness");
        // The polling baselines wait in the client, the same on any server: once is enough.
        handoff::contention(report, &url, first, plan);
    }
    drop(server);
    if only("memory") {
        phase("memory and scale");
        let (big, small) = (Server::start(), Server::start());
        memory::memory(report, &big.url(), &small.url(), plan.bulk);
        scale::scale(report, [&big, &small], plan);
    }
}

/// Replaces what lies between the bench markers of README.md's Performance section.
fn update_readme(readme: &Path, summary: &str) {
    const START: &str = "<!-- bench:start -->\n";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(readme).expect("read README.md");
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        return eprintln!("{}: no bench markers, not updated", readme.display());
    };
    let updated = format!("{}{START}{summary}{}", &text[..a], &text[b..]);
    std::fs::write(readme, updated).expect("write README.md");
    println!("updated {}", readme.display());
}

fn main() {
    let t0 = Instant::now();
    let flag = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty() && v != "0")
    };
    let quick = flag("BENCH_QUICK").is_some();
    let only_list = flag("BENCH_ONLY");
    let only = |m: &str| {
        only_list
            .as_deref()
            .is_none_or(|l| l.split(',').any(|x| x.trim() == m))
    };
    let mut servers: Vec<String> = std::env::args().skip(1).collect();
    if servers.is_empty() {
        servers.push(testkit::server_binary());
    }
    let plan = if quick { &QUICK } else { &FULL };
    let mut report = Report::default();
    let mut versions = Vec::new();
    for (i, binary) in servers.iter().enumerate() {
        let label = server_label(binary);
        eprintln!("== {label} ({binary})");
        versions.push(format!("{label} (`{binary}`)"));
        // testkit starts every server from this variable; no other thread runs now.
        std::env::set_var("REDIS_SERVER", binary);
        report.servers.push(label);
        bench_server(&mut report, plan, i == 0, &only, t0);
    }

    let run = format!(
        "`make bench`{} at commit {}, {}, {:.0} s on {}; module `{}`; servers: {}.",
        if quick { " with BENCH_QUICK=1" } else { "" },
        command_output("git", &["rev-parse", "--short", "HEAD"]),
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        t0.elapsed().as_secs_f64(),
        machine(),
        testkit::module_path().display(),
        versions.join(", "),
    );
    let md = format!(
        "# Benchmark results\n\n{run} How each figure is measured and how to read it: \
         [bench/README.md](../README.md).\n\n{}",
        report.markdown()
    );
    println!("\n{md}");
    if quick || only_list.is_some() {
        return;
    }
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::write(results.join("latest.md"), &md).expect("write latest.md");
    println!("wrote {}", results.join("latest.md").display());
    let summary = format!("{run}\n\n{}", report.summary());
    update_readme(&results.join("../../README.md"), &summary);
}

/// "2 × AMD EPYC (load average 1.2 0.9 0.8)": the machine, and how busy it was.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let model = model.map_or("?", |m| m.1.trim());
    format!("{cores} × {model} (load average {})", load.join(" "))
}
