//! Identifier newtypes. Each is a distinct type so a node id can never be passed as a key id.

/// A node's configured id, unique within a cluster. 0 is reserved (means "none" on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeId(pub u16);

/// A cluster's id: two clusters sharing one multicast group ignore each other's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ClusterId(pub u32);

/// A process lifetime of a node: strictly greater on every restart (unix seconds at start,
/// see docs/PROTOCOL.md for why this keeps AEAD nonces unique).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Incarnation(pub u32);

/// Selects a key of the keyring; lets a cluster rotate keys without downtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyId(pub u8);
