//! The daemon's side of the operating system: the cluster socket, the clock, file descriptors,
//! the TCP servers' connection table, process memory settings and the incarnation state
//! file. Nothing here knows the protocol.

pub mod clock;
pub(crate) mod connections;
pub(crate) mod descriptors;
pub(crate) mod incarnation;
pub(crate) mod memory;
pub mod net;
