//! VM entry and VM exit: all of the assembly for both directions, and [`enter`], its Rust face.
//!
//! A VM entry does not return like a call: the guest runs until a VM exit, and the CPU then
//! resumes at the host `rip` and `rsp` of the VMCS with the guest's general registers still
//! loaded (the VMCS holds the guest's `rip`, `rsp`, `rflags`, control and segment registers,
//! but no other general register: SDM 28.3). These two labels make the pair look like one
//! ordinary call:
//!
//!  1. `vmx_enter_guest(regs, launched)` pushes xen-lite's callee-saved registers and the
//!     `regs` pointer, and writes that `rsp` into the VMCS as the host `rsp`.
//!  2. It loads the guest's general registers from the [`TrapFrame`] at `regs` (`rdi` last,
//!     since it holds the pointer) and executes `vmlaunch` on the first entry of this VMCS,
//!     `vmresume` after.
//!  3. If the entry itself fails, execution falls through with CF (VMfailInvalid) or ZF
//!     (VMfailValid) set: the function drops the `regs` slot and returns 1 or 2.
//!  4. Otherwise the guest runs. Its VM exit lands at `vmx_exit_entry` (the host `rip` that
//!     `vmcs::setup` writes, [`host_rip`]) on the stack of step 1, so the `regs` pointer is at
//!     `[rsp]`.
//!  5. `vmx_exit_entry` stores the guest's general registers into that frame, drops the slot,
//!     and returns 0 from `vmx_enter_guest` through the callee-saved registers of step 1.
//!
//! The stack between step 1 and step 5, from `rsp` up: the `regs` pointer; xen-lite's `r15`,
//! `r14`, `r13`, `r12`, `rbp`, `rbx`; the return address of the call to `vmx_enter_guest`.
//!
//! Every frame offset is a `const offset_of!` operand; the host-`rsp` field is the `x86`
//! crate's encoding. See: Intel SDM Vol. 3C, revision 086, 27 (VM entries), 28 (VM exits),
//! 31.3 (VMLAUNCH/VMRESUME and their failure flags).

use core::arch::global_asm;
use core::mem::offset_of;

use x86::vmx::vmcs::host;

use crate::entry::TrapFrame;
use crate::instructions::VmxStatus;

global_asm!(
    concat!(
        r#"
    .section .text.vmx, "ax"
    .global vmx_enter_guest
vmx_enter_guest:                    // rdi = regs, rsi = launched; rax = 0, or 1/2 if entry failed
    "#,
        hypercall_abi::push_callee_saved!(),
        r#"
    push rdi                        // [rsp]: where the exit path saves the guest registers
    mov rax, {host_rsp}
    vmwrite rax, rsp
    test rsi, rsi                   // launched? (`mov` leaves the flags alone from here)
    mov rax, [rdi + {rax}]
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
    jnz 1f
    vmlaunch
    jmp 2f
1:  vmresume
2:  mov eax, 1                      // the entry failed: CF means VMfailInvalid (1) ...
    jc 3f
    mov eax, 2                      // ... else ZF, VMfailValid (2)
3:  add rsp, 8
    jmp 4f

    .global vmx_exit_entry
vmx_exit_entry:                     // guest registers; rsp = host rsp, [rsp] = regs
    push rdi
    mov rdi, [rsp + 8]
    pop qword ptr [rdi + {rdi}]
    mov [rdi + {rax}], rax
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
    add rsp, 8
    xor eax, eax
4:
    "#,
        hypercall_abi::pop_callee_saved!(),
        r#"
    ret
    "#
    ),
    host_rsp = const host::RSP,
    rax = const offset_of!(TrapFrame, rax),
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
    fn vmx_enter_guest(regs: *mut TrapFrame, launched: u64) -> u64;
    static vmx_exit_entry: u8;
}

/// The host `rip` of every VMCS: where a VM exit lands.
pub fn host_rip() -> u64 {
    core::ptr::addr_of!(vmx_exit_entry) as u64
}

/// Runs the guest of the current VMCS with the general registers in `regs` until its next VM
/// exit, which saves them back. `Err` if the VM entry itself failed.
pub fn enter(regs: &mut TrapFrame, launched: bool) -> Result<(), VmxStatus> {
    // SAFETY: the current VMCS was set up by `vmcs::setup` (host state returning to
    // `vmx_exit_entry`), interrupts are off in xen-lite, and `regs` is a valid frame the exit
    // path writes back to before the call returns.
    match unsafe { vmx_enter_guest(regs, u64::from(launched)) } {
        0 => Ok(()),
        1 => Err(VmxStatus::FailInvalid),
        _ => Err(VmxStatus::FailValid),
    }
}
