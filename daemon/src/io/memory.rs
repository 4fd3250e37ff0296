//! Process-wide memory settings.
//!
//! Transparent huge pages are turned off for the daemon, as redis-server does: the allocator
//! asks for them (`MADV_HUGEPAGE` on its arenas), and then the first write to each new 2 MiB
//! of heap zeroes the whole page inside one page fault. On the VMs this project runs on that
//! fault took 5-30 ms, once per 2 MiB of sessions a state transfer brings in: longer than the
//! `fast` profile's suspicion bound, in the middle of a loop turn. With 4 KiB pages the same
//! cost comes in pieces of a few microseconds.
//!
//! Freed memory stays with the allocator for reuse (mimalloc's purging is off), as glibc's
//! allocator mostly does too. mimalloc returns freed memory to the OS some milliseconds after
//! it is freed, but does that work inside a later allocation of the thread that owns it, all
//! at once: after a state transfer freed its 100 MB copy of the store, the next transfer's
//! first allocations stalled the loop for 15-21 ms (a false death on `fast`, once per
//! transfer); with purging off, none in the same runs. The cost: RSS stays at its high-water
//! mark, memory the daemon reuses for the next transfer or burst of clients.
//!
//! Panics: never.
#![allow(unsafe_code)]

use std::io;

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), including
/// memory the allocator already reserved: the kernel checks the flag at each fault.
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of
    // ours; it only sets a flag on this process's address space.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mimalloc's `mi_option_purge_delay` (the same position in its v2 and v3 `mimalloc.h`; the
/// sys crate has no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the allocator (module docs). Call before the loop starts.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set takes two integers and only stores the value in mimalloc's option
    // table; -1 is the documented "never purge" value of this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
