//! tandem-core: the sans-IO heart of tandem.
//!
//! Nothing in this crate reads a clock, opens a socket or allocates. The caller passes the
//! current [`Instant`] and received bytes in, and takes bytes to send, events and the next
//! deadline out (the quinn-proto shape: `handle_*` in, `poll_*` out).
//!
//! Modules, top-down:
//! - [`time`]: the caller's monotonic clock as a newtype.
//! - [`id`]: newtypes for node, cluster, incarnation and key ids.
//! - [`frame`]: the wire format (zerocopy header + validated `Repr` per frame kind).
//! - [`crypto`]: AEAD sealing/opening, keyring with rotation, replay window.
//! - [`detector`]: poll-free failure detector (fixed and phi-accrual deadlines).
//! - [`membership`]: members, incarnations, leader election, quorum.
//! - [`replication`]: per-sender sequences, gap detection, retransmit ring, state sync and
//!   its pacing.
//! - [`datagram`]: frames packed into datagrams per destination, and split again.
//! - [`testing`]: the one seedable PRNG of every simulator.
//! - `vec`: helpers for heapless vectors (flash-lean removal).
//!
//! Panics: parsing never panics, whatever the bytes. Functions that take caller-provided
//! output buffers document their minimum sizes and return an error when they are too small.
#![no_std]
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

// `arbitrary`'s derive names `::std`; the feature is for fuzzing on a host only.
#[cfg(any(test, feature = "arbitrary"))]
extern crate std;

pub mod id;
pub mod time;
mod vec;

pub mod crypto;
pub mod detector;
pub mod frame;
pub mod membership;
pub mod node;
pub mod replication;

pub mod datagram;

pub mod testing;

pub use id::{ClusterId, Incarnation, KeyId, NodeId, Salt};
pub use time::Instant;
