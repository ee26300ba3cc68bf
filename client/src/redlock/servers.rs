//! The independent servers of a Redlock: one lazily made multiplexed
//! connection each, and rounds of one command sent to all of them at once,
//! each request bounded by its own timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, RedisResult, Value};
use tokio::task::JoinHandle;

/// What one server answered to one request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A reply (possibly an error reply, as a value or as an error).
    Reply(RedisResult<Value>),
    /// No reply within the per-server timeout.
    TimedOut,
    /// Not sent: the server restarted too recently to be counted.
    Fresh(Duration),
}

/// The connection of one server, made on first use and again after it
/// broke.
struct Slot {
    generation: u64,
    conn: Option<MultiplexedConnection>,
    /// When the server started, as told by `INFO server` on connecting.
    up_since: Option<Instant>,
}

/// One server.
pub(crate) struct Node {
    client: redis::Client,
    pub(crate) name: String,
    slot: Mutex<Slot>,
}

impl Node {
    pub(crate) fn new(client: redis::Client) -> Self {
        let name = client.get_connection_info().addr().to_string();
        Node {
            client,
            name,
            slot: Mutex::new(Slot {
                generation: 0,
                conn: None,
                up_since: None,
            }),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot is always consistent: every update is one assignment.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection, made if there is none, and when the server started.
    async fn conn(&self) -> RedisResult<(u64, MultiplexedConnection, Option<Instant>)> {
        {
            let s = self.slot();
            if let Some(c) = &s.conn {
                return Ok((s.generation, c.clone(), s.up_since));
            }
        }
        // The caller's timeout bounds connecting; redis-rs's own timeouts
        // are off so that a slow server reads as "timed out", not "failed".
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let info = conn
            .req_packed_command(redis::cmd("INFO").arg("server"))
            .await;
        let up_since = match info {
            Ok(Value::BulkString(b)) => uptime(&String::from_utf8_lossy(&b)),
            Ok(Value::VerbatimString { text, .. }) => uptime(&text),
            _ => None,
        }
        .and_then(|up| Instant::now().checked_sub(up));
        let mut s = self.slot();
        s.generation += 1;
        s.conn = Some(conn.clone());
        s.up_since = up_since;
        Ok((s.generation, conn, up_since))
    }

    /// Forgets a broken connection (unless it was replaced already).
    fn forget(&self, generation: u64) {
        let mut s = self.slot();
        if s.generation == generation {
            s.conn = None;
        }
    }

    /// Sends `cmd` within `limit`, unless the server started less than
    /// `min_uptime` ago.
    pub(crate) async fn request(
        &self,
        cmd: &Cmd,
        limit: Duration,
        min_uptime: Duration,
    ) -> Outcome {
        let attempt = async {
            let (generation, mut conn, up_since) = self.conn().await?;
            if let Some(since) = up_since {
                let up = since.elapsed();
                if up < min_uptime {
                    return Ok(Err(min_uptime - up));
                }
            }
            let reply = conn.req_packed_command(cmd).await;
            if let Err(e) = &reply {
                // An error reply leaves the connection usable; anything else
                // (I/O, a dropped connection) does not.
                if e.code().is_none() {
                    self.forget(generation);
                }
            }
            reply.map(Ok)
        };
        match tokio::time::timeout(limit, attempt).await {
            Err(_) => Outcome::TimedOut,
            Ok(Ok(Err(left))) => Outcome::Fresh(left),
            Ok(Ok(Ok(v))) => Outcome::Reply(Ok(v)),
            Ok(Err(e)) => Outcome::Reply(Err(e)),
        }
    }
}

/// How long the server has surely been up, from `uptime_in_seconds` in
/// `INFO server`: a difference of whole seconds of the server's clock, so
/// up to a second more than the truth; one second less is never more.
fn uptime(info: &str) -> Option<Duration> {
    info.lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.saturating_sub(1)))
}

/// The servers.
pub(crate) struct Servers {
    pub(crate) nodes: Vec<Node>,
}

/// How requests are bounded: the per-server timeout, and how long a server
/// must have been up to count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) min_uptime: Duration,
}

impl Servers {
    /// A majority: N/2 + 1.
    pub(crate) fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }
}

/// Requests in flight to every server, one task each. Tasks are detached:
/// a request that was sent completes even if the round is dropped, and
/// [`Round::abandon_with`] orders a clean-up after all of them.
pub(crate) struct Round {
    tasks: Vec<Option<JoinHandle<Outcome>>>,
}

impl Round {
    /// Sends `cmd` to every server at once, each request bounded by
    /// `timeout`.
    pub(crate) fn start(
        servers: &Arc<Servers>,
        cmd: &Cmd,
        timeout: Duration,
        limits: Limits,
    ) -> Round {
        let tasks = (0..servers.nodes.len())
            .map(|i| {
                let (servers, cmd) = (servers.clone(), cmd.clone());
                Some(tokio::spawn(async move {
                    servers.nodes[i]
                        .request(&cmd, timeout, limits.min_uptime)
                        .await
                }))
            })
            .collect();
        Round { tasks }
    }

    /// Every server's outcome, in the servers' order.
    pub(crate) async fn outcomes(&mut self) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(self.tasks.len());
        for task in &mut self.tasks {
            // Taken only once finished: a drop midway leaves it for
            // `Abandon` to wait for.
            let outcome = match task.as_mut() {
                Some(t) => t.await.unwrap_or_else(|e| {
                    Outcome::Reply(Err(
                        std::io::Error::other(format!("request task: {e}")).into()
                    ))
                }),
                None => Outcome::TimedOut,
            };
            *task = None;
            out.push(outcome);
        }
        out
    }

    /// When the round is dropped before its outcomes were collected (the
    /// caller's future was dropped), releases `token` everywhere once every
    /// request has ended, so that no grant is left behind.
    pub(crate) fn abandon_with(
        self,
        servers: Arc<Servers>,
        limits: Limits,
        release: Cmd,
    ) -> Abandon {
        Abandon {
            round: Some(self),
            release: Some((servers, limits, release)),
        }
    }
}

/// A [`Round`] that releases its token if dropped while armed.
pub(crate) struct Abandon {
    round: Option<Round>,
    release: Option<(Arc<Servers>, Limits, Cmd)>,
}

impl Abandon {
    pub(crate) async fn outcomes(&mut self) -> Vec<Outcome> {
        match self.round.as_mut() {
            Some(r) => r.outcomes().await,
            None => Vec::new(),
        }
    }

    /// The grants are accounted for: nothing to release on drop.
    pub(crate) fn disarm(&mut self) {
        self.release = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let (Some(mut round), Some((servers, limits, release))) =
            (self.round.take(), self.release.take())
        else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = round.outcomes().await;
                let _ = Round::start(&servers, &release, limits.timeout, limits)
                    .outcomes()
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_read_from_info() {
        let info =
            "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\nuptime_in_days:0\r\n";
        assert_eq!(uptime(info), Some(Duration::from_secs(41)));
        assert_eq!(uptime("uptime_in_seconds:0\r\n"), Some(Duration::ZERO));
        assert_eq!(uptime("# Server\r\n"), None);
        assert_eq!(uptime("uptime_in_seconds:x\r\n"), None);
    }
}
