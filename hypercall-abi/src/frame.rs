//! The trap frame: the register state both kernels' exception entries save, and the part of it
//! the CPU (or a xen-lite bounce) pushes.
//!
//! The upper part, from `rip` to `ss`, is the x86-64 interrupt frame, laid out by the hardware;
//! `error_code` is pushed by the CPU for the vectors in [`ERROR_CODE_VECTORS`] and as a zero by
//! the entry stub for all others, so every frame has one shape; `vector` is pushed by the stub;
//! the general registers by the common entry code. xen-lite's entry (`xen-lite/src/entry.rs`)
//! and the guest's (`pv-guest/src/traps.rs`) build exactly this, so a bounce frame written by
//! xen-lite is read by the guest as if the CPU had written it. See: Intel SDM Vol. 3A,
//! revision 086, 6.14.1 (64-bit mode stack frame).

use core::mem::{offset_of, size_of};

/// Bit `n` set: the CPU pushes an error code for exception `n` (#DF, #TS, #NP, #SS, #GP, #PF,
/// #AC, #CP, #VC, #SX). The one statement of this set; both kernels assemble their stubs from
/// it. See: Intel SDM Vol. 3A, revision 086, Table 6-1.
pub const ERROR_CODE_VECTORS: u32 = 1 << 8
    | 1 << 10
    | 1 << 11
    | 1 << 12
    | 1 << 13
    | 1 << 14
    | 1 << 17
    | 1 << 21
    | 1 << 29
    | 1 << 30;

/// Whether the CPU pushes an error code for `vector`.
pub const fn has_error_code(vector: u64) -> bool {
    vector < 32 && ERROR_CODE_VECTORS >> vector & 1 == 1
}

/// Saved state, lowest address first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Pushed by the entry stub.
    pub vector: u64,
    /// Pushed by the CPU, or a zero pushed by the stub.
    pub error_code: u64,
    /// From here on: the hardware interrupt frame.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// The general registers by their encoding number (rax = 0, rcx, rdx, rbx, rsp, rbp, rsi,
    /// rdi, r8 ... r15 = 15), as ModRM and REX name them.
    pub fn registers(&self) -> [u64; 16] {
        let f = self;
        [
            f.rax, f.rcx, f.rdx, f.rbx, f.rsp, f.rbp, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11,
            f.r12, f.r13, f.r14, f.r15,
        ]
    }

    /// General register `index` (its encoding number, modulo 16).
    pub fn register_mut(&mut self, index: u8) -> &mut u64 {
        let f = self;
        match index & 15 {
            0 => &mut f.rax,
            1 => &mut f.rcx,
            2 => &mut f.rdx,
            3 => &mut f.rbx,
            4 => &mut f.rsp,
            5 => &mut f.rbp,
            6 => &mut f.rsi,
            7 => &mut f.rdi,
            8 => &mut f.r8,
            9 => &mut f.r9,
            10 => &mut f.r10,
            11 => &mut f.r11,
            12 => &mut f.r12,
            13 => &mut f.r13,
            14 => &mut f.r14,
            _ => &mut f.r15,
        }
    }
}

/// Assembly that pushes the general registers so that, with the vector and error code already
/// pushed, they complete a [`TrapFrame`] at `rsp` (r15 first, rax last: the struct lists them
/// from the lowest address). For the kernels' entry code:
/// `global_asm!(concat!("...", hypercall_abi::push_registers!(), "..."))`.
#[macro_export]
macro_rules! push_registers {
    () => {
        "push r15\npush r14\npush r13\npush r12\npush r11\npush r10\npush r9\npush r8\npush rbp\npush rdi\npush rsi\npush rdx\npush rcx\npush rbx\npush rax\n"
    };
}

/// The reverse of [`push_registers!`]: pops a [`TrapFrame`]'s general registers, leaving `rsp`
/// at its `vector`.
#[macro_export]
macro_rules! pop_registers {
    () => {
        "pop rax\npop rbx\npop rcx\npop rdx\npop rsi\npop rdi\npop rbp\npop r8\npop r9\npop r10\npop r11\npop r12\npop r13\npop r14\npop r15\n"
    };
}

/// Assembly that saves the registers the C calling convention makes a callee keep (rbx, rbp,
/// r12 to r15): for the entry code that leaves a Rust caller for a guest and comes back to it
/// later, as if from a call. [`pop_callee_saved!`] restores them.
#[macro_export]
macro_rules! push_callee_saved {
    () => {
        "push rbx\npush rbp\npush r12\npush r13\npush r14\npush r15\n"
    };
}

/// The reverse of [`push_callee_saved!`].
#[macro_export]
macro_rules! pop_callee_saved {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop rbp\npop rbx\n"
    };
}

/// Assembly that opens a region of entry code the CPU jumps into (an interrupt, `syscall`, a VM
/// exit): the region's unwind information says it has no caller (`rip` undefined), so gdb's
/// `bt` ends there with the handler that was called from it, instead of reading whatever lies
/// on the stack as return addresses. The table goes to `.debug_frame`, beside the compiler's,
/// which no boot image carries. Close the region with [`entry_code_end!`].
#[macro_export]
macro_rules! entry_code_begin {
    () => {
        ".cfi_sections .debug_frame\n.cfi_startproc\n.cfi_undefined rip\n"
    };
}

/// Closes a region opened with [`entry_code_begin!`].
#[macro_export]
macro_rules! entry_code_end {
    () => {
        ".cfi_endproc\n"
    };
}

/// Bytes of general registers the common entry code pushes: everything below `vector`.
pub const SAVED_REGISTERS: usize = offset_of!(TrapFrame, vector);
/// Bytes the stub pushes (vector and error code) between the registers and the CPU's frame.
pub const STUB_PUSHED: usize = offset_of!(TrapFrame, rip) - SAVED_REGISTERS;

const _: () = assert!(SAVED_REGISTERS == 15 * 8, "the entry code pushes fifteen registers");
const _: () = assert!(STUB_PUSHED == 16, "vector + error code");
// The CPU aligns RSP to 16 before pushing its frame; keeping the whole frame a multiple of 16
// keeps the call into Rust ABI-aligned.
const _: () = assert!(size_of::<TrapFrame>().is_multiple_of(16));

impl TrapFrame {
    /// The ring the interrupted code ran in (RPL of the saved CS).
    pub const fn ring(&self) -> u64 {
        self.cs & 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn registers_are_numbered_as_the_encoding_numbers_them() {
        let mut frame = TrapFrame { rcx: 1, rsp: 4, r9: 9, r15: 15, ..TrapFrame::default() };
        let numbered = frame.registers();
        assert_eq!((numbered[1], numbered[4], numbered[9], numbered[15]), (1, 4, 9, 15));
        for index in 0..16u8 {
            *frame.register_mut(index) = u64::from(index) + 100;
        }
        assert_eq!(frame.registers(), core::array::from_fn(|i| i as u64 + 100));
    }

    #[test]
    fn error_code_vectors_match_the_manual() {
        let with: [u64; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
        for vector in 0..64 {
            assert_eq!(has_error_code(vector), with.contains(&vector), "vector {vector}");
        }
    }

    #[test]
    fn the_push_order_is_the_field_order_reversed() {
        let pushed: Vec<&str> =
            push_registers!().lines().map(|l| l.trim_start_matches("push ")).collect();
        let popped: Vec<&str> =
            pop_registers!().lines().map(|l| l.trim_start_matches("pop ")).collect();
        assert_eq!(pushed.len(), SAVED_REGISTERS / 8);
        assert_eq!(popped.first(), Some(&"rax"), "the lowest field is popped first");
        let mut reversed = popped.clone();
        reversed.reverse();
        assert_eq!(pushed, reversed);
    }

    #[test]
    fn the_hardware_part_is_on_top() {
        assert_eq!(offset_of!(TrapFrame, rip), 17 * 8);
        assert_eq!(offset_of!(TrapFrame, ss), 21 * 8);
        assert_eq!(size_of::<TrapFrame>(), 176);
    }
}
