//! The thin layer that talks to Redis: command registration, argument
//! access, keys, replies, replication, INFO and configuration. Decisions
//! are made in [`crate::logic`].

pub mod api;
pub mod commands;
pub mod config;
pub mod fencing;
pub mod key;
pub mod register;
pub mod slots;
pub mod stats;
pub mod waiters;
