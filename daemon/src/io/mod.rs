//! The daemon's side of the operating system: the cluster socket, the clock, file descriptors,
//! process memory settings and the incarnation state file. Nothing here knows the protocol.

pub mod clock;
pub mod descriptors;
pub mod incarnation;
pub mod memory;
pub mod net;
