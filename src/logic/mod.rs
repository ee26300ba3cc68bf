//! Pure lock logic: argument parsing, the stored value's encoding, fencing
//! and the decisions each command makes. Nothing here touches Redis, so unit
//! and property tests drive it without a server.

pub mod args;
pub mod decide;
pub mod fence;
pub mod queue;
pub mod settings;
pub mod timing;
pub mod value;
