//! The core node as the daemon instantiates it: its cipher and storage sizes.

use tandem_core::node::Node;
use tandem_core::replication::Slot;

use crate::engine::cipher::Cipher;

/// Most peers (this node excluded): the members the core node tracks, and the unicast
/// peers (each frame is sent once per peer).
pub const MAX_PEERS: usize = 16;
/// Retransmit ring slots (about 1.3 KiB each): the stream history a lagging peer can
/// recover from before it needs a full state sync.
pub const RING_SLOTS: usize = 4096;
/// Reorder buffer slots shared by all origins: one lost frame does not stall the rest.
pub const REORDER_SLOTS: usize = 256;

/// The core node as the daemon instantiates it.
pub type CoreNode = Node<Cipher, Box<[Slot]>, MAX_PEERS, Box<[Slot]>>;
