//! `lockctl`: the lock module from the shell.
//!
//! `lockctl run KEY -- CMD…` takes the lock (waiting in the server's FIFO
//! queue), runs CMD with `LOCK_KEY`, `LOCK_FENCE` and `LOCK_TTL_MS` in its
//! environment, renews the lock while CMD runs, and releases it when CMD
//! exits. See `lockctl --help` and the README's "Command line: lockctl".

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Exit code: bad arguments (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code: the server is unreachable, or the module is not loaded, or
/// it answered with an error (sysexits' EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code of `run` when the lock was lost while the command ran
/// (sysexits' EX_TEMPFAIL).
const EXIT_LOST: u8 = 75;
/// Default exit code when the lock is not obtained (like flock(1)).
const EXIT_CONFLICT: u8 = 1;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";
const DEFAULT_TTL_MS: u64 = 30_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read timeout beyond a WAIT: the server answers at the WAIT's end at the
/// latest, so the client must not give up (or re-send) before that.
const WAIT_READ_SLACK: Duration = Duration::from_secs(10);

const MAIN_HELP: &str = "\
lockctl: locks of the lock Redis module from the shell

Usage:
  lockctl [--url URL] run KEY [--ttl MS] [--wait MS | --no-wait] [--meta TEXT]
                          [--conflict-exit-code N] -- CMD [ARGS...]
  lockctl [--url URL] status KEY [--json]
  lockctl [--url URL] acquire KEY [--ttl MS] [--wait MS | --no-wait] [--meta TEXT]
  lockctl [--url URL] release KEY TOKEN
  lockctl [SUBCOMMAND] --help

Options:
  --url URL   the server (default: $REDIS_URL, else redis://127.0.0.1:6379/)
  -h, --help  this text, or a subcommand's

Exit codes: 0 success; 1 lock not obtained (run: --conflict-exit-code);
64 bad arguments; 69 server unreachable, module not loaded or server error;
run: the command's own code (128+N if killed by signal N), 75 lock lost.
";

const RUN_HELP: &str = "\
lockctl run KEY [--ttl MS] [--wait MS | --no-wait] [--meta TEXT]
              [--conflict-exit-code N] -- CMD [ARGS...]

Takes the lock KEY, then runs CMD with LOCK_KEY, LOCK_FENCE (the fencing
token) and LOCK_TTL_MS in its environment (never the lock's token: whoever
has it can release the lock). CMD runs in a process group of its own.

  --ttl MS                 the lock's time to live, renewed every TTL/3
                           while CMD runs (default 30000)
  --wait MS                wait in the server's FIFO queue at most MS ms
                           (default, and --wait 0: wait without limit)
  --no-wait                give up at once if someone else holds the lock
  --meta TEXT              stored with the lock for operators to see in
                           `lockctl status` / LOCK.INFO (for example the
                           host and the job); at most lock.max-meta-length
                           bytes (1024 by default)
  --conflict-exit-code N   exit code when the lock is not obtained (default 1)
  --url URL                the server (default $REDIS_URL, else redis://127.0.0.1:6379/)

When CMD exits, the lock is released and lockctl exits with CMD's code
(128+N if CMD was killed by signal N). SIGINT, SIGTERM and SIGHUP to lockctl
are forwarded to CMD's process group; the lock is released when CMD exits.

The lock is renewed with LOCK.EXTEND, which never takes a lapsed lock
again. The lock is lost when a renewal is refused (the key expired, was
deleted or is held by someone else), or when no renewal has been acknowledged for 3/4 of the
TTL, counted from the renewal's sending (server unreachable or paused).
Then lockctl sends SIGTERM to CMD's process group, SIGKILL TTL/8 later if it
is still running (so before the server can hand the lock on), says so on
stderr and exits with 75.
";

const STATUS_HELP: &str = "\
lockctl status KEY [--json]

Shows LOCK.INFO for KEY: held, foreign (held by a value the module did not
write), ttl (ms), fence, waiters and the holder's metadata (--meta). With
--json, one line:
  {\"key\":\"K\",\"held\":true,\"foreign\":false,\"ttl_ms\":123,\"fence\":45,\"waiters\":0,\"meta\":\"host=a\"}
(fence and meta are null when the lock is free or foreign, meta also when
the holder stored none; ttl_ms is -2 when the key does not exist, -1 when
it has no expiry; bytes of meta that are not UTF-8 show as U+FFFD).
";

const ACQUIRE_HELP: &str = "\
lockctl acquire KEY [--ttl MS] [--wait MS | --no-wait] [--meta TEXT]

Takes the lock KEY for TTL ms (default 30000) with a new random token (and
TEXT stored with it for `lockctl status`, given --meta) and
prints \"TOKEN FENCE\" on one line; exits 1 if the lock is not obtained. It
does not renew the lock: release it with `lockctl release KEY TOKEN` before
the TTL ends. Without --wait it does not wait.

  token_fence=$(lockctl acquire deploy --ttl 600000 --wait 60000) || exit 1
  read -r token fence <<<\"$token_fence\"
  ...
  lockctl release deploy \"$token\"
";

const RELEASE_HELP: &str = "\
lockctl release KEY TOKEN

Releases the lock KEY held with TOKEN (as printed by `lockctl acquire`).
Exits 0 if it was released, 1 if it was not held with TOKEN (expired,
deleted, or someone else's).
";

/// An error that ends lockctl with a message and an exit code.
struct Fail {
    code: u8,
    msg: String,
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail {
        code: EXIT_USAGE,
        msg: format!("{} (see lockctl --help)", msg.into()),
    }
}

fn unavailable(msg: impl Into<String>) -> Fail {
    Fail {
        code: EXIT_UNAVAILABLE,
        msg: msg.into(),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("lockctl: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

fn is_help(a: &str) -> bool {
    a == "--help" || a == "-h"
}

fn real_main() -> Result<u8, Fail> {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    // --url may come anywhere before `--`.
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if a == "--" {
            break;
        }
        if a == "--url" {
            if i + 1 >= args.len() {
                return Err(usage("--url needs a value"));
            }
            url = args[i + 1].to_string_lossy().into_owned();
            args.drain(i..i + 2);
            continue;
        }
        if let Some(v) = a.strip_prefix("--url=") {
            url = v.to_owned();
            args.remove(i);
            continue;
        }
        i += 1;
    }
    let Some(sub) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        print!("{MAIN_HELP}");
        return Err(usage("a subcommand is needed"));
    };
    let rest = &args[1..];
    let wants_help = |h: &str| -> bool {
        let stop = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
        if rest[..stop].iter().any(|a| is_help(&a.to_string_lossy())) {
            print!("{h}");
            true
        } else {
            false
        }
    };
    match sub.as_str() {
        "-h" | "--help" | "help" => {
            print!("{MAIN_HELP}");
            Ok(0)
        }
        "-V" | "--version" => {
            println!("lockctl {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "run" => {
            if wants_help(RUN_HELP) {
                return Ok(0);
            }
            cmd_run(&url, rest)
        }
        "status" => {
            if wants_help(STATUS_HELP) {
                return Ok(0);
            }
            cmd_status(&url, rest)
        }
        "acquire" => {
            if wants_help(ACQUIRE_HELP) {
                return Ok(0);
            }
            cmd_acquire(&url, rest)
        }
        "release" => {
            if wants_help(RELEASE_HELP) {
                return Ok(0);
            }
            cmd_release(&url, rest)
        }
        other => Err(usage(format!("unknown subcommand {other:?}"))),
    }
}

/// How long to wait for the lock.
#[derive(Clone, Copy, Debug)]
enum Wait {
    No,
    Forever,
    Ms(u64),
}

struct LockArgs {
    key: String,
    ttl: u64,
    wait: Wait,
    conflict_code: u8,
    json: bool,
    meta: Option<OsString>,
    positional: Vec<String>,
    command: Vec<OsString>,
}

fn parse_ms(flag: &str, v: Option<&OsString>, min: u64) -> Result<u64, Fail> {
    let v = v.ok_or_else(|| usage(format!("{flag} needs a value")))?;
    let s = v.to_string_lossy();
    let n: u64 = s
        .parse()
        .map_err(|_| usage(format!("{flag} {s:?}: not a whole number of milliseconds")))?;
    if n < min {
        return Err(usage(format!("{flag} {n}: at least {min}")));
    }
    Ok(n)
}

/// Parses the arguments after the subcommand; `allowed` lists the flags.
fn parse(rest: &[OsString], allowed: &[&str], with_command: bool) -> Result<LockArgs, Fail> {
    let mut a = LockArgs {
        key: String::new(),
        ttl: DEFAULT_TTL_MS,
        wait: Wait::Forever,
        conflict_code: EXIT_CONFLICT,
        json: false,
        meta: None,
        positional: Vec::new(),
        command: Vec::new(),
    };
    let mut wait_set = false;
    let mut i = 0;
    while i < rest.len() {
        let s = rest[i].to_string_lossy().into_owned();
        if s == "--" {
            a.command = rest[i + 1..].to_vec();
            if !with_command {
                return Err(usage("unexpected `--`"));
            }
            break;
        }
        if s.starts_with("--") {
            let (name, inline) = match s.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(OsString::from(v))),
                None => (s.clone(), None),
            };
            if !allowed.contains(&name.as_str()) {
                return Err(usage(format!("unknown option {name}")));
            }
            let takes_value = matches!(
                name.as_str(),
                "--ttl" | "--wait" | "--conflict-exit-code" | "--meta"
            );
            let value = if takes_value {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        rest.get(i).cloned()
                    }
                }
            } else {
                if inline.is_some() {
                    return Err(usage(format!("{name} takes no value")));
                }
                None
            };
            match name.as_str() {
                "--ttl" => a.ttl = parse_ms("--ttl", value.as_ref(), 100)?,
                "--wait" => {
                    if wait_set {
                        return Err(usage("--wait and --no-wait exclude each other"));
                    }
                    wait_set = true;
                    a.wait = Wait::Ms(parse_ms("--wait", value.as_ref(), 0)?);
                }
                "--no-wait" => {
                    if wait_set {
                        return Err(usage("--wait and --no-wait exclude each other"));
                    }
                    wait_set = true;
                    a.wait = Wait::No;
                }
                "--conflict-exit-code" => {
                    let n = parse_ms("--conflict-exit-code", value.as_ref(), 0)?;
                    a.conflict_code =
                        u8::try_from(n).map_err(|_| usage("--conflict-exit-code: 0 to 255"))?;
                }
                "--json" => a.json = true,
                "--meta" => {
                    let v = value.ok_or_else(|| usage("--meta needs a value"))?;
                    if a.meta.replace(v).is_some() {
                        return Err(usage("--meta given more than once"));
                    }
                }
                _ => unreachable!(),
            }
        } else {
            a.positional.push(s);
        }
        i += 1;
    }
    if let Wait::Ms(0) = a.wait {
        a.wait = Wait::Forever;
    }
    if a.positional.is_empty() {
        return Err(usage("KEY is missing"));
    }
    a.key = a.positional.remove(0);
    if a.key.is_empty() {
        return Err(usage("KEY is empty"));
    }
    Ok(a)
}

fn no_extra(a: &LockArgs) -> Result<(), Fail> {
    match a.positional.first() {
        Some(x) => Err(usage(format!("unexpected argument {x:?}"))),
        None => Ok(()),
    }
}

fn connect(url: &str) -> Result<redis::Connection, Fail> {
    let client =
        redis::Client::open(url).map_err(|e| usage(format!("bad server URL {url:?}: {e}")))?;
    let con = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| unavailable(format!("cannot connect to {url}: {e}")))?;
    let _ = con.set_write_timeout(Some(CONNECT_TIMEOUT));
    let _ = con.set_read_timeout(Some(CONNECT_TIMEOUT));
    Ok(con)
}

/// A server error in words, with the fix when the module is missing.
fn server_error(url: &str, e: &redis::RedisError) -> Fail {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("unknown command") {
        return unavailable(format!(
            "the server at {url} does not have the lock module loaded ({text}).\n\
             Load it: `redis-server --loadmodule /path/to/liblock.so`, a `loadmodule \
             /path/to/liblock.so` line in redis.conf, or `redis-cli MODULE LOAD \
             /path/to/liblock.so`; `make build` builds target/release/liblock.so."
        ));
    }
    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() {
        return unavailable(format!("lost the connection to {url}: {text}"));
    }
    unavailable(format!("{url}: {text}"))
}

fn new_token() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Not expected on Unix; still unique enough per process and time.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b[..8].copy_from_slice(&(t as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// LOCK.ACQUIRE with the chosen wait and metadata, on a connection of its
/// own whose read timeout exceeds the wait. Some(fence), or None when not
/// obtained.
fn acquire(url: &str, a: &LockArgs, token: &str) -> Result<Option<i64>, Fail> {
    let con = &mut connect(url)?;
    let mut cmd = redis::cmd("LOCK.ACQUIRE");
    cmd.arg(&a.key).arg(token).arg(a.ttl);
    if let Some(meta) = &a.meta {
        cmd.arg("META").arg(meta.as_encoded_bytes());
    }
    match a.wait {
        Wait::No => {}
        Wait::Forever => {
            // WAIT 0 waits without limit: so does the read.
            cmd.arg("WAIT").arg(0);
            let _ = con.set_read_timeout(None);
        }
        Wait::Ms(ms) => {
            cmd.arg("WAIT").arg(ms);
            let _ = con.set_read_timeout(Some(Duration::from_millis(ms) + WAIT_READ_SLACK));
        }
    }
    cmd.query::<Option<i64>>(con)
        .map_err(|e| server_error(url, &e))
}

/// LOCK.EXTEND: Some(fence) while the token holds the lock; never takes a
/// lapsed lock again.
fn extend(
    con: &mut redis::Connection,
    key: &str,
    token: &str,
    ttl: u64,
) -> redis::RedisResult<Option<i64>> {
    redis::cmd("LOCK.EXTEND")
        .arg(key)
        .arg(token)
        .arg(ttl)
        .query(con)
}

fn release(con: &mut redis::Connection, key: &str, token: &str) -> redis::RedisResult<i64> {
    redis::cmd("LOCK.RELEASE").arg(key).arg(token).query(con)
}

fn cmd_acquire(url: &str, rest: &[OsString]) -> Result<u8, Fail> {
    let mut a = parse(rest, &["--ttl", "--wait", "--no-wait", "--meta"], false)?;
    no_extra(&a)?;
    if let Wait::Forever = a.wait {
        // acquire waits only when asked to.
        if !rest
            .iter()
            .any(|x| x.to_string_lossy().starts_with("--wait"))
        {
            a.wait = Wait::No;
        }
    }
    let token = new_token();
    match acquire(url, &a, &token)? {
        Some(fence) => {
            println!("{token} {fence}");
            Ok(0)
        }
        None => {
            eprintln!("lockctl: {} is held by someone else", a.key);
            Ok(EXIT_CONFLICT)
        }
    }
}

fn cmd_release(url: &str, rest: &[OsString]) -> Result<u8, Fail> {
    let a = parse(rest, &[], false)?;
    if a.positional.len() != 1 {
        return Err(usage("release needs KEY and TOKEN"));
    }
    let con = &mut connect(url)?;
    match release(con, &a.key, &a.positional[0]).map_err(|e| server_error(url, &e))? {
        1 => Ok(0),
        _ => {
            eprintln!("lockctl: {} was not held with that token", a.key);
            Ok(1)
        }
    }
}

/// LOCK.INFO's fields.
#[derive(Debug, Default)]
struct Info {
    held: bool,
    foreign: bool,
    ttl: i64,
    fence: Option<i64>,
    waiters: i64,
    meta: Option<String>,
}

fn int_of(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(n) => Some(*n),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        redis::Value::Boolean(b) => Some(*b as i64),
        _ => None,
    }
}

fn parse_info(v: &redis::Value) -> Option<Info> {
    let pairs: Vec<(&redis::Value, &redis::Value)> = match v {
        redis::Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        redis::Value::Array(a) if a.len() % 2 == 0 => a.chunks(2).map(|c| (&c[0], &c[1])).collect(),
        _ => return None,
    };
    let mut info = Info::default();
    for (k, v) in pairs {
        let name = match k {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        match name.as_str() {
            "held" => info.held = int_of(v)? != 0,
            "foreign" => info.foreign = int_of(v)? != 0,
            "ttl" => info.ttl = int_of(v)?,
            "fence" => info.fence = int_of(v),
            "waiters" => info.waiters = int_of(v)?,
            "meta" => {
                info.meta = match v {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(info)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cmd_status(url: &str, rest: &[OsString]) -> Result<u8, Fail> {
    let a = parse(rest, &["--json"], false)?;
    no_extra(&a)?;
    let con = &mut connect(url)?;
    let v: redis::Value = redis::cmd("LOCK.INFO")
        .arg(&a.key)
        .query(con)
        .map_err(|e| server_error(url, &e))?;
    let info =
        parse_info(&v).ok_or_else(|| unavailable(format!("unexpected LOCK.INFO reply: {v:?}")))?;
    if a.json {
        println!(
            "{{\"key\":{},\"held\":{},\"foreign\":{},\"ttl_ms\":{},\"fence\":{},\"waiters\":{},\"meta\":{}}}",
            json_string(&a.key),
            info.held,
            info.foreign,
            info.ttl,
            info.fence.map_or("null".to_owned(), |f| f.to_string()),
            info.waiters,
            info.meta.as_deref().map_or("null".to_owned(), json_string)
        );
    } else {
        let held = match (info.held, info.foreign) {
            (false, _) => "no".to_owned(),
            (true, false) => "yes".to_owned(),
            (true, true) => "yes, by a value the module did not write (foreign)".to_owned(),
        };
        let ttl = match info.ttl {
            -2 => "-".to_owned(),
            -1 => "no expiry".to_owned(),
            n => format!("{n} ms"),
        };
        println!("key:     {}", a.key);
        println!("held:    {held}");
        println!("ttl:     {ttl}");
        println!(
            "fence:   {}",
            info.fence.map_or("-".to_owned(), |f| f.to_string())
        );
        println!("waiters: {}", info.waiters);
        println!("meta:    {}", info.meta.as_deref().unwrap_or("-"));
    }
    Ok(0)
}

/// The last signal lockctl received (0: none), and how many.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

fn install_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to atomics (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn kill_group(pgid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// What the watchdog thread shares with the main loop.
struct Watch {
    /// Milliseconds since `start` at which the last acknowledged renewal
    /// (or the acquisition) was sent.
    last_ok_send_ms: AtomicU64,
    /// Set when a renewal was refused, or answered with another fence.
    refused: AtomicBool,
    stop: AtomicBool,
    start: Instant,
}

fn watchdog(url: String, key: String, token: String, ttl: u64, fence: i64, w: Arc<Watch>) {
    let interval = Duration::from_millis((ttl / 3).max(1));
    let io_timeout = Duration::from_millis((ttl / 4).max(50));
    let mut con: Option<redis::Connection> = None;
    let mut next = Instant::now() + interval;
    while !w.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            thread::sleep((next - now).min(Duration::from_millis(20)));
            continue;
        }
        if con.is_none() {
            con = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(io_timeout))
                .ok();
            if let Some(c) = &con {
                let _ = c.set_read_timeout(Some(io_timeout));
                let _ = c.set_write_timeout(Some(io_timeout));
            }
        }
        let sent = w.start.elapsed().as_millis() as u64;
        let reply = match con.as_mut() {
            Some(c) => extend(c, &key, &token, ttl),
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected",
            ))),
        };
        match reply {
            Ok(Some(f)) if f == fence => {
                w.last_ok_send_ms.fetch_max(sent, Ordering::SeqCst);
                next = w.start + Duration::from_millis(sent) + interval;
            }
            Ok(_) => {
                // Null: it lapsed, was deleted or someone else holds it.
                w.refused.store(true, Ordering::SeqCst);
                return;
            }
            Err(_) => {
                // Retry on a new connection soon; the main loop declares the
                // loss when the deadline passes.
                con = None;
                next = Instant::now() + Duration::from_millis((ttl / 20).clamp(10, 500));
            }
        }
    }
}

fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    if let Some(c) = status.code() {
        c as u8
    } else if let Some(s) = status.signal() {
        (128 + s) as u8
    } else {
        1
    }
}

fn cmd_run(url: &str, rest: &[OsString]) -> Result<u8, Fail> {
    let a = parse(
        rest,
        &[
            "--ttl",
            "--wait",
            "--no-wait",
            "--meta",
            "--conflict-exit-code",
        ],
        true,
    )?;
    no_extra(&a)?;
    if a.command.is_empty() {
        return Err(usage(
            "the command is missing: lockctl run KEY [options] -- CMD [ARGS...]",
        ));
    }
    let token = new_token();
    let mut start = Instant::now();
    let Some(fence) = acquire(url, &a, &token)? else {
        eprintln!(
            "lockctl: {} is held by someone else; not running the command",
            a.key
        );
        return Ok(a.conflict_code);
    };
    install_handlers();
    let mut main_con = connect(url).ok();
    if !matches!(a.wait, Wait::No) {
        // A granted WAIT's TTL runs from the grant, which lockctl does not
        // know: renew at once, so that the watchdog's times count from a
        // known sending.
        start = Instant::now();
        let renewed = match main_con.as_mut() {
            Some(c) => extend(c, &a.key, &token, a.ttl).map_err(|e| server_error(url, &e))?,
            None => return Err(unavailable(format!("cannot connect to {url}"))),
        };
        if renewed != Some(fence) {
            return Err(unavailable(format!(
                "the lock {} was lost right after it was granted",
                a.key
            )));
        }
    }

    let mut command = Command::new(&a.command[0]);
    command
        .args(&a.command[1..])
        .env("LOCK_KEY", &a.key)
        .env("LOCK_FENCE", fence.to_string())
        .env("LOCK_TTL_MS", a.ttl.to_string())
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe. If lockctl itself is killed
    // (SIGKILL), nothing renews the lock: the command gets SIGTERM.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(c) = main_con.as_mut() {
                let _ = release(c, &a.key, &token);
            }
            eprintln!(
                "lockctl: cannot run {:?}: {e}",
                a.command[0].to_string_lossy()
            );
            return Ok(127);
        }
    };
    let pgid = child.id();

    let watch = Arc::new(Watch {
        last_ok_send_ms: AtomicU64::new(0),
        refused: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        start,
    });
    let dog = {
        let (url, key, token, w) = (url.to_owned(), a.key.clone(), token.clone(), watch.clone());
        let ttl = a.ttl;
        thread::spawn(move || watchdog(url, key, token, ttl, fence, w))
    };

    let lose_after = a.ttl - a.ttl / 4;
    let grace = Duration::from_millis(a.ttl / 8);
    let mut forwarded = 0u64;
    let mut lost_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(_) => break None,
        }
        let n = SIGNALS.load(Ordering::SeqCst);
        if n != forwarded {
            forwarded = n;
            kill_group(pgid, SIGNAL.load(Ordering::SeqCst));
        }
        match lost_at {
            None => {
                let since = (start.elapsed().as_millis() as u64)
                    .saturating_sub(watch.last_ok_send_ms.load(Ordering::SeqCst));
                let refused = watch.refused.load(Ordering::SeqCst);
                if refused || since >= lose_after {
                    let why = if refused {
                        "a renewal was refused: the lock expired, was deleted or is held by someone else"
                            .to_owned()
                    } else {
                        format!("no renewal acknowledged for {since} ms (TTL {} ms)", a.ttl)
                    };
                    eprintln!(
                        "lockctl: lost the lock {} ({why}); sending SIGTERM to the command, \
                         SIGKILL in {} ms",
                        a.key,
                        grace.as_millis()
                    );
                    kill_group(pgid, libc::SIGTERM);
                    lost_at = Some(Instant::now());
                }
            }
            Some(t) => {
                if !killed && t.elapsed() >= grace {
                    eprintln!("lockctl: the command still runs; sending SIGKILL");
                    kill_group(pgid, libc::SIGKILL);
                    killed = true;
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    };
    watch.stop.store(true, Ordering::SeqCst);
    // Anything the command left in its group goes with the lock.
    if lost_at.is_some() {
        kill_group(pgid, libc::SIGKILL);
    }
    let _ = dog.join();
    if main_con.is_none() {
        main_con = connect(url).ok();
    }
    let released = match main_con.as_mut() {
        Some(c) => release(c, &a.key, &token).ok(),
        None => None,
    };
    if lost_at.is_some() {
        return Ok(EXIT_LOST);
    }
    match released {
        Some(1) => {}
        Some(_) => eprintln!(
            "lockctl: warning: {} was no longer held when the command ended (expired or deleted)",
            a.key
        ),
        None => eprintln!(
            "lockctl: warning: could not release {} (it expires within {} ms)",
            a.key, a.ttl
        ),
    }
    Ok(status.map_or(1, exit_code_of))
}
