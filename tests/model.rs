//! A model-based random test. Random sequences of LOCK.ACQUIRE (with and
//! without WAIT), LOCK.RELEASE, LOCK.CHECK, DEL, PEXPIRE, PERSIST, foreign
//! SETs, waiters that give up or disconnect, expiries and server restarts
//! (SIGKILL, then a reload of the AOF written with `appendfsync always`),
//! sent over several connections, are checked step by step against a pure
//! model of each lock: holder token, fence lower bound, deadline and FIFO
//! waiters. After every step the touched key is compared with the model
//! (`LOCK.INFO`, `PEXPIRETIME`, the holder's `LOCK.CHECK`), every waiting
//! connection must still be silent, and `INFO lock_stats` is compared with
//! the model's counts every 100 steps and before each restart.
//!
//! The outcome is deterministic despite real time. Leases last hours, so
//! nothing expires unless a step makes it (`PEXPIRE key 1..20`, or a holder
//! renewing for a few ms) and then waits for the outcome (the key gone, or
//! the head waiter's grant) before the next step. A WAIT that must time out
//! is the only thing in flight while it does. A waiter that comes back with
//! the token of a timed-out wait does so only when its old place and a new
//! one are the same (nobody queued behind it): whether the server still
//! keeps the place depends on time (1 s), and today it also forgets it as
//! soon as the queue has no live waiter, putting the returning client
//! behind anyone who queued in between. Fences are checked as
//! "strictly above every earlier fence of the key", and equal on renewal.
//! The model never has to guess which of two racing events came first, so
//! a case number replays the same run.
//!
//! `MODEL_CASE=<case number>` replays a run (the case number is printed first);
//! `MODEL_OPS=<n>` sets its length (default 5,000 steps). A million:
//! `MODEL_OPS=1000000 cargo test --release --test model -- --nocapture`.
//! The server's files go to `MODEL_DIR`, else `/dev/shm` when it exists:
//! the server is SIGKILLed, not the machine, so what has to survive is what
//! Redis wrote to the AOF before replying, and a disk's fsync (~3 ms per
//! write here) would only slow the run down.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{cmd, int, lock_stats, Config, Server};
use redis::{Connection, Value};

/// The keys (one binary), the connections for plain commands, and the
/// tokens plain commands pick from (one binary).
const KEYS: [&[u8]; 3] = [b"m:a", b"m:b", b"m:\x00\xff\r\n"];
const CONNS: usize = 3;
const TOKENS: [&[u8]; 4] = [b"a", b"b", b"c", b"t\x00\r\n"];
/// Most live waiters per key (each one is a connection).
const MAX_WAITERS: usize = 4;
/// Leases last 10 to 20 hours: none ends by itself during a run.
const LEASE_MIN_MS: u64 = 10 * 3_600_000;
const LEASE_SPAN_MS: u64 = 10 * 3_600_000;
/// How long anything the model expects may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);
/// `INFO lock_stats` is compared with the model this often.
const STATS_EVERY: u64 = 100;
/// Long runs say how far they are this often.
const PROGRESS_EVERY: u64 = 100_000;
/// How many steps a failure report shows.
const HISTORY: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw} is not a number")))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// splitmix64: small, and the same sequence everywhere for a case number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn lease(&mut self) -> u64 {
        LEASE_MIN_MS + self.below(LEASE_SPAN_MS)
    }
}

/// A reply read off a waiter's raw connection.
#[derive(Debug, PartialEq)]
enum Reply {
    Int(i64),
    Nil,
    Error(String),
    Other(String),
}

/// One complete RESP2 reply at the start of `buf`, and its length.
fn parse(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let used = end + 2;
    let reply = match buf[0] {
        b':' => Reply::Int(line.parse().expect("an integer reply")),
        b'_' => Reply::Nil,
        b'-' => Reply::Error(line),
        b'+' => Reply::Other(line),
        b'$' | b'*' if line == "-1" => Reply::Nil,
        b'$' => {
            let len: usize = line.parse().expect("a bulk length");
            if buf.len() < used + len + 2 {
                return None;
            }
            let body = String::from_utf8_lossy(&buf[used..used + len]).into_owned();
            return Some((Reply::Other(body), used + len + 2));
        }
        _ => panic!("unexpected reply {}", show(buf)),
    };
    Some((reply, used))
}

/// A waiter's connection: a raw socket, so the test can send `WAIT`, go
/// on with other steps, and look whether a reply came without blocking.
struct WaitConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WaitConn {
    fn connect(addr: &str) -> WaitConn {
        let stream = TcpStream::connect(addr).expect("connect a waiter");
        stream.set_nodelay(true).expect("nodelay");
        WaitConn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).expect("send a WAIT");
    }

    /// Reads the one reply owed, waiting up to `within`.
    fn reply(&mut self, within: Duration, what: &str) -> Reply {
        self.try_reply(within, what)
            .unwrap_or_else(|| panic!("{what}: no reply within {within:?}"))
    }

    /// The one reply owed, if it comes within `within`.
    fn try_reply(&mut self, within: Duration, what: &str) -> Option<Reply> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((reply, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                assert!(
                    self.buf.is_empty(),
                    "{what}: more than one reply ({})",
                    show(&self.buf)
                );
                return Some(reply);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 256];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("{what}: the server closed the connection without a reply"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    /// Nothing has arrived (a reply here would be one the model did not owe).
    fn assert_silent(&mut self, what: &str) {
        self.stream.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 128];
        let peeked = self.stream.peek(&mut b);
        self.stream.set_nonblocking(false).expect("blocking");
        match peeked {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(0) => panic!("{what}: the server closed the connection"),
            Ok(n) => panic!("{what}: unexpected reply {}", show(&b[..n])),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// The server went away: the connection ends, and no reply came first.
    fn assert_closed(mut self, what: &str) {
        self.stream
            .set_read_timeout(Some(PATIENCE))
            .expect("timeout");
        let mut b = [0u8; 128];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
            Ok(n) => panic!("{what}: a reply before the restart: {}", show(&b[..n])),
            Err(e) => panic!("{what}: the connection did not end: {e}"),
        }
    }
}

/// Who holds a key, in the model.
#[derive(Clone, Debug, PartialEq)]
enum Holder {
    Free,
    Lock {
        token: Vec<u8>,
        fence: i64,
    },
    /// A plain string the module did not write.
    Foreign,
}

struct Waiter {
    token: Vec<u8>,
    ttl: u64,
    /// The latest its place in the queue can be (the queue is in this order).
    seq: u64,
    conn: WaitConn,
}

/// The model of one key.
struct LockModel {
    name: &'static [u8],
    holder: Holder,
    /// The key's `PEXPIRETIME` (None: no expiry); unused while free.
    deadline: Option<i64>,
    /// The highest fence any holder of the key has had.
    top_fence: i64,
    waiters: VecDeque<Waiter>,
    /// Tokens whose wait timed out, with the earliest place the server
    /// may keep for them.
    parked: Vec<(Vec<u8>, u64)>,
}

impl LockModel {
    fn holds(&self, token: &[u8]) -> Option<i64> {
        match &self.holder {
            Holder::Lock { token: t, fence } if t == token => Some(*fence),
            _ => None,
        }
    }

    /// A parked token that may wait again: its old place is the tail anyway.
    fn returning(&self) -> Option<usize> {
        let last = self.waiters.back().map(|w| w.seq);
        self.parked
            .iter()
            .position(|(_, seq)| last.is_none_or(|l| *seq > l))
    }
}

/// What the model counts, named as in `INFO lock_stats` (since the start).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    acquired: u64,
    renewed: u64,
    refused: u64,
    released: u64,
    release_missed: u64,
    checks: u64,
    waits: u64,
    handoffs: u64,
    wait_timeouts: u64,
    wait_disconnects: u64,
}

impl Counts {
    fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("acquired", self.acquired),
            ("renewed", self.renewed),
            ("refused", self.refused),
            ("released", self.released),
            ("release_missed", self.release_missed),
            ("checks", self.checks),
            ("waits", self.waits),
            ("handoffs", self.handoffs),
            ("wait_timeouts", self.wait_timeouts),
            ("wait_disconnects", self.wait_disconnects),
        ]
    }

    fn add(&mut self, o: &Counts) {
        self.acquired += o.acquired;
        self.renewed += o.renewed;
        self.refused += o.refused;
        self.released += o.released;
        self.release_missed += o.release_missed;
        self.checks += o.checks;
        self.waits += o.waits;
        self.handoffs += o.handoffs;
        self.wait_timeouts += o.wait_timeouts;
        self.wait_disconnects += o.wait_disconnects;
    }
}

/// One step.
#[derive(Debug)]
enum Op {
    Acquire {
        conn: usize,
        key: usize,
        token: Vec<u8>,
        ttl: u64,
    },
    Release {
        conn: usize,
        key: usize,
        token: Vec<u8>,
    },
    Check {
        conn: usize,
        key: usize,
        token: Vec<u8>,
    },
    /// `WAIT` long enough never to time out (0: without limit).
    Wait {
        key: usize,
        token: Vec<u8>,
        ttl: u64,
        timeout: u64,
    },
    /// `WAIT` for a few ms: times out unless the lock is free or the caller's.
    WaitOut {
        key: usize,
        token: Vec<u8>,
        ttl: u64,
        timeout: u64,
    },
    Del {
        key: usize,
    },
    /// `PEXPIRE key ms` with a few ms, then the outcome of the expiry.
    Expire {
        key: usize,
        ms: u64,
    },
    /// The holder renews for a few ms and lets the lock run out.
    Lapse {
        key: usize,
        ms: u64,
    },
    /// `PEXPIRE key ms` with hours.
    Extend {
        key: usize,
        ms: u64,
    },
    Persist {
        key: usize,
    },
    /// `SET key value PX ttl NX`: a lock of an unknown owner.
    Foreign {
        key: usize,
        value: Vec<u8>,
        ttl: u64,
    },
    /// A waiter's connection closes.
    Leave {
        key: usize,
        index: usize,
    },
    /// SIGKILL, then a restart from the AOF.
    Restart,
}

impl Op {
    fn describe(&self) -> String {
        let k = |key: &usize| show(KEYS[*key]);
        match self {
            Op::Acquire {
                conn,
                key,
                token,
                ttl,
            } => format!("c{conn}: LOCK.ACQUIRE {} {} {ttl}", k(key), show(token)),
            Op::Release { conn, key, token } => {
                format!("c{conn}: LOCK.RELEASE {} {}", k(key), show(token))
            }
            Op::Check { conn, key, token } => {
                format!("c{conn}: LOCK.CHECK {} {}", k(key), show(token))
            }
            Op::Wait {
                key,
                token,
                ttl,
                timeout,
            }
            | Op::WaitOut {
                key,
                token,
                ttl,
                timeout,
            } => format!(
                "waiter: LOCK.ACQUIRE {} {} {ttl} WAIT {timeout}",
                k(key),
                show(token)
            ),
            Op::Del { key } => format!("DEL {}", k(key)),
            Op::Expire { key, ms } => format!("PEXPIRE {} {ms}, until it ends", k(key)),
            Op::Lapse { key, ms } => format!("holder renews {} for {ms} ms, until it ends", k(key)),
            Op::Extend { key, ms } => format!("PEXPIRE {} {ms}", k(key)),
            Op::Persist { key } => format!("PERSIST {}", k(key)),
            Op::Foreign { key, value, ttl } => {
                format!("SET {} {} PX {ttl} NX", k(key), show(value))
            }
            Op::Leave { key, index } => format!("waiter #{index} of {} disconnects", k(key)),
            Op::Restart => "SIGKILL the server, restart from the AOF".to_owned(),
        }
    }
}

/// Figures for the summary.
#[derive(Default)]
struct Tally {
    restarts: u64,
    /// Waits with the token of a wait that had timed out.
    returns: u64,
    expiries: u64,
    foreign: u64,
    dels: u64,
}

struct Harness {
    server: Server,
    config: Config,
    conns: Vec<Connection>,
    /// Waiter connections with no reply owed, for reuse.
    idle: Vec<WaitConn>,
    keys: Vec<LockModel>,
    /// Counts since the server's start, and before it (earlier runs).
    counts: Counts,
    past: Counts,
    tally: Tally,
    rng: Rng,
    next_seq: u64,
    next_token: u64,
    step: u64,
    history: VecDeque<String>,
}

impl Harness {
    fn new(case_number: u64) -> Harness {
        let config = Config::default()
            .arg("appendonly", "yes")
            .arg("appendfsync", "always")
            // Rewrites happen during long runs (and keep /dev/shm small).
            .arg("auto-aof-rewrite-min-size", "4mb");
        let server = Server::with(config.clone());
        let conns = (0..CONNS).map(|_| server.conn()).collect();
        let keys = KEYS
            .iter()
            .map(|name| LockModel {
                name,
                holder: Holder::Free,
                deadline: None,
                top_fence: 0,
                waiters: VecDeque::new(),
                parked: Vec::new(),
            })
            .collect();
        Harness {
            server,
            config,
            conns,
            idle: Vec::new(),
            keys,
            counts: Counts::default(),
            past: Counts::default(),
            tally: Tally::default(),
            rng: Rng(case_number),
            next_seq: 0,
            next_token: 0,
            step: 0,
            history: VecDeque::new(),
        }
    }

    fn fresh_token(&mut self) -> Vec<u8> {
        self.next_token += 1;
        format!("w{}", self.next_token).into_bytes()
    }

    /// A token for a plain command: often the holder's, sometimes a
    /// waiter's or the foreign value, else one of a few fixed ones.
    fn some_token(&mut self, key: usize) -> Vec<u8> {
        let roll = self.rng.below(100);
        let m = &self.keys[key];
        if roll < 40 {
            if let Holder::Lock { token, .. } = &m.holder {
                return token.clone();
            }
        }
        if roll >= 90 && !m.waiters.is_empty() {
            let i = self.rng.index(m.waiters.len());
            return self.keys[key].waiters[i].token.clone();
        }
        TOKENS[self.rng.index(TOKENS.len())].to_vec()
    }

    fn wait_token(&mut self, key: usize) -> Vec<u8> {
        let roll = self.rng.below(100);
        if roll < 10 {
            if let Holder::Lock { token, .. } = &self.keys[key].holder {
                return token.clone();
            }
        }
        if roll >= 70 {
            if let Some(i) = self.keys[key].returning() {
                return self.keys[key].parked[i].0.clone();
            }
        }
        self.fresh_token()
    }

    fn choose(&mut self) -> Op {
        let key = self.rng.index(KEYS.len());
        let conn = self.rng.index(CONNS);
        let roll = self.rng.below(1000);
        let holder = self.keys[key].holder.clone();
        let queued = self.keys[key].waiters.len();
        match roll {
            0..=249 => Op::Acquire {
                conn,
                key,
                token: self.some_token(key),
                ttl: self.rng.lease(),
            },
            250..=429 => Op::Release {
                conn,
                key,
                token: self.some_token(key),
            },
            430..=509 => Op::Check {
                conn,
                key,
                token: self.some_token(key),
            },
            510..=649 if queued < MAX_WAITERS => {
                let timeout = if self.rng.chance(50) {
                    0
                } else {
                    3_600_000 + self.rng.below(3_600_000)
                };
                Op::Wait {
                    key,
                    token: self.wait_token(key),
                    ttl: self.rng.lease(),
                    timeout,
                }
            }
            510..=669 => Op::WaitOut {
                key,
                token: self.wait_token(key),
                ttl: self.rng.lease(),
                timeout: 2 + self.rng.below(20),
            },
            670..=719 => Op::Del { key },
            720..=744 if holder != Holder::Free => Op::Expire {
                key,
                ms: 1 + self.rng.below(20),
            },
            745..=759 if matches!(holder, Holder::Lock { .. }) => Op::Lapse {
                key,
                ms: 2 + self.rng.below(15),
            },
            760..=779 => Op::Extend {
                key,
                ms: self.rng.lease(),
            },
            780..=794 => Op::Persist { key },
            795..=839 => {
                let value = if self.rng.chance(30) {
                    TOKENS[self.rng.index(TOKENS.len())].to_vec()
                } else {
                    format!("plain-{}", self.rng.below(1000)).into_bytes()
                };
                Op::Foreign {
                    key,
                    value,
                    ttl: self.rng.lease(),
                }
            }
            840..=869 if queued > 0 => Op::Leave {
                key,
                index: self.rng.index(queued),
            },
            870..=872 => Op::Restart,
            _ => Op::Acquire {
                conn,
                key,
                token: self.some_token(key),
                ttl: self.rng.lease(),
            },
        }
    }

    fn run(&mut self, ops: u64) {
        let start = Instant::now();
        while self.step < ops {
            self.step += 1;
            if self.step.is_multiple_of(PROGRESS_EVERY) {
                eprintln!(
                    "model: step {} after {:.0} s",
                    self.step,
                    start.elapsed().as_secs_f64()
                );
            }
            let op = self.choose();
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history
                .push_back(format!("step {}: {}", self.step, op.describe()));
            let touched = self.apply(op);
            match touched {
                Some(key) => self.verify(key),
                None => (0..KEYS.len()).for_each(|k| self.verify(k)),
            }
            self.assert_waiters_silent();
            if self.step.is_multiple_of(STATS_EVERY) {
                self.verify_stats();
            }
        }
        self.verify_stats();
    }

    /// Applies one step to the server and the model; returns the key it
    /// touched (None: all of them).
    fn apply(&mut self, op: Op) -> Option<usize> {
        match op {
            Op::Acquire {
                conn,
                key,
                token,
                ttl,
            } => {
                let t0 = now_ms();
                let r = cmd(
                    &mut self.conns[conn],
                    (&b"LOCK.ACQUIRE"[..], KEYS[key], &token[..], ttl),
                );
                let reply = match r {
                    Value::Int(f) => Reply::Int(f),
                    Value::Nil => Reply::Nil,
                    other => panic!("LOCK.ACQUIRE replied {other:?}"),
                };
                self.acquired(key, &token, ttl, t0, reply, "LOCK.ACQUIRE");
                Some(key)
            }
            Op::Release { conn, key, token } => {
                let t0 = now_ms();
                let r = int(&cmd(
                    &mut self.conns[conn],
                    (&b"LOCK.RELEASE"[..], KEYS[key], &token[..]),
                ));
                if self.keys[key].holds(&token).is_some() {
                    assert_eq!(r, 1, "the holder's release");
                    self.counts.released += 1;
                    // The head waiter's grant is sent within the release.
                    self.end_hold(key, t0);
                } else {
                    assert_eq!(r, 0, "a release by a token that does not hold the lock");
                    self.counts.release_missed += 1;
                }
                Some(key)
            }
            Op::Check { conn, key, token } => {
                self.check(conn, key, &token);
                Some(key)
            }
            Op::Wait {
                key,
                token,
                ttl,
                timeout,
            } => {
                self.wait(key, token, ttl, timeout, false);
                Some(key)
            }
            Op::WaitOut {
                key,
                token,
                ttl,
                timeout,
            } => {
                self.wait(key, token, ttl, timeout, true);
                Some(key)
            }
            Op::Del { key } => {
                let t0 = now_ms();
                let r = int(&cmd(&mut self.conns[0], ("DEL", KEYS[key])));
                if self.keys[key].holder == Holder::Free {
                    assert_eq!(r, 0, "DEL of a free key");
                } else {
                    assert_eq!(r, 1, "DEL of a held key");
                    self.tally.dels += 1;
                    self.end_hold(key, t0);
                }
                Some(key)
            }
            Op::Expire { key, ms } => {
                let t0 = now_ms();
                let r = int(&cmd(&mut self.conns[0], ("PEXPIRE", KEYS[key], ms)));
                assert_eq!(r, 1, "PEXPIRE of a held key");
                self.run_out(key, ms, t0);
                Some(key)
            }
            Op::Lapse { key, ms } => {
                let Holder::Lock { token, fence } = self.keys[key].holder.clone() else {
                    unreachable!("chosen for a held lock");
                };
                let t0 = now_ms();
                let r = cmd(
                    &mut self.conns[1],
                    (&b"LOCK.ACQUIRE"[..], KEYS[key], &token[..], ms),
                );
                assert_eq!(r, Value::Int(fence), "a renewal keeps the fence");
                self.counts.renewed += 1;
                self.run_out(key, ms, t0);
                Some(key)
            }
            Op::Extend { key, ms } => {
                let t0 = now_ms();
                let r = int(&cmd(&mut self.conns[0], ("PEXPIRE", KEYS[key], ms)));
                if self.keys[key].holder == Holder::Free {
                    assert_eq!(r, 0, "PEXPIRE of a free key");
                } else {
                    assert_eq!(r, 1, "PEXPIRE of a held key");
                    self.learn_deadline(key, ms, t0);
                }
                Some(key)
            }
            Op::Persist { key } => {
                let r = int(&cmd(&mut self.conns[0], ("PERSIST", KEYS[key])));
                let m = &mut self.keys[key];
                let had = m.holder != Holder::Free && m.deadline.is_some();
                assert_eq!(r, i64::from(had), "PERSIST");
                m.deadline = None;
                Some(key)
            }
            Op::Foreign { key, value, ttl } => {
                let t0 = now_ms();
                let r = cmd(
                    &mut self.conns[2],
                    (
                        &b"SET"[..],
                        KEYS[key],
                        &value[..],
                        &b"PX"[..],
                        ttl,
                        &b"NX"[..],
                    ),
                );
                if self.keys[key].holder == Holder::Free {
                    assert_eq!(r, Value::Okay, "SET NX of a free key");
                    self.keys[key].holder = Holder::Foreign;
                    self.tally.foreign += 1;
                    self.learn_deadline(key, ttl, t0);
                } else {
                    assert_eq!(r, Value::Nil, "SET NX of a held key");
                }
                Some(key)
            }
            Op::Leave { key, index } => {
                let gone = self.keys[key].waiters.remove(index).expect("a waiter");
                drop(gone.conn);
                self.counts.wait_disconnects += 1;
                // The server notices the close in its own time: let it, so
                // no later step races with it.
                self.await_queue(key);
                Some(key)
            }
            Op::Restart => {
                self.restart();
                None
            }
        }
    }

    /// The outcome of an acquisition the model has not yet seen the reply of.
    fn acquired(&mut self, key: usize, token: &[u8], ttl: u64, t0: i64, r: Reply, what: &str) {
        let m = &self.keys[key];
        match (&m.holder, m.holds(token)) {
            (Holder::Free, _) => {
                assert!(m.waiters.is_empty(), "model: a free lock with waiters");
                let Reply::Int(fence) = r else {
                    panic!("{what}: a free lock was refused: {r:?}");
                };
                self.counts.acquired += 1;
                self.granted(key, token, ttl, fence, t0);
            }
            (_, Some(fence)) => {
                assert_eq!(r, Reply::Int(fence), "{what}: a renewal keeps the fence");
                self.counts.renewed += 1;
                self.learn_deadline(key, ttl, t0);
            }
            _ => {
                assert_eq!(r, Reply::Nil, "{what}: someone else holds the lock");
                self.counts.refused += 1;
            }
        }
    }

    /// Records `token` as the new holder with `fence`, granted after `t0`.
    fn granted(&mut self, key: usize, token: &[u8], ttl: u64, fence: i64, t0: i64) {
        let m = &mut self.keys[key];
        assert!(
            fence > m.top_fence,
            "fence {fence} is not above {} (an earlier fence of the key)",
            m.top_fence
        );
        m.top_fence = fence;
        m.holder = Holder::Lock {
            token: token.to_vec(),
            fence,
        };
        self.learn_deadline(key, ttl, t0);
    }

    /// The key's new expiry: `ttl` after a moment between `t0` and now.
    fn learn_deadline(&mut self, key: usize, ttl: u64, t0: i64) {
        let t1 = now_ms();
        let at = int(&cmd(&mut self.conns[0], ("PEXPIRETIME", KEYS[key])));
        let ttl = ttl as i64;
        // 1 ms either side: the server's and the test's clock reads round
        // to different milliseconds.
        assert!(
            at >= t0 + ttl - 1 && at <= t1 + ttl + 1,
            "expiry {at} is not {ttl} ms after a moment in [{t0}, {t1}]"
        );
        self.keys[key].deadline = Some(at);
    }

    /// The holder is gone (released, deleted, expired): the head waiter
    /// gets the lock, or the key is free.
    fn end_hold(&mut self, key: usize, t0: i64) {
        let Some(mut head) = self.keys[key].waiters.pop_front() else {
            self.keys[key].holder = Holder::Free;
            self.keys[key].deadline = None;
            return;
        };
        // Until the head's grant comes, no other waiter may get a reply.
        let start = Instant::now();
        let r = loop {
            let slice = Duration::from_millis(5);
            if let Some(r) = head.conn.try_reply(slice, "the head waiter") {
                break r;
            }
            for w in self.keys[key].waiters.iter_mut() {
                w.conn.assert_silent("a waiter behind the head");
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the head waiter got no reply within {PATIENCE:?}"
            );
        };
        let Reply::Int(fence) = r else {
            panic!("the head waiter got {r:?} instead of the lock");
        };
        self.counts.handoffs += 1;
        self.granted(key, &head.token, head.ttl, fence, t0);
        self.idle.push(head.conn);
    }

    /// The key was set to expire `ms` after `t0`: waits for the outcome.
    fn run_out(&mut self, key: usize, ms: u64, t0: i64) {
        self.tally.expiries += 1;
        if self.keys[key].waiters.is_empty() {
            // Reading the key makes Redis expire it once its time is up.
            let start = Instant::now();
            while int(&cmd(&mut self.conns[0], ("EXISTS", KEYS[key]))) == 1 {
                assert!(
                    start.elapsed() < PATIENCE + Duration::from_millis(ms),
                    "the key did not expire"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        self.end_hold(key, t0);
    }

    fn check(&mut self, conn: usize, key: usize, token: &[u8]) {
        let t0 = now_ms();
        let r = int(&cmd(
            &mut self.conns[conn],
            (&b"LOCK.CHECK"[..], KEYS[key], token),
        ));
        let t1 = now_ms();
        self.counts.checks += 1;
        let m = &self.keys[key];
        match (m.holds(token), m.deadline) {
            (None, _) => assert_eq!(r, 0, "LOCK.CHECK by a token that does not hold it"),
            (Some(_), None) => assert_eq!(r, -1, "LOCK.CHECK of a lock without expiry"),
            (Some(_), Some(at)) => {
                let (lo, hi) = ((at - t1).max(1) - 1, (at - t0).max(1) + 1);
                assert!(
                    (lo..=hi).contains(&r),
                    "LOCK.CHECK {r} ms, expected {lo} to {hi}"
                );
            }
        }
    }

    fn wait(&mut self, key: usize, token: Vec<u8>, ttl: u64, timeout: u64, short: bool) {
        let mut conn = match self.idle.pop() {
            Some(c) => c,
            None => WaitConn::connect(&self.server.addr()),
        };
        let t0 = now_ms();
        conn.send(&[
            b"LOCK.ACQUIRE",
            KEYS[key],
            &token,
            ttl.to_string().as_bytes(),
            b"WAIT",
            timeout.to_string().as_bytes(),
        ]);
        let m = &self.keys[key];
        if m.holder == Holder::Free || m.holds(&token).is_some() {
            // Answered at once, as without WAIT.
            let r = conn.reply(PATIENCE, "a WAIT on a free or own lock");
            self.acquired(key, &token, ttl, t0, r, "LOCK.ACQUIRE … WAIT");
            self.idle.push(conn);
            return;
        }
        // Queued: behind everyone, or back in its parked place, which the
        // chooser allows only when that is the tail too. Sequence numbers
        // are bounds: a live waiter's is the latest its place can be, a
        // parked one's the earliest (the server may forget a parked place,
        // and the client then queues at the tail).
        let parked_at = m
            .parked
            .iter()
            .position(|(t, _)| *t == token)
            .map(|i| self.keys[key].parked.swap_remove(i).1);
        self.tally.returns += u64::from(parked_at.is_some());
        self.next_seq += 1;
        let seq = self.next_seq;
        self.counts.waits += 1;
        if short {
            let r = conn.reply(
                PATIENCE + Duration::from_millis(timeout),
                "a WAIT that must time out",
            );
            assert_eq!(r, Reply::Nil, "a WAIT on a held lock timed out");
            self.counts.wait_timeouts += 1;
            self.keys[key]
                .parked
                .push((token, parked_at.unwrap_or(seq)));
            self.idle.push(conn);
            return;
        }
        self.keys[key].waiters.push_back(Waiter {
            token,
            ttl,
            seq,
            conn,
        });
        // Other connections' next commands must find it queued.
        self.await_queue(key);
    }

    /// Polls until the server's queue length of `key` is the model's.
    fn await_queue(&mut self, key: usize) {
        let want = self.keys[key].waiters.len() as i64;
        let start = Instant::now();
        loop {
            let info = lock_info(&mut self.conns[0], key);
            if field(&info, "waiters") == Value::Int(want) {
                return;
            }
            for w in self.keys[key].waiters.iter_mut() {
                w.conn.assert_silent("a waiter, while the queue settles");
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the queue of {} stays at {:?}, the model has {want}",
                show(KEYS[key]),
                field(&info, "waiters")
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn restart(&mut self) {
        self.verify_stats();
        self.server.restart_with(self.config.clone());
        self.conns = (0..CONNS).map(|_| self.server.conn()).collect();
        self.idle.clear();
        for m in &mut self.keys {
            for w in m.waiters.drain(..) {
                w.conn.assert_closed("a waiter when the server was killed");
            }
            // The queue (and any place kept in it) lived in the old process.
            m.parked.clear();
        }
        self.past.add(&self.counts);
        self.counts = Counts::default();
        self.tally.restarts += 1;
    }

    /// Compares the server's view of `key` with the model.
    fn verify(&mut self, key: usize) {
        let t0 = now_ms();
        let info = lock_info(&mut self.conns[0], key);
        let at = int(&cmd(&mut self.conns[0], ("PEXPIRETIME", KEYS[key])));
        let t1 = now_ms();
        let m = &self.keys[key];
        let name = show(m.name);
        let (held, foreign, fence) = match &m.holder {
            Holder::Free => (0, 0, Value::Nil),
            Holder::Lock { fence, .. } => (1, 0, Value::Int(*fence)),
            Holder::Foreign => (1, 1, Value::Nil),
        };
        let waiters = m.waiters.len() as i64;
        assert_eq!(field(&info, "held"), Value::Int(held), "{name}: held");
        assert_eq!(
            field(&info, "foreign"),
            Value::Int(foreign),
            "{name}: foreign"
        );
        assert_eq!(field(&info, "fence"), fence, "{name}: fence");
        assert_eq!(
            field(&info, "waiters"),
            Value::Int(waiters),
            "{name}: waiters"
        );
        let ttl = int(&field(&info, "ttl"));
        match (&m.holder, m.deadline) {
            (Holder::Free, _) => {
                assert_eq!(at, -2, "{name}: PEXPIRETIME of a free key");
                assert_eq!(ttl, -2, "{name}: ttl of a free key");
            }
            (_, None) => {
                assert_eq!(at, -1, "{name}: PEXPIRETIME without expiry");
                assert_eq!(ttl, -1, "{name}: ttl without expiry");
            }
            (_, Some(deadline)) => {
                assert_eq!(at, deadline, "{name}: PEXPIRETIME");
                let (lo, hi) = ((at - t1).max(1) - 1, (at - t0).max(1) + 1);
                assert!((lo..=hi).contains(&ttl), "{name}: ttl {ttl}");
            }
        }
        // The holder's token, not only its fence, is the server's.
        if let Holder::Lock { token, .. } = m.holder.clone() {
            self.check(1, key, &token);
        }
    }

    fn assert_waiters_silent(&mut self) {
        for m in &mut self.keys {
            for w in m.waiters.iter_mut() {
                w.conn.assert_silent("a waiter the lock was not handed to");
            }
        }
        for c in &mut self.idle {
            c.assert_silent("an idle waiter connection");
        }
    }

    /// `INFO lock_stats` against the model's counts since the start.
    fn verify_stats(&mut self) {
        let stats = lock_stats(&mut self.conns[0]);
        let get = |name: &str| -> u64 {
            *stats
                .get(name)
                .unwrap_or_else(|| panic!("no lock_{name} in INFO lock_stats"))
        };
        for (name, want) in self.counts.fields() {
            assert_eq!(get(name), want, "lock_{name}");
        }
        let live: usize = self.keys.iter().map(|m| m.waiters.len()).sum();
        assert_eq!(get("waiters"), live as u64, "lock_waiters");
        assert_eq!(get("errors"), 0, "lock_errors");
        assert_eq!(get("grants_undelivered"), 0, "lock_grants_undelivered");
        assert_eq!(get("wait_redirects"), 0, "lock_wait_redirects");
        assert!(get("expiry_handoffs") <= get("handoffs"));
    }

    /// The model and the server side by side, for a failure report.
    fn dump(&self) -> String {
        let mut out = String::from("model vs server:\n");
        let mut conn = self.server.conn();
        for (k, m) in self.keys.iter().enumerate() {
            let waiters: Vec<String> = m
                .waiters
                .iter()
                .map(|w| format!("{}#{}", show(&w.token), w.seq))
                .collect();
            let parked: Vec<String> = m
                .parked
                .iter()
                .map(|(t, seq)| format!("{}#{seq}", show(t)))
                .collect();
            let server: Result<HashMap<String, Value>, _> =
                redis::cmd("LOCK.INFO").arg(KEYS[k]).query(&mut conn);
            out += &format!(
                "  {}: {:?} deadline {:?} top fence {} waiters {waiters:?} parked {parked:?}\n    server: {server:?}\n",
                show(m.name),
                m.holder,
                m.deadline,
                m.top_fence
            );
        }
        out
    }

    fn summary(&self, elapsed: Duration) -> String {
        let mut all = self.past;
        all.add(&self.counts);
        let secs = elapsed.as_secs_f64();
        format!(
            "{} steps in {secs:.1} s ({:.0} steps/s): {} grants ({} to a waiter), {} renewals, \
             {} refusals, {} releases ({} missed), {} checks, {} waits ({} timed out, {} left, \
             {} returns to a parked place), {} expiries, {} DELs of held keys, {} foreign values, {} restarts",
            self.step,
            self.step as f64 / secs,
            all.acquired + all.handoffs,
            all.handoffs,
            all.renewed,
            all.refused,
            all.released,
            all.release_missed,
            all.checks,
            all.waits,
            all.wait_timeouts,
            all.wait_disconnects,
            self.tally.returns,
            self.tally.expiries,
            self.tally.dels,
            self.tally.foreign,
            self.tally.restarts,
        )
    }
}

fn lock_info(conn: &mut Connection, key: usize) -> HashMap<String, Value> {
    redis::cmd("LOCK.INFO")
        .arg(KEYS[key])
        .query(conn)
        .expect("LOCK.INFO")
}

fn field(info: &HashMap<String, Value>, name: &str) -> Value {
    info.get(name)
        .cloned()
        .unwrap_or_else(|| panic!("LOCK.INFO has no {name}: {info:?}"))
}

/// Where the server's files go: `MODEL_DIR`, else tmpfs when there is one.
fn choose_data_dir() -> String {
    if let Ok(dir) = std::env::var("MODEL_DIR") {
        return dir;
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile_ok(shm) {
        return shm.display().to_string();
    }
    std::env::temp_dir().display().to_string()
}

fn tempfile_ok(dir: &Path) -> bool {
    let probe = dir.join(format!("lock-model-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[test]
fn random_steps_match_the_model() {
    let case_number = env_u64("MODEL_CASE").unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        t ^ u64::from(std::process::id()).rotate_left(32)
    });
    let ops = env_u64("MODEL_OPS").unwrap_or(5_000);
    let dir = choose_data_dir();
    eprintln!(
        "model: case number {case_number:#x} ({ops} steps; replay with MODEL_CASE={case_number:#x}), \
         server files in {dir}"
    );
    // testkit makes the server's directory under TMPDIR; this binary runs
    // no other test, so nothing reads the variable concurrently.
    std::env::set_var("TMPDIR", &dir);

    let mut h = Harness::new(case_number);
    let start = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| h.run(ops)));
    if let Err(e) = outcome {
        eprintln!(
            "model: FAILED at step {} of case number {case_number:#x} (MODEL_CASE={case_number:#x}); last steps:",
            h.step
        );
        for line in &h.history {
            eprintln!("  {line}");
        }
        eprintln!("{}", h.dump());
        panic::resume_unwind(e);
    }
    println!(
        "model: case number {case_number:#x}: {}",
        h.summary(start.elapsed())
    );
}
