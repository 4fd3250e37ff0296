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
/// never below the floor persisted in the daemon's state directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Incarnation(pub u32);

/// Selects a key of the keyring; lets a cluster rotate keys without downtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyId(pub u8);

/// A random value a node draws at every start and carries in every frame header (48 bits).
/// Its sending keys are derived from it (see [`crate::crypto::run_key`]), so two runs with one
/// node id and incarnation (a cloned VM, a clock stepped back) still never share a nonce
/// stream: that needs the same 48 random bits as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Salt(pub [u8; 6]);

impl Salt {
    /// The 48 bits as one number: compared in two words, where the derived byte-array
    /// compare takes six (flash on a microcontroller).
    pub const fn to_u64(self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, 0, 0])
    }
}
