//! Clock, random numbers and child-process hygiene shared by every mode.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock microseconds. All processes run on one machine and Redis
/// expires keys by this same clock, so leases and server deadlines compare
/// directly.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// xorshift64*: small, fast, and reproducible from its starting value.
pub struct Rng(u64);

impl Rng {
    pub fn new(start: u64) -> Rng {
        // splitmix64 step, so that nearby starting values diverge at once.
        let mut z = start.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[(self.next() % items.len() as u64) as usize])
        }
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Pids of every child still to be killed when the checker ends.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub fn register_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pid as i32);
}

pub fn forget_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid as i32);
}

/// SIGKILLs every registered child (a stopped one dies too).
pub fn kill_all_children() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        signal(pid as u32, libc::SIGKILL);
    }
}

/// The release profile aborts on panic, so no destructor would run: the
/// hook kills the children first.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_children();
        previous(info);
    }));
}

/// Kills every child when dropped (normal return or unwinding).
pub struct ChildrenGuard;

impl Drop for ChildrenGuard {
    fn drop(&mut self) {
        kill_all_children();
    }
}

/// Makes the child die with the checker, however the checker ends
/// (SIGKILL included). Linux ties this to the spawning thread, so every
/// child is spawned from the main thread.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: plain syscall on a pid we spawned.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// Sends SIGSTOP and waits (at most 2 s) until the process is really
/// stopped, so it writes nothing more to its log while we read it.
pub fn stop_process(pid: u32) {
    if !signal(pid, libc::SIGSTOP) {
        return;
    }
    let path = format!("/proc/{pid}/stat");
    for _ in 0..200 {
        match std::fs::read_to_string(&path) {
            Ok(stat) => {
                // The state follows the parenthesised command name.
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|s| s.trim().chars().next());
                if matches!(state, Some('T') | Some('t') | Some('Z') | Some('X')) {
                    return;
                }
            }
            Err(_) => return,
        }
        std::thread::sleep(ms(10));
    }
}
