//! lockctl against real servers, with real child processes.
//!
//! Each test starts its own server (testkit) and runs the built `lockctl`
//! binary; children are `sh` scripts that append lines to a file in the
//! server's temporary directory, so that the file's line order is the order
//! of events. Timing margins are wide (seconds) for loaded machines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use testkit::{wait_for, Config, Server};

const LONG: Duration = Duration::from_secs(60);

fn lockctl(server: &Server) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockctl"));
    c.env("REDIS_URL", server.url());
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockctl")
}

/// Waits for a child with a deadline; kills it and panics past it.
fn finish(mut child: Child, timeout: Duration) -> (Output, Duration) {
    let t = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return (child.wait_with_output().expect("output"), t.elapsed());
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "lockctl still ran after {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn code(s: &ExitStatus) -> i32 {
    s.code().unwrap_or(-1)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn events(server: &Server) -> PathBuf {
    server.dir().join("events.txt")
}

fn held(server: &Server, key: &str) -> bool {
    let v: Vec<redis::Value> = redis::cmd("LOCK.INFO")
        .arg(key)
        .query(&mut server.conn())
        .expect("LOCK.INFO");
    v.get(1) == Some(&redis::Value::Int(1))
}

/// `sh -c SCRIPT` as lockctl's command, with $F the events file.
fn run_sh(server: &Server, key: &str, opts: &[&str], script: &str) -> Child {
    let mut c = lockctl(server);
    c.arg("run")
        .arg(key)
        .args(opts)
        .arg("--")
        .arg("sh")
        .arg("-c");
    c.arg(script)
        .env("F", events(server))
        .env("LOCKCTL", env!("CARGO_BIN_EXE_lockctl"));
    spawn(c)
}

#[test]
fn two_runs_never_overlap_and_the_second_has_a_larger_fence() {
    let server = Server::start();
    let f = events(&server);
    let script = r#"echo "start $LOCK_FENCE" >> "$F"; sleep 1; echo "end $LOCK_FENCE" >> "$F""#;
    let a = run_sh(&server, "job", &["--ttl", "3000"], script);
    wait_for(LONG, "the first command to start", || {
        lines(&f)
            .first()
            .is_some_and(|l| l.starts_with("start"))
            .then_some(())
    });
    let b = run_sh(
        &server,
        "job",
        &["--ttl", "3000", "--wait", "30000"],
        script,
    );
    let (oa, _) = finish(a, LONG);
    let (ob, _) = finish(b, LONG);
    assert!(oa.status.success(), "{oa:?}");
    assert!(ob.status.success(), "{ob:?}");
    let l = lines(&f);
    assert_eq!(l.len(), 4, "{l:?}");
    let fence = |s: &str| -> i64 { s.split(' ').nth(1).unwrap().parse().unwrap() };
    assert!(
        l[0].starts_with("start") && l[1].starts_with("end"),
        "{l:?}"
    );
    assert!(
        l[2].starts_with("start") && l[3].starts_with("end"),
        "{l:?}"
    );
    assert_eq!(fence(&l[0]), fence(&l[1]));
    assert_eq!(fence(&l[2]), fence(&l[3]));
    assert!(fence(&l[2]) > fence(&l[0]), "{l:?}");
    assert!(!held(&server, "job"));
}

#[test]
fn no_wait_fails_fast_with_the_conflict_code() {
    let server = Server::start();
    let out = lockctl(&server)
        .args(["acquire", "job", "--ttl", "60000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut parts = printed.split_whitespace();
    let token = parts.next().unwrap().to_owned();
    let _fence: i64 = parts.next().unwrap().parse().unwrap();

    let marker = server.dir().join("ran");
    for (opts, want) in [
        (vec!["--no-wait"], 1),
        (vec!["--no-wait", "--conflict-exit-code", "9"], 9),
        (vec!["--wait", "300", "--conflict-exit-code", "10"], 10),
    ] {
        let mut c = lockctl(&server);
        c.arg("run").arg("job").args(&opts);
        c.args(["--", "touch"]).arg(&marker);
        let (o, took) = finish(spawn(c), LONG);
        assert_eq!(code(&o.status), want, "{opts:?}: {o:?}");
        assert!(took < Duration::from_secs(20), "{opts:?} took {took:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("held by someone else"));
        assert!(!marker.exists(), "the command must not run");
    }
    let rel = lockctl(&server)
        .args(["release", "job", &token])
        .output()
        .unwrap();
    assert!(rel.status.success(), "{rel:?}");
    let again = lockctl(&server)
        .args(["release", "job", &token])
        .output()
        .unwrap();
    assert_eq!(code(&again.status), 1, "{again:?}");
}

#[test]
fn the_exit_code_propagates_and_the_lock_is_released() {
    let server = Server::start();
    let c = run_sh(
        &server,
        "job",
        &[],
        r#"test -n "$LOCK_FENCE" && test "$LOCK_KEY" = job && test "$LOCK_TTL_MS" = 30000 && env | grep -q "^LOCK_TOKEN=" || exit 42; exit 1"#,
    );
    let (o, _) = finish(c, LONG);
    assert_eq!(code(&o.status), 42, "{o:?}");
    assert!(!held(&server, "job"));
    let c = run_sh(&server, "job", &[], "kill -KILL $$");
    let (o, _) = finish(c, LONG);
    assert_eq!(code(&o.status), 128 + 9, "{o:?}");
    assert!(!held(&server, "job"));
}

/// A child that beats every 50 ms and notes SIGTERM.
const BEATING: &str = r#"trap 'echo "term $LOCK_FENCE" >> "$F"; exit 0' TERM
echo "start $LOCK_FENCE" >> "$F"
i=0; while [ $i -lt 2000 ]; do echo "beat $LOCK_FENCE" >> "$F"; sleep 0.05; i=$((i+1)); done"#;

#[test]
fn a_deleted_key_terminates_the_command() {
    let server = Server::start();
    let f = events(&server);
    let a = run_sh(&server, "job", &["--ttl", "1500"], BEATING);
    wait_for(LONG, "the command to start", || {
        (lines(&f).len() >= 3).then_some(())
    });
    let t = Instant::now();
    let _: i64 = redis::cmd("DEL")
        .arg("job")
        .query(&mut server.conn())
        .unwrap();
    let (o, _) = finish(a, LONG);
    let took = t.elapsed();
    assert_eq!(code(&o.status), 75, "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("lost the lock job"), "{err}");
    // A renewal comes every TTL/3 = 500 ms; the margin is for slow machines.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let n = lines(&f).len();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&f).len(), n, "the command's group must be gone");
    assert!(!held(&server, "job"));
}

#[test]
fn a_server_paused_past_the_ttl_stops_the_command_before_the_next_holder_starts() {
    let server = Server::start();
    let f = events(&server);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut server.conn())
        .unwrap();
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let a = run_sh(&server, "job", &["--ttl", "2000"], BEATING);
    wait_for(LONG, "the first command to start", || {
        (lines(&f).len() >= 3).then_some(())
    });
    let b = run_sh(
        &server,
        "job",
        &["--ttl", "2000", "--wait", "60000"],
        r#"echo "next $LOCK_FENCE" >> "$F""#,
    );
    wait_for(LONG, "the second to wait", || {
        let v: Vec<redis::Value> = redis::cmd("LOCK.INFO")
            .arg("job")
            .query(&mut server.conn())
            .ok()?;
        (v.get(9) == Some(&redis::Value::Int(1))).then_some(())
    });
    // Stop the server for twice the TTL.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    thread::sleep(Duration::from_millis(4000));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let (oa, _) = finish(a, LONG);
    let (ob, _) = finish(b, LONG);
    assert_eq!(code(&oa.status), 75, "{oa:?}");
    assert!(ob.status.success(), "{ob:?}");
    let l = lines(&f);
    let next = l.iter().position(|x| x.starts_with("next")).expect("next");
    assert!(
        l[next + 1..].is_empty(),
        "the first command ran on after the next began: {l:?}"
    );
    let fence = |s: &str| -> i64 { s.split(' ').nth(1).unwrap().parse().unwrap() };
    assert!(fence(&l[next]) > fence(&l[0]), "{l:?}");
}

#[test]
fn signals_to_lockctl_are_forwarded_and_the_lock_released() {
    let server = Server::start();
    let f = events(&server);
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let _ = std::fs::remove_file(&f);
        let script = format!(
            r#"trap 'echo "got {name}" >> "$F"; exit 3' {name}
echo started >> "$F"
i=0; while [ $i -lt 2000 ]; do sleep 0.05; i=$((i+1)); done"#
        );
        let a = run_sh(&server, "job", &["--ttl", "5000"], &script);
        wait_for(LONG, "the command to start", || {
            (!lines(&f).is_empty()).then_some(())
        });
        assert!(held(&server, "job"));
        unsafe { libc::kill(a.id() as i32, sig) };
        let (o, _) = finish(a, LONG);
        assert_eq!(code(&o.status), 3, "{name}: {o:?}");
        assert_eq!(lines(&f), vec!["started".to_owned(), format!("got {name}")]);
        assert!(!held(&server, "job"), "{name}: the lock must be released");
    }
}

#[test]
fn status_json_has_a_fixed_shape() {
    let server = Server::start();
    let out = lockctl(&server)
        .args(["status", "job", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"key\":\"job\",\"held\":false,\"foreign\":false,\"ttl_ms\":-2,\"fence\":null,\"waiters\":0,\"meta\":null}\n"
    );
    let acq = lockctl(&server)
        .args(["acquire", "job", "--ttl", "60000"])
        .output()
        .unwrap();
    let printed = String::from_utf8(acq.stdout).unwrap();
    let fence: i64 = printed.split_whitespace().nth(1).unwrap().parse().unwrap();
    let out = lockctl(&server)
        .args(["status", "job", "--json"])
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let prefix = "{\"key\":\"job\",\"held\":true,\"foreign\":false,\"ttl_ms\":";
    assert!(s.starts_with(prefix), "{s}");
    let (ttl, tail) = s[prefix.len()..].split_once(',').unwrap();
    let ttl: i64 = ttl.parse().unwrap();
    assert!(ttl > 0 && ttl <= 60000, "{s}");
    assert_eq!(
        tail,
        format!("\"fence\":{fence},\"waiters\":0,\"meta\":null}}\n")
    );
    let human = lockctl(&server).args(["status", "job"]).output().unwrap();
    let h = String::from_utf8(human.stdout).unwrap();
    assert!(
        h.contains("held:    yes") && h.contains(&format!("fence:   {fence}")),
        "{h}"
    );
}

#[test]
fn meta_is_stored_with_the_lock_and_shown_by_status() {
    let server = Server::start();
    let f = events(&server);
    let c = run_sh(
        &server,
        "job",
        &["--meta", "host=build-7 job=\"nightly\""],
        r#""$LOCKCTL" status "$LOCK_KEY" --json >> "$F"; "$LOCKCTL" status "$LOCK_KEY" >> "$F""#,
    );
    let (o, _) = finish(c, LONG);
    assert!(o.status.success(), "{o:?}");
    let out = lines(&f).join("\n");
    assert!(
        out.contains(r#","meta":"host=build-7 job=\"nightly\""}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"meta:    host=build-7 job="nightly""#),
        "{out}"
    );
    // acquire takes it too; the metadata goes with the lock.
    let acq = lockctl(&server)
        .args(["acquire", "job", "--meta", "by hand"])
        .output()
        .unwrap();
    assert!(acq.status.success(), "{acq:?}");
    let out = lockctl(&server)
        .args(["status", "job", "--json"])
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.ends_with(",\"meta\":\"by hand\"}\n"), "{s}");
    // Twice is an error.
    let o = lockctl(&server)
        .args(["acquire", "job2", "--meta", "a", "--meta", "b"])
        .output()
        .unwrap();
    assert_eq!(code(&o.status), 64, "{o:?}");
}

#[test]
fn errors_are_clear() {
    let plain = Server::with(Config::without_module());
    let o = lockctl(&plain).args(["status", "job"]).output().unwrap();
    assert_eq!(code(&o.status), 69, "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not have the lock module loaded"),
        "{err}"
    );
    assert!(
        err.contains("--loadmodule") && err.contains("MODULE LOAD"),
        "{err}"
    );

    let port = plain.port();
    drop(plain);
    let o = Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args([
            "--url",
            &format!("redis://127.0.0.1:{port}/"),
            "status",
            "job",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o.status), 69, "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));

    for args in [
        vec!["run", "job", "--ttl", "x", "--", "true"],
        vec!["run", "job"],
        vec!["run", "job", "--wait", "5", "--no-wait", "--", "true"],
        vec!["frobnicate"],
        vec!["release", "job"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_lockctl"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(code(&o.status), 64, "{args:?}: {o:?}");
    }
    for sub in ["run", "status", "acquire", "release"] {
        let o = Command::new(env!("CARGO_BIN_EXE_lockctl"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("lockctl {sub}")));
    }
}
