//! The `hvm` kernel's timer: the 8254 PIT on IRQ 0 of the 8259 PIC, which it programs itself
//! when it binds its timer. The interrupts arrive at the event entry, and
//! `take_pending_events` turns an expired deadline into an event on `TIMER_PORT`, as
//! xen-lite's timer VIRQ would, so the kernel's events code is the same in both flavours.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::devices;
use hypercall_abi::hypercall::Errno;

/// The vector the PIC raises IRQ 0 at.
pub const TIMER_VECTOR: u8 = 0x20;
const TIMER_PORT: u64 = 1;
const TICK_NS: u64 = 10_000_000;
static TICKS: AtomicU64 = AtomicU64::new(0);
static DEADLINE: AtomicU64 = AtomicU64::new(0);
static TIMER_BOUND: AtomicBool = AtomicBool::new(false);

/// Acknowledges the timer interrupt at the PIC and counts the tick.
pub fn acknowledge_event() {
    // SAFETY: end-of-interrupt to the master PIC.
    unsafe { x86::io::outb(devices::PIC1_COMMAND, devices::PIC_EOI) };
    TICKS.fetch_add(1, Ordering::Relaxed);
}

fn timer_due() -> bool {
    let deadline = DEADLINE.load(Ordering::Relaxed);
    TIMER_BOUND.load(Ordering::Relaxed)
        && deadline != 0
        && TICKS.load(Ordering::Relaxed) * TICK_NS >= deadline
}

/// Whether the timer's deadline has passed.
pub fn upcall_pending() -> bool {
    timer_due()
}

/// The timer port, once its deadline has passed (then the deadline is spent).
pub fn take_pending_events() -> u64 {
    if timer_due() {
        DEADLINE.store(0, Ordering::Relaxed);
        1 << TIMER_PORT
    } else {
        0
    }
}

/// Whether `port` has an event waiting.
pub fn port_pending(port: u64) -> bool {
    port == TIMER_PORT && timer_due()
}

/// Time since the timer was bound, at tick resolution.
pub fn now_ns() -> Result<u64, Errno> {
    Ok(TICKS.load(Ordering::Relaxed) * TICK_NS)
}

/// Arms the one-shot deadline (checked on every tick).
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    DEADLINE.store(deadline_ns, Ordering::Relaxed);
    Ok(())
}

/// Programs the PIC (IRQ 0 only, at vector 0x20) and the PIT (100 Hz); returns the timer port.
pub fn bind_timer() -> Result<u64, Errno> {
    if TIMER_BOUND.swap(true, Ordering::Relaxed) {
        return Err(Errno::EBUSY);
    }
    for (port, value) in devices::timer_init_sequence(TIMER_VECTOR, 1_000_000_000 / TICK_NS) {
        // SAFETY: programming the PIC and PIT, which this kernel owns in native mode.
        unsafe { x86::io::outb(port, value) };
    }
    Ok(TIMER_PORT)
}
