//! lock-torture: a fault-injection checker for the lock module.
//!
//! ```text
//! cargo run --release -p lock-torture -- --seconds 300 --clients 32
//! ```
//!
//! Starts a master and a replica (both with the module, AOF with
//! `appendfsync always`), a fenced resource, worker/race/prober client
//! processes (this binary again, in `client` mode), then injects faults:
//! clients SIGKILLed (some while holding), holders SIGSTOPped past their
//! TTL, the master SIGKILLed and restarted from its AOF, the master
//! SIGKILLed and its replica promoted, FAILOVER, CLIENT PAUSE WRITE/ALL
//! while locks expire under waiters, the master SIGSTOPped. Prints the
//! figures and exits 1 if a must-be-0 figure is not 0 (2: could not run).
//!
//! The server binary comes from `REDIS_SERVER`, the module from
//! `LOCK_MODULE` (default: the newest target/{release,debug}/liblock.so).

mod analysis;
mod client;
mod events;
mod orchestrator;
mod resource;
mod resp;
mod server;
mod util;

use orchestrator::{Options, ALL_FAULTS};

const USAGE: &str = "usage: lock-torture [--seconds N] [--clients N] [--keys N] [--ttl-min MS] \
[--ttl-max MS] [--wait-max MS] [--gap-ms MS] [--faults LIST] [--races N] [--random N] [--out DIR]
[--keep] [--require-all-faults]

  --seconds N           how long faults are injected (default 60)
  --clients N           worker processes (default 24); a race and a prober process run too
  --keys N              keys the workers share (default 4)
  --ttl-min/--ttl-max   range of worker lock TTLs in ms (default 150-1200)
  --wait-max MS         longest worker WAIT timeout (default 1500)
  --gap-ms MS           mean pause between faults (default 1000)
  --faults LIST         all (default), none, or some of: client-kill,holder-kill,holder-stop,
                        server-restart,promote,failover,pause-write,pause-all,server-stop
  --races N             race-probe processes (default 2)
  --random N            starting value of the random choices (default: from the clock)
  --out DIR             run directory (default: a temporary one, kept only on failure)
  --keep                keep the temporary run directory
  --require-all-faults  fail unless every kind of fault ran at least once";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        std::process::exit(client::main(&args[1..]));
    }
    match parse(&args) {
        Ok(o) => std::process::exit(orchestrator::run(o)),
        Err(e) => {
            eprintln!("lock-torture: {e}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: 60,
        clients: 24,
        keys: 4,
        ttl_min: 150,
        ttl_max: 1_200,
        wait_max: 1_500,
        gap_ms: 1_000,
        random: util::now_us(),
        keep: false,
        out: None,
        require_all_faults: false,
        faults: ALL_FAULTS.to_vec(),
        races: 2,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a non-negative integer"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = value(a)?,
            "--clients" => o.clients = value(a)?.max(1),
            "--keys" => o.keys = value(a)?.max(1),
            "--ttl-min" => o.ttl_min = value(a)?.max(10),
            "--ttl-max" => o.ttl_max = value(a)?,
            "--wait-max" => o.wait_max = value(a)?.max(20),
            "--gap-ms" => o.gap_ms = value(a)?,
            "--random" => o.random = value(a)?,
            "--races" => o.races = value(a)?,
            "--faults" => {
                let list = it.next().ok_or("--faults needs a list")?;
                o.faults = match list.as_str() {
                    "all" => ALL_FAULTS.to_vec(),
                    "none" => Vec::new(),
                    _ => list
                        .split(',')
                        .map(|t| {
                            ALL_FAULTS
                                .into_iter()
                                .find(|k| k.tag() == t)
                                .ok_or_else(|| format!("unknown fault {t}"))
                        })
                        .collect::<Result<_, _>>()?,
                };
            }
            "--out" => o.out = Some(it.next().ok_or("--out needs a directory")?.into()),
            "--keep" => o.keep = true,
            "--require-all-faults" => o.require_all_faults = true,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    o.ttl_max = o.ttl_max.max(o.ttl_min);
    Ok(o)
}
