//! System calls: the dispatcher and `write` (the numbers, Linux x86-64's where one exists, are
//! `hypercall_abi::syscalls`).
//!
//! Both paths arrive here with the same frame, because whoever takes a `syscall` builds exactly
//! the frame the CPU builds for `int 0x80`, the user's `rip, cs, rflags, rsp, ss`: xen-lite
//! when it bounces one to the `pv` kernel, the `hvm` kernel's own LSTAR entry otherwise. The
//! number is in `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, the result goes back in
//! `rax`. (`syscall` itself clobbers `rcx` and `r11`; `int 0x80` does not.)
//!
//! While processes run, `process::syscall` answers. Without them (`program::run`, or the
//! kernel's own ring-3 tests, both entered with `traps::catch`), `getpid` says 1 and `exit`
//! ends the `catch`. A call whose return address is not canonical ends the program first
//! (`traps::unreturnable`).

use hypercall_abi::frame::TrapFrame;
use hypercall_abi::hypercall::Errno;

pub use hypercall_abi::syscalls::{SYS_EXIT, SYS_GETPID, SYS_WRITE};

use crate::traps::{self, Caught};

/// Runs the system call in `frame`.
pub fn dispatch(frame: &mut TrapFrame) {
    if !hypercall_abi::layout::is_canonical(frame.rip) {
        return traps::unreturnable(frame);
    }
    if crate::process::syscall(frame) {
        return;
    }
    match frame.rax {
        SYS_WRITE => {
            frame.rax = write(frame.rdi, frame.rsi, frame.rdx).unwrap_or_else(Errno::to_return)
        }
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

/// `write(fd, buf, len)`: fds 1 and 2 are the console. The buffer is checked page by page
/// against the program's address space before a byte is read.
pub fn write(fd: u64, buffer: u64, len: u64) -> Result<u64, Errno> {
    if fd != 1 && fd != 2 {
        return Err(Errno::EINVAL);
    }
    let bytes = crate::program::user_bytes(buffer, len.min(4096))?;
    // Copy in before use: the console hypercall takes only kernel addresses, and the user's
    // memory is the user's to change.
    let mut chunk = [0u8; 256];
    for piece in bytes.chunks(chunk.len()) {
        chunk[..piece.len()].copy_from_slice(piece);
        crate::platform::console_write(&chunk[..piece.len()]);
    }
    Ok(bytes.len() as u64)
}
