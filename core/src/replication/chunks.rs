//! How a value travels in chunks of at most [`MAX_CHUNK`] bytes (one write, same version,
//! `offset` growing, `total_len` the whole length), and how a receiver joins them again in
//! storage it provides.

use crate::frame::{EntryRepr, Op, MAX_KEY_LEN};
use crate::NodeId;

use super::MAX_CHUNK;

/// Chunks a value of `len` bytes travels in (an empty value is one chunk).
pub const fn chunk_count(len: usize) -> usize {
    if len == 0 {
        1
    } else {
        len.div_ceil(MAX_CHUNK)
    }
}

/// The value offset of each chunk of a value of `len` bytes, in order.
pub fn chunk_offsets(len: usize) -> impl Iterator<Item = usize> {
    (0..chunk_count(len)).map(|c| c * MAX_CHUNK)
}

/// The bytes the chunk at `offset` carries (empty past the end).
pub fn chunk_at(value: &[u8], offset: usize) -> &[u8] {
    let end = offset.saturating_add(MAX_CHUNK).min(value.len());
    value.get(offset..end).unwrap_or(&[])
}

/// Whether `e` carries its whole value.
pub fn is_whole(e: &EntryRepr<'_>) -> bool {
    e.offset == 0 && e.value.len() as u64 == u64::from(e.total_len)
}

/// What [`Reassembly::accept`] made of a chunk, and what the caller does with its value
/// buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A whole value: apply the entry as it is; a value being joined is left alone.
    Whole,
    /// The first chunk of a new value: clear the buffer, append the chunk's bytes.
    Started,
    /// The next chunk: append its bytes.
    Continued,
    /// The last chunk: append its bytes, then apply [`Reassembly::entry`] of the buffer.
    Done,
    /// A later chunk with no value being joined (its start was refused or never came):
    /// dropped.
    Orphan,
    /// The value is larger than the caller's bound: dropped, nothing stored.
    TooLarge,
    /// A chunk that does not continue the value being joined (another write, a gap, more
    /// bytes than announced): dropped with the value.
    OutOfOrder,
}

/// The value of one sender being joined from chunks; the bytes live in the caller's buffer.
#[derive(Clone, Debug, Default)]
pub struct Reassembly {
    joining: Option<Joining>,
}

#[derive(Clone, Debug)]
struct Joining {
    op: Op,
    version: u64,
    origin: NodeId,
    expires_at_ms: u64,
    key: heapless::Vec<u8, MAX_KEY_LEN>,
    total_len: u32,
    received: u32,
    done: bool,
}

impl Reassembly {
    pub const fn new() -> Reassembly {
        Reassembly { joining: None }
    }

    /// Takes chunk `e` of a value of at most `max_value` bytes; see [`Part`] for what the
    /// caller does with its buffer. Never sized by the peer's numbers: a value is refused
    /// before its first byte when `total_len` is over `max_value`.
    pub fn accept(&mut self, e: &EntryRepr<'_>, max_value: usize) -> Part {
        if is_whole(e) {
            return Part::Whole;
        }
        if e.offset == 0 {
            self.joining = None;
            if e.total_len as usize > max_value || e.value.len() > e.total_len as usize {
                return Part::TooLarge;
            }
            let Ok(key) = heapless::Vec::from_slice(e.key) else {
                return Part::OutOfOrder;
            };
            self.joining = Some(Joining {
                op: e.op,
                version: e.version,
                origin: e.origin,
                expires_at_ms: e.expires_at_ms,
                key,
                total_len: e.total_len,
                received: e.value.len() as u32,
                done: false,
            });
            return Part::Started;
        }
        let Some(j) = self.joining.as_mut().filter(|j| !j.done) else {
            return Part::Orphan;
        };
        let fits = j.version == e.version
            && j.origin == e.origin
            && j.key[..] == *e.key
            && j.total_len == e.total_len
            && j.received == e.offset
            && u64::from(j.received) + e.value.len() as u64 <= u64::from(j.total_len);
        if !fits {
            self.joining = None;
            return Part::OutOfOrder;
        }
        // Bounded by the check above: received + len <= total_len (a u32).
        j.received += e.value.len() as u32;
        if j.received == j.total_len {
            j.done = true;
            Part::Done
        } else {
            Part::Continued
        }
    }

    /// The whole entry once [`Part::Done`], its value the caller's joined `value`.
    pub fn entry<'a>(&'a self, value: &'a [u8]) -> Option<EntryRepr<'a>> {
        let j = self.joining.as_ref().filter(|j| j.done)?;
        (value.len() == j.total_len as usize).then_some(EntryRepr {
            op: j.op,
            version: j.version,
            origin: j.origin,
            expires_at_ms: j.expires_at_ms,
            key: &j.key,
            total_len: j.total_len,
            offset: 0,
            value,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;
    use std::vec::Vec;

    fn part<'a>(
        key: &'a [u8],
        version: u64,
        total: u32,
        offset: u32,
        v: &'a [u8],
    ) -> EntryRepr<'a> {
        EntryRepr {
            op: Op::Put,
            version,
            origin: NodeId(2),
            expires_at_ms: 0,
            key,
            total_len: total,
            offset,
            value: v,
        }
    }

    /// Feeds `parts` into a reassembly and the caller's buffer as [`Part`] says; returns the
    /// parts' results and the joined values.
    fn feed(parts: &[EntryRepr<'_>], max: usize) -> (Vec<Part>, Vec<Vec<u8>>) {
        let mut r = Reassembly::new();
        let mut buf = Vec::new();
        let (mut got, mut whole) = (Vec::new(), Vec::new());
        for e in parts {
            let p = r.accept(e, max);
            match p {
                Part::Started => {
                    buf.clear();
                    buf.extend_from_slice(e.value);
                }
                Part::Continued => buf.extend_from_slice(e.value),
                Part::Done => {
                    buf.extend_from_slice(e.value);
                    let entry = r.entry(&buf).unwrap();
                    assert_eq!((entry.key, entry.offset), (b"k".as_slice(), 0));
                    whole.push(entry.value.to_vec());
                }
                _ => {}
            }
            got.push(p);
        }
        (got, whole)
    }

    #[test]
    fn chunks_join_in_order_and_refuse_gaps_other_writes_and_oversize() {
        let value: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let chunks: Vec<EntryRepr<'_>> = chunk_offsets(value.len())
            .map(|o| part(b"k", 1, 2500, o as u32, chunk_at(&value, o)))
            .collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2].value.len(), 2500 - 2 * MAX_CHUNK);
        use Part::*;
        let (p, whole) = feed(&chunks, 4096);
        assert_eq!(p, [Started, Continued, Done]);
        assert_eq!(whole, core::slice::from_ref(&value));
        // A whole entry between parts leaves the value being joined alone.
        let w = part(b"x", 9, 2, 0, b"ab");
        let (p, whole) = feed(&[chunks[0], w, chunks[1], chunks[2]], 4096);
        assert_eq!(p, [Started, Whole, Continued, Done]);
        assert_eq!(whole.len(), 1);
        // A gap, another version, a repeated chunk: the value is dropped; later parts orphaned.
        assert_eq!(
            feed(&[chunks[0], chunks[2], chunks[1]], 4096).0,
            [Started, OutOfOrder, Orphan]
        );
        let other = part(b"k", 2, 2500, 1024, chunk_at(&value, 1024));
        assert_eq!(feed(&[chunks[0], other], 4096).0, [Started, OutOfOrder]);
        assert_eq!(feed(&[chunks[0], chunks[0]], 4096).0, [Started, Started]);
        assert_eq!(feed(&[chunks[1]], 4096).0, [Orphan]);
        // Over the caller's bound: refused at the first chunk, nothing to store.
        assert_eq!(feed(&chunks, 2499).0, [TooLarge, Orphan, Orphan]);
        // More bytes than announced.
        let liar = part(b"k", 1, 1030, 1024, &value[..MAX_CHUNK]);
        assert_eq!(
            feed(&[part(b"k", 1, 1030, 0, &value[..MAX_CHUNK]), liar], 4096).0,
            [Started, OutOfOrder]
        );
        // Done once: a chunk after the end is an orphan.
        assert_eq!(
            feed(&[chunks[0], chunks[1], chunks[2], chunks[2]], 4096).0,
            [Started, Continued, Done, Orphan]
        );
    }

    #[test]
    fn chunk_plan_covers_every_byte_once() {
        for len in [0, 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 5 * MAX_CHUNK] {
            let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let joined: Vec<u8> = chunk_offsets(len)
                .flat_map(|o| chunk_at(&value, o).to_vec())
                .collect();
            assert_eq!(joined, value);
            assert_eq!(chunk_offsets(len).count(), chunk_count(len));
            assert!(chunk_count(len) >= 1);
        }
        assert_eq!(chunk_at(b"abc", 7), b"");
    }
}
