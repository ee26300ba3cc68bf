//! `lock-bench`: the lock module against bsm/redis-lock's way (SET NX PX +
//! EVALSHA compare-and-delete) and plain SET, side by side in one run.
//!
//! Starts its own redis-server processes with the module on loopback ports
//! (through `testkit`: `LOCK_MODULE` and `REDIS_SERVER` choose the module and
//! the server), runs the six measurements, prints the table and writes
//! `results/latest.md` and `results/chart.svg` (paths relative to this
//! crate, or `--out DIR`).
//!
//! ```text
//! make bench                                   # builds the module first
//! cargo run --release -p lock-bench -- --quick # a short smoke run, nothing written
//! ```
//!
//! Performance figures are reported, never asserted: a missed target is
//! printed as MISSED and the run still succeeds.

mod contention;
mod cost;
mod memory;
mod report;
mod roundtrip;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::{Config, Server};

use crate::contention::ContentionSizes;
use crate::cost::CostSizes;
use crate::report::Report;

/// Sizes of every phase: the full run (about 4 minutes on 2 cores) or a
/// quick smoke run.
struct Plan {
    cost: CostSizes,
    /// Time slices per kind in measurement 2, and their length.
    rt_slices: usize,
    rt_slice: Duration,
    contention: ContentionSizes,
    bulk_locks: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            cost: CostSizes {
                rounds: 3,
                calls: 1_000_000,
                acquire_keys: 100_000,
                release_keys: 300_000,
                check_keys: 200_000,
                scale_rounds: 5,
                scale_calls: 300_000,
            },
            rt_slices: 40,
            rt_slice: Duration::from_millis(100),
            contention: ContentionSizes {
                waiter_counts: [1, 100, 1000],
                handoff_max: Duration::from_secs(5),
                handoff_samples: 2000,
                expiry_max: Duration::from_secs(5),
                expiry_samples: 300,
                fairness_dur: Duration::from_secs(10),
                fairness_clients: 16,
            },
            bulk_locks: 1_000_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            cost: CostSizes {
                rounds: 1,
                calls: 200_000,
                acquire_keys: 100_000,
                release_keys: 50_000,
                check_keys: 100_000,
                scale_rounds: 1,
                scale_calls: 100_000,
            },
            rt_slices: 4,
            rt_slice: Duration::from_millis(100),
            contention: ContentionSizes {
                waiter_counts: [1, 100, 1000],
                handoff_max: Duration::from_millis(800),
                handoff_samples: 300,
                expiry_max: Duration::from_secs(1),
                expiry_samples: 40,
                fairness_dur: Duration::from_secs(1),
                fairness_clients: 16,
            },
            bulk_locks: 100_000,
        }
    }
}

struct Args {
    quick: bool,
    no_wait: bool,
    out: Option<PathBuf>,
    only: Vec<u8>,
}

fn usage() -> ! {
    eprintln!(
        "usage: lock-bench [--quick] [--out DIR] [--only 1,2,...] [--no-wait]\n\
         \n\
         --quick     short smoke run; writes nothing unless --out is given\n\
         --out DIR   where latest.md and chart.svg go (default: bench/results)\n\
         --only L    run only these measurements (1-6; 6 needs 5); writes nothing unless --out is given\n\
         --no-wait   treat the module as lacking WAIT (3-4 then measure only the polling baselines)\n\
         \n\
         env: LOCK_MODULE (liblock.so), REDIS_SERVER, REDIS_BENCHMARK"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        quick: false,
        no_wait: false,
        out: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--no-wait" => args.no_wait = true,
            "--out" => args.out = Some(it.next().unwrap_or_else(|| usage()).into()),
            "--only" => {
                let list = it.next().unwrap_or_else(|| usage());
                args.only = list
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            _ => usage(),
        }
    }
    args
}

/// What the README says about the machine and the software.
fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let server = testkit::server_binary();
    vec![
        ("CPU".into(), format!("{cpus} × {model} (nproc {cpus})")),
        ("memory".into(), mem),
        ("kernel".into(), format!("Linux {kernel}")),
        (
            "server".into(),
            util::command_output(&server, &["--version"]),
        ),
        (
            "redis-benchmark".into(),
            util::command_output(
                &std::env::var("REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into()),
                &["--version"],
            ),
        ),
        ("module".into(), module_display()),
        (
            "commit".into(),
            util::command_output("git", &["rev-parse", "--short", "HEAD"]),
        ),
        ("load average at start".into(), load),
    ]
}

/// The module's path, relative to the workspace when inside it.
fn module_display() -> String {
    let path = testkit::module_path();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let shown = path
        .strip_prefix(&root)
        .unwrap_or(&path)
        .display()
        .to_string();
    match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(_) if shown.contains("/debug/") => format!("{shown} (debug build)"),
        _ => shown,
    }
}

fn server() -> Server {
    Server::with(Config::default().arg("save", ""))
}

fn main() {
    let args = parse_args();
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let run = |m: u8| args.only.is_empty() || args.only.contains(&m);
    let write_to = match (&args.out, args.quick || !args.only.is_empty()) {
        (Some(dir), _) => Some(dir.clone()),
        (None, false) => Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/results"
        ))),
        (None, true) => None,
    };
    let started = Instant::now();
    let _ = util::now_ns();
    let machine = machine();
    for (k, v) in &machine {
        eprintln!("{k}: {v}");
    }
    let module_path = testkit::module_path().display().to_string();
    let mut report = Report::default();
    if module_path.contains("/debug/") {
        report.notes.push(
            "The module was a debug build: the figures do not represent a release build.".into(),
        );
    }

    let main_server = server();
    let url = main_server.url();
    let mut conn = util::connect(&url);
    let wait = !args.no_wait && util::wait_supported(&mut conn);
    let hz = util::info(&mut conn, "server")
        .get("hz")
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "server on port {}; WAIT supported: {wait}",
        main_server.port()
    );
    if !wait && !args.no_wait {
        report.notes.push(
            "This module build has no `LOCK.ACQUIRE … WAIT`: the module's rows of measurements 3 and 4 \
             are skipped; the polling baselines still ran."
                .into(),
        );
    }

    let phase = |n: u8, name: &str| {
        eprintln!("[{:>5.1} s] {n}. {name}", started.elapsed().as_secs_f64());
    };
    if run(1) {
        phase(1, "server cost per command");
        cost::server_cost(&mut report, main_server.port(), &url, plan.cost);
    }
    if run(2) {
        phase(2, "client round trips");
        roundtrip::round_trips(&mut report, &url, plan.rt_slices, plan.rt_slice);
    }
    if run(3) || run(4) {
        phase(3, "hand-off and fairness (3, 4)");
        let skip = match (wait, args.no_wait) {
            (true, _) => None,
            (false, true) => Some("--no-wait given"),
            (false, false) => Some("WAIT not in this module build"),
        };
        contention::contention(&mut report, &url, skip, plan.contention);
    }
    drop(conn);
    drop(main_server);
    if run(5) || run(6) {
        phase(5, "memory");
        let big = server();
        let small = server();
        memory::memory(&mut report, &big.url(), &small.url(), plan.bulk_locks);
        if run(6) {
            phase(6, "scale");
            cost::scale(
                &mut report,
                (big.port(), &big.url()),
                (small.port(), &small.url()),
                plan.bulk_locks,
                plan.cost,
            );
        }
    }
    let total = started.elapsed();
    eprintln!("[{:>5.1} s] done", total.as_secs_f64());

    let mode = if args.quick { " --quick" } else { "" };
    let date = util::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut header = format!(
        "## Benchmark results\n\n\
         Produced by `make bench` (which runs `cargo run --release -p lock-bench{mode}` after building \
         the module) on {date}, in {:.0} s. The bench starts its own redis-server processes with the \
         module on loopback ports (`save \"\"`, `hz` {hz}); every figure is compared with its baseline \
         measured in the same run. Figures are reported, not asserted.\n\n\
         | machine | |\n|---|---|\n",
        total.as_secs_f64()
    );
    for (k, v) in &machine {
        header.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    }
    // Relative to latest.md, which is written next to chart.svg.
    header.push_str("\n![benchmark chart](chart.svg)\n");
    println!("{}", report.text());
    if let Some(dir) = write_to {
        std::fs::create_dir_all(&dir).expect("create results directory");
        let md = dir.join("latest.md");
        let svg = dir.join("chart.svg");
        std::fs::write(&md, report.markdown(&header)).expect("write latest.md");
        let cpu = machine.first().map(|(_, v)| v.clone()).unwrap_or_default();
        let subtitle = format!(
            "{date} · {cpu} · {} · make bench",
            machine
                .iter()
                .find(|(k, _)| k == "server")
                .map(|(_, v)| v.split(" sha=").next().unwrap_or(v).to_owned())
                .unwrap_or_default()
        );
        std::fs::write(&svg, report.svg(&subtitle)).expect("write chart.svg");
        println!("wrote {} and {}", md.display(), svg.display());
    }
}
