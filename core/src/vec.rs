//! Helpers for heapless vectors.

use heapless::Vec;

/// `v.swap_remove(i)` by a swap of two disjoint elements and `pop`, `None` if `i` is out of
/// range. heapless's own moves with `ptr::copy` (may overlap), which at opt-level `s` links
/// a 1.5 KiB `memmove` into a Cortex-M image that needs none otherwise.
pub(crate) fn swap_remove<T, const N: usize>(v: &mut Vec<T, N>, i: usize) -> Option<T> {
    if i >= v.len() {
        return None;
    }
    let last = v.len() - 1;
    let (head, tail) = v.split_at_mut(last);
    if let (Some(a), Some(b)) = (head.get_mut(i), tail.first_mut()) {
        core::mem::swap(a, b);
    }
    v.pop()
}
