#![doc = include_str!("../README.md")]
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
pub use error::{AckStep, Error, Result};
pub use guard::LockGuard;
pub use loss::{loss_margin, LossReason, LossSignal};
pub use options::{
    Options, ReplicaAck, RetryStrategy, DEFAULT_LOCK_TIMEOUT, DEFAULT_RETRY_DELAY,
    DEFAULT_SERVER_WAIT_SLICE,
};
#[cfg(feature = "tokio")]
pub use redlock::{Redlock, RedlockError, RedlockGuard, RedlockLock, RedlockOptions};
pub use sync::Locker;
pub use token::{new_token, TOKEN_LEN};
#[cfg(feature = "tokio")]
pub use wait_conn::WaitConnections;

/// The code blocks of the project's top README run as doctests too (this
/// crate's README is its front page, so its blocks are doctests already).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct TopReadmeDoctests;
