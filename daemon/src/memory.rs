//! Process-wide memory settings.
//!
//! Transparent huge pages are turned off for the daemon, as redis-server does: the allocator
//! asks for them (`MADV_HUGEPAGE` on its arenas), and then the first write to each new 2 MiB
//! of heap zeroes the whole page inside one page fault. On the VMs this project runs on that
//! fault took 5-30 ms, once per 2 MiB of sessions a state transfer brings in: longer than the
//! `fast` profile's suspicion bound, in the middle of a loop turn. With 4 KiB pages the same
//! cost comes in pieces of a few microseconds.
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
