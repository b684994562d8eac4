//! System calls: their numbers (Linux x86-64's, where one exists) and the dispatcher.
//!
//! Both paths arrive here with the same frame, because xen-lite builds for a bounced `syscall`
//! exactly the frame the CPU builds for `int 0x80`: the user's `rip, cs, rflags, rsp, ss`. The
//! number is in `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, the result goes back in
//! `rax`. (`syscall` itself clobbers `rcx` and `r11`; `int 0x80` does not.)
//!
//! There is one program context so far (the kernel's own ring-3 tests, entered with
//! `traps::catch`): `getpid` says 1 and `exit` ends the `catch`. Processes come next.

use hypercall_abi::frame::TrapFrame;
use hypercall_abi::hypercall::Errno;

use crate::traps::{self, Caught};

/// `getpid()`.
pub const SYS_GETPID: u64 = 39;
/// `exit(status)`.
pub const SYS_EXIT: u64 = 60;

/// Runs the system call in `frame`.
pub fn dispatch(frame: &mut TrapFrame) {
    match frame.rax {
        SYS_GETPID => frame.rax = 1,
        SYS_EXIT => {
            let caught = Caught {
                vector: frame.vector,
                error_code: frame.rdi,
                rip: frame.rip,
                cs: frame.cs,
                rsp: frame.rsp,
                ..Caught::default()
            };
            if !traps::end_catch(frame, caught) {
                crate::println!("exit({}) from user code with no process to end", frame.rdi);
                frame.rax = Errno::EPERM.to_return();
            }
        }
        _ => frame.rax = Errno::ENOSYS.to_return(),
    }
}
