//! The guest kernel's exception entry, and a way to run code that is expected to fault.
//!
//! The entry stubs build a `hypercall_abi::frame::TrapFrame` exactly as xen-lite's do, because
//! the frame underneath is the same: pushed by the CPU in the `hvm` flavour, written by a
//! xen-lite bounce in the `pv` flavour (which the guest cannot tell apart; that is the point).
//! `platform::install_traps` hands the entries ([`handler_address`]) to the kernel's own IDT or
//! to `set_trap_table`.
//!
//! [`catch`] runs a snippet in the kernel's ring or in ring 3 and returns the exception it
//! raised: the kernel's self-tests use it to check that every fault arrives with the right
//! frame. The snippet is entered with `iretq` from [`catch`]'s own frame; the handler returns to
//! `guest_trap_resume` on the stack `catch` saved, as a `longjmp` would.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::frame::{TrapFrame, ERROR_CODE_VECTORS};

use crate::platform;

/// Exceptions with a handler: all 32.
pub const VECTORS: usize = 32;
/// The pseudo-vector the event-upcall entry records.
pub const EVENT_VECTOR: u64 = 0x200;
/// The vector of system calls (`int 0x80`; a bounced `syscall` arrives at the same entry).
pub const SYSCALL_VECTOR: u64 = hypercall_abi::hypercall::SYSCALL_VECTOR as u64;

global_asm!(concat!(
    r#"
    .altmacro
    .macro guest_trap_stub vector
        .balign 16
        .if ({error_code_mask} >> \vector) & 1
        .else
            push 0                  // no error code: push one, same frame shape
        .endif
        push \vector
        jmp guest_trap_common
    .endm

    .section .text.guest_traps, "ax"
    .balign 16
    "#,
    hypercall_abi::entry_code_begin!(), // the entry points, to the jump out: `bt` ends in them
    r#"
    .global guest_trap_vectors
guest_trap_vectors:
    .set vector, 0
    .rept {vectors}
        guest_trap_stub %vector
        .set vector, vector + 1
    .endr
    .noaltmacro

    // A system call, by `int 0x80` or bounced `syscall`: the same frame, no error code.
    .global guest_syscall_entry
guest_syscall_entry:
    push 0
    push {syscall_vector}
    jmp guest_trap_common

    // The event upcall: a bounce frame like an interrupt's, no error code.
    .global guest_event_entry
guest_event_entry:
    push 0
    push {event_vector}
    // fall through

    .global guest_trap_common
guest_trap_common:
    "#,
    hypercall_abi::push_registers!(),
    r#"
    mov rdi, rsp
    cld
    call {handler}
    .global guest_trap_restore
guest_trap_restore:                 // rsp at a TrapFrame: resume what it describes,
    jmp platform_trap_restore       // the way this flavour must (platform: pops, then iretq)
    "#,
    hypercall_abi::entry_code_end!(),
    r#"

    // catch(rip = rdi, cs = rsi, rsp = rdx, ss = rcx): enter the snippet; returns (at
    // trap_resume) when it faults.
    .global guest_catch_enter
guest_catch_enter:
    "#,
    hypercall_abi::push_callee_saved!(),
    r#"
    mov [rip + {catch_rsp}], rsp
    push rcx                        // ss
    push rdx                        // rsp
    pushfq                          // rflags
    push rsi                        // cs
    push rdi                        // rip
    iretq
    .global guest_trap_resume
guest_trap_resume:
    "#,
    hypercall_abi::pop_callee_saved!(),
    r#"
    ret
    "#),
    error_code_mask = const ERROR_CODE_VECTORS,
    vectors = const VECTORS,
    event_vector = const EVENT_VECTOR,
    syscall_vector = const SYSCALL_VECTOR,
    handler = sym handle,
    catch_rsp = sym CATCH_RSP,
);

unsafe extern "C" {
    static guest_trap_vectors: u8;
    static guest_event_entry: u8;
    static guest_syscall_entry: u8;
    fn guest_catch_enter(rip: u64, cs: u64, rsp: u64, ss: u64);
    static guest_trap_resume: u8;
}

/// Address of the entry for exception `vector` (0-31), of the system-call entry for
/// [`SYSCALL_VECTOR`], or of the event upcall for [`EVENT_VECTOR`].
pub fn handler_address(vector: u64) -> u64 {
    if vector == EVENT_VECTOR {
        core::ptr::addr_of!(guest_event_entry) as u64
    } else if vector == SYSCALL_VECTOR {
        core::ptr::addr_of!(guest_syscall_entry) as u64
    } else {
        core::ptr::addr_of!(guest_trap_vectors) as u64 + vector % VECTORS as u64 * 16
    }
}

/// What an exception looked like when it arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caught {
    /// Exception vector.
    pub vector: u64,
    /// Error code (0 if the vector has none).
    pub error_code: u64,
    /// Where it happened.
    pub rip: u64,
    /// Code selector of the interrupted context (its RPL is the ring).
    pub cs: u64,
    /// Stack pointer of the interrupted context.
    pub rsp: u64,
    /// The faulting address, for #PF.
    pub fault_address: u64,
    /// The interrupted RFLAGS as the handler saw them.
    pub rflags: u64,
}

/// `catch`'s saved kernel stack pointer; zero when no `catch` is running.
static CATCH_RSP: AtomicU64 = AtomicU64::new(0);
static CATCH_ARMED: AtomicBool = AtomicBool::new(false);
static mut CAUGHT: Caught =
    Caught { vector: 0, error_code: 0, rip: 0, cs: 0, rsp: 0, fault_address: 0, rflags: 0 };

/// Runs the code at `rip` with `cs`/`ss` (ring 1 or ring 3) on stack `rsp`, and returns the
/// exception it raised. The snippet must fault: it has nowhere to return to.
pub fn catch(rip: u64, cs: u16, rsp: u64, ss: u16) -> Caught {
    CATCH_ARMED.store(true, Ordering::SeqCst);
    // SAFETY: the assembly saves the callee-saved registers and this stack, and the handler
    // resumes at `guest_trap_resume` on exactly that stack, so to the compiler this is an
    // ordinary call that returns.
    unsafe { guest_catch_enter(rip, u64::from(cs), rsp, u64::from(ss)) };
    CATCH_ARMED.store(false, Ordering::SeqCst);
    // SAFETY: written only by `handle` while armed, before resuming here; single CPU.
    unsafe { core::ptr::addr_of!(CAUGHT).read() }
}

/// A stack of its own for kernel-mode snippets: the exception they raise is delivered on it,
/// and its handler runs on it, far from the registers `catch` saved on the caller's stack.
#[repr(C, align(16))]
struct SnippetStack(core::cell::UnsafeCell<[u8; 16384]>);
// SAFETY: used only as a stack, by one snippet at a time, on one CPU.
unsafe impl Sync for SnippetStack {}
static SNIPPET_STACK: SnippetStack = SnippetStack(core::cell::UnsafeCell::new([0; 16384]));

/// Runs a kernel-mode snippet (ring 1 in `pv`) on its own stack.
pub fn catch_in_kernel(rip: u64) -> Caught {
    let rsp = SNIPPET_STACK.0.get() as u64 + 16384;
    catch(rip, platform::KERNEL_CS, rsp, platform::KERNEL_SS)
}

/// Starts the context `frame` describes, from the top of `stack` (the kernel's entry stack,
/// so it is empty again), as the return from a trap would.
///
/// # Safety
/// `stack_top` must be the top of a stack nothing is using, and `frame` a context that can run.
pub unsafe fn enter(frame: &TrapFrame, stack_top: u64) -> ! {
    let slot = (stack_top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: the caller gives an unused stack; the slot lies inside it.
    unsafe { slot.write(*frame) };
    // SAFETY: `rsp` then points at a complete frame, which is what `guest_trap_restore` pops.
    unsafe {
        asm!("mov rsp, {slot}", "jmp guest_trap_restore", slot = in(reg) slot, options(noreturn))
    }
}

/// If a [`catch`] is running, records `caught` and points `frame` back into it (the snippet is
/// over); returns whether it did.
pub fn end_catch(frame: &mut TrapFrame, caught: Caught) -> bool {
    if !CATCH_ARMED.swap(false, Ordering::SeqCst) {
        return false;
    }
    // SAFETY: single CPU, and `catch` reads it only after we resume there.
    unsafe { core::ptr::addr_of_mut!(CAUGHT).write(caught) };
    frame.rip = core::ptr::addr_of!(guest_trap_resume) as u64;
    frame.cs = u64::from(platform::KERNEL_CS);
    frame.rsp = CATCH_RSP.load(Ordering::SeqCst);
    frame.ss = u64::from(platform::KERNEL_SS);
    // The snippet's flags stay the snippet's: the kernel resumes without its TF (which would
    // single-step the kernel), NT (its next `iretq` would #GP), AC or DF.
    frame.rflags &= !SNIPPET_ONLY_RFLAGS;
    true
}

/// RFLAGS bits a snippet may set that must not follow the kernel out of [`catch`]: TF, DF, NT,
/// RF, AC.
const SNIPPET_ONLY_RFLAGS: u64 = 1 << 8 | 1 << 10 | 1 << 14 | 1 << 16 | 1 << 18;

/// Called by the stubs with the saved frame. The system call, the path every benchmark runs,
/// is handled right here; events and exceptions each have a function of their own, so that
/// their register needs do not make every system call save and restore more registers.
extern "C" fn handle(frame: &mut TrapFrame) {
    match frame.vector {
        SYSCALL_VECTOR => {
            // Handlers run with events masked; the return path restores the interrupted
            // context's virtual IF from its frame.
            platform::events_disable();
            crate::syscall::dispatch(frame);
        }
        EVENT_VECTOR => on_event(frame),
        _ => on_exception(frame),
    }
}

/// A system call whose return address no `iretq` can return to: a non-canonical one. A
/// `syscall` in the last two bytes of user space does that (its return address is
/// 0x8000_0000_0000, the CVE-2012-0217 set-up): returning, now or after the process next
/// runs, would make this kernel's own `iretq` fault in kernel mode. End the program instead,
/// before the call does anything, as if the `iretq` had raised #GP on its behalf. (Every other
/// way into the kernel leaves a canonical `rip`: the CPU faults on a non-canonical one first.)
#[inline(never)]
pub fn unreturnable(frame: &mut TrapFrame) {
    crate::println!("user return to non-canonical rip {:#x} refused", frame.rip);
    frame.vector = 13;
    frame.error_code = 0;
    on_exception(frame);
}

/// An event upcall (pv) or the timer interrupt (hvm).
#[inline(never)]
fn on_event(frame: &mut TrapFrame) {
    crate::events::upcall();
    crate::process::after_event(frame);
}

/// An exception: a caught one ends its `catch`, a process's may be a first touch or kills it;
/// anything else ends the kernel.
#[inline(never)]
fn on_exception(frame: &mut TrapFrame) {
    let caught = Caught {
        vector: frame.vector,
        error_code: frame.error_code,
        rip: frame.rip,
        cs: frame.cs,
        rsp: frame.rsp,
        fault_address: if frame.vector == 14 { platform::fault_address() } else { 0 },
        rflags: frame.rflags,
    };
    if end_catch(frame, caught) {
        return;
    }
    platform::events_disable();
    if crate::process::fault(frame, caught) {
        return;
    }
    crate::println!(
        "unexpected exception: vector {} at rip {:#x} (ring {}), error code {:#x}, fault address {:#x}",
        frame.vector,
        frame.rip,
        frame.cs & 3,
        frame.error_code,
        platform::fault_address()
    );
    platform::shutdown(crate::EXIT_PANIC);
}
