//! What xen-lite does with an exception: hands it to the mode that owns it, or reports it.
//!
//! xen-lite itself should never fault, so an exception here is a bug: report everything a
//! student needs to find it (vector, error code, all registers, where), then end the run with
//! a failure status. In `native` mode the guest runs on this IDT until it installs its own, so
//! its faults arrive here too and are reported as the guest's.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::devices::STATUS_HYPERVISOR_FAULT;

use crate::console::fatal_line;
use crate::entry::TrapFrame;
use crate::instructions::read_cr2;
use crate::memory_map::IMAGE_BASE;

/// Exception vector numbers and their properties. See: Intel SDM Vol. 3A, revision 086, 6.3.1.
pub struct Vector;

impl Vector {
    /// #DB: debug (single step, `int1`, breakpoints).
    pub const DEBUG: u8 = 1;
    /// NMI: non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// #BP: breakpoint (`int3`).
    pub const BREAKPOINT: u8 = 3;
    /// #OF: overflow (`into`).
    pub const OVERFLOW: u8 = 4;
    /// #DF: double fault.
    pub const DOUBLE_FAULT: u8 = 8;
    /// #GP: general protection.
    pub const GENERAL_PROTECTION: u8 = 13;
    /// #PF: page fault.
    pub const PAGE_FAULT: u8 = 14;
    /// #MC: machine check.
    pub const MACHINE_CHECK: u8 = 18;

    /// The mnemonic and description of an exception vector.
    pub fn name(vector: u64) -> (&'static str, &'static str) {
        const NAMES: [(&str, &str); 32] = [
            ("#DE", "divide error"),
            ("#DB", "debug"),
            ("NMI", "non-maskable interrupt"),
            ("#BP", "breakpoint"),
            ("#OF", "overflow"),
            ("#BR", "bound range exceeded"),
            ("#UD", "invalid opcode"),
            ("#NM", "device not available"),
            ("#DF", "double fault"),
            ("#MF", "coprocessor segment overrun"),
            ("#TS", "invalid TSS"),
            ("#NP", "segment not present"),
            ("#SS", "stack-segment fault"),
            ("#GP", "general protection"),
            ("#PF", "page fault"),
            ("#15", "reserved"),
            ("#MF", "x87 floating-point error"),
            ("#AC", "alignment check"),
            ("#MC", "machine check"),
            ("#XM", "SIMD floating-point exception"),
            ("#VE", "virtualization exception"),
            ("#CP", "control protection"),
            ("#22", "reserved"),
            ("#23", "reserved"),
            ("#24", "reserved"),
            ("#25", "reserved"),
            ("#26", "reserved"),
            ("#27", "reserved"),
            ("#HV", "hypervisor injection"),
            ("#VC", "VMM communication"),
            ("#SX", "security exception"),
            ("#31", "reserved"),
        ];
        NAMES.get(vector as usize).copied().unwrap_or(("INT", "external interrupt"))
    }
}

/// Called by `trap_common` for every vector with the saved state and the CR3 it interrupted;
/// returns the CR3 to resume with. In `pv` mode the timer, hypercalls and anything raised in
/// ring 1 or 3 belong to the domains; in `vmx` mode the timer (taken while idle; guests exit to
/// the run loop instead). A spurious PIC interrupt is ignored in every mode, and so is the #DB
/// a `syscall` with TF set raises on the entry's first instruction; any other exception in
/// xen-lite itself is fatal.
pub extern "C" fn handle_trap(frame: &mut TrapFrame, interrupted_cr3: u64) -> u64 {
    if frame.vector == u64::from(crate::timer::SPURIOUS_VECTOR) {
        return interrupted_cr3; // nothing happened: no EOI, no tick
    }
    if frame.vector == u64::from(Vector::DEBUG)
        && frame.cs & 3 == 0
        && interrupted_cr3 != crate::switcher::hypervisor_cr3()
        && crate::entry::is_entry_point(frame.rip)
    {
        return entry_single_step(frame, interrupted_cr3);
    }
    if frame.vector == u64::from(Vector::PAGE_FAULT)
        && frame.cs & 3 == 0
        && crate::entry::syscall_fast_writes().contains(&frame.rip)
        && crate::pv::active()
    {
        replay_syscall(frame);
        return crate::switcher::return_cr3();
    }
    let from_guest = frame.cs & 3 != 0;
    if from_guest && crate::trapmode::active() {
        crate::trapmode::guest_trapped(frame);
    }
    let ours = frame.vector == u64::from(crate::timer::TIMER_VECTOR) || from_guest;
    if crate::pv::active() && ours {
        crate::pv::handle(frame)
    } else if crate::hvm::active() && frame.vector == u64::from(crate::timer::TIMER_VECTOR) {
        crate::hvm::host_timer_interrupt()
    } else {
        fatal_exception(frame)
    }
    crate::switcher::return_cr3()
}

/// A guest's single step (or a #DB that `mov ss` delayed) arrived at CPL 0 on the first
/// instruction of one of xen-lite's entry points, with the guest's CR3 still loaded. A user ran
/// `syscall` with TF set: `syscall` clears TF (FMASK), but the single-step trap of the
/// instruction is still raised on the first instruction of `syscall_entry`, before it has
/// switched stacks (Intel SDM Vol. 3A, revision 086, 18.3.1.4; Bochs does the same; AMD does
/// not: Xen XSA-204). Or the guest ran `mov ss` with TF set and then `int n` (or anything that
/// faults), and the #DB that `mov ss` held back is delivered on the stub's first instruction
/// (CVE-2018-8897). Either way the frame landed on the #DB IST page and was moved off it, and
/// nothing has happened yet that needs undoing: return to the entry's first instruction, in the
/// address space it was in, and let it run. The guest's TF is in the frame of the entry (or,
/// for `syscall`, in `r11`) and reaches the guest kernel as it would natively.
fn entry_single_step(frame: &mut TrapFrame, interrupted_cr3: u64) -> u64 {
    const RFLAGS_TF: u64 = 1 << 8;
    frame.rflags &= !RFLAGS_TF;
    SYSCALL_SINGLE_STEPS.fetch_add(1, Ordering::Relaxed);
    interrupted_cr3
}

/// How many [`entry_single_step`] traps were ignored, for the end-of-run summary.
pub static SYSCALL_SINGLE_STEPS: AtomicU64 = AtomicU64::new(0);

/// The `syscall` fast path faulted on the guest's stack or shared page (the guest unmapped or
/// write-protected them): turn the frame back into the user's `syscall` and let the slow path,
/// which checks every rule, bounce it or kill the domain with the reason.
fn replay_syscall(frame: &mut TrapFrame) {
    use hypercall_abi::layout::selectors::{FLAT_RING3_CS, FLAT_RING3_DS};
    let (rip, rsp) = crate::switcher::interrupted_syscall();
    *frame = TrapFrame {
        vector: hypercall_abi::hypercall::SYSCALL_BOUNCE_VECTOR,
        error_code: 0,
        rip,
        cs: u64::from(FLAT_RING3_CS),
        rflags: frame.r11, // `syscall` saved the user's rflags there; the fast path keeps it
        rsp,
        ss: u64::from(FLAT_RING3_DS),
        rcx: rip,
        ..*frame
    };
    crate::pv::handle(frame)
}

/// Who was running when the exception hit.
fn culprit(frame: &TrapFrame) -> &'static str {
    if frame.rip >= IMAGE_BASE && frame.rip < crate::memory_map::DYNAMIC_START {
        "xen-lite"
    } else if frame.cs & 3 != 0 {
        "a guest"
    } else {
        "the native guest (domain 0)"
    }
}

/// Prints the exception report and ends the run with [`STATUS_HYPERVISOR_FAULT`].
pub fn fatal_exception(frame: &TrapFrame) -> ! {
    let (mnemonic, description) = Vector::name(frame.vector);
    fatal_line(format_args!(
        "FATAL: exception {mnemonic} ({description}, vector {}) in {}, error code {:#x}",
        frame.vector,
        culprit(frame),
        frame.error_code
    ));
    if frame.vector == u64::from(Vector::PAGE_FAULT) {
        fatal_line(format_args!("  cr2 {:#018x} (the address that faulted)", read_cr2()));
    }
    print_registers(frame);
    if culprit(frame) == "xen-lite" {
        fatal_line(format_args!(
            "  location: xen-lite+{:#x} (addr2line -f -i -C -e <xen-lite ELF> {:#x}: -i also names the inlined callers)",
            frame.rip - IMAGE_BASE,
            frame.rip - IMAGE_BASE
        ));
    }
    crate::exit::leave(STATUS_HYPERVISOR_FAULT)
}

/// One line of the register dump: up to four `name value` pairs.
struct RegisterRow<'a>(&'a [(&'static str, u64)]);

impl fmt::Display for RegisterRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(" ")?;
        for (name, value) in self.0 {
            write!(f, " {name:>6} {value:#018x}")?;
        }
        Ok(())
    }
}

/// Prints every register of `frame`, four per line.
fn print_registers(r: &TrapFrame) {
    let rows: [&[(&str, u64)]; 6] = [
        &[("rip", r.rip), ("cs", r.cs), ("rflags", r.rflags), ("rsp", r.rsp)],
        &[("ss", r.ss), ("rax", r.rax), ("rbx", r.rbx), ("rcx", r.rcx)],
        &[("rdx", r.rdx), ("rsi", r.rsi), ("rdi", r.rdi), ("rbp", r.rbp)],
        &[("r8", r.r8), ("r9", r.r9), ("r10", r.r10), ("r11", r.r11)],
        &[("r12", r.r12), ("r13", r.r13), ("r14", r.r14), ("r15", r.r15)],
        &[("cr3", crate::instructions::read_cr3())],
    ];
    for row in rows {
        fatal_line(format_args!("{}", RegisterRow(row)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_named() {
        assert_eq!(Vector::name(14), ("#PF", "page fault"));
        assert_eq!(Vector::name(200).0, "INT");
    }
}
