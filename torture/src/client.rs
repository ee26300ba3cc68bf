//! The client processes: `lock-torture client --role worker|race|prober …`.
//!
//! - worker: takes one of a few keys (plain or with `WAIT`), checks with
//!   `WAIT 1` that a replica has the grant, then runs a critical section
//!   that writes to the fenced resource, sometimes renews, and releases;
//! - race: the expiry/timeout race of issue 8: `LOCK.ACQUIRE k H 100`, then
//!   on a second connection `LOCK.ACQUIRE k W 10000 WAIT ~97`, and checks
//!   that exactly one reply came and that it agrees with `LOCK.CHECK`;
//! - prober: keeps a dozen long locks (15–30 s) alive so that every restart
//!   and failover has acknowledged locks to lose.
//!
//! Every process follows the master named in `<dir>/master` and stops when
//! `<dir>/stop` exists, at `--until`, or after `--max-ops` operations.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use crate::events::EventLog;
use crate::rec;
use crate::resource::ResourceConn;
use crate::resp::{is_timeout, Conn, Reply};
use crate::util::{ms, now_us, Rng};

/// How long past its own timeout a reply may take before it counts as
/// never coming: longer than any fault stalls the server (≤ 2 s), and
/// far longer than a busy 2-core machine delays a reply.
pub const REPLY_MARGIN: Duration = Duration::from_secs(15);

struct Ctx {
    dir: PathBuf,
    slot: u64,
    gen: u64,
    resource: u16,
    keys: u64,
    ttl_min: u64,
    ttl_max: u64,
    wait_max: u64,
    until: u64,
    max_ops: u64,
    ops: u64,
    rng: Rng,
    log: EventLog,
}

impl Ctx {
    fn running(&mut self) -> bool {
        self.ops += 1;
        self.ops <= self.max_ops && now_us() < self.until && !self.dir.join("stop").exists()
    }

    fn master(&self) -> Option<u16> {
        std::fs::read_to_string(self.dir.join("master"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn connect(&self) -> Option<Conn> {
        Conn::connect(self.master()?, ms(1_000)).ok()
    }
}

pub fn main(args: &[String]) -> i32 {
    let mut opts: HashMap<String, String> = HashMap::new();
    for pair in args.chunks(2) {
        if let [k, v] = pair {
            opts.insert(k.trim_start_matches("--").to_owned(), v.clone());
        }
    }
    let num = |k: &str, d: u64| opts.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let Some(dir) = opts.get("dir").map(PathBuf::from) else {
        eprintln!("client: --dir is required");
        return 2;
    };
    let (slot, gen) = (num("slot", 0), num("gen", 0));
    let role = opts.get("role").cloned().unwrap_or_else(|| "worker".into());
    let log = match EventLog::create(&dir.join(format!("c{slot}.{gen}.log"))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("client: log: {e}");
            return 2;
        }
    };
    let mut cx = Ctx {
        dir,
        slot,
        gen,
        resource: num("resource", 0) as u16,
        keys: num("keys", 4).max(1),
        ttl_min: num("ttl-min", 150),
        ttl_max: num("ttl-max", 1200),
        wait_max: num("wait-max", 1500),
        until: num("until", now_us() + 60_000_000),
        max_ops: num("max-ops", 1_000_000),
        ops: 0,
        rng: Rng::new(num("random", 1) ^ (slot << 32) ^ gen),
        log,
    };
    match role.as_str() {
        "worker" => worker(&mut cx),
        "race" => race(&mut cx),
        "prober" => prober(&mut cx),
        other => {
            eprintln!("client: unknown role {other}");
            return 2;
        }
    }
    0
}

pub enum Acq {
    Granted(u64),
    Null,
    Failed,
}

fn reason(e: &io::Error) -> &'static str {
    if is_timeout(e) {
        "timeout"
    } else if e.kind() == io::ErrorKind::UnexpectedEof
        || e.kind() == io::ErrorKind::ConnectionReset
        || e.kind() == io::ErrorKind::BrokenPipe
    {
        "closed"
    } else {
        "io"
    }
}

/// `LOCK.ACQUIRE`, with the intent logged first and the answer after. A
/// WAIT call is audited: its kind of answer, and a `PING` right after whose
/// echo must be the next thing on the connection (else a second reply came).
pub fn acquire(
    log: &mut EventLog,
    conn: &mut Conn,
    key: &str,
    token: &str,
    ttl: u64,
    wait: Option<u64>,
) -> Acq {
    if conn.unsolicited() {
        rec!(log, "D {key} {token} {}", now_us());
        return Acq::Failed;
    }
    let ttl_s = ttl.to_string();
    let wait_s = wait.map(|w| w.to_string());
    let mut args = vec!["LOCK.ACQUIRE", key, token, &ttl_s];
    if let Some(w) = &wait_s {
        args.extend(["WAIT", w.as_str()]);
    }
    let sent = now_us();
    let wait_txt = wait_s.clone().unwrap_or_else(|| "-".into());
    rec!(log, "A {key} {token} {ttl} {wait_txt} {sent}");
    let reply = conn.call(&args, ms(wait.unwrap_or(0)) + REPLY_MARGIN);
    let recv = now_us();
    let (out, kind) = match &reply {
        Ok(Reply::Int(f)) if *f > 0 => {
            rec!(log, "G {key} {token} {f} {sent} {recv}");
            (Acq::Granted(*f as u64), "grant")
        }
        Ok(r) if r.is_nil() => {
            rec!(log, "N {key} {token} {sent} {recv}");
            (Acq::Null, "null")
        }
        Ok(r) => {
            let word = r.text();
            let word = word.split(' ').next().unwrap_or("?").to_owned();
            rec!(log, "E {key} {token} {sent} {recv} {word}");
            (Acq::Failed, "error")
        }
        Err(e) => {
            let why = reason(e);
            rec!(log, "E {key} {token} {sent} {recv} {why}");
            let kind = match why {
                "timeout" => "never",
                "closed" => "closed",
                _ => "error",
            };
            (Acq::Failed, kind)
        }
    };
    if let Some(w) = wait {
        rec!(log, "W {key} {token} {w} {sent} {recv} {kind}");
        if matches!(out, Acq::Granted(_) | Acq::Null) && !echo_is_next(conn, token) {
            rec!(log, "D {key} {token} {}", now_us());
            return Acq::Failed;
        }
    }
    out
}

/// Sends `PING token` and reads until the echo: false if anything else
/// came first (a second reply to the previous command).
fn echo_is_next(conn: &mut Conn, token: &str) -> bool {
    if conn.send(&["PING", token]).is_err() {
        return true;
    }
    let mut first = true;
    for _ in 0..8 {
        match conn.read(REPLY_MARGIN) {
            Ok(Reply::Bulk(Some(b))) if b == token.as_bytes() => return first,
            Ok(_) => first = false,
            Err(_) => return first,
        }
    }
    false
}

/// `WAIT 1 1000`: whether a replica has everything this connection wrote.
fn replicated(cx: &mut Ctx, conn: &mut Conn, key: &str, token: &str, fence: u64) -> bool {
    let acked = matches!(conn.call(&["WAIT", "1", "1000"], ms(1_000) + REPLY_MARGIN), Ok(Reply::Int(n)) if n >= 1);
    rec!(
        cx.log,
        "K {key} {token} {fence} {} {}",
        u8::from(acked),
        now_us()
    );
    acked
}

fn release(cx: &mut Ctx, conn: &mut Option<Conn>, key: &str, token: &str) {
    rec!(cx.log, "R {key} {token} {}", now_us());
    if conn.is_none() {
        *conn = cx.connect();
    }
    if let Some(c) = conn.as_mut() {
        if c.call(&["LOCK.RELEASE", key, token], REPLY_MARGIN).is_err() {
            *conn = None;
        }
    }
}

fn worker(cx: &mut Ctx) {
    let mut conn: Option<Conn> = None;
    let mut res = ResourceConn::new(cx.resource);
    let mut n = 0u64;
    while cx.running() {
        if conn.is_none() {
            conn = cx.connect();
            if conn.is_none() {
                sleep(ms(50));
                continue;
            }
        }
        n += 1;
        let key = format!("k{}", cx.rng.range(0, cx.keys - 1));
        let token = format!("c{}.{}.{n}", cx.slot, cx.gen);
        let ttl = cx.rng.range(cx.ttl_min, cx.ttl_max);
        let wait = cx
            .rng
            .chance(0.4)
            .then(|| cx.rng.range(20, cx.wait_max.max(20)));
        let c = conn.as_mut().expect("connected above");
        match acquire(&mut cx.log, c, &key, &token, ttl, wait) {
            Acq::Granted(fence) => hold(
                cx,
                &mut conn,
                &mut res,
                &key,
                &token,
                ttl,
                fence,
                wait.is_some(),
            ),
            Acq::Null => {
                if wait.is_none() {
                    sleep(ms(cx.rng.range(10, 60)));
                }
            }
            Acq::Failed => {
                conn = None;
                sleep(ms(cx.rng.range(20, 80)));
            }
        }
    }
}

/// The critical section of a granted lock.
#[allow(clippy::too_many_arguments)]
fn hold(
    cx: &mut Ctx,
    conn: &mut Option<Conn>,
    res: &mut ResourceConn,
    key: &str,
    token: &str,
    ttl: u64,
    fence: u64,
    waited: bool,
) {
    let Some(c) = conn.as_mut() else { return };
    // Asynchronous replication: a grant not on the replica may vanish in
    // a failover, so only a replicated grant is used.
    if !replicated(cx, c, key, token, fence) {
        release(cx, conn, key, token);
        return;
    }
    if waited {
        // Handed over at an unknown moment since the request: ask how
        // long the lease has left.
        let sent = now_us();
        match c.call(&["LOCK.CHECK", key, token], REPLY_MARGIN) {
            Ok(Reply::Int(left)) if left > 0 => {
                rec!(cx.log, "L {key} {token} {fence} {sent} {left}");
            }
            Ok(_) => {}
            Err(_) => *conn = None,
        }
    }
    rec!(cx.log, "S {key} {token} {fence} {}", now_us());
    let outcome = 'cs: {
        match res.write(key, fence, token, true) {
            Some(true) => {}
            Some(false) => break 'cs "fenced",
            None => break 'cs "lost",
        }
        sleep(ms(cx.rng.range(0, ttl * 5 / 10)));
        if cx.rng.chance(0.25) {
            let Some(c) = conn.as_mut() else {
                break 'cs "lost";
            };
            match acquire(&mut cx.log, c, key, token, ttl, None) {
                Acq::Granted(f) if f == fence => {
                    if !replicated(cx, c, key, token, fence) {
                        break 'cs "lost";
                    }
                }
                Acq::Failed => {
                    *conn = None;
                    break 'cs "lost";
                }
                _ => break 'cs "lost",
            }
            sleep(ms(cx.rng.range(0, ttl * 3 / 10)));
        }
        match res.write(key, fence, token, false) {
            Some(true) => "ok",
            Some(false) => "fenced",
            None => "lost",
        }
    };
    rec!(cx.log, "X {key} {token} {fence} {} {outcome}", now_us());
    release(cx, conn, key, token);
}

fn race(cx: &mut Ctx) {
    let (mut c1, mut c2): (Option<Conn>, Option<Conn>) = (None, None);
    let mut n = 0u64;
    while cx.running() {
        if c1.is_none() || c2.is_none() {
            c1 = cx.connect();
            c2 = cx.connect();
            if c1.is_none() || c2.is_none() {
                sleep(ms(50));
                continue;
            }
        }
        let (a, b) = (c1.as_mut().expect("set"), c2.as_mut().expect("set"));
        n += 1;
        let key = format!("race:{}.{}.{n}", cx.slot, cx.gen);
        let (th, tw) = (
            format!("r{}.{}.{n}h", cx.slot, cx.gen),
            format!("r{}.{}.{n}w", cx.slot, cx.gen),
        );
        match acquire(&mut cx.log, a, &key, &th, 100, None) {
            Acq::Granted(_) => {}
            _ => {
                c1 = None;
                sleep(ms(50));
                continue;
            }
        }
        // Timeouts around the holder's 100 ms: the answer is decided at
        // the same moment as the expiry.
        let w = cx.rng.range(94, 100);
        let sent = now_us();
        let got = acquire(&mut cx.log, b, &key, &tw, 10_000, Some(w));
        let expect_held = match got {
            Acq::Granted(_) => true,
            Acq::Null => false,
            Acq::Failed => {
                c2 = None;
                continue;
            }
        };
        match a.call(&["LOCK.CHECK", &key, &tw], REPLY_MARGIN) {
            Ok(Reply::Int(left)) => {
                let agree = (left > 0) == expect_held;
                rec!(
                    cx.log,
                    "Q {key} {tw} {sent} {} {}",
                    now_us(),
                    u8::from(agree)
                );
            }
            _ => c1 = None,
        }
        if expect_held {
            release(cx, &mut c1, &key, &tw);
        }
        sleep(ms(cx.rng.range(10, 60)));
    }
}

fn prober(cx: &mut Ctx) {
    let mut conn: Option<Conn> = None;
    let mut live: VecDeque<(String, String, u64)> = VecDeque::new();
    let mut n = 0u64;
    while cx.running() {
        if conn.is_none() {
            conn = cx.connect();
            if conn.is_none() {
                sleep(ms(50));
                continue;
            }
        }
        n += 1;
        let key = format!("probe:{}.{}.{n}", cx.slot, cx.gen);
        let token = format!("p{}.{}.{n}", cx.slot, cx.gen);
        let ttl = cx.rng.range(15_000, 30_000);
        let c = conn.as_mut().expect("connected above");
        match acquire(&mut cx.log, c, &key, &token, ttl, None) {
            Acq::Granted(f) => {
                replicated(cx, c, &key, &token, f);
                live.push_back((key, token, ttl));
            }
            Acq::Null => {}
            Acq::Failed => conn = None,
        }
        if live.len() > 12 {
            let (k, t, _) = live.pop_front().expect("not empty");
            release(cx, &mut conn, &k, &t);
        }
        if cx.rng.chance(0.2) && !live.is_empty() {
            let i = cx.rng.range(0, live.len() as u64 - 1) as usize;
            let (k, t, ttl) = live[i].clone();
            if let Some(c) = conn.as_mut() {
                match acquire(&mut cx.log, c, &k, &t, ttl, None) {
                    Acq::Granted(f) => {
                        replicated(cx, c, &k, &t, f);
                    }
                    Acq::Null => {
                        // Lost (a failover without the grant): forget it.
                        live.remove(i);
                    }
                    Acq::Failed => conn = None,
                }
            }
        }
        sleep(ms(cx.rng.range(80, 160)));
    }
    for (k, t, _) in std::mem::take(&mut live) {
        release(cx, &mut conn, &k, &t);
    }
}
