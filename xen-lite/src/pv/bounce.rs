//! Bounce frames: how an exception or event raised while a guest runs reaches the guest
//! kernel's own handler in ring 1.
//!
//! xen-lite takes every exception and interrupt first (it owns the real IDT). To hand one to the
//! guest it builds, on the guest kernel's stack, exactly the frame the CPU would have pushed had
//! the guest's handler been in the IDT, then returns into that handler with `iretq`:
//!
//! ```text
//!            higher addresses
//!   +40  SS       of the interrupted context (user 0x2b, or the ring-1 SS)
//!   +32  RSP      of the interrupted context
//!   +24  RFLAGS   of the interrupted context, but IF = the *virtual* IF (!upcall_mask)
//!   +16  CS       of the interrupted context: RPL 3 from user code, RPL 1 from the kernel
//!    +8  RIP      where the interrupted context resumes
//!    +0  error    only for vectors that have one (#DF #TS #NP #SS #GP #PF #AC ...)
//!            <- new ring-1 RSP, 16-byte aligned before the push, as the CPU does
//! ```
//!
//! The stack is the interrupted one if the guest kernel itself was interrupted (ring 1), or the
//! one registered with `stack_switch` if user code was (ring 3), just like the CPU's choice
//! between the current stack and TSS.RSPn. See: Intel SDM Vol. 3A, revision 086, 6.14.2.

use core::fmt;

use hypercall_abi::hypercall::SYSCALL_BOUNCE_VECTOR;

use super::events;
use crate::domain::{kill, Domain};
use crate::entry::TrapFrame;
use crate::gdt::{GUEST_KERNEL_CS, GUEST_KERNEL_DS};
use crate::trap::Vector;

/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS bits the CPU clears when it delivers through a gate: TF, NT, RF (and VM, AC are not
/// used here). See: Intel SDM Vol. 3A, 6.12.1.3.
pub const RFLAGS_CLEARED_ON_DELIVERY: u64 = 1 << 8 | 1 << 14 | 1 << 16;

/// Why a bounce cannot be made; the domain is then killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceError {
    /// User code was interrupted but the kernel never called `stack_switch`.
    NoKernelStack,
}

/// A bounce frame: `len` words starting at `words[0]`, to be written at the new stack pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BounceFrame {
    /// The words, lowest address first.
    pub words: [u64; 6],
    /// How many are used (5, or 6 with an error code).
    pub len: usize,
    /// Where the first word goes: the guest handler's `rsp`.
    pub rsp: u64,
}

impl BounceFrame {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.len as u64 * 8
    }
}

/// Lays out the frame for interrupting `interrupted`, for a handler running on ring 1.
/// `kernel_stack` is the `stack_switch` stack; `virtual_if` the guest's virtual IF right now.
pub fn bounce_frame(
    interrupted: &TrapFrame,
    error_code: Option<u64>,
    virtual_if: bool,
    kernel_stack: Option<u64>,
) -> Result<BounceFrame, BounceError> {
    // LAB 2.1 BEGIN: lay out the frame the CPU would push for `interrupted` (the picture at the top of this file), on the stack it would choose
    // Hint: ring 3 was interrupted when the low two bits of its CS are 3; then the frame goes on `kernel_stack`, and with none registered the bounce is impossible.
    // Hint: RFLAGS in the frame carries the virtual IF, not the real one.
    // Hint: the CPU aligns the new stack pointer down to 16 bytes before it pushes anything.
    let from_user = interrupted.cs & 3 == 3;
    let top =
        if from_user { kernel_stack.ok_or(BounceError::NoKernelStack)? } else { interrupted.rsp };
    let rflags = (interrupted.rflags & !RFLAGS_IF) | if virtual_if { RFLAGS_IF } else { 0 };
    let mut words = [0; 6];
    let mut len = 0;
    if let Some(code) = error_code {
        words[0] = code;
        len = 1;
    }
    for word in [interrupted.rip, interrupted.cs, rflags, interrupted.rsp, interrupted.ss] {
        words[len] = word;
        len += 1;
    }
    let rsp = (top & !0xf).wrapping_sub(len as u64 * 8);
    Ok(BounceFrame { words, len, rsp })
    // LAB 2.1 END
}

/// Points `frame` at the guest handler: ring-1 code and stack, real IF on (the guest's virtual
/// IF is what it sees), delivery-cleared flags off.
pub fn enter_handler(frame: &mut TrapFrame, handler: u64, bounce: &BounceFrame, cs: u64, ss: u64) {
    // LAB 2.2 BEGIN: make `frame` return into the guest's handler, in ring 1, on the bounce frame
    // Hint: four fields name where the handler runs; RFLAGS keeps the interrupted flags except those the CPU clears on delivery.
    // Hint: the real IF stays on in ring 1 (the timer must still preempt the guest); the guest sees its virtual IF in the frame.
    frame.rip = handler;
    frame.cs = cs;
    frame.rsp = bounce.rsp;
    frame.ss = ss;
    frame.rflags = (frame.rflags & !RFLAGS_CLEARED_ON_DELIVERY) | RFLAGS_IF;
    // LAB 2.2 END
}

/// Bounces `frame` (of `domain`) to the guest `handler`: writes the bounce frame to the guest
/// kernel's stack and points `frame` at the handler. Kills the domain (`Err`) if the frame
/// cannot be written.
pub fn deliver(
    domain: &mut Domain,
    frame: &mut TrapFrame,
    handler: u64,
    error_code: Option<u64>,
) -> Result<(), ()> {
    let virtual_if = events::virtual_if(domain);
    // What is being bounced, for the kill lines: `#PF (vector 14)`, or `syscall`.
    let what = BouncedEvent(frame.vector);
    let bounce = match bounce_frame(frame, error_code, virtual_if, domain.pv().kernel_stack) {
        Ok(bounce) => bounce,
        Err(BounceError::NoKernelStack) => {
            kill!(
                domain,
                "{what} at rip {:#x} from ring 3: no kernel stack registered with stack_switch",
                frame.rip
            );
            return Err(());
        }
    };
    let mut bytes = [0u8; 48];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(&bounce.words[..bounce.len]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    if domain.copy_to_guest(bounce.rsp, &bytes[..bounce.bytes() as usize]).is_err() {
        kill!(
            domain,
            "{what} at rip {:#x}: the ring-1 stack at {:#x} cannot take a {}-byte bounce frame",
            frame.rip,
            bounce.rsp,
            bounce.bytes()
        );
        return Err(());
    }
    enter_handler(
        frame,
        handler,
        &bounce,
        u64::from(GUEST_KERNEL_CS.bits()),
        u64::from(GUEST_KERNEL_DS.bits()),
    );
    Ok(())
}

/// Names a bounced event: an exception by mnemonic and vector, or a user's `syscall`.
struct BouncedEvent(u64);

impl fmt::Display for BouncedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SYSCALL_BOUNCE_VECTOR => f.write_str("syscall"),
            vector => write!(f, "{} (vector {vector})", Vector::name(vector).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_frame() -> TrapFrame {
        TrapFrame {
            rip: 0x40_1000,
            cs: 0x33,
            rflags: 0x202,
            rsp: 0x7fff_0008,
            ss: 0x2b,
            ..TrapFrame::default()
        }
    }

    #[test]
    fn from_user_the_frame_goes_on_the_kernel_stack_with_the_error_code() {
        let bounce =
            bounce_frame(&user_frame(), Some(0x412), false, Some(0xffff_ffff_8020_0008)).unwrap();
        assert_eq!(bounce.len, 6);
        assert_eq!(bounce.rsp, 0xffff_ffff_8020_0000 - 48, "aligned to 16, then six words");
        assert_eq!(
            bounce.words,
            [0x412, 0x40_1000, 0x33, 0x002, 0x7fff_0008, 0x2b],
            "IF from the virtual IF"
        );
    }

    #[test]
    fn from_the_kernel_the_frame_goes_on_its_own_stack() {
        let kernel = TrapFrame {
            rip: 0xffff_ffff_8010_0000,
            cs: 0x19,
            rflags: 0x202,
            rsp: 0xffff_ffff_8030_0000,
            ss: 0x21,
            ..TrapFrame::default()
        };
        let bounce = bounce_frame(&kernel, None, true, None).unwrap();
        assert_eq!(bounce.len, 5);
        assert_eq!(bounce.rsp, 0xffff_ffff_8030_0000 - 40);
        assert_eq!(
            bounce.words[..5],
            [0xffff_ffff_8010_0000, 0x19, 0x202, 0xffff_ffff_8030_0000, 0x21]
        );
    }

    #[test]
    fn user_code_without_a_kernel_stack_cannot_be_bounced() {
        assert_eq!(bounce_frame(&user_frame(), None, true, None), Err(BounceError::NoKernelStack));
    }

    // LAB HIDDEN BEGIN
    /// Every combination the CPU distinguishes, against the layout written out by hand: ring
    /// 1 or 3 interrupted, with or without an error code, virtual IF on or off, a stack top at
    /// every alignment mod 16.
    #[test]
    fn hidden_every_frame_matches_the_cpus_layout() {
        for (cs, ss) in [(0x33u64, 0x2bu64), (0x19, 0x21)] {
            for error in [None, Some(0x1234u64)] {
                for virtual_if in [false, true] {
                    for misalign in 0..16u64 {
                        let frame = TrapFrame {
                            rip: 0x40_2000,
                            cs,
                            rflags: 0x246 | 0x100,
                            rsp: 0xffff_ffff_8030_0000 + misalign,
                            ss,
                            ..TrapFrame::default()
                        };
                        let stack = 0xffff_ffff_8020_0000 + misalign;
                        let got = bounce_frame(&frame, error, virtual_if, Some(stack)).unwrap();
                        let top = if cs & 3 == 3 { stack } else { frame.rsp } & !0xf;
                        let flags = (0x346 & !RFLAGS_IF) | if virtual_if { RFLAGS_IF } else { 0 };
                        let mut want = vec![];
                        want.extend(error);
                        want.extend([0x40_2000, cs, flags, frame.rsp, ss]);
                        assert_eq!(&got.words[..got.len], &want[..], "cs {cs:#x} {error:?}");
                        assert_eq!(got.rsp, top - 8 * want.len() as u64);
                    }
                }
            }
        }
    }

    #[test]
    fn hidden_entering_keeps_the_other_flags() {
        let mut frame = user_frame();
        frame.rflags = 0x2 | 0x1 | 0x40 | 0x800 | 0x4000 | 0x10000; // CF, ZF, OF, NT, RF
        let bounce = bounce_frame(&frame, Some(4), false, Some(0x2000)).unwrap();
        enter_handler(&mut frame, 0x1234, &bounce, 0x19, 0x21);
        assert_eq!(frame.rflags, 0x2 | 0x1 | 0x40 | 0x800 | RFLAGS_IF);
        assert_eq!(frame.rsp, 0x2000 - 48);
    }
    // LAB HIDDEN END

    #[test]
    fn entering_the_handler_sets_ring_1_and_real_if() {
        let mut frame = user_frame();
        frame.rflags = 0x100 | 0x2; // TF set, IF clear
        let bounce = bounce_frame(&frame, None, true, Some(0x1000)).unwrap();
        enter_handler(&mut frame, 0xffff_ffff_8010_0040, &bounce, 0x19, 0x21);
        assert_eq!(
            (frame.rip, frame.cs, frame.ss, frame.rsp),
            (0xffff_ffff_8010_0040, 0x19, 0x21, 0x1000 - 40)
        );
        assert_eq!(frame.rflags, 0x202);
    }
}
