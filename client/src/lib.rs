//! Client for the lock Redis module: distributed locks with token-checked
//! release, fencing tokens, watchdog renewal and server-side FIFO waiting,
//! behind the API of the Go library `bsm/redis-lock`.
//!
//! The module (`liblock.so`) offers three commands; this crate drives them:
//!
//! | command | reply |
//! |---|---|
//! | `LOCK.ACQUIRE key token ms [WAIT timeout-ms]` | fencing token when the caller holds the lock (fresh or renewed), nil when someone else does |
//! | `LOCK.RELEASE key token` | 1 released, 0 not ours |
//! | `LOCK.CHECK key token` | remaining ms if ours, -1 no expiry, 0 otherwise |
//!
//! # Quick use
//!
//! ```no_run
//! # fn main() -> Result<(), redis_fenced_lock::Error> {
//! use redis_fenced_lock::{Locker, Options};
//!
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! let mut locker = Locker::new(client.get_connection()?, "lock.foo", Options::default());
//! if locker.lock()? {
//!     // ... the protected work, passing locker.fence() to the resource ...
//!     locker.unlock()?;
//! } else {
//!     println!("someone else holds it");
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Locker`] (blocking) works over any [`redis::ConnectionLike`]: a
//!   `Connection`, `&mut Connection`, an r2d2 pooled connection, the cluster
//!   connection. [`AsyncLocker`] (feature `tokio`, on by default) works over
//!   `MultiplexedConnection` and `ConnectionManager`. Both run the same
//!   state machine, so they behave the same.
//! - [`Options`]: bsm/redis-lock's lock timeout (5 s), retry count (0), retry delay
//!   (100 ms) and token prefix, plus [`RetryStrategy`] and server-side
//!   waiting.
//! - [`LockGuard`] / [`AsyncLockGuard`] release on drop and can run a
//!   watchdog that renews the lock and reports a loss ([`LossSignal`]).
//! - [`Error`] is typed: [`Error::NotObtained`], [`Error::UnlockFailed`],
//!   [`Error::Cancelled`], [`Error::ModuleNotLoaded`] (with how to load it),
//!   [`Error::Redis`].
//! - [`Redlock`] (feature `tokio`): one lock over N independent servers,
//!   granted by a majority, with the same obtain / refresh / release /
//!   guard API; see the [`redlock`] module for what its fence guarantees.

#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod aio;
mod cancel;
#[cfg(feature = "tokio")]
mod client;
mod commands;
mod core;
mod error;
mod guard;
mod loss;
mod options;
#[cfg(feature = "tokio")]
pub mod redlock;
pub mod retry;
mod signal;
mod sync;
mod token;
#[cfg(feature = "tokio")]
mod wait_conn;
mod watchdog;

#[cfg(feature = "tokio")]
pub use aio::{AsyncLockGuard, AsyncLocker};
pub use cancel::CancelHandle;
#[cfg(feature = "tokio")]
pub use client::{Lock, LockClient, LockHandleGuard, ObtainOptions};
pub use core::LockState;
pub use error::{Error, Result};
pub use guard::LockGuard;
pub use loss::{loss_margin, LossReason, LossSignal};
pub use options::{
    Options, RetryStrategy, DEFAULT_LOCK_TIMEOUT, DEFAULT_RETRY_DELAY, DEFAULT_SERVER_WAIT_SLICE,
};
#[cfg(feature = "tokio")]
pub use redlock::{Redlock, RedlockError, RedlockGuard, RedlockLock, RedlockOptions};
pub use sync::Locker;
pub use token::{new_token, TOKEN_LEN};
#[cfg(feature = "tokio")]
pub use wait_conn::WaitConnections;

/// The code blocks of this crate's README (its front page) compile as
/// doctests, so that the documented examples cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The same for the project's top README.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct TopReadmeDoctests;
