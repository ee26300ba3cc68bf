//! Watchdog renewal: keeps a lock alive while its guard lives, and reports
//! when it is lost. [`Renewer`] is the logic, shared by the sync driver
//! here (a thread) and the async one (`aio.rs`, a task); each driver runs
//! the loss signal's timer beside it, so that a renewal stuck in flight
//! cannot delay the report.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Cmd, ConnectionLike, RedisResult, Value};

use crate::commands;
use crate::core::{Hold, LockState};
use crate::error::AckStep;
use crate::loss::{loss_deadline, LossReason, LossSignal};
use crate::options::{ceil_ms, ReplicaAck};

/// The renewal interval for a lock timeout: a third of it (at least 1 ms),
/// so that two renewals can fail before the loss is reported.
pub(crate) fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(1))
}

/// What a watchdog renews.
#[derive(Clone, Debug)]
pub(crate) struct RenewPlan {
    key: Vec<u8>,
    token: Vec<u8>,
    fence: u64,
    ttl: Duration,
    ttl_ms: u64,
    /// When the hold was last granted or renewed (sent).
    sent: Instant,
    /// Renewals count only once acknowledged.
    ack: Option<ReplicaAck>,
}

impl RenewPlan {
    pub(crate) fn new(state: &LockState, hold: &Hold) -> Self {
        Self::of(&state.key, hold, state.options.lock_timeout).with_ack(state.options.replica_ack)
    }

    /// Renewals count only once `ack` is met.
    pub(crate) fn with_ack(mut self, ack: Option<ReplicaAck>) -> Self {
        self.ack = ack;
        self
    }

    /// Renews `hold` on `key` for `ttl` each time.
    pub(crate) fn of(key: &[u8], hold: &Hold, ttl: Duration) -> Self {
        RenewPlan {
            key: key.to_vec(),
            token: hold.token.clone(),
            fence: hold.fence,
            ttl,
            ttl_ms: ceil_ms(ttl),
            sent: hold.sent,
            ack: None,
        }
    }

    /// A fresh loss signal for this hold.
    pub(crate) fn signal(&self) -> LossSignal {
        LossSignal::new(loss_deadline(self.sent, self.ttl))
    }
}

/// What a driver does next.
#[derive(Debug)]
pub(crate) enum Step {
    Sleep(Duration),
    Send(Cmd),
    Stop,
}

#[derive(Debug)]
enum Pending {
    /// A renewal sent at this instant.
    Renewal(Instant),
    /// `LOCK.INFO`, to tell a taken lock from an expired one.
    Info,
    /// `LOCK.RELEASE` of a lock an old-style renewal re-created.
    ReleaseStray,
    None,
}

/// The renewal logic of one hold, sans I/O.
#[derive(Debug)]
pub(crate) struct Renewer {
    plan: RenewPlan,
    signal: LossSignal,
    /// `LOCK.EXTEND` is unknown (a module from before it): renew with
    /// `LOCK.ACQUIRE` and check the fence instead.
    legacy: bool,
    pending: Pending,
}

impl Renewer {
    pub(crate) fn new(plan: RenewPlan, signal: LossSignal) -> Self {
        Renewer {
            plan,
            signal,
            legacy: false,
            pending: Pending::None,
        }
    }

    /// The first step: wait for the first renewal.
    pub(crate) fn start(&self) -> Step {
        Step::Sleep(renew_interval(self.plan.ttl))
    }

    fn renewal(&mut self, now: Instant) -> Step {
        let p = &self.plan;
        let cmd = if self.legacy {
            commands::acquire(&p.key, &p.token, p.ttl_ms, None, None)
        } else {
            commands::extend(&p.key, &p.token, p.ttl_ms)
        };
        self.pending = Pending::Renewal(now);
        Step::Send(cmd)
    }

    fn lost(&mut self, reason: LossReason) -> Step {
        self.signal.set(reason);
        Step::Stop
    }

    /// After a sleep: renew, unless the lock is already reported lost.
    pub(crate) fn on_slept(&mut self, now: Instant) -> Step {
        if self.signal.is_lost() {
            return Step::Stop;
        }
        self.renewal(now)
    }

    /// The acknowledgement to pipeline after the command of the last
    /// [`Step::Send`] (renewals only); its replies then go to
    /// [`on_acked_reply`](Self::on_acked_reply).
    pub(crate) fn pending_ack(&self) -> Option<ReplicaAck> {
        match self.pending {
            Pending::Renewal(_) => self.plan.ack,
            _ => None,
        }
    }

    /// The replies to an acknowledged renewal: one that renewed but was not
    /// acknowledged in time counts as a failed renewal.
    pub(crate) fn on_acked_reply(
        &mut self,
        reply: RedisResult<Value>,
        ack_reply: RedisResult<Value>,
        now: Instant,
    ) -> Step {
        if let (Some(ack), Ok(v)) = (self.plan.ack, &reply) {
            let renewed =
                matches!(commands::parse_fence(v.clone()), Ok(Some(f)) if f == self.plan.fence);
            if renewed {
                if let Err(e) = commands::check_ack(&ack, AckStep::Renew, ack_reply) {
                    self.pending = Pending::None;
                    self.signal.renewal_failed(e.to_string());
                    if self.signal.is_lost() {
                        return Step::Stop;
                    }
                    return Step::Sleep(renew_interval(self.plan.ttl));
                }
            }
        }
        self.on_reply(reply, now)
    }

    /// The reply to the last [`Step::Send`].
    pub(crate) fn on_reply(&mut self, reply: RedisResult<Value>, now: Instant) -> Step {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Renewal(sent) => match reply.and_then(commands::parse_fence) {
                Ok(Some(f)) if f == self.plan.fence => {
                    self.signal.renewed(sent, self.plan.ttl);
                    if self.signal.is_lost() {
                        return Step::Stop;
                    }
                    Step::Sleep(renew_interval(self.plan.ttl))
                }
                // Only an old-style renewal re-creates a lapsed lock: give
                // that one up at once.
                Ok(Some(_)) => {
                    self.pending = Pending::ReleaseStray;
                    Step::Send(commands::release(&self.plan.key, &self.plan.token))
                }
                Ok(None) if self.legacy => self.lost(LossReason::HeldByOther),
                Ok(None) => {
                    self.pending = Pending::Info;
                    Step::Send(commands::info(&self.plan.key))
                }
                Err(e) if !self.legacy && is_unknown_extend(&e) => {
                    self.legacy = true;
                    self.renewal(now)
                }
                Err(e) => {
                    self.signal
                        .renewal_failed(crate::Error::from(e).to_string());
                    if self.signal.is_lost() {
                        return Step::Stop;
                    }
                    Step::Sleep(renew_interval(self.plan.ttl))
                }
            },
            Pending::Info => match reply.and_then(commands::parse_info_held) {
                Ok(true) => self.lost(LossReason::HeldByOther),
                _ => self.lost(LossReason::Expired),
            },
            Pending::ReleaseStray | Pending::None => self.lost(LossReason::Expired),
        }
    }
}

fn is_unknown_extend(e: &redis::RedisError) -> bool {
    let detail = e.detail().unwrap_or_default().to_ascii_lowercase();
    e.code().is_some() && detail.contains("unknown command") && detail.contains("lock.extend")
}

/// After a `lock()` by hand on a guard with a watchdog: whether the
/// watchdog must make way for a new one. A renewal of the same hold moves
/// the loss deadline; a changed hold (lost, then obtained afresh or not)
/// is reported lost on the old signal.
pub(crate) fn follow_relock(before: Option<&Hold>, state: &LockState, signal: &LossSignal) -> bool {
    let after = state.hold.as_ref();
    let same = Hold::same(before, after);
    if same && !signal.is_lost() {
        if let Some(hold) = after {
            signal.renewed(hold.sent, state.options.lock_timeout);
        }
        return false;
    }
    if !same {
        signal.set(if after.is_some() {
            LossReason::Expired
        } else {
            LossReason::HeldByOther
        });
    }
    true
}

/// A connection a sync watchdog thread owns.
pub(crate) type WatchdogConn = Box<dyn ConnectionLike + Send>;

/// Reports a panic of the thread or task it lives in as a loss.
pub(crate) struct PanicReport(pub(crate) LossSignal);

impl Drop for PanicReport {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.set(LossReason::WatchdogFailed);
        }
    }
}

/// A background thread renewing one hold, and one running its loss
/// signal's timer; stopped and joined on drop.
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<WatchdogConn>>,
    timer: Option<JoinHandle<()>>,
    signal: LossSignal,
}

impl Watchdog {
    /// Starts renewing every third of the lock timeout.
    pub(crate) fn spawn(mut conn: WatchdogConn, plan: RenewPlan) -> Self {
        let signal = plan.signal();
        let (stop, stopped) = mpsc::channel::<()>();
        let mut renewer = Renewer::new(plan, signal.clone());
        let report = PanicReport(signal.clone());
        let thread = thread::Builder::new()
            .name("lock-watchdog".into())
            .spawn(move || {
                let _report = report;
                let mut step = renewer.start();
                loop {
                    step = match step {
                        Step::Sleep(d) => match stopped.recv_timeout(d) {
                            Err(RecvTimeoutError::Timeout) => renewer.on_slept(Instant::now()),
                            // Stopped (message or guard gone).
                            _ => return conn,
                        },
                        Step::Send(cmd) => match renewer.pending_ack() {
                            None => {
                                let reply = conn.req_command(&cmd);
                                renewer.on_reply(reply, Instant::now())
                            }
                            Some(ack) => {
                                let (reply, ack_reply) =
                                    crate::sync::send_acked(&mut *conn, &cmd, &ack);
                                renewer.on_acked_reply(reply, ack_reply, Instant::now())
                            }
                        },
                        Step::Stop => return conn,
                    }
                }
            });
        let timer_signal = signal.clone();
        let timer = thread::Builder::new()
            .name("lock-loss-timer".into())
            .spawn(move || timer_signal.run_timer());
        // Without a thread nothing renews: report that at once.
        if thread.is_err() || timer.is_err() {
            signal.set(LossReason::WatchdogFailed);
        }
        Watchdog {
            stop: Some(stop),
            thread: thread.ok(),
            timer: timer.ok(),
            signal,
        }
    }

    /// A watchdog that no longer runs: it only reports its loss.
    pub(crate) fn failed(signal: LossSignal) -> Self {
        signal.set(LossReason::WatchdogFailed);
        Watchdog {
            stop: None,
            thread: None,
            timer: None,
            signal,
        }
    }

    pub(crate) fn signal(&self) -> &LossSignal {
        &self.signal
    }

    /// Stops the threads and waits for them (at most one renewal in
    /// flight); returns the connection, unless the thread panicked.
    pub(crate) fn stop(mut self) -> Option<WatchdogConn> {
        self.halt()
    }

    fn halt(&mut self) -> Option<WatchdogConn> {
        drop(self.stop.take());
        self.signal.close();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err() -> RedisResult<Value> {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "gone",
        )))
    }

    fn server_err(detail: &str) -> RedisResult<Value> {
        Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "server",
            detail.to_owned(),
        )))
    }

    fn renewer(now: Instant) -> Renewer {
        let plan = RenewPlan {
            key: b"k".to_vec(),
            token: b"t".to_vec(),
            fence: 4,
            ttl: Duration::from_millis(300),
            ttl_ms: 300,
            sent: now,
            ack: None,
        };
        let signal = plan.signal();
        Renewer::new(plan, signal)
    }

    fn sent(step: Step) -> Vec<String> {
        match step {
            Step::Send(cmd) => commands::args(&cmd),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    #[test]
    fn renews_with_extend_and_moves_the_deadline() {
        let t0 = Instant::now();
        let mut r = renewer(t0);
        assert_eq!(r.signal.deadline(), Some(t0 + Duration::from_millis(270)));
        assert!(matches!(r.start(), Step::Sleep(d) if d == Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(sent(r.on_slept(t1)), ["LOCK.EXTEND", "k", "t", "300"]);
        assert!(matches!(r.on_reply(Ok(Value::Int(4)), t1), Step::Sleep(_)));
        assert_eq!(r.signal.deadline(), Some(t1 + Duration::from_millis(270)));
        // An error keeps the deadline and is told in the report.
        r.on_slept(t1);
        assert!(matches!(r.on_reply(io_err(), t1), Step::Sleep(_)));
        assert_eq!(r.signal.deadline(), Some(t1 + Duration::from_millis(270)));
    }

    #[test]
    fn a_refused_renewal_asks_who_holds_it() {
        let t0 = Instant::now();
        let mut r = renewer(t0);
        r.on_slept(t0);
        assert_eq!(sent(r.on_reply(Ok(Value::Nil), t0)), ["LOCK.INFO", "k"]);
        let info = Value::Array(vec![Value::BulkString(b"held".to_vec()), Value::Int(1)]);
        assert!(matches!(r.on_reply(Ok(info), t0), Step::Stop));
        assert_eq!(r.signal.reason(), Some(LossReason::HeldByOther));

        let mut r = renewer(t0);
        r.on_slept(t0);
        r.on_reply(Ok(Value::Nil), t0);
        let info = Value::Array(vec![Value::BulkString(b"held".to_vec()), Value::Int(0)]);
        r.on_reply(Ok(info), t0);
        assert_eq!(r.signal.reason(), Some(LossReason::Expired));
    }

    #[test]
    fn falls_back_to_acquire_without_extend() {
        let t0 = Instant::now();
        let mut r = renewer(t0);
        r.on_slept(t0);
        let step = r.on_reply(
            server_err("unknown command 'LOCK.EXTEND', with args beginning with: 'k'"),
            t0,
        );
        assert_eq!(sent(step), ["LOCK.ACQUIRE", "k", "t", "300"]);
        // Re-created with a new fence: released, reported.
        assert_eq!(
            sent(r.on_reply(Ok(Value::Int(9)), t0)),
            ["LOCK.RELEASE", "k", "t"]
        );
        assert!(matches!(r.on_reply(Ok(Value::Int(1)), t0), Step::Stop));
        assert_eq!(r.signal.reason(), Some(LossReason::Expired));
    }

    #[test]
    fn an_unacknowledged_renewal_counts_as_failed() {
        let now = Instant::now();
        let mut r = renewer(now);
        r.plan.ack = Some(ReplicaAck::replicas(1, Duration::from_millis(50)));
        let first = r.signal.deadline().unwrap();
        let later = now + Duration::from_millis(50);
        let step = r.on_slept(later);
        assert_eq!(sent(step)[0], "LOCK.EXTEND");
        assert!(r.pending_ack().is_some());
        // Renewed on the master, 0 of 1 replicas: not a renewal.
        let step = r.on_acked_reply(Ok(Value::Int(4)), Ok(Value::Int(0)), later);
        assert!(matches!(step, Step::Sleep(_)));
        assert_eq!(r.signal.deadline(), Some(first));
        // Acknowledged: a renewal.
        let _ = r.on_slept(later);
        let step = r.on_acked_reply(Ok(Value::Int(4)), Ok(Value::Int(1)), later);
        assert!(matches!(step, Step::Sleep(_)));
        assert!(r.signal.deadline().unwrap() > first);
        assert!(r.pending_ack().is_none());
    }
}
