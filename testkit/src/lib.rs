//! Test support: real `redis-server` processes with the lock module loaded,
//! each on a free loopback port in its own temporary directory, killed when
//! dropped.
//!
//! The server binary comes from `REDIS_SERVER` (default `redis-server` on
//! `PATH`); the module from `LOCK_MODULE` (default: the newest
//! `target/{release,debug}/liblock.so` of this workspace, which `make test`
//! builds first).
//!
//! [`Cluster`] starts a Redis Cluster of such servers (masters with
//! replicas) with `redis-cli --cluster create`.

pub mod cluster;

pub use cluster::{Cluster, NodeView};

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How a server is started.
#[derive(Clone, Debug)]
pub struct Config {
    /// Load the lock module.
    pub module: bool,
    /// Arguments appended to `loadmodule` (for example `max-ttl 1000`).
    pub module_args: Vec<String>,
    /// Extra `--name value` arguments for redis-server.
    pub args: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            module: true,
            module_args: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Config {
    /// A server without the module.
    pub fn without_module() -> Self {
        Config {
            module: false,
            ..Config::default()
        }
    }

    /// Adds `--name value` style arguments.
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push(format!("--{name}"));
        self.args.extend(value.split(' ').map(str::to_owned));
        self
    }

    /// Whether `--name` is among the arguments.
    pub fn has_arg(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == &format!("--{name}"))
    }

    /// Whether the server runs in cluster mode (`--cluster-enabled yes`).
    pub fn cluster_enabled(&self) -> bool {
        self.args
            .windows(2)
            .any(|w| w[0] == "--cluster-enabled" && w[1].eq_ignore_ascii_case("yes"))
    }

    /// Adds a module argument pair (`name value`).
    pub fn module_arg(mut self, name: &str, value: &str) -> Self {
        self.module_args.push(name.to_owned());
        self.module_args.push(value.to_owned());
        self
    }
}

/// A running redis-server; killed (and its directory removed) on drop.
pub struct Server {
    child: Option<Child>,
    port: u16,
    /// The cluster bus port, when cluster mode is on and the configuration
    /// names none (chosen once, kept across restarts).
    bus_port: Option<u16>,
    dir: tempfile::TempDir,
    config: Config,
}

/// The server binary under test.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// The module's shared library.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("LOCK_MODULE") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let candidates = ["release", "debug"]
        .iter()
        .map(|p| root.join("target").join(p).join("liblock.so"))
        .filter(|p| p.exists());
    candidates
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("liblock.so not built: run `make test` (or `cargo build` first)")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// A server with the module loaded and default settings.
    pub fn start() -> Server {
        Server::with(Config::default())
    }

    /// A server started with the given configuration.
    pub fn with(config: Config) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("lock-test-")
            .tempdir()
            .expect("tempdir");
        let mut server = Server {
            child: None,
            port: 0,
            bus_port: None,
            dir,
            config,
        };
        server.spawn_on_free_port();
        server
    }

    fn spawn_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            if self.spawn() {
                return;
            }
        }
        panic!("redis-server did not start; log:\n{}", self.log());
    }

    /// Starts the process on `self.port`; false if it exited early (port taken).
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(server_binary());
        cmd.current_dir(self.dir.path())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg("server.log")
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            // Replicas sync at once instead of after the default 5 s delay.
            .arg("--repl-diskless-sync-delay")
            .arg("0")
            .arg("--enable-debug-command")
            .arg("local");
        if self.config.module {
            cmd.arg("--loadmodule").arg(module_path());
            cmd.args(&self.config.module_args);
        }
        cmd.args(&self.config.args);
        // The cluster bus listens on port + 10000 unless told otherwise,
        // which fails for ports above 55535 (a third of the ephemeral
        // range): give it a free port of its own.
        if self.config.cluster_enabled() && !self.config.has_arg("cluster-port") {
            let bus_port = *self.bus_port.get_or_insert_with(free_port);
            cmd.arg("--cluster-port").arg(bus_port.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn redis-server (set REDIS_SERVER?)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let log = self.log();
                if log.contains("Address already in use") || err.contains("Address already in use")
                {
                    return false;
                }
                panic!("redis-server exited at start: {err}\nlog:\n{log}");
            }
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection() {
                    let loading: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                    if loading.is_ok() {
                        self.child = Some(child);
                        return true;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("redis-server did not answer PING; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A redis-rs client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// A new connection.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("connect")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the process was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server and starts it again on the same port and directory,
    /// with `config` (for example without the module).
    pub fn restart_with(&mut self, config: Config) {
        self.kill();
        self.config = config;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "port {} stays taken", self.port);
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, while the server runs (for `kill -STOP` and the
    /// like).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOPs the server until the guard is dropped: it keeps its
    /// sockets and answers nothing, as a stalled or paused host would.
    pub fn stop(&self) -> Stopped {
        let pid = self.pid().expect("the server runs").to_string();
        let stopped = Command::new("kill").args(["-STOP", &pid]).status();
        assert!(stopped.is_ok_and(|s| s.success()), "kill -STOP {pid}");
        Stopped(pid)
    }

    /// Lines of the log, for assertions on what the server said.
    pub fn log_lines(&self) -> Vec<String> {
        match std::fs::File::open(self.dir.path().join("server.log")) {
            Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A server stopped by [`Server::stop`]; dropping it resumes the server.
#[must_use = "the server resumes when this is dropped"]
pub struct Stopped(String);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}
