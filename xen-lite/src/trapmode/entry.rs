//! Into the guest and back, as a call: [`enter`] runs a `mode=trap` guest from a register
//! frame until its next trap, and returns with the frame the trap left (and CR2).
//!
//! The guest runs in ring 1 and every way out of it is a trap through xen-lite's IDT (or its
//! `syscall` entry) into `trap_common` (`crate::entry`), on xen-lite's handler stack, never on
//! the stack [`enter`] was called on. So `trapmode_enter` saves the caller's callee-saved
//! registers and stack pointer, and enters the frame as every return to a guest does
//! (`trap_return`, which copies it to the entry stack, loads the guest's CR3 and `iretq`s);
//! the trap handler hands the trap to [`guest_trapped`], which copies the frame out and jumps
//! to `trapmode_leave`: back on the saved stack, as if `trapmode_enter` had returned. What the
//! handler had put on its own stack is dropped (it holds nothing: no lock is taken before).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::entry::TrapFrame;
use crate::instructions::read_cr2;

/// The run loop's stack pointer while the guest runs.
static HOST_RSP: AtomicU64 = AtomicU64::new(0);
/// Where the trap's frame goes (the frame [`enter`] was given).
static FRAME: AtomicU64 = AtomicU64::new(0);
/// CR2 as the trap found it.
static CR2: AtomicU64 = AtomicU64::new(0);

global_asm!(
    concat!(
        r#"
    .section .text, "ax"
    .global trapmode_enter
trapmode_enter:                     // rdi = the frame to enter, rsi = the CR3 to run it on
    cli                             // no interrupt on the frame while rsp points at it
    "#,
        hypercall_abi::push_callee_saved!(),
        r#"
    mov [rip + {host_rsp}], rsp
    mov rsp, rdi                    // what `trap_return` expects: rsp at a TrapFrame,
    mov rax, rsi                    // rax the CR3 to load
    jmp {trap_return}

    .global trapmode_leave
trapmode_leave:                     // from the trap handler, on its stack
    mov rsp, [rip + {host_rsp}]
    "#,
        hypercall_abi::pop_callee_saved!(),
        r#"
    ret                             // to `trapmode_enter`'s caller
    "#
    ),
    host_rsp = sym HOST_RSP,
    trap_return = sym crate::entry::trap_return,
);

unsafe extern "C" {
    fn trapmode_enter(frame: *mut TrapFrame, cr3: u64);
    fn trapmode_leave() -> !;
}

/// Runs the guest described by `regs` on the page tables at `cr3` (its shadow root) until it
/// traps; `regs` then holds the frame of the trap (vector and error code included), and the
/// value returned is CR2 as the trap found it.
pub fn enter(regs: &mut TrapFrame, cr3: u64) -> u64 {
    FRAME.store(core::ptr::from_mut(regs) as u64, Ordering::Relaxed);
    // SAFETY: `regs` is a ring-1 or ring-3 context (the selectors are xen-lite's ring-1 or
    // ring-3 pair, IF on, IOPL 0: `Trap::run` made them so), and `cr3` a shadow root that maps
    // the switcher; `trapmode_enter` comes back here through `trapmode_leave` with the
    // callee-saved registers and the stack as they were.
    unsafe { trapmode_enter(regs, cr3) };
    CR2.load(Ordering::Relaxed)
}

/// A trap from the guest (ring 1 or 3), from `crate::trap::handle_trap`: its frame goes to
/// the caller of [`enter`], which returns.
pub fn guest_trapped(frame: &TrapFrame) -> ! {
    CR2.store(read_cr2(), Ordering::Relaxed);
    let target = FRAME.load(Ordering::Relaxed) as *mut TrapFrame;
    // SAFETY: `target` is the frame `enter` was given, on the run loop's stack or in the
    // domain table, which nothing else touches while the guest runs.
    unsafe { target.write(*frame) };
    // SAFETY: `enter` saved the stack `trapmode_leave` goes back to, and is waiting on it.
    unsafe { trapmode_leave() }
}
