//! The world switch: all of the assembly around `vmrun`, and [`enter`], its Rust face.
//!
//! `vmrun` does not return like a call either: the guest runs until a `#VMEXIT`, and the CPU
//! then continues at the instruction after `vmrun`, with xen-lite's `rip`, `rsp`, `rax`,
//! `rflags`, control registers and segments restored from the host save area, and every other
//! general register still holding the guest's. The VMCB holds the guest's `rax` (and `rip`,
//! `rsp`, `rflags`) but no other general register. The steps of `svm_enter_guest(regs, vmcb,
//! host_vmcb)`:
//!
//!  1. Push xen-lite's callee-saved registers, the `host_vmcb` address and the `regs` pointer.
//!  2. `clgi`: the global interrupt flag off, so nothing at all is taken by xen-lite from here
//!     to step 8. `sti`: `vmrun` saves xen-lite's RFLAGS with IF = 1, and with V_INTR_MASKING
//!     that is what lets a physical interrupt end the guest's run (`#VMEXIT(INTR)`) whatever
//!     the guest does with its own IF. `rax` = the guest's VMCB, as `vmrun` wants.
//!  3. `vmload`: the guest's FS, GS, TR, LDTR and `syscall` MSRs from its VMCB (the part of
//!     the guest's state `vmrun` itself does not load).
//!  4. Load the guest's general registers but `rax` from the [`TrapFrame`] (`rdi` last: it
//!     holds the pointer) and `vmrun`. The guest runs.
//!  5. `#VMEXIT`: back after `vmrun` with `rax` = the guest's VMCB again and `rsp` as in step
//!     1, GIF = 0 and IF = 1 (the restored RFLAGS). Store the guest's registers but `rax` (the
//!     CPU saved it in the VMCB) into the frame at `[rsp]`.
//!  6. `vmsave`: the guest's FS, GS, TR, LDTR and `syscall` MSRs back into its VMCB.
//!  7. `vmload` of the host-state VMCB at `[rsp + 8]`: xen-lite's own TR (its interrupt stacks),
//!     FS, GS and LDTR again.
//!  8. `cli; stgi`: interrupts off in xen-lite as everywhere else, the global flag back on. A
//!     physical interrupt that ended the guest's run is still pending at the PIC: the run loop
//!     takes it (`crate::instructions::take_pending_interrupts`).
//!  9. Drop the two slots, pop the callee-saved registers and return.
//!
//! The stack between step 1 and step 9, from `rsp` up: the `regs` pointer; the host-state
//! VMCB's address; xen-lite's `r15`, `r14`, `r13`, `r12`, `rbp`, `rbx`; the return address.
//! Every frame offset is a `const offset_of!` operand. See: AMD64 APM Vol. 2, revision 3.42,
//! 15.5 (VMRUN), 15.6 (#VMEXIT), 15.17 (GIF), 15.21.1 (V_INTR_MASKING); Vol. 3, VMLOAD, VMSAVE.

use core::arch::global_asm;
use core::mem::offset_of;

use crate::entry::TrapFrame;

global_asm!(
    concat!(
        r#"
    .section .text.svm, "ax"
    .global svm_enter_guest
svm_enter_guest:                    // rdi = regs, rsi = guest VMCB, rdx = host-state VMCB (physical)
    "#,
        hypercall_abi::push_callee_saved!(),
        r#"
    push rdx                        // [rsp + 8]: the host-state VMCB
    push rdi                        // [rsp]: where the exit path saves the guest registers
    clgi
    sti                             // held off by GIF = 0; saved by vmrun as xen-lite's IF
    mov rax, rsi
    vmload rax
    mov rbx, [rdi + {rbx}]
    mov rcx, [rdi + {rcx}]
    mov rdx, [rdi + {rdx}]
    mov rsi, [rdi + {rsi}]
    mov rbp, [rdi + {rbp}]
    mov r8, [rdi + {r8}]
    mov r9, [rdi + {r9}]
    mov r10, [rdi + {r10}]
    mov r11, [rdi + {r11}]
    mov r12, [rdi + {r12}]
    mov r13, [rdi + {r13}]
    mov r14, [rdi + {r14}]
    mov r15, [rdi + {r15}]
    mov rdi, [rdi + {rdi}]
    .global svm_vmrun
svm_vmrun:                          // guest registers but rax; rax = guest VMCB (a label for gdb)
    vmrun rax

    .global svm_exit_entry
svm_exit_entry:                     // guest registers but rax; rax = guest VMCB, [rsp] = regs
    push rdi
    mov rdi, [rsp + 8]
    pop qword ptr [rdi + {rdi}]
    mov [rdi + {rbx}], rbx
    mov [rdi + {rcx}], rcx
    mov [rdi + {rdx}], rdx
    mov [rdi + {rsi}], rsi
    mov [rdi + {rbp}], rbp
    mov [rdi + {r8}], r8
    mov [rdi + {r9}], r9
    mov [rdi + {r10}], r10
    mov [rdi + {r11}], r11
    mov [rdi + {r12}], r12
    mov [rdi + {r13}], r13
    mov [rdi + {r14}], r14
    mov [rdi + {r15}], r15
    vmsave rax
    mov rax, [rsp + 8]
    vmload rax
    cli
    stgi
    add rsp, 16
    "#,
        hypercall_abi::pop_callee_saved!(),
        r#"
    ret
    "#
    ),
    rbx = const offset_of!(TrapFrame, rbx),
    rcx = const offset_of!(TrapFrame, rcx),
    rdx = const offset_of!(TrapFrame, rdx),
    rsi = const offset_of!(TrapFrame, rsi),
    rdi = const offset_of!(TrapFrame, rdi),
    rbp = const offset_of!(TrapFrame, rbp),
    r8 = const offset_of!(TrapFrame, r8),
    r9 = const offset_of!(TrapFrame, r9),
    r10 = const offset_of!(TrapFrame, r10),
    r11 = const offset_of!(TrapFrame, r11),
    r12 = const offset_of!(TrapFrame, r12),
    r13 = const offset_of!(TrapFrame, r13),
    r14 = const offset_of!(TrapFrame, r14),
    r15 = const offset_of!(TrapFrame, r15),
);

unsafe extern "sysv64" {
    fn svm_enter_guest(regs: *mut TrapFrame, vmcb: u64, host_vmcb: u64);
}

/// Runs the guest of the VMCB at physical address `vmcb` with the general registers in `regs`
/// (but `rax`, which the VMCB holds) until its next `#VMEXIT`, which saves them back.
/// `host_vmcb` holds xen-lite's state for `vmload` (`super::root`).
///
/// A VMCB `vmrun` refuses is not a fault: it is a `#VMEXIT` with code `VMEXIT_INVALID`.
pub fn enter(regs: &mut TrapFrame, vmcb: u64, host_vmcb: u64) {
    // SAFETY: `vmcb` was set up by `Vmcb::setup` (intercepting `vmrun`, nested paging confining
    // the guest to its memory), `host_vmcb` holds what `vmsave` stored of xen-lite, EFER.SVME
    // and VM_HSAVE_PA are set (`root::enable`), interrupts are off in xen-lite, and `regs` is a
    // valid frame the exit path writes back to before the call returns.
    unsafe { svm_enter_guest(regs, vmcb, host_vmcb) }
}
