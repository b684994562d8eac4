//! The real timer, owned by xen-lite: the 8254 PIT on IRQ 0 of the 8259 PIC, at [`HZ`].
//!
//! Guests never see these devices. Each tick advances xen-lite's clock (the
//! `SharedInfo::system_time_ns` every domain reads), fires the domains' one-shot virtual timers
//! and drives preemptive scheduling. The PIT is chosen over the local APIC timer because its
//! frequency is fixed (1.193182 MHz), so no calibration is needed, and QEMU and Bochs both
//! model it. See: Intel 8254 and 8259A data sheets.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::devices::{timer_init_sequence, PIC1_COMMAND, PIC_EOI};

use crate::instructions::outb;

/// Timer interrupts per second.
pub const HZ: u64 = 1000;
/// Nanoseconds per tick.
pub const NS_PER_TICK: u64 = 1_000_000_000 / HZ;
/// The IDT vector IRQ 0 arrives on (the PIC is remapped past the exceptions).
pub const TIMER_VECTOR: u8 = 0x20;

/// The vector of IRQ 7 of the master PIC, where it reports a *spurious* interrupt: one that
/// went away between the PIC raising it and the CPU acknowledging it. It needs no EOI.
pub const SPURIOUS_VECTOR: u8 = TIMER_VECTOR + 7;

static TICKS: AtomicU64 = AtomicU64::new(0);

/// Remaps the PICs to vectors 0x20-0x2f, unmasks only IRQ 0, and starts the PIT at [`HZ`].
pub fn init() {
    for (port, value) in timer_init_sequence(TIMER_VECTOR, HZ) {
        // SAFETY: programming the PIC and PIT, which xen-lite alone owns.
        unsafe { outb(port, value) };
    }
}

/// Counts a tick and acknowledges it at the PIC; returns the new time in nanoseconds.
pub fn tick() -> u64 {
    // SAFETY: end-of-interrupt to the master PIC for the IRQ being handled.
    unsafe { outb(PIC1_COMMAND, PIC_EOI) };
    (TICKS.fetch_add(1, Ordering::Relaxed) + 1) * NS_PER_TICK
}

/// Ticks since [`init`].
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Nanoseconds since [`init`], at tick resolution.
pub fn now_ns() -> u64 {
    TICKS.load(Ordering::Relaxed) * NS_PER_TICK
}
