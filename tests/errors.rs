//! Rejected calls: arity, milliseconds, tokens, options, and the limits
//! `lock.max-ttl` / `lock.max-token-length`. Every rejected call must leave
//! the key exactly as it was (a held lock stays held, an absent key absent).

mod common;

use common::*;
use redis::Connection;

/// A held lock (`held`, token `tok`) and an absent key (`absent`).
struct Fixture {
    server: Server,
    conn: Connection,
    fence: i64,
    before: Snapshot,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::on(Server::start())
    }

    fn on(server: Server) -> Fixture {
        let mut conn = server.conn();
        let fence = must_acquire(&mut conn, b"held", b"tok", 60_000);
        let before = snapshot(&mut conn, b"held");
        Fixture {
            server,
            conn,
            fence,
            before,
        }
    }

    /// Runs `args` (with `{key}` replaced by each key) and expects an error
    /// starting with `prefix`; then checks that nothing changed.
    fn rejects(&mut self, args: &[&[u8]], prefix: &str) {
        for key in [&b"held"[..], b"absent"] {
            let args: Vec<&[u8]> = args
                .iter()
                .map(|a| if *a == b"{key}" { key } else { *a })
                .collect();
            let e = err(&mut self.conn, &args[..]);
            assert!(
                e.starts_with(prefix),
                "{:?}: expected {prefix:?}..., got {e:?}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            );
            assert!(!e.contains(['\r', '\n']), "one-line error: {e:?}");
            self.unchanged();
        }
    }

    fn unchanged(&mut self) {
        assert_eq!(snapshot(&mut self.conn, b"held"), self.before);
        assert!(!exists(&mut self.conn, b"absent"), "absent key created");
        assert!(check(&mut self.conn, b"held", b"tok") > 0);
    }

    /// The lock is still ours, with its fence.
    fn still_held(&mut self) {
        self.unchanged();
        assert_eq!(
            acquire(&mut self.conn, b"held", b"tok", 60_000),
            Some(self.fence)
        );
        self.before = snapshot(&mut self.conn, b"held");
    }
}

const ARITY: &str = "ERR wrong number of arguments";

#[test]
fn wrong_arity() {
    let mut f = Fixture::new();
    for args in [
        &[&b"LOCK.ACQUIRE"[..]][..],
        &[b"LOCK.ACQUIRE", b"{key}"],
        &[b"LOCK.ACQUIRE", b"{key}", b"tok"],
        &[b"LOCK.RELEASE"],
        &[b"LOCK.RELEASE", b"{key}"],
        &[b"LOCK.RELEASE", b"{key}", b"tok", b"extra"],
        &[b"LOCK.CHECK"],
        &[b"LOCK.CHECK", b"{key}"],
        &[b"LOCK.CHECK", b"{key}", b"tok", b"extra"],
    ] {
        f.rejects(args, ARITY);
    }
    // The messages name the command, like Redis's own.
    let e = err(&mut f.conn, ("LOCK.RELEASE", "held"));
    assert!(e.to_lowercase().contains("lock.release"), "{e}");
    f.still_held();
}

#[test]
fn bad_milliseconds() {
    let mut f = Fixture::new();
    for ms in [
        &b"0"[..],
        b"00",
        b"-1",
        b"-100",
        b"abc",
        b"1.5",
        b"100.0",
        b"0.5",
        b"99999999999999999999999",
        b"18446744073709551616",
        b"9223372036854775808",
        b"",
        b" 100",
        b"100 ",
        b"+100",
        b"1e3",
        b"0x10",
        b"100ms",
        b"\x00100",
    ] {
        // By a newcomer, and by the holder (a renewal must not happen).
        f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"tok", ms], "ERR");
        f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"other", ms], "ERR");
    }
    f.still_held();
}

#[test]
fn max_ttl_default_and_config_set() {
    let mut f = Fixture::new();
    let c = &mut f.conn;
    let v: Vec<String> =
        redis::from_redis_value(cmd(c, ("CONFIG", "GET", "lock.max-ttl"))).unwrap();
    assert_eq!(v, vec!["lock.max-ttl", "86400000"]);

    // The default limit is a day.
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"tok", b"86400001"], "ERR");
    must_acquire(&mut f.conn, b"day", b"t", 86_400_000);

    // Lowered: above it is refused (also for a renewal), at it is fine.
    cmd(&mut f.conn, ("CONFIG", "SET", "lock.max-ttl", 1000));
    let v: Vec<String> =
        redis::from_redis_value(cmd(&mut f.conn, ("CONFIG", "GET", "lock.max-ttl"))).unwrap();
    assert_eq!(v, vec!["lock.max-ttl", "1000"]);
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"tok", b"1001"], "ERR");
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"new", b"60000"], "ERR");
    let e = err(&mut f.conn, ("LOCK.ACQUIRE", "k", "t", 1001));
    assert!(e.contains("1000"), "the error names the limit: {e}");
    assert!(!exists(&mut f.conn, b"k"));
    expires_in(&mut f.conn, b"k", 1000, |c| {
        must_acquire(c, b"k", b"t", 1000)
    });

    // Raised again: accepted again.
    cmd(&mut f.conn, ("CONFIG", "SET", "lock.max-ttl", 86_400_000));
    f.still_held();
    must_acquire(&mut f.conn, b"k2", b"t", 60_000);

    // The limit itself must be positive.
    for bad in ["0", "-1", "abc"] {
        assert!(try_cmd(&mut f.conn, ("CONFIG", "SET", "lock.max-ttl", bad)).is_err());
    }
    let v: Vec<String> =
        redis::from_redis_value(cmd(&mut f.conn, ("CONFIG", "GET", "lock.max-ttl"))).unwrap();
    assert_eq!(v, vec!["lock.max-ttl", "86400000"]);
    drop(f.server);
}

#[test]
fn max_ttl_as_module_argument() {
    let s = Server::with(Config::default().module_arg("max-ttl", "1000"));
    let mut c = s.conn();
    let v: Vec<String> =
        redis::from_redis_value(cmd(&mut c, ("CONFIG", "GET", "lock.max-ttl"))).unwrap();
    assert_eq!(v, vec!["lock.max-ttl", "1000"]);
    expires_in(&mut c, b"held", 1000, |c| {
        must_acquire(c, b"held", b"tok", 1000)
    });
    // Kept from expiring while the errors run (an operator's PERSIST).
    assert_eq!(int(&cmd(&mut c, ("PERSIST", "held"))), 1);
    let before = snapshot(&mut c, b"held");
    for ms in [1001u64, 60_000, 86_400_000] {
        let e = err(&mut c, ("LOCK.ACQUIRE", "held", "tok", ms));
        assert!(e.starts_with("ERR"), "{e}");
        let e = err(&mut c, ("LOCK.ACQUIRE", "absent", "tok", ms));
        assert!(e.starts_with("ERR"), "{e}");
    }
    assert_eq!(snapshot(&mut c, b"held"), before);
    assert!(!exists(&mut c, b"absent"));
    // CONFIG SET still changes it at run time.
    cmd(&mut c, ("CONFIG", "SET", "lock.max-ttl", 5000));
    must_acquire(&mut c, b"absent", b"tok", 5000);
}

#[test]
fn empty_token() {
    let mut f = Fixture::new();
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"", b"1000"], "ERR");
    f.rejects(&[b"LOCK.RELEASE", b"{key}", b""], "ERR");
    f.rejects(&[b"LOCK.CHECK", b"{key}", b""], "ERR");
    f.still_held();
}

#[test]
fn token_length_limit_default_and_config_set() {
    let mut f = Fixture::new();
    let v: Vec<String> =
        redis::from_redis_value(cmd(&mut f.conn, ("CONFIG", "GET", "lock.max-token-length")))
            .unwrap();
    assert_eq!(v, vec!["lock.max-token-length", "256"]);

    let at = vec![b'a'; 256];
    let over = vec![b'a'; 257];
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", &over, b"1000"], "ERR");
    f.rejects(&[b"LOCK.RELEASE", b"{key}", &over], "ERR");
    f.rejects(&[b"LOCK.CHECK", b"{key}", &over], "ERR");
    must_acquire(&mut f.conn, b"k", &at, 60_000);
    assert!(check(&mut f.conn, b"k", &at) > 0);
    assert_eq!(release(&mut f.conn, b"k", &at), 1);

    cmd(&mut f.conn, ("CONFIG", "SET", "lock.max-token-length", 8));
    let nine = b"123456789";
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", nine, b"1000"], "ERR");
    f.rejects(&[b"LOCK.RELEASE", b"{key}", nine], "ERR");
    f.rejects(&[b"LOCK.CHECK", b"{key}", nine], "ERR");
    let e = err(&mut f.conn, ("LOCK.ACQUIRE", "k", &nine[..], 1000));
    assert!(e.contains('8'), "the error names the limit: {e}");
    assert!(!exists(&mut f.conn, b"k"));
    must_acquire(&mut f.conn, b"k", b"12345678", 60_000);
    assert_eq!(release(&mut f.conn, b"k", b"12345678"), 1);

    cmd(&mut f.conn, ("CONFIG", "SET", "lock.max-token-length", 256));
    must_acquire(&mut f.conn, b"k", nine, 60_000);
    for bad in ["0", "-1", "abc"] {
        assert!(try_cmd(&mut f.conn, ("CONFIG", "SET", "lock.max-token-length", bad)).is_err());
    }
    f.still_held();
}

#[test]
fn unknown_options() {
    let mut f = Fixture::new();
    for extra in [
        &[&b"NX"[..]][..],
        &[b"nx"],
        &[b"XX"],
        &[b"PX", b"100"],
        &[b"KEEPTTL"],
        &[b"100"],
        &[b""],
        &[b"\x00"],
    ] {
        for token in [&b"tok"[..], b"other"] {
            let mut args: Vec<&[u8]> = vec![b"LOCK.ACQUIRE", b"{key}", token, b"100"];
            args.extend_from_slice(extra);
            f.rejects(&args, "ERR");
        }
    }
    f.still_held();
}

#[test]
fn errors_are_counted_and_change_no_other_counter() {
    let mut f = Fixture::new();
    let before = lock_stats(&mut f.conn);
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"tok", b"0"], "ERR"); // 2 calls
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"", b"10"], "ERR"); // 2 calls
    f.rejects(&[b"LOCK.ACQUIRE", b"{key}", b"tok", b"10", b"NX"], "ERR"); // 2 calls
    let after = lock_stats(&mut f.conn);
    assert_eq!(after["errors"], before["errors"] + 6, "{after:?}");
    for name in [
        "acquired",
        "renewed",
        "refused",
        "released",
        "release_missed",
    ] {
        assert_eq!(after[name], before[name], "{name}");
    }
    // `unchanged()` ran 6 CHECKs.
    assert_eq!(after["checks"], before["checks"] + 6);
}

/// Starts redis-server with the module and `args`; returns whether it
/// refused to start, and its log.
fn load_with(args: &[&str]) -> (bool, String) {
    let dir = tempfile_dir();
    let port = free_port();
    let mut child = std::process::Command::new(testkit::server_binary())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(["--logfile", "server.log", "--loadmodule"])
        .arg(testkit::module_path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let deadline = std::time::Instant::now() + WAIT;
    let refused = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
        {
            break false;
        }
        assert!(std::time::Instant::now() < deadline, "no start, no exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (refused, log)
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lock-load-{}",
        String::from_utf8(unique_token("t")).unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Load arguments are checked like `CONFIG SET`: a bad one fails the load
/// with a log line naming the setting and what it accepts.
#[test]
fn load_arguments_are_checked() {
    for (args, says) in [
        (&["max-ttl", "-5"][..], "max-ttl"),
        (&["max-ttl", "0"], "1 to 315360000000"),
        (&["max-waiters", "-1"], "max-waiters"),
        (&["max-token-length", "70000"], "1 to 65536"),
        (&["max-ttl", "abc"], "'abc'"),
        (&["max-ttl"], "no value"),
        (&["bogus", "1"], "unknown load argument 'bogus'"),
        (&["fence-margin", "-1"], "fence-margin"),
    ] {
        let (refused, log) = load_with(args);
        assert!(refused, "{args:?} was accepted");
        assert!(
            log.lines().any(|l| l.contains("lock:") && l.contains(says)),
            "{args:?}: no log line with {says:?}:\n{log}"
        );
    }
    for spelling in ["lock.max-ttl", "MAX-TTL", "Lock.Max-Ttl"] {
        let s = Server::with(Config::default().module_arg(spelling, "5000"));
        let mut c = s.conn();
        let v: Vec<String> =
            redis::from_redis_value(cmd(&mut c, ("CONFIG", "GET", "lock.max-ttl"))).unwrap();
        assert_eq!(v, vec!["lock.max-ttl", "5000"], "{spelling}");
    }
}
