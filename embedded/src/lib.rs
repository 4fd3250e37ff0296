//! Board support shared by the firmware binaries: semihosting output and exit code, the
//! SysTick clock, and the stack high-water mark.
//!
//! The binaries: `demo` (two nodes over a lossy in-memory link, and the PROTOCOL.md test
//! vectors) for `run.sh`; `size-heartbeat`, `size-membership` and `size-node` (one
//! configuration each, 16 members, 16-slot retransmit ring) for `size.sh`.
//!
//! Only this crate uses `unsafe` (painting the stack); tandem-core forbids it.
#![no_std]

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use cortex_m_semihosting::debug;
// Links the board's interrupt vectors.
use lm3s6965 as _;
use tandem_core::frame::{EntryRepr, Op};
use tandem_core::{Instant, NodeId};

/// Writes `s` to the host's stdout (semihosting, no formatting machinery).
pub fn print(s: &str) {
    write(s.as_bytes());
}

/// The one semihosting write (kept out of line: the size configurations carry it once).
#[inline(never)]
fn write(bytes: &[u8]) {
    if let Ok(mut out) = cortex_m_semihosting::hio::hstdout() {
        let _ = out.write_all(bytes);
    }
}

/// Writes `v` in decimal. (u32: a u64 division would link 0.9 KiB of runtime support into
/// the size configurations that the core itself may not need.)
pub fn print_u32(mut v: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    write(&buf[i..]);
}

/// Prints `label`, `v` and a newline.
pub fn report(label: &str, v: u32) {
    print(label);
    print_u32(v);
    print("\n");
}

/// Ends the QEMU run with the host exit status 0 (`ok`) or 1.
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Prints `FAIL: what` and exits with status 1 unless `ok`.
pub fn check(ok: bool, what: &str) {
    if !ok {
        print("FAIL: ");
        print(what);
        print("\n");
        exit(false);
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // No formatting: keeps core::fmt out of the size configurations.
    print("FAIL: panic\n");
    exit(false)
}

// ---- test writes ----

/// The key of test write `i` (`k00`, `k01`, ... up to `k99`).
pub fn test_key(i: u8) -> [u8; 3] {
    [b'k', b'0' + i / 10 % 10, b'0' + i % 10]
}

/// A test write by node 1: `hello` under `key`, Lamport version `version`.
pub fn test_write(key: &[u8], version: u64) -> EntryRepr<'_> {
    EntryRepr {
        op: Op::Put,
        version,
        origin: NodeId(1),
        expires_at_ms: 0,
        key,
        total_len: 5,
        offset: 0,
        value: b"hello",
    }
}

// ---- clock ----

/// SysTick period. QEMU's lm3s6965evb clocks the core at 12 MHz.
pub const TICK_US: u64 = 100;
const CYCLES_PER_TICK: u32 = 12 * TICK_US as u32;

static TICKS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick as the clock [`now`] reads.
pub fn start_clock(mut syst: cortex_m::peripheral::SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_TICK - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// The MCU's monotonic clock: SysTick ticks since [`start_clock`].
pub fn now() -> Instant {
    Instant::from_micros(u64::from(TICKS.load(Ordering::Relaxed)) * TICK_US)
}

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

// ---- stack high-water mark ----

/// Written over the free stack at [`paint_stack`]; a word still holding it was never used.
const PAINT: u32 = 0xa5a5_a5a5;

extern "C" {
    /// End of .bss/.uninit (cortex-m-rt): the stack grows down towards it.
    static __sheap: u32;
    /// Initial stack pointer (cortex-m-rt): top of RAM.
    static _stack_start: u32;
}

fn stack_bottom() -> usize {
    // Only the symbol's address is taken, never its value.
    core::ptr::addr_of!(__sheap) as usize
}

fn stack_top() -> usize {
    core::ptr::addr_of!(_stack_start) as usize
}

/// Where [`paint_stack`] stopped painting: just below its caller's frame.
static PAINTED_TO: AtomicUsize = AtomicUsize::new(0);

/// Paints every free stack word below the caller's frame. Call it first thing in `main`,
/// then read [`stack_used`] (the bytes below the initial stack pointer that were ever
/// written) or [`stack_used_below_main`].
#[inline(never)]
pub fn paint_stack() {
    // 64 bytes of margin for this function's own frame.
    let sp = cortex_m::register::msp::read() as usize - 64;
    PAINTED_TO.store(sp, Ordering::Relaxed);
    let mut p = stack_bottom();
    while p < sp {
        // SAFETY: [__sheap, sp) is RAM that holds no live data: statics end at __sheap and
        // the stack in use is above sp.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Deepest stack use since [`paint_stack`], in bytes from the initial stack pointer: the
/// whole stack, `main`'s frame included.
pub fn stack_used() -> usize {
    stack_top() - deepest()
}

/// Deepest stack use since [`paint_stack`] below `main`'s frame: what the functions `main`
/// called needed (0 if none went deeper than the paint margin).
pub fn stack_used_below_main() -> usize {
    PAINTED_TO.load(Ordering::Relaxed).saturating_sub(deepest())
}

/// Lowest stack address written since [`paint_stack`].
fn deepest() -> usize {
    let mut p = stack_bottom();
    // SAFETY: reads of RAM words between the end of statics and the top of RAM.
    while p < stack_top() && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    p
}
