//! The `syscall` instruction's configuration: where it enters, with which selectors, which
//! flags it clears.
//!
//! In `pv` mode a user program's `syscall` enters ring 0 whatever the guest wants (x86-64
//! `syscall` always targets CPL 0), so xen-lite takes it and bounces it to the guest kernel's
//! registered callback (`pv::bounce::deliver`). The alternative path, `int 0x80`, never comes here
//! (`idt::set_fast_trap`). See: Intel SDM Vol. 3A, revision 086, 5.8.8.

use x86::msr::{IA32_EFER, IA32_FMASK, IA32_LSTAR, IA32_STAR};

use crate::gdt::HYPERVISOR_CS;
use crate::instructions::{rdmsr, wrmsr};

/// EFER.SCE: `syscall`/`sysret` enabled.
const EFER_SCE: u64 = 1;
/// RFLAGS bits `syscall` clears: IF (no interrupt before the entry stack is set up), TF, DF,
/// AC, NT.
const FMASK: u64 = 1 << 9 | 1 << 8 | 1 << 10 | 1 << 18 | 1 << 14;

/// Points `syscall` at `entry`.
pub fn init(entry: u64) {
    // STAR[47:32]: CS for `syscall` (SS is that + 8: xen-lite's data). STAR[63:48] would serve
    // `sysretq`, which xen-lite never executes (returns to ring 1 need `iretq`).
    let star = u64::from(HYPERVISOR_CS.bits()) << 32;
    // SAFETY: these MSRs exist on every x86-64 CPU; the entry point is the switcher's syscall
    // entry, mapped in every address space `syscall` can come from.
    unsafe {
        wrmsr(IA32_STAR, star);
        wrmsr(IA32_LSTAR, entry);
        wrmsr(IA32_FMASK, FMASK);
        wrmsr(IA32_EFER, rdmsr(IA32_EFER) | EFER_SCE);
    }
}
