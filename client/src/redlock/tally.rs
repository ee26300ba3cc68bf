//! What the servers answered to one round, and the Redlock error that
//! reports it.

use std::fmt;
use std::time::Duration;

use redis::Value;

use super::servers::Outcome;
use crate::commands;

/// How the servers answered one round of a Redlock operation: how many
/// granted (for a refresh: extended; for a release: released), refused,
/// timed out or failed.
///
/// ```
/// use std::time::Duration;
/// use redis_fenced_lock::redlock::Tally;
///
/// let t = Tally { servers: 5, quorum: 3, granted: 2, refused: 1, timed_out: 1, failed: 1, ..Tally::default() };
/// assert!(!t.has_quorum());
/// assert_eq!(t.to_string(), "2 of 5 servers granted (quorum 3), 1 refused, 1 timed out, 1 failed, in 0 ms");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Servers asked (N).
    pub servers: usize,
    /// Servers needed: N/2 + 1.
    pub quorum: usize,
    /// Servers that granted (obtain), extended (refresh) or released
    /// (release) for this token.
    pub granted: usize,
    /// Servers that answered no: held by someone else (obtain), or no
    /// longer this token's (refresh, release).
    pub refused: usize,
    /// Servers that did not answer within the per-server timeout.
    pub timed_out: usize,
    /// Servers that could not be reached or answered an error, and servers
    /// not counted because they restarted too recently
    /// ([`Redlock::min_server_uptime`](super::Redlock::min_server_uptime)).
    pub failed: usize,
    /// From sending the first request to the last outcome.
    pub elapsed: Duration,
    /// The validity left when the round ended (zero when none): `TTL −
    /// elapsed − drift` for obtain and refresh.
    pub validity: Duration,
    /// The failed servers' errors, `address: error`.
    pub errors: Vec<String>,
}

impl Tally {
    pub(crate) fn new(servers: usize, quorum: usize) -> Self {
        Tally {
            servers,
            quorum,
            ..Tally::default()
        }
    }

    /// Whether a majority granted.
    pub fn has_quorum(&self) -> bool {
        self.granted >= self.quorum
    }

    /// Whether enough servers refused that no majority could have
    /// granted, whatever the others would have answered.
    pub fn quorum_impossible(&self) -> bool {
        self.refused > self.servers.saturating_sub(self.quorum)
    }

    pub(crate) fn fail(&mut self, server: &str, error: impl fmt::Display) {
        self.failed += 1;
        self.errors.push(format!("{server}: {error}"));
    }

    /// Counts one outcome of a command whose reply is a fence or nil
    /// (`LOCK.ACQUIRE`, `LOCK.EXTEND`); the fence if granted.
    pub(crate) fn count_fence(&mut self, server: &str, outcome: Outcome) -> Option<u64> {
        let v = self.reply(server, outcome)?;
        match commands::parse_fence(v) {
            Ok(Some(f)) => {
                self.granted += 1;
                Some(f)
            }
            Ok(None) => {
                self.refused += 1;
                None
            }
            Err(e) => {
                self.fail(server, crate::Error::from(e));
                None
            }
        }
    }

    /// Counts one outcome of `LOCK.RELEASE`.
    pub(crate) fn count_release(&mut self, server: &str, outcome: Outcome) {
        if let Some(v) = self.reply(server, outcome) {
            match commands::parse_release(v) {
                Ok(true) => self.granted += 1,
                Ok(false) => self.refused += 1,
                Err(e) => self.fail(server, crate::Error::from(e)),
            }
        }
    }

    /// The reply value, or the outcome counted as timed out or failed.
    fn reply(&mut self, server: &str, outcome: Outcome) -> Option<Value> {
        match outcome {
            Outcome::Reply(Ok(v)) => Some(v),
            Outcome::Reply(Err(e)) => {
                self.fail(server, crate::Error::from(e));
                None
            }
            Outcome::TimedOut => {
                self.timed_out += 1;
                None
            }
            Outcome::Fresh(left) => {
                self.fail(
                    server,
                    format_args!(
                        "restarted recently; not counted for another {} ms",
                        left.as_millis()
                    ),
                );
                None
            }
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} servers granted (quorum {}), {} refused, {} timed out, {} failed, in {} ms",
            self.granted,
            self.servers,
            self.quorum,
            self.refused,
            self.timed_out,
            self.failed,
            self.elapsed.as_millis()
        )?;
        if self.has_quorum() && self.validity.is_zero() {
            f.write_str(", too late: no validity left")?;
        }
        if !self.errors.is_empty() {
            write!(f, " [{}]", self.errors.join("; "))?;
        }
        Ok(())
    }
}

/// What can go wrong with a Redlock. The tallies say how many servers
/// granted, refused, timed out or failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedlockError {
    /// No attempt got a majority with validity left; every grant of every
    /// attempt was released. `last` is the last attempt's tally.
    NotObtained {
        /// Attempts made (1 + retries).
        attempts: u32,
        /// How the servers answered the last attempt.
        last: Tally,
    },
    /// A refresh did not reach a majority within the validity, or a
    /// release found the lock no longer held by a majority. The lock
    /// counts as lost (for a failed refresh: once its current validity
    /// ends).
    NotHeld(Tally),
    /// A bad argument: no servers, a time to live below
    /// [`MIN_TTL`](super::MIN_TTL), a server address that does not parse.
    Invalid(String),
}

impl fmt::Display for RedlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedlockError::NotObtained { attempts, last } => write!(
                f,
                "lock not obtained on a majority after {attempts} attempt(s); last: {last}"
            ),
            RedlockError::NotHeld(t) => write!(f, "lock not held by a majority: {t}"),
            RedlockError::Invalid(why) => write!(f, "invalid Redlock argument: {why}"),
        }
    }
}

impl std::error::Error for RedlockError {}

impl RedlockError {
    /// The tally of the last round, if the error came from one.
    pub fn tally(&self) -> Option<&Tally> {
        match self {
            RedlockError::NotObtained { last, .. } => Some(last),
            RedlockError::NotHeld(t) => Some(t),
            RedlockError::Invalid(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_kind_of_outcome() {
        let mut t = Tally::new(5, 3);
        assert_eq!(
            t.count_fence("a", Outcome::Reply(Ok(Value::Int(9)))),
            Some(9)
        );
        assert_eq!(t.count_fence("b", Outcome::Reply(Ok(Value::Nil))), None);
        assert_eq!(t.count_fence("c", Outcome::TimedOut), None);
        let refused: redis::RedisError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(t.count_fence("d", Outcome::Reply(Err(refused))), None);
        assert_eq!(
            t.count_fence("e", Outcome::Fresh(Duration::from_millis(700))),
            None
        );
        assert_eq!((t.granted, t.refused, t.timed_out, t.failed), (1, 1, 1, 2));
        assert!(!t.has_quorum());
        assert!(!t.quorum_impossible());
        let s = t.to_string();
        assert!(
            s.starts_with("1 of 5 servers granted (quorum 3), 1 refused, 1 timed out, 2 failed"),
            "{s}"
        );
        assert!(
            s.contains("e: restarted recently; not counted for another 700 ms"),
            "{s}"
        );
        t.refused = 3;
        assert!(t.quorum_impossible());

        let mut r = Tally::new(3, 2);
        r.count_release("a", Outcome::Reply(Ok(Value::Int(1))));
        r.count_release("b", Outcome::Reply(Ok(Value::Int(0))));
        assert_eq!((r.granted, r.refused), (1, 1));
        let e = RedlockError::NotObtained {
            attempts: 2,
            last: t,
        };
        assert!(e
            .to_string()
            .starts_with("lock not obtained on a majority after 2 attempt(s); last: 1 of 5"));
        assert_eq!(e.tally().map(|t| t.granted), Some(1));
    }
}
