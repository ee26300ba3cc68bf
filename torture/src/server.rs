//! redis-server processes with the module, AOF on and fsynced at every
//! write, each on a fixed loopback port and directory so that a restart
//! loads what the killed process left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::resp::{Conn, Reply};
use crate::util::{die_with_parent, forget_child, ms, register_child, signal};

pub struct Server {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    module: PathBuf,
    child: Option<Child>,
    /// Bumped at every start: INFO counters restart from 0 with it.
    pub incarnation: u32,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Server {
    pub fn new(name: &str, root: &Path, module: &Path) -> Server {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("server directory");
        Server {
            name: name.to_owned(),
            port: free_port(),
            dir,
            module: module.to_owned(),
            child: None,
            incarnation: 0,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Starts the server (as a replica of `master` when given) and waits
    /// until it answers PING (not LOADING). Tries another port only on the
    /// first start; later starts must keep the port clients know.
    pub fn start(&mut self, master: Option<u16>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn(master) {
                Ok(()) => return Ok(()),
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    if self.incarnation == 0 {
                        self.port = free_port();
                    }
                    thread::sleep(ms(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&mut self, master: Option<u16>) -> Result<(), String> {
        let mut cmd = Command::new(testkit::server_binary());
        cmd.current_dir(&self.dir)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "server.log", "--save", "", "--daemonize", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // A full sync at once, not after the default 5 s wait.
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--loadmodule")
            .arg(&self.module);
        if let Some(m) = master {
            cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let log_len_before = std::fs::metadata(self.log_path())
            .map(|m| m.len())
            .unwrap_or(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", testkit::server_binary()))?;
        register_child(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                forget_child(child.id());
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let fresh = log.get(log_len_before as usize..).unwrap_or("");
                return Err(format!(
                    "{} exited at start ({status}): {}",
                    self.name,
                    fresh.lines().rev().take(8).collect::<Vec<_>>().join(" | ")
                ));
            }
            if let Ok(mut c) = Conn::connect(self.port, ms(500)) {
                if let Ok(Reply::Status(s)) = c.call(&["PING"], ms(2_000)) {
                    if s == "PONG" {
                        self.incarnation += 1;
                        self.child = Some(child);
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                forget_child(child.id());
                return Err(format!("{} did not answer PING within 30 s", self.name));
            }
            thread::sleep(ms(20));
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            forget_child(c.id());
        }
    }

    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// `Some(status)` when the process ended without us killing it.
    pub fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => {
                forget_child(c.id());
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    pub fn conn(&self) -> Option<Conn> {
        Conn::connect(self.port, ms(1_000)).ok()
    }

    /// One command on a fresh connection.
    pub fn call(&self, args: &[&str]) -> Option<Reply> {
        self.conn()?.call(args, ms(5_000)).ok()
    }

    /// `INFO section` as `name -> value`.
    pub fn info(&self, section: &str) -> Option<Vec<(String, String)>> {
        let text = self.call(&["INFO", section])?.text();
        Some(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    pub fn info_field(&self, section: &str, name: &str) -> Option<String> {
        self.info(section)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Crash reports in the log (all incarnations), and the distinct
    /// lines that say why.
    pub fn crash_log(&self) -> (usize, Vec<String>) {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let reports = log.matches("BUG REPORT START").count();
        let mut why: Vec<String> = log
            .lines()
            .filter(|l| {
                l.contains("==> ")
                    || l.contains("crashed by signal")
                    || l.contains("Guru Meditation")
                    || l.contains("panicked")
            })
            // Drop the "pid:role date time # " prefix so repeats collapse.
            .map(|l| l.split_once(" # ").map_or(l, |(_, m)| m).to_owned())
            .collect();
        why.sort();
        why.dedup();
        (reports, why)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
