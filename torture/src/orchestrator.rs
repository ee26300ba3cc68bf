//! The checker: two servers (master and replica, both with the module, AOF
//! fsynced at every write), the fenced resource, the client processes, and
//! a stream of faults. Every fault that can lose data is followed by a
//! check against the logs while the clients are stopped; everything else
//! is judged at the end (see `analysis`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant};

use crate::analysis::{self, Figures};
use crate::client::{acquire, Acq, REPLY_MARGIN};
use crate::events::{EventLog, Ledger, LogSet};
use crate::rec;
use crate::resource::Resource;
use crate::resp::{Conn, Reply};
use crate::server::Server;
use crate::util::{
    die_with_parent, forget_child, install_panic_hook, ms, now_us, register_child, signal,
    stop_process, ChildrenGuard, Rng,
};

/// A client's lease is trusted only until `sent + ttl - DRIFT`: Redis keeps
/// deadlines in whole ms, so a lease may end up to 1 ms before `sent + ttl`.
pub const DRIFT_US: u64 = 2_000;

#[derive(Clone, Debug)]
pub struct Options {
    pub seconds: u64,
    pub clients: u64,
    pub keys: u64,
    pub ttl_min: u64,
    pub ttl_max: u64,
    pub wait_max: u64,
    pub gap_ms: u64,
    pub random: u64,
    pub keep: bool,
    pub out: Option<PathBuf>,
    pub require_all_faults: bool,
    /// The kinds of fault to inject (all by default).
    pub faults: Vec<FaultKind>,
    /// Race-probe processes.
    pub races: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    ClientKill,
    HolderKill,
    HolderStop,
    ServerRestart,
    Promote,
    Failover,
    PauseWrite,
    PauseAll,
    ServerStop,
}

pub const ALL_FAULTS: [FaultKind; 9] = [
    FaultKind::ClientKill,
    FaultKind::HolderKill,
    FaultKind::HolderStop,
    FaultKind::ServerRestart,
    FaultKind::Promote,
    FaultKind::Failover,
    FaultKind::PauseWrite,
    FaultKind::PauseAll,
    FaultKind::ServerStop,
];

impl FaultKind {
    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::ClientKill => "client SIGKILLed (any state)",
            FaultKind::HolderKill => "client SIGKILLed while holding",
            FaultKind::HolderStop => "holder SIGSTOPped past its TTL",
            FaultKind::ServerRestart => "master SIGKILLed, restarted from AOF",
            FaultKind::Promote => "master SIGKILLed, replica promoted",
            FaultKind::Failover => "FAILOVER to the replica",
            FaultKind::PauseWrite => "CLIENT PAUSE WRITE",
            FaultKind::PauseAll => "CLIENT PAUSE ALL",
            FaultKind::ServerStop => "master SIGSTOPped, resumed",
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            FaultKind::ClientKill => "client-kill",
            FaultKind::HolderKill => "holder-kill",
            FaultKind::HolderStop => "holder-stop",
            FaultKind::ServerRestart => "server-restart",
            FaultKind::Promote => "promote",
            FaultKind::Failover => "failover",
            FaultKind::PauseWrite => "pause-write",
            FaultKind::PauseAll => "pause-all",
            FaultKind::ServerStop => "server-stop",
        }
    }

    /// Faults during which the server itself misbehaves.
    pub fn is_server_fault(tag: &str) -> bool {
        !matches!(tag, "client-kill" | "holder-kill" | "holder-stop")
    }
}

struct Proc {
    slot: u64,
    gen: u64,
    role: &'static str,
    child: Child,
    /// A holder stopped on purpose, resumed at this time.
    stopped_until: Option<Instant>,
    /// Stopped for a check, resumed after it.
    frozen: bool,
}

/// What a check after a fault compares the server against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Restart from AOF with `appendfsync always`: every replied grant
    /// (but those a promotion may have lost before).
    Restart,
    /// Replica promoted after the master died: grants `WAIT 1` acknowledged.
    Promote,
    /// Planned FAILOVER: every replied grant (the master waits for the
    /// replica), as for a restart.
    Failover,
}

/// A holder and a waiter set up so that the holder's lease ends inside a
/// pause: the waiter's answer must come after the pause.
struct Armed {
    key: String,
    holder_sent: u64,
    holder_ttl: u64,
    waiter: JoinHandle<(&'static str, u64)>,
}

struct Torture {
    o: Options,
    dir: PathBuf,
    rng: Rng,
    servers: [Server; 2],
    master: usize,
    resource: Resource,
    procs: Vec<Proc>,
    logs: LogSet,
    ledger: Ledger,
    fig: Figures,
    log: EventLog,
    client_until: u64,
    fault_no: u64,
    last_poll: Instant,
    /// When the last promotion's master was killed (µs).
    promoted_at: u64,
}

pub fn run(o: Options) -> i32 {
    install_panic_hook();
    let _guard = ChildrenGuard;
    let (dir, tmp) = match &o.out {
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(d) {
                eprintln!("lock-torture: {}: {e}", d.display());
                return 2;
            }
            (d.clone(), None)
        }
        // In memory when possible: only a process dies here, never the
        // machine, so what must survive is what Redis wrote before replying;
        // a disk's fsync (milliseconds) would only slow every write down.
        None => match tempfile::Builder::new()
            .prefix("lock-torture-")
            .tempdir_in(shm_or_tmp())
        {
            Ok(t) => (t.path().to_owned(), Some(t)),
            Err(e) => {
                eprintln!("lock-torture: temporary directory: {e}");
                return 2;
            }
        },
    };
    let result = Torture::setup(o.clone(), &dir).and_then(|mut t| t.go());
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lock-torture: {e}");
            2
        }
    };
    // Kept for a post-mortem when something failed or when asked.
    if let Some(t) = tmp {
        if code != 0 || o.keep {
            let kept = t.keep();
            println!("run directory kept: {}", kept.display());
        }
    }
    code
}

impl Torture {
    fn setup(o: Options, dir: &Path) -> Result<Torture, String> {
        let resource = Resource::start().map_err(|e| format!("resource: {e}"))?;
        // A copy: every restart loads the same module even if the build
        // directory's one is rebuilt meanwhile.
        let module = dir.join("liblock.so");
        std::fs::copy(testkit::module_path(), &module)
            .map_err(|e| format!("copy {}: {e}", testkit::module_path().display()))?;
        let mut a = Server::new("a", dir, &module);
        let mut b = Server::new("b", dir, &module);
        a.start(None)?;
        b.start(Some(a.port))?;
        let log = EventLog::create(&dir.join("checker.log")).map_err(|e| e.to_string())?;
        let t = Torture {
            rng: Rng::new(o.random),
            client_until: now_us() + (o.seconds + 120) * 1_000_000,
            o,
            dir: dir.to_owned(),
            servers: [a, b],
            master: 0,
            resource,
            procs: Vec::new(),
            logs: LogSet::new(dir),
            ledger: Ledger::default(),
            fig: Figures::default(),
            log,
            fault_no: 0,
            last_poll: Instant::now(),
            promoted_at: 0,
        };
        if !t.wait_link(1) {
            return Err("the replica did not sync within 30 s".into());
        }
        t.write_master();
        Ok(t)
    }

    fn go(&mut self) -> Result<i32, String> {
        let version = Command::new(testkit::server_binary())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        println!(
            "lock-torture: {} s, {} workers + {} race + 1 prober processes, {} keys, ttl {}-{} ms, \
             random {} (rerun: --random {})\nfaults: {}\nserver: {version}\nmodule: {}\nrun directory: {}",
            self.o.seconds,
            self.o.clients,
            self.o.races,
            self.o.keys,
            self.o.ttl_min,
            self.o.ttl_max,
            self.o.random,
            self.o.random,
            self.o
                .faults
                .iter()
                .map(|k| k.tag())
                .collect::<Vec<_>>()
                .join(","),
            {
                let m = testkit::module_path();
                let built = std::fs::metadata(&m)
                    .and_then(|md| md.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                format!("{} (modified at Unix time {built}, copied)", m.display())
            },
            self.dir.display()
        );
        for slot in 0..self.o.clients {
            self.spawn_client(slot, 0, "worker")?;
        }
        self.spawn_client(self.o.clients, 0, "prober")?;
        for i in 0..self.o.races {
            self.spawn_client(self.o.clients + 1 + i, 0, "race")?;
        }

        let start = Instant::now();
        let end = start + Duration::from_secs(self.o.seconds);
        let mut deck: Vec<FaultKind> = Vec::new();
        // With --require-all-faults the first round of every kind finishes
        // even on a slow machine, within a hard limit.
        let hard_end = end + Duration::from_secs(90);
        let first_round_done = |f: &Figures| ALL_FAULTS.iter().all(|k| f.faults.contains_key(k));
        while Instant::now() < end
            || (self.o.require_all_faults
                && !first_round_done(&self.fig)
                && Instant::now() < hard_end)
        {
            let gap = self.rng.range(self.o.gap_ms / 2, self.o.gap_ms * 3 / 2);
            self.idle(ms(gap));
            if deck.is_empty() {
                deck = self.o.faults.clone();
                self.rng.shuffle(&mut deck);
            }
            let Some(kind) = deck.pop() else {
                continue;
            };
            let t0 = now_us();
            self.fault(kind);
            self.fault_no += 1;
            rec!(self.log, "F {} {t0} {}", kind.tag(), now_us());
            self.tick();
        }
        let elapsed = start.elapsed();
        self.wrap_up();
        self.fig.elapsed = elapsed;
        let res = self
            .resource
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let report = analysis::judge(
            &self.ledger,
            &res,
            &mut self.fig,
            &self.o,
            [self.servers[0].crash_log(), self.servers[1].crash_log()],
        );
        drop(res);
        print!("{report}");
        let _ = std::fs::write(self.dir.join("summary.txt"), &report);
        Ok(if self.fig.violations() == 0 { 0 } else { 1 })
    }

    fn write_master(&self) {
        let tmp = self.dir.join("master.tmp");
        let port = self.servers[self.master].port.to_string();
        if std::fs::write(&tmp, port).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join("master"));
        }
    }

    fn spawn_client(&mut self, slot: u64, gen: u64, role: &'static str) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let err = std::fs::File::create(self.dir.join(format!("c{slot}.{gen}.err")))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("client");
        for (k, v) in [
            ("role", role.to_owned()),
            ("dir", self.dir.display().to_string()),
            ("slot", slot.to_string()),
            ("gen", gen.to_string()),
            ("resource", self.resource.port.to_string()),
            ("keys", self.o.keys.to_string()),
            ("ttl-min", self.o.ttl_min.to_string()),
            ("ttl-max", self.o.ttl_max.to_string()),
            ("wait-max", self.o.wait_max.to_string()),
            ("until", self.client_until.to_string()),
            ("random", self.o.random.to_string()),
        ] {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("spawn client: {e}"))?;
        register_child(child.id());
        self.procs.push(Proc {
            slot,
            gen,
            role,
            child,
            stopped_until: None,
            frozen: false,
        });
        Ok(())
    }

    /// Runs the monitor for `d`.
    fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            self.tick();
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            sleep(left.min(ms(100)));
        }
    }

    /// Resumes stopped holders whose time has come, restarts crashed
    /// servers, replaces clients that died, reads logs and counters.
    fn tick(&mut self) {
        let now = Instant::now();
        for p in &mut self.procs {
            if p.stopped_until.is_some_and(|t| t <= now) {
                p.stopped_until = None;
                if !p.frozen {
                    signal(p.child.id(), libc::SIGCONT);
                }
            }
        }
        for i in 0..2 {
            if let Some(status) = self.servers[i].exited() {
                self.fig.crashes.push(format!(
                    "server {} ({}) exited on its own: {status}",
                    self.servers[i].name,
                    if i == self.master {
                        "master"
                    } else {
                        "replica"
                    },
                ));
                let master = (i != self.master).then(|| self.servers[self.master].port);
                if let Err(e) = self.servers[i].start(master) {
                    self.fig
                        .crashes
                        .push(format!("restart after the crash failed: {e}"));
                }
            }
        }
        let mut dead = Vec::new();
        for (i, p) in self.procs.iter_mut().enumerate() {
            if let Ok(Some(status)) = p.child.try_wait() {
                forget_child(p.child.id());
                let err =
                    std::fs::read_to_string(self.dir.join(format!("c{}.{}.err", p.slot, p.gen)))
                        .unwrap_or_default();
                self.fig.client_failures.push(format!(
                    "{} c{}.{} exited: {status} {}",
                    p.role,
                    p.slot,
                    p.gen,
                    err.lines().last().unwrap_or("")
                ));
                dead.push(i);
            }
        }
        for i in dead.into_iter().rev() {
            let p = self.procs.remove(i);
            let _ = self.spawn_client(p.slot, p.gen + 1, p.role);
        }
        if self.last_poll.elapsed() >= ms(1_000) {
            self.poll_stats();
            self.logs.poll(&mut self.ledger);
            self.last_poll = Instant::now();
        }
    }

    fn poll_stats(&mut self) {
        for i in 0..2 {
            let s = &self.servers[i];
            if s.pid().is_none() {
                continue;
            }
            if let Some(info) = s.info("lock_stats") {
                let counters: HashMap<String, u64> = info
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                    .collect();
                self.fig.stats.insert((i, s.incarnation), counters);
            }
        }
    }

    fn fault(&mut self, kind: FaultKind) {
        *self.fig.faults.entry(kind).or_default() += 1;
        match kind {
            FaultKind::ClientKill => self.kill_client(false),
            FaultKind::HolderKill => self.kill_client(true),
            FaultKind::HolderStop => self.stop_holder(),
            FaultKind::ServerRestart => self.restart_master(),
            FaultKind::Promote => self.promote(),
            FaultKind::Failover => self.failover(),
            FaultKind::PauseWrite => self.pause("WRITE"),
            FaultKind::PauseAll => self.pause("ALL"),
            FaultKind::ServerStop => self.stop_master(),
        }
    }

    /// Index of a running worker, a holder (inside its critical section)
    /// when `holding`.
    fn pick_worker(&mut self, holding: bool) -> Option<usize> {
        let holders = self.resource.holders();
        let candidates: Vec<usize> = self
            .procs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == "worker" && p.stopped_until.is_none())
            .filter(|(_, p)| !holding || holders.contains(&p.child.id()))
            .map(|(i, _)| i)
            .collect();
        self.rng.pick(&candidates).copied()
    }

    fn kill_client(&mut self, holding: bool) {
        let mut pick = None;
        // A holder is inside its section only part of the time: look a few times.
        for _ in 0..30 {
            pick = self.pick_worker(holding);
            if pick.is_some() || !holding {
                break;
            }
            sleep(ms(50));
        }
        let Some(i) = pick else {
            self.fig.notes.push("no holder to kill this time".into());
            return;
        };
        let mut p = self.procs.remove(i);
        let _ = p.child.kill();
        let _ = p.child.wait();
        forget_child(p.child.id());
        if holding {
            self.fig.holders_killed += 1;
        }
        let _ = self.spawn_client(p.slot, p.gen + 1, p.role);
    }

    fn stop_holder(&mut self) {
        let mut pick = None;
        for _ in 0..30 {
            pick = self.pick_worker(true);
            if pick.is_some() {
                break;
            }
            sleep(ms(50));
        }
        let Some(i) = pick else {
            self.fig.notes.push("no holder to stop this time".into());
            return;
        };
        stop_process(self.procs[i].child.id());
        // Past any TTL a worker asks for: its lease ends while it sleeps.
        self.procs[i].stopped_until = Some(Instant::now() + ms(self.o.ttl_max + 500));
        self.fig.holders_stopped += 1;
    }

    /// Stops every client (a stopped holder stays stopped) so that the logs
    /// and the server hold still while they are compared.
    fn freeze(&mut self) {
        for p in &mut self.procs {
            if p.stopped_until.is_none() && !p.frozen {
                stop_process(p.child.id());
                p.frozen = true;
            }
        }
    }

    fn thaw(&mut self) {
        for p in &mut self.procs {
            if p.frozen {
                p.frozen = false;
                if p.stopped_until.is_none() {
                    signal(p.child.id(), libc::SIGCONT);
                }
            }
        }
    }

    fn replica(&self) -> usize {
        1 - self.master
    }

    /// Waits (at most 30 s) until server `i` is a replica with its link up
    /// and the AOF rewrite that follows a full sync is done: until then its
    /// AOF still holds the data from before the sync, and a SIGKILL after
    /// a later promotion would reload that (Redis's limit, not the module's).
    fn wait_link(&self, i: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let s = &self.servers[i];
            let up = s.info_field("replication", "master_link_status").as_deref() == Some("up");
            let rewritten = s.info("persistence").is_some_and(|p| {
                let zero = |name: &str| p.iter().any(|(k, v)| k == name && v == "0");
                zero("aof_rewrite_in_progress") && zero("aof_rewrite_scheduled")
            });
            if up && rewritten {
                return true;
            }
            sleep(ms(50));
        }
        false
    }

    /// The master has one replica online.
    fn in_sync(&self) -> bool {
        let Some(info) = self.servers[self.master].info("replication") else {
            return false;
        };
        info.iter()
            .any(|(k, v)| k == "slave0" && v.contains("state=online"))
    }

    fn restart_master(&mut self) {
        let m = self.master;
        self.poll_stats();
        self.servers[m].kill();
        self.freeze();
        if let Err(e) = self.servers[m].start(None) {
            self.fig
                .crashes
                .push(format!("restart from AOF failed: {e}"));
        }
        self.check(m, Check::Restart);
        self.thaw();
        if !self.wait_link(self.replica()) {
            self.fig
                .notes
                .push("replica not back in sync within 30 s of a restart".into());
        }
    }

    fn promote(&mut self) {
        if !self.in_sync() {
            self.fig
                .skipped
                .push("promotion (replica not in sync)".into());
            return;
        }
        let (old, new) = (self.master, self.replica());
        self.poll_stats();
        self.servers[old].kill();
        self.promoted_at = now_us();
        self.freeze();
        let promoted = matches!(
            self.servers[new].call(&["REPLICAOF", "NO", "ONE"]),
            Some(Reply::Status(_))
        ) && self.wait_role(new, "master");
        if !promoted {
            self.fig.notes.push("REPLICAOF NO ONE did not take".into());
        }
        self.master = new;
        self.write_master();
        self.check(new, Check::Promote);
        self.thaw();
        let port = self.servers[new].port;
        if let Err(e) = self.servers[old].start(Some(port)) {
            self.fig.crashes.push(format!("old master as replica: {e}"));
        } else if !self.wait_link(old) {
            self.fig
                .notes
                .push("old master not in sync within 30 s of a promotion".into());
        }
    }

    fn wait_role(&self, i: usize, role: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if self.servers[i].info_field("replication", "role").as_deref() == Some(role) {
                return true;
            }
            sleep(ms(25));
        }
        false
    }

    fn failover(&mut self) {
        if !self.in_sync() {
            self.fig
                .skipped
                .push("FAILOVER (replica not in sync)".into());
            return;
        }
        let (old, new) = (self.master, self.replica());
        // A stopped replica holds the failover in its write pause (the
        // master waits for its offset), long enough for locks to expire.
        let hold_replica = self.rng.chance(0.5);
        let armed = self.arm(2, 300, 700);
        if hold_replica {
            self.servers[new].stop();
        }
        let sent = now_us();
        let reply = self.servers[old].call(&["FAILOVER", "TIMEOUT", "5000"]);
        let replied = now_us();
        let mut resumed = None;
        if hold_replica {
            sleep(ms(900));
            resumed = Some(now_us());
            self.servers[new].resume();
        }
        if !matches!(reply, Some(Reply::Status(_))) {
            self.fig.skipped.push(format!(
                "FAILOVER refused: {}",
                reply.map(|r| r.text()).unwrap_or_else(|| "no reply".into())
            ));
            self.collect(armed, 0, 0, false);
            return;
        }
        let end = Instant::now() + Duration::from_secs(15);
        let mut switched = false;
        while Instant::now() < end {
            let new_role = self.servers[new].info_field("replication", "role");
            let old_info = self.servers[old].info("replication").unwrap_or_default();
            let field = |name: &str| {
                old_info
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if new_role.as_deref() == Some("master") && field("role") == Some("slave") {
                switched = true;
                break;
            }
            if field("role") == Some("master")
                && field("master_failover_state") == Some("no-failover")
                && now_us() > replied + 300_000
            {
                break;
            }
            sleep(ms(25));
        }
        // While the stopped replica had not acked, the old master's writes
        // were surely paused.
        self.collect(armed, replied, resumed.unwrap_or(sent), false);
        if !switched {
            self.fig.failovers_aborted += 1;
            return;
        }
        self.master = new;
        self.write_master();
        self.freeze();
        self.check(new, Check::Failover);
        self.thaw();
        if !self.wait_link(old) {
            self.fig
                .notes
                .push("old master not in sync within 30 s of a FAILOVER".into());
        }
    }

    fn pause(&mut self, mode: &str) {
        let dur = self.rng.range(1_500, 2_500);
        let armed = self.arm(2, 300, 800);
        let m = self.master;
        let sent = now_us();
        let reply = self.servers[m].call(&["CLIENT", "PAUSE", &dur.to_string(), mode]);
        let replied = now_us();
        if !matches!(reply, Some(Reply::Status(_))) {
            self.fig.notes.push(format!(
                "CLIENT PAUSE {mode} refused: {:?}",
                reply.map(|r| r.text())
            ));
        }
        // The server unpauses `dur` after it took the command, so not
        // before `sent + dur`.
        self.idle(ms(dur + 200));
        self.collect(armed, replied, sent + dur * 1_000, true);
    }

    fn stop_master(&mut self) {
        let d = self.rng.range(300, 1_500);
        let armed = self.arm(1, 200, 400);
        self.servers[self.master].stop();
        sleep(ms(d));
        self.servers[self.master].resume();
        self.collect(armed, 0, 0, false);
    }

    /// Takes `n` locks with TTLs in `ttl_lo..=ttl_hi` on fresh keys, each
    /// with one waiter (`WAIT 5000`) queued behind it on another connection.
    fn arm(&mut self, n: usize, ttl_lo: u64, ttl_hi: u64) -> Vec<Armed> {
        let port = self.servers[self.master].port;
        let mut armed = Vec::new();
        let Ok(mut c) = Conn::connect(port, ms(1_000)) else {
            return armed;
        };
        for i in 0..n {
            let key = format!("arm:{}.{i}", self.fault_no);
            let holder = format!("ah{}.{i}", self.fault_no);
            let ttl = self.rng.range(ttl_lo, ttl_hi);
            let holder_sent = now_us();
            if !matches!(
                acquire(&mut self.log, &mut c, &key, &holder, ttl, None),
                Acq::Granted(_)
            ) {
                continue;
            }
            let waiter_log = self.dir.join(format!("arm{}.{i}.log", self.fault_no));
            let (k, w) = (key.clone(), format!("aw{}.{i}", self.fault_no));
            let waiter = thread::spawn(move || -> (&'static str, u64) {
                let Ok(mut log) = EventLog::create(&waiter_log) else {
                    return ("error", now_us());
                };
                let Ok(mut c) = Conn::connect(port, ms(1_000)) else {
                    return ("error", now_us());
                };
                let got = acquire(&mut log, &mut c, &k, &w, 10_000, Some(5_000));
                let kind = match got {
                    Acq::Granted(_) => "grant",
                    Acq::Null => "null",
                    Acq::Failed => "error",
                };
                let at = now_us();
                if kind == "grant" {
                    rec!(log, "R {k} {w} {}", now_us());
                    let _ = c.call(&["LOCK.RELEASE", &k, &w], REPLY_MARGIN);
                }
                (kind, at)
            });
            // Queued before the fault starts.
            let end = Instant::now() + ms(2_000);
            while Instant::now() < end {
                let info = c.call(&["LOCK.INFO", &key], ms(2_000));
                if let Ok(Reply::Array(Some(items))) = info {
                    let queued = items.chunks(2).any(|kv| {
                        kv[0].text() == "waiters" && kv.get(1).and_then(Reply::int) >= Some(1)
                    });
                    if queued {
                        break;
                    }
                } else {
                    break;
                }
                sleep(ms(5));
            }
            armed.push(Armed {
                key,
                holder_sent,
                holder_ttl: ttl,
                waiter,
            });
        }
        armed
    }

    /// Collects the armed waiters' answers. Writes were surely paused from
    /// `paused_from` (a reply to the pause came) to `paused_until`: a
    /// waiter granted in between, of a holder whose lease outlived
    /// `paused_from`, was written during the pause.
    fn collect(&mut self, armed: Vec<Armed>, paused_from: u64, paused_until: u64, delay: bool) {
        for a in armed {
            let (kind, at) = a.waiter.join().unwrap_or(("error", now_us()));
            self.fig.armed += 1;
            let expiry_floor = a.holder_sent + a.holder_ttl * 1_000 - DRIFT_US;
            if paused_from == 0 || expiry_floor <= paused_from {
                continue;
            }
            self.fig.armed_in_pause += 1;
            if kind == "grant" && at + DRIFT_US < paused_until {
                self.fig.grants_in_pause.push(format!(
                    "{}: waiter granted {} ms before the pause could end",
                    a.key,
                    (paused_until - at) / 1_000
                ));
            }
            if delay && kind == "grant" && at > paused_until {
                let late = (at - paused_until) / 1_000;
                self.fig.pause_grant_delay_ms = self.fig.pause_grant_delay_ms.max(late);
            }
        }
    }

    /// Compares server `i` with what the logs say must be on it.
    fn check(&mut self, i: usize, mode: Check) {
        self.logs.poll(&mut self.ledger);
        let Some(mut c) = self.servers[i].conn() else {
            self.fig.notes.push("check: server unreachable".into());
            return;
        };
        let now = now_us();
        // Leases still running after the check (a generous second for it).
        let horizon = now + 1_000_000;
        let mut must: Vec<(String, String, u64, bool)> = Vec::new();
        for (token, t) in &self.ledger.tokens {
            if t.release_sent.is_some() || t.key.is_empty() {
                continue;
            }
            let Some(fence) = t.fence() else { continue };
            let acked = t.lease_floor(DRIFT_US, true).is_some_and(|f| f > horizon);
            // A grant the replica had not acknowledged may have gone with
            // an earlier promotion; one replied since then may not.
            let kept_since = t
                .lease_floor_of(DRIFT_US, |g| g.acked || g.recv > self.promoted_at)
                .is_some_and(|f| f > horizon);
            let required = match mode {
                Check::Promote => acked,
                Check::Restart | Check::Failover => kept_since,
            };
            if required || (mode == Check::Promote && kept_since) {
                must.push((t.key.clone(), token.clone(), fence, required));
            }
        }
        for (key, token, fence, required) in must {
            let Ok(reply) = c.call(&["GET", &key], ms(5_000)) else {
                self.fig.notes.push("check: GET failed".into());
                return;
            };
            let found = decode(&reply);
            let kept = found.as_ref() == Some(&(fence, token.clone()));
            match (mode, required) {
                (Check::Restart, _) => {
                    self.fig.restart_checked += 1;
                    if !kept {
                        self.fig
                            .restart_lost
                            .push(lost(&key, &token, fence, &found));
                    }
                }
                (_, true) => {
                    self.fig.failover_checked += 1;
                    if !kept {
                        self.fig
                            .failover_lost
                            .push(lost(&key, &token, fence, &found));
                    }
                }
                (_, false) => {
                    self.fig.unacked_checked += 1;
                    if !kept {
                        self.fig.unacked_lost += 1;
                    }
                }
            }
        }
        // No lock may live longer than its latest grant allowed.
        let Ok(Reply::Array(Some(keys))) = c.call(&["KEYS", "*"], ms(5_000)) else {
            return;
        };
        let now = now_us();
        for k in keys {
            let key = k.text();
            let (Ok(v), Ok(Reply::Int(at))) = (
                c.call(&["GET", &key], ms(5_000)),
                c.call(&["PEXPIRETIME", &key], ms(5_000)),
            ) else {
                continue;
            };
            let Some((_, token)) = decode(&v) else {
                continue;
            };
            let Some(t) = self.ledger.tokens.get(&token) else {
                continue;
            };
            self.fig.extension_checked += 1;
            let ceiling = t.expiry_ceiling_ms(now);
            if at < 0 || at as u64 > ceiling + 1 {
                self.fig.extended.push(format!(
                    "{key} ({token}): expires at {at}, granted until {ceiling} at the latest"
                ));
            }
        }
    }

    fn wrap_up(&mut self) {
        for p in &mut self.procs {
            p.stopped_until = None;
            p.frozen = false;
            signal(p.child.id(), libc::SIGCONT);
        }
        let _ = std::fs::write(self.dir.join("stop"), b"");
        let end = Instant::now() + Duration::from_secs(25);
        while Instant::now() < end
            && self
                .procs
                .iter_mut()
                .any(|p| matches!(p.child.try_wait(), Ok(None)))
        {
            sleep(ms(50));
        }
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                self.fig.notes.push(format!(
                    "{} c{}.{} did not stop: killed",
                    p.role, p.slot, p.gen
                ));
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            forget_child(p.child.id());
        }
        self.poll_stats();
        for i in 0..2 {
            if let Some(status) = self.servers[i].exited() {
                self.fig.crashes.push(format!(
                    "server {} gone at the end: {status}",
                    self.servers[i].name
                ));
            }
        }
        self.logs.poll(&mut self.ledger);
    }
}

fn shm_or_tmp() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let writable = tempfile::Builder::new()
        .prefix("lock-torture-probe")
        .tempfile_in(shm)
        .is_ok();
    if writable {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// A lock value: `0xC1 'L' 'K' 0x01`, the fence (8 bytes, big endian),
/// the token.
fn decode(v: &Reply) -> Option<(u64, String)> {
    let Reply::Bulk(Some(b)) = v else { return None };
    let rest = b.strip_prefix(&[0xC1, b'L', b'K', 0x01])?;
    let (fence, token) = rest.split_first_chunk::<8>()?;
    Some((
        u64::from_be_bytes(*fence),
        String::from_utf8_lossy(token).into_owned(),
    ))
}

fn lost(key: &str, token: &str, fence: u64, found: &Option<(u64, String)>) -> String {
    match found {
        None => format!("{key}: {token}'s fence {fence} missing (key absent or not a lock)"),
        Some((f, t)) => format!("{key}: {token}'s fence {fence} replaced by {t}'s fence {f}"),
    }
}
