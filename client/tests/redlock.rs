//! Redlock against five real servers on loopback: quorum, tallies, fences,
//! and the faults the algorithm is meant to survive (servers stopped,
//! paused past the TTL, restarted empty), under concurrent clients.
//!
//! The tests run one at a time (they are timing-bound and start five
//! servers each); TTLs are 1–2 s and per-server timeouts 150 ms, with wide
//! margins, and nothing asserts a latency.

use std::future::Future;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::Value;
use redis_fenced_lock::redlock::{drift, Redlock, RedlockError, RedlockOptions, Tally};
use redis_fenced_lock::retry::{LinearBackoff, RetryExt};
use redis_fenced_lock::LossReason;
use testkit::{Config, Server};

const TIMEOUT: Duration = Duration::from_millis(150);

/// Runs a test on a runtime of its own, one test at a time.
fn serially(test: impl Future<Output = ()>) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test);
}

/// Five servers with the module, each of which can be paused, resumed,
/// killed and restarted (empty: no persistence).
struct Five {
    servers: Vec<Server>,
    configs: Vec<Config>,
}

impl Five {
    fn start() -> Five {
        Five::with(|_| Config::default())
    }

    fn with(config: impl Fn(usize) -> Config) -> Five {
        let configs: Vec<Config> = (0..5).map(config).collect();
        let servers = configs.iter().cloned().map(Server::with).collect();
        Five { servers, configs }
    }

    fn redlock(&self) -> Redlock {
        Redlock::new(self.servers.iter().map(Server::url))
            .unwrap()
            .request_timeout(TIMEOUT)
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.servers[i].pid().expect("server running");
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGSTOP: the process keeps its sockets, answers nothing.
    fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts server `i` again, empty, on its port.
    fn restart(&mut self, i: usize) {
        let config = self.configs[i].clone();
        self.servers[i].restart_with(config);
    }

    fn cmd(&self, i: usize, args: &[&str]) -> Value {
        let mut c = self.servers[i].conn();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).expect("command")
    }

    /// `LOCK.INFO key` on server `i`: (held, fence, meta).
    fn info(&self, i: usize, key: &str) -> (bool, Option<u64>, Option<String>) {
        let pairs = match self.cmd(i, &["LOCK.INFO", key]) {
            Value::Map(p) => p,
            Value::Array(items) => items
                .chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect(),
            other => panic!("LOCK.INFO: {other:?}"),
        };
        let (mut held, mut fence, mut meta) = (false, None, None);
        for (k, v) in pairs {
            let k = match k {
                Value::BulkString(b) => String::from_utf8(b).unwrap(),
                Value::SimpleString(s) => s,
                other => panic!("key {other:?}"),
            };
            match (k.as_str(), v) {
                ("held", Value::Int(h)) => held = h == 1,
                ("fence", Value::Int(f)) => fence = Some(f as u64),
                ("meta", Value::BulkString(m)) => meta = Some(String::from_utf8(m).unwrap()),
                _ => {}
            }
        }
        (held, fence, meta)
    }
}

fn not_obtained(r: Result<impl std::fmt::Debug, RedlockError>) -> (u32, Tally) {
    match r {
        Err(RedlockError::NotObtained { attempts, last }) => (attempts, last),
        other => panic!("expected NotObtained, got {other:?}"),
    }
}

fn counts(t: &Tally) -> (usize, usize, usize, usize) {
    (t.granted, t.refused, t.timed_out, t.failed)
}

/// The basic cycle on five healthy servers: the fence is the largest
/// grant's, a contender's error tallies five refusals, refresh moves the
/// validity, release frees every server.
#[test]
fn obtains_on_all_five_with_the_largest_fence() {
    serially(async {
        let five = Five::start();
        let (a, b) = (five.redlock(), five.redlock());
        let ttl = Duration::from_secs(2);
        let options = RedlockOptions::new().metadata("host=a");

        let mut lock = a.obtain("job", ttl, &options).await.unwrap();
        let fences: Vec<u64> = lock.server_fences().iter().map(|f| f.unwrap()).collect();
        assert_eq!(lock.fence(), *fences.iter().max().unwrap());
        for (i, f) in fences.iter().enumerate() {
            assert_eq!(five.info(i, "job"), (true, Some(*f), Some("host=a".into())));
        }
        let v = lock.validity();
        assert!(
            v <= ttl - drift(ttl) && v > Duration::from_millis(1500),
            "{v:?}"
        );

        let (attempts, t) = not_obtained(b.obtain("job", ttl, &RedlockOptions::new()).await);
        assert_eq!((attempts, counts(&t)), (1, (0, 5, 0, 0)));
        assert!(t
            .to_string()
            .starts_with("0 of 5 servers granted (quorum 3), 5 refused, 0 timed out, 0 failed"));

        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = lock.refresh(Duration::from_secs(3)).await.unwrap();
        assert_eq!(t.granted, 5);
        assert!(
            lock.validity() > Duration::from_millis(2500),
            "refresh moved the validity"
        );

        let t = lock.release().await.unwrap();
        assert_eq!(t.granted, 5);
        assert_eq!(lock.validity(), Duration::ZERO);
        for i in 0..5 {
            assert!(!five.info(i, "job").0);
        }
        let t = lock.release().await.unwrap_err();
        assert_eq!(counts(t.tally().unwrap()), (0, 5, 0, 0));

        let next = b.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        assert!(next.fence() > lock.fence());
        for (new, old) in next.server_fences().iter().zip(&fences) {
            assert!(new.unwrap() > *old);
        }
        next.release().await.unwrap();
    });
}

/// Two of five servers down (one paused, one killed): obtain, the
/// watchdog's refreshes over three TTLs, release and the next obtain all
/// succeed on the other three.
#[test]
fn two_servers_down_keep_locking_available() {
    serially(async {
        let mut five = Five::start();
        let (a, b) = (five.redlock(), five.redlock());
        five.pause(0);
        five.kill(1);
        let ttl = Duration::from_secs(1);

        let lock = a.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        let granted: Vec<bool> = lock.server_fences().iter().map(Option::is_some).collect();
        assert_eq!(granted, [false, false, true, true, true]);
        let guard = lock.guard_with_watchdog();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!guard.is_lost(), "{:?}", guard.loss());
            assert!(guard.validity() > Duration::ZERO);
            let (_, t) = not_obtained(b.obtain("job", ttl, &RedlockOptions::new()).await);
            assert_eq!(counts(&t), (0, 3, 1, 1), "{t}");
        }
        let t = guard.release().await.unwrap();
        assert_eq!(counts(&t), (3, 0, 1, 1));
        let next = b.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        assert_eq!(next.server_fences().iter().flatten().count(), 3);
        next.release().await.unwrap();
        five.resume(0);
    });
}

/// Three of five servers down: a holder's watchdog reports the loss while
/// the validity still runs, and every one of 24 attempts by 4 concurrent
/// clients fails with a tally of at most 2 grants. Once the servers are
/// back, no grant of those attempts is left on them.
#[test]
fn three_servers_down_every_acquisition_fails_cleanly() {
    serially(async {
        let mut five = Five::start();
        let ttl = Duration::from_secs(1);
        let holder_ttl = Duration::from_secs(3);
        let holder = five.redlock();
        let clients: Vec<Redlock> = (0..4).map(|_| five.redlock()).collect();
        for c in &clients {
            // Connect now, so requests to a paused server queue on the
            // connection (and run, in order, when it resumes).
            c.obtain("warm-up", ttl, &RedlockOptions::new())
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
        }

        let guard = holder
            .obtain("job", holder_ttl, &RedlockOptions::new())
            .await
            .unwrap()
            .guard_with_watchdog();
        let lost = guard.loss_signal().unwrap();
        five.pause(0);
        five.pause(1);
        five.kill(2);
        let reason = tokio::time::timeout(holder_ttl, lost.lost())
            .await
            .expect("loss reported");
        let left = guard.validity();
        assert!(left > Duration::ZERO, "reported before the validity ended");
        match &reason {
            LossReason::Unreachable(why) => assert!(why.contains("timed out"), "{why}"),
            other => panic!("{other:?}"),
        }
        eprintln!("holder: loss reported with {left:?} of validity left: {reason}");
        drop(guard);

        let options =
            RedlockOptions::new().retry(LinearBackoff(Duration::from_millis(60)).limit(2));
        let mut tasks = Vec::new();
        for c in clients.clone() {
            let options = options.clone();
            tasks.push(tokio::spawn(async move {
                let mut tallies = Vec::new();
                for _ in 0..2 {
                    let (attempts, t) = not_obtained(c.obtain("job", ttl, &options).await);
                    assert_eq!(attempts, 3);
                    tallies.push(t);
                }
                tallies
            }));
        }
        let mut calls = 0;
        for task in tasks {
            for t in task.await.unwrap() {
                calls += 1;
                assert!(t.granted <= 2, "{t}");
                assert_eq!((t.timed_out, t.failed), (2, 1), "{t}");
            }
        }
        assert_eq!(calls, 8);
        eprintln!("3 of 5 down: {calls} obtains × 3 attempts, 0 successes");

        // Back: what was queued on the paused servers runs in order, each
        // failed attempt's release after its grant.
        five.resume(0);
        five.resume(1);
        five.restart(2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..5 {
            assert!(!five.info(i, "job").0, "server {i} still holds a grant");
        }
        let lock = clients[0]
            .obtain("job", ttl, &RedlockOptions::new())
            .await
            .unwrap();
        assert_eq!(lock.server_fences().iter().flatten().count(), 5);
        lock.release().await.unwrap();
    });
}

/// A server SIGSTOPped for 2.5 TTLs while the lock passes from A to B:
/// B obtains only after A's validity ended, C is refused while B holds it
/// (before and after the server resumes), and A cannot refresh.
#[test]
fn server_paused_past_the_ttl_never_gives_two_holders() {
    serially(async {
        let five = Five::start();
        let (a, b, c) = (five.redlock(), five.redlock(), five.redlock());
        let ttl = Duration::from_secs(1);
        for r in [&b, &c] {
            r.obtain("warm-up", ttl, &RedlockOptions::new())
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
        }
        let mut lock_a = a.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        five.pause(0);
        let paused = Instant::now();

        // B polls while A's lock lives; it gets the lock only after A's
        // validity ended.
        let retry = LinearBackoff(Duration::from_millis(50)).until(Instant::now() + 3 * ttl);
        let lock_b = b
            .obtain("job", ttl, &RedlockOptions::new().retry(retry))
            .await
            .unwrap();
        assert_eq!(
            lock_a.validity(),
            Duration::ZERO,
            "A still valid when B obtained"
        );
        assert!(lock_b.server_fences()[0].is_none());
        assert!(lock_b.fence() > lock_a.fence());
        let e = lock_a.refresh(ttl).await.unwrap_err();
        assert!(matches!(e, RedlockError::NotHeld(_)), "{e}");

        let (_, t) = not_obtained(c.obtain("job", ttl, &RedlockOptions::new()).await);
        assert_eq!(counts(&t), (0, 4, 1, 0));
        let mut lock_b = lock_b;
        while paused.elapsed() < ttl * 5 / 2 {
            let t = lock_b.refresh(ttl).await.unwrap();
            assert_eq!((t.granted, t.timed_out), (4, 1));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        five.resume(0);
        // The resumed server runs what was queued: A's expired key is gone,
        // its refresh finds nothing, B's late requests may give B the key.
        for _ in 0..5 {
            let (_, t) = not_obtained(c.obtain("job", ttl, &RedlockOptions::new()).await);
            assert!(t.granted <= 1 && t.refused >= 4, "{t}");
            assert!(lock_b.validity() > Duration::ZERO);
            let t = lock_b.refresh(ttl).await.unwrap();
            assert!(t.granted >= 4, "{t}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lock_b.release().await.unwrap();
        let lock_c = c.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        assert!(lock_c.fence() > lock_b.fence());
        lock_c.release().await.unwrap();
    });
}

/// A server restarted empty at once lets a second client obtain a majority
/// while the first still holds the lock (the hazard the algorithm warns
/// of; fences still increase). With `min_server_uptime` ≥ the TTL (the
/// algorithm's delayed restart, enforced by the client) the restarted
/// server does not count, and the second client gets the lock only after
/// the first's validity ended.
#[test]
fn restart_without_persistence_is_covered_by_the_delayed_restart() {
    serially(async {
        let mut five = Five::start();
        let ttl = Duration::from_secs(2);

        // A gets servers 0, 1, 2 (3 and 4 are held by a foreign token meanwhile).
        let occupy = |five: &Five, key: &str, servers: [usize; 2]| {
            for i in servers {
                let reply = five.cmd(i, &["LOCK.ACQUIRE", key, "other", "10000"]);
                assert!(matches!(reply, Value::Int(_)), "{reply:?}");
            }
        };
        let free = |five: &Five, key: &str, servers: [usize; 2]| {
            for i in servers {
                assert_eq!(five.cmd(i, &["LOCK.RELEASE", key, "other"]), Value::Int(1));
            }
        };

        // Without the delay: two holders at once.
        occupy(&five, "k1", [3, 4]);
        let lock_a = five
            .redlock()
            .obtain("k1", ttl, &RedlockOptions::new())
            .await
            .unwrap();
        assert_eq!(lock_a.server_fences().iter().flatten().count(), 3);
        free(&five, "k1", [3, 4]);
        five.restart(2);
        let lock_b = five
            .redlock()
            .obtain("k1", ttl, &RedlockOptions::new())
            .await
            .unwrap();
        assert!(
            lock_a.validity() > Duration::ZERO,
            "the hazard: A and B both hold k1"
        );
        assert!(
            lock_b.fence() > lock_a.fence(),
            "fences still increase after the restart"
        );
        eprintln!(
            "restart at once: B obtained with A's validity at {:?}; fences {} > {}",
            lock_a.validity(),
            lock_b.fence(),
            lock_a.fence()
        );

        // With the delay: servers count only after 3 s of uptime (≥ the TTL,
        // and the client rounds the servers' uptime down).
        let delayed = || five.redlock().min_server_uptime(Duration::from_secs(3));
        let (a, b) = (delayed(), delayed());
        occupy(&five, "k2", [2, 4]);
        let retry = LinearBackoff(Duration::from_millis(200))
            .until(Instant::now() + Duration::from_secs(6));
        let lock_a = a
            .obtain("k2", ttl, &RedlockOptions::new().retry(retry))
            .await
            .unwrap();
        let granted: Vec<bool> = lock_a.server_fences().iter().map(Option::is_some).collect();
        assert_eq!(granted, [true, true, false, true, false]);
        free(&five, "k2", [2, 4]);
        five.restart(3);
        let (_, t) = not_obtained(b.obtain("k2", ttl, &RedlockOptions::new()).await);
        assert!(t.granted <= 2 && t.failed >= 1, "{t}");
        assert!(
            t.errors.iter().any(|e| e.contains("restarted recently")),
            "{t}"
        );
        eprintln!("delayed restart: B refused: {t}");
        let retry = LinearBackoff(Duration::from_millis(50)).until(Instant::now() + 3 * ttl);
        let lock_b = b
            .obtain("k2", ttl, &RedlockOptions::new().retry(retry))
            .await
            .unwrap();
        assert_eq!(
            lock_a.validity(),
            Duration::ZERO,
            "B obtained while A held k2"
        );
        assert!(lock_b.fence() > lock_a.fence());
    });
}

/// The limit of the max-of-grants fence, as documented: when the server
/// that gave the previous holder its (largest) fence is not in the next
/// majority, and its counter runs ahead (here its fence clock is 60 s
/// ahead), the next fence is lower. It is still above the previous
/// holder's fence from the server both majorities share.
#[test]
fn fence_is_only_above_the_shared_servers_when_a_counter_runs_ahead() {
    serially(async {
        let five = Five::with(|i| {
            let c = Config::default().module_arg("fence-margin", "0");
            if i == 4 {
                c.module_arg("debug-fence-clock-offset", "60000")
            } else {
                c
            }
        });
        let (a, b) = (five.redlock(), five.redlock());
        let ttl = Duration::from_secs(1);
        b.obtain("warm-up", ttl, &RedlockOptions::new())
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let lock_a = a.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        assert_eq!(lock_a.fence(), lock_a.server_fences()[4].unwrap());
        lock_a.release().await.unwrap();
        five.pause(4);
        let lock_b = b.obtain("job", ttl, &RedlockOptions::new()).await.unwrap();
        five.resume(4);
        assert!(lock_b.fence() < lock_a.fence(), "the documented limit");
        for i in 0..4 {
            assert!(lock_b.fence() > lock_a.server_fences()[i].unwrap());
        }
        lock_b.release().await.unwrap();
    });
}

/// A fenced resource: rejects a write whose fence is below the highest
/// it has accepted.
#[derive(Default)]
struct Resource {
    highest: u64,
    accepted: u64,
    rejected: u64,
}

impl Resource {
    fn write(&mut self, fence: u64) {
        if fence < self.highest {
            self.rejected += 1;
        } else {
            self.highest = fence;
            self.accepted += 1;
        }
    }
}

/// Six clients contend for one key for 8 s while faults hit up to two
/// servers at a time: pauses past the TTL, kills with a restart delayed
/// past the TTL. Each critical section writes to a fenced resource at its
/// start and end, and ends while the lock's validity runs. No two sections
/// overlap in time, their fences increase in the order they ran, and the
/// resource rejects nothing. (Servers run with `lock.fence-margin 0`: on
/// one host they share a clock, so their fences agree.)
#[test]
fn mutual_exclusion_holds_under_concurrent_clients_and_faults() {
    serially(async {
        let five = Five::with(|_| Config::default().module_arg("fence-margin", "0"));
        let ttl = Duration::from_secs(1);
        let run = Duration::from_secs(8);
        let until = Instant::now() + run;
        let resource = Arc::new(Mutex::new(Resource::default()));
        let sections = Arc::new(Mutex::new(Vec::<(Instant, Instant, u64)>::new()));
        let failures = Arc::new(Mutex::new(0u32));

        let mut clients = Vec::new();
        for n in 0..6 {
            let redlock = five.redlock();
            let (resource, sections, failures) =
                (resource.clone(), sections.clone(), failures.clone());
            clients.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let options = RedlockOptions::new()
                        .token_prefix(format!("client-{n}-"))
                        .retry(LinearBackoff(Duration::from_millis(80)).limit(10));
                    let lock = match redlock.obtain("shared", ttl, &options).await {
                        Ok(l) => l,
                        Err(RedlockError::NotObtained { .. }) => {
                            *failures.lock().unwrap() += 1;
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    };
                    let work = Duration::from_millis(rand::rng().random_range(10..60));
                    if lock.validity() > work + Duration::from_millis(200) {
                        let enter = Instant::now();
                        resource.lock().unwrap().write(lock.fence());
                        tokio::time::sleep(work).await;
                        resource.lock().unwrap().write(lock.fence());
                        let exit = Instant::now();
                        assert!(
                            lock.validity() > Duration::ZERO,
                            "section overran the validity"
                        );
                        sections.lock().unwrap().push((enter, exit, lock.fence()));
                    }
                    let _ = lock.release().await;
                }
            }));
        }

        // Faults, from a thread of their own (servers are started blocking).
        let injector = std::thread::spawn(move || {
            let mut five = five;
            let mut rng = rand::rng();
            let mut faults = (0, 0);
            while Instant::now() + Duration::from_millis(2500) < until {
                let first = rng.random_range(0..5);
                let second = (first + rng.random_range(1..5)) % 5;
                let down: Vec<usize> = if rng.random_bool(0.5) {
                    vec![first, second]
                } else {
                    vec![first]
                };
                let kill = rng.random_bool(0.4);
                for &i in &down {
                    if kill {
                        five.kill(i);
                    } else {
                        five.pause(i);
                    }
                }
                // Past the TTL: a paused server's keys expire meanwhile, and a
                // killed one comes back only after the TTL (delayed restart).
                std::thread::sleep(ttl + Duration::from_millis(rng.random_range(100..600)));
                for &i in &down {
                    if kill {
                        five.restart(i);
                        faults.1 += 1;
                    } else {
                        five.resume(i);
                        faults.0 += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(rng.random_range(100..400)));
            }
            (five, faults)
        });

        for c in clients {
            c.await.unwrap();
        }
        let (_five, (pauses, kills)) = injector.join().unwrap();
        let mut sections = sections.lock().unwrap().clone();
        sections.sort_by_key(|s| s.0);
        for w in sections.windows(2) {
            assert!(w[1].0 > w[0].1, "two critical sections overlapped");
            assert!(w[1].2 > w[0].2, "fence {} after {}", w[1].2, w[0].2);
        }
        let r = resource.lock().unwrap();
        eprintln!(
        "{} critical sections, {} resource writes accepted, {} rejected, {} obtains gave up, faults: {pauses} pauses, {kills} kills",
        sections.len(),
        r.accepted,
        r.rejected,
        failures.lock().unwrap()
    );
        assert_eq!(r.rejected, 0);
        assert!(
            sections.len() >= 20,
            "too little progress: {}",
            sections.len()
        );
        assert!(pauses + kills >= 3);
    });
}

/// Dropping an obtain midway (here: a paused server makes the round wait
/// for its timeout) leaves no grant behind once the requests end.
#[test]
fn a_dropped_obtain_leaves_no_grant_behind() {
    serially(async {
        let five = Five::start();
        let a = five.redlock().request_timeout(Duration::from_millis(400));
        a.obtain("warm-up", Duration::from_secs(1), &RedlockOptions::new())
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        five.pause(0);
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            a.obtain("job", Duration::from_secs(10), &RedlockOptions::new()),
        )
        .await;
        assert!(
            cut.is_err(),
            "the obtain was still waiting for the paused server"
        );
        assert!((1..5).any(|i| five.info(i, "job").0), "grants were made");
        tokio::time::sleep(Duration::from_millis(600)).await;
        for i in 1..5 {
            assert!(!five.info(i, "job").0, "server {i} kept a grant");
        }
        five.resume(0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!five.info(0, "job").0, "the paused server kept a grant");
    });
}
