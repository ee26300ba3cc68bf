//! The fenced resource the locks protect: a small TCP service inside the
//! checker. A write carries `key fence token`; it is refused when the fence
//! is below the highest seen for that key (or equal to it but from another
//! token), exactly as the README asks a real resource to do.
//!
//! Protocol, one line each way: `W key fence token pid B|F` (begin or
//! finish of a critical section) → `OK` or `NO highest`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::util::now_us;

/// What the resource saw of one hold (token and fence).
#[derive(Clone, Debug, Default)]
pub struct HoldWrites {
    pub accepted: u64,
    pub rejected: u64,
    pub last_accepted: u64,
}

#[derive(Default)]
pub struct State {
    highest: HashMap<String, (u64, String)>,
    pub holds: HashMap<(String, u64), HoldWrites>,
    /// Client pid -> inside a critical section (its last write was an
    /// accepted begin).
    pub in_cs: HashMap<u32, bool>,
    pub writes: u64,
}

pub struct Resource {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Resource {
    pub fn start() -> std::io::Result<Resource> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    thread::spawn(move || serve(conn, st));
                }
            }
        });
        Ok(Resource { port, state, stop })
    }

    /// Pids whose last write opened a critical section.
    pub fn holders(&self) -> Vec<u32> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.in_cs
            .iter()
            .filter(|(_, &inside)| inside)
            .map(|(&p, _)| p)
            .collect()
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>) {
    // A client stopped for a while is normal; one silent for 10 minutes is gone.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(600)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let reply = handle(&line, &state);
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn handle(line: &str, state: &Mutex<State>) -> String {
    let f: Vec<&str> = line.split(' ').collect();
    let (Some(&"W"), Some(key), Some(fence), Some(token), Some(pid), Some(phase)) = (
        f.first(),
        f.get(1),
        f.get(2).and_then(|s| s.parse::<u64>().ok()),
        f.get(3),
        f.get(4).and_then(|s| s.parse::<u32>().ok()),
        f.get(5),
    ) else {
        return "ERR bad request\n".to_owned();
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.writes += 1;
    let entry = s
        .highest
        .entry(key.to_string())
        .or_insert((0, String::new()));
    let ok = fence > entry.0 || (fence == entry.0 && entry.1 == *token);
    let highest = entry.0.max(fence);
    if ok {
        *entry = (fence, token.to_string());
    }
    let now = now_us();
    let hold = s.holds.entry((token.to_string(), fence)).or_default();
    if ok {
        hold.accepted += 1;
        hold.last_accepted = now;
    } else {
        hold.rejected += 1;
    }
    s.in_cs.insert(pid, ok && *phase == "B");
    if ok {
        "OK\n".to_owned()
    } else {
        format!("NO {highest}\n")
    }
}

/// A client's connection to the resource.
pub struct ResourceConn {
    port: u16,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

impl ResourceConn {
    pub fn new(port: u16) -> ResourceConn {
        ResourceConn { port, conn: None }
    }

    /// Writes under `fence`: `Some(true)` accepted, `Some(false)` fenced
    /// off, `None` when the resource could not be reached.
    pub fn write(&mut self, key: &str, fence: u64, token: &str, begin: bool) -> Option<bool> {
        for _ in 0..2 {
            if self.conn.is_none() {
                let c = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let w = c.try_clone().ok()?;
                self.conn = Some((BufReader::new(c), w));
            }
            let (r, w) = self.conn.as_mut()?;
            let msg = format!(
                "W {key} {fence} {token} {} {}\n",
                std::process::id(),
                if begin { "B" } else { "F" }
            );
            let mut line = String::new();
            if w.write_all(msg.as_bytes()).is_ok() && r.read_line(&mut line).is_ok() {
                if line.starts_with("OK") {
                    return Some(true);
                }
                if line.starts_with("NO") {
                    return Some(false);
                }
            }
            self.conn = None;
        }
        None
    }
}
