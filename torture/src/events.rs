//! What every participant did, one line per event, in a file per process.
//!
//! A client writes a line *before* a command that may change a lock (so a
//! SIGKILL or a server crash cannot hide an attempt) and one after each
//! reply. The checker reads the files as they grow and keeps, per token,
//! what it needs to judge the server: grants, acks, releases, critical
//! sections, and the fate of every WAIT call. Times are wall-clock µs.
//!
//! Lines (keys and tokens never contain spaces):
//! `A key token ttl wait|- sent`     about to send LOCK.ACQUIRE
//! `G key token fence sent recv`     granted (or renewed)
//! `N key token sent recv`           refused / wait timed out (null)
//! `E key token sent recv reason`    error reply or connection failure
//! `K key token fence acked recv`    `WAIT 1 ms` after a grant: 1 or 0
//! `L key token fence sent left`     `LOCK.CHECK` after an acked grant: ms left
//! `R key token sent`                about to send LOCK.RELEASE
//! `S key token fence t`             critical section begins
//! `X key token fence t outcome`     critical section ends: ok|fenced|lost
//! `W key token wait sent recv kind` a WAIT call's answer: grant|null|error|closed|never
//! `D key token t`                   a reply came that nobody asked for
//! `Q key token sent recv agree`     a race probe's reply agrees (1) or not (0) with LOCK.CHECK
//! `F kind start end`                a fault (checker only)

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct EventLog {
    file: File,
    line: String,
}

impl EventLog {
    pub fn create(path: &Path) -> std::io::Result<EventLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            file,
            line: String::with_capacity(128),
        })
    }

    /// One line in one write(2): a process stopped or killed leaves whole
    /// lines behind.
    pub fn rec(&mut self, args: fmt::Arguments) {
        use fmt::Write as _;
        self.line.clear();
        let _ = self.line.write_fmt(args);
        self.line.push('\n');
        let _ = self.file.write_all(self.line.as_bytes());
    }
}

#[macro_export]
macro_rules! rec {
    ($log:expr, $($arg:tt)*) => { $log.rec(format_args!($($arg)*)) };
}

#[derive(Clone, Debug)]
pub struct Intent {
    pub ttl: u64,
    pub recv: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Grant {
    pub fence: u64,
    pub sent: u64,
    pub recv: u64,
    pub ttl: u64,
    /// `WAIT 1` after it returned 1: a replica has it.
    pub acked: bool,
}

/// Everything known about one token (one attempt to hold one key).
#[derive(Clone, Debug, Default)]
pub struct TokenState {
    pub key: String,
    pub intents: Vec<Intent>,
    pub grants: Vec<Grant>,
    /// `(fence, µs)`: a LOCK.CHECK after an acked grant said the lease
    /// runs at least until then.
    pub checked_until: Vec<(u64, u64)>,
    pub release_sent: Option<u64>,
    pub cs_start: Option<u64>,
    pub cs_end: Option<(u64, String)>,
}

impl TokenState {
    /// The fence of the newest grant.
    pub fn fence(&self) -> Option<u64> {
        self.grants.last().map(|g| g.fence)
    }

    /// The lease surely still runs before this time (µs): the latest
    /// grant or renewal of the current fence (only those a replica
    /// acknowledged, with `acked_only`), counted from when it was *sent*,
    /// less `drift`.
    pub fn lease_floor(&self, drift_us: u64, acked_only: bool) -> Option<u64> {
        self.lease_floor_of(drift_us, |g| g.acked || !acked_only)
    }

    /// As [`Self::lease_floor`], counting only the grants `keep` accepts.
    pub fn lease_floor_of(&self, drift_us: u64, keep: impl Fn(&Grant) -> bool) -> Option<u64> {
        let fence = self.fence()?;
        let by_grant = self
            .grants
            .iter()
            .filter(|g| g.fence == fence && keep(g))
            .map(|g| g.sent + g.ttl * 1000)
            .max()?;
        // A waiter's lease starts when it is handed the lock, unknown to
        // it; LOCK.CHECK tells (only after an acked grant, so it holds for
        // the replica too).
        let by_check = self
            .checked_until
            .iter()
            .filter(|(f, _)| *f == fence)
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(0);
        Some(by_grant.max(by_check).saturating_sub(drift_us))
    }

    /// The latest the server may let the lock live (Unix ms): any
    /// acquisition of this token could have been applied at the latest when
    /// its reply came, or `now` if none came.
    pub fn expiry_ceiling_ms(&self, now: u64) -> u64 {
        self.intents
            .iter()
            .map(|i| i.recv.unwrap_or(now) / 1000 + i.ttl)
            .max()
            .unwrap_or(0)
    }
}

/// A first grant of a fence to a token: what fences must order.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub key: String,
    pub token: String,
    pub fence: u64,
    pub sent: u64,
    pub recv: u64,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: String,
    pub start: u64,
    pub end: u64,
}

/// What all the logs say so far.
#[derive(Default)]
pub struct Ledger {
    pub tokens: HashMap<String, TokenState>,
    pub new_grants: Vec<NewGrant>,
    pub acquires: u64,
    pub releases: u64,
    pub acks_sent: u64,
    pub renewals: u64,
    pub nulls: u64,
    pub errors: HashMap<String, u64>,
    pub waits: HashMap<String, u64>,
    pub twice: Vec<(String, String, u64)>,
    pub never: Vec<(String, String, u64, u64)>,
    pub races: u64,
    pub race_disagree: Vec<(String, u64, u64)>,
    pub cs_started: u64,
    pub cs_outcomes: HashMap<String, u64>,
    pub faults: Vec<Fault>,
    pub bad_lines: u64,
}

impl Ledger {
    fn apply(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        if self.try_apply(&f).is_none() {
            self.bad_lines += 1;
        }
    }

    fn try_apply(&mut self, f: &[&str]) -> Option<()> {
        let n = |i: usize| -> Option<u64> { f.get(i)?.parse().ok() };
        let kind = *f.first()?;
        if kind == "F" {
            self.faults.push(Fault {
                kind: f.get(1)?.to_string(),
                start: n(2)?,
                end: n(3)?,
            });
            return Some(());
        }
        let key = f.get(1)?.to_string();
        let token = f.get(2)?.to_string();
        match kind {
            "A" => {
                let ttl = n(3)?;
                n(5)?;
                self.acquires += 1;
                let t = self.tokens.entry(token).or_default();
                t.key = key;
                t.intents.push(Intent { ttl, recv: None });
            }
            "G" => {
                let (fence, sent, recv) = (n(3)?, n(4)?, n(5)?);
                let t = self.tokens.entry(token.clone()).or_default();
                t.key = key.clone();
                let ttl = t.intents.last().map(|i| i.ttl).unwrap_or(0);
                if let Some(i) = t.intents.last_mut() {
                    i.recv = Some(recv);
                }
                if t.fence() == Some(fence) {
                    self.renewals += 1;
                } else {
                    self.new_grants.push(NewGrant {
                        key,
                        token,
                        fence,
                        sent,
                        recv,
                    });
                }
                t.grants.push(Grant {
                    fence,
                    sent,
                    recv,
                    ttl,
                    acked: false,
                });
            }
            "N" | "E" => {
                let recv = n(4)?;
                if kind == "N" {
                    self.nulls += 1;
                } else {
                    *self
                        .errors
                        .entry(f.get(5).unwrap_or(&"?").to_string())
                        .or_default() += 1;
                }
                if let Some(i) = self
                    .tokens
                    .get_mut(&token)
                    .and_then(|t| t.intents.last_mut())
                {
                    i.recv = Some(recv);
                }
            }
            "K" => {
                self.acks_sent += 1;
                let (fence, acked) = (n(3)?, n(4)? == 1);
                let t = self.tokens.entry(token).or_default();
                if let Some(g) = t.grants.last_mut().filter(|g| g.fence == fence) {
                    g.acked = acked;
                }
            }
            "L" => {
                let (fence, sent, left) = (n(3)?, n(4)?, n(5)?);
                let t = self.tokens.entry(token).or_default();
                t.checked_until.push((fence, sent + left * 1000));
            }
            "R" => {
                self.releases += 1;
                let t = self.tokens.entry(token).or_default();
                t.release_sent.get_or_insert(n(3)?);
            }
            "S" => {
                self.cs_started += 1;
                self.tokens.entry(token).or_default().cs_start = Some(n(4)?);
            }
            "X" => {
                let outcome = f.get(5)?.to_string();
                *self.cs_outcomes.entry(outcome.clone()).or_default() += 1;
                self.tokens.entry(token).or_default().cs_end = Some((n(4)?, outcome));
            }
            "W" => {
                let what = f.get(6)?.to_string();
                if what == "never" {
                    self.never.push((key, token, n(4)?, n(3)?));
                }
                *self.waits.entry(what).or_default() += 1;
            }
            "D" => self.twice.push((key, token, n(3)?)),
            "Q" => {
                self.races += 1;
                if n(5)? == 0 {
                    self.race_disagree.push((key, n(3)?, n(4)?));
                }
            }
            _ => return None,
        }
        Some(())
    }
}

/// Reads every `*.log` of a directory as it grows.
pub struct LogSet {
    dir: PathBuf,
    files: HashMap<PathBuf, (u64, Vec<u8>)>,
}

impl LogSet {
    pub fn new(dir: &Path) -> LogSet {
        LogSet {
            dir: dir.to_owned(),
            files: HashMap::new(),
        }
    }

    /// Applies the lines written since the last call.
    pub fn poll(&mut self, ledger: &mut Ledger) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        paths.sort();
        for path in paths {
            let (offset, partial) = self.files.entry(path.clone()).or_default();
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            if file.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut fresh = Vec::new();
            if file.read_to_end(&mut fresh).is_err() {
                continue;
            }
            *offset += fresh.len() as u64;
            partial.extend_from_slice(&fresh);
            let Some(last_nl) = partial.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = partial.drain(..=last_nl).collect();
            for line in String::from_utf8_lossy(&complete).lines() {
                if !line.is_empty() {
                    ledger.apply(line);
                }
            }
        }
    }
}
