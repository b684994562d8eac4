//! The user-space runtime: system-call wrappers, `print!`, program start and panics.
//!
//! A program defines `main() -> u8` and `pv_user::entry!(main);`. Each system call goes through
//! `syscall` by default; [`int80`] makes the same calls through `int 0x80` (the fast trap), so a
//! program can choose its path per call site.
#![no_std]

use core::arch::asm;
use core::fmt::{self, Write};

use hypercall_abi::hypercall::{Errno, Stats};
use hypercall_abi::syscalls::{
    SYS_EXEC, SYS_EXIT, SYS_FORK, SYS_GETARG, SYS_GETPID, SYS_HVSTATS, SYS_NULL_HYPERCALLS,
    SYS_PTE_UPDATES, SYS_SBRK, SYS_SLEEP, SYS_WAIT, SYS_WRITE, SYS_YIELD,
};

/// A system call through `syscall` (in `pv` mode: bounced through xen-lite).
///
/// # Safety
/// Pointer arguments must be valid for what the call does with them.
pub unsafe fn syscall3(number: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let result;
    // SAFETY: `syscall` clobbers rcx and r11; the kernel preserves everything else but rax.
    unsafe {
        asm!("syscall", inout("rax") number => result, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             out("rcx") _, out("r11") _, options(nostack));
    }
    result
}

/// The same calls through `int 0x80`: in `pv` mode straight from ring 3 to the guest kernel.
pub mod int80 {
    use core::arch::asm;

    /// A system call through `int 0x80`.
    ///
    /// # Safety
    /// As for [`super::syscall3`].
    pub unsafe fn syscall3(number: u64, a0: u64, a1: u64, a2: u64) -> u64 {
        let result;
        // SAFETY: the kernel preserves every register but rax.
        unsafe {
            asm!("int 0x80", inout("rax") number => result, in("rdi") a0, in("rsi") a1, in("rdx") a2,
                 options(nostack));
        }
        result
    }

    /// `getpid()` through `int 0x80`.
    pub fn getpid() -> u64 {
        // SAFETY: no pointer arguments.
        unsafe { syscall3(super::SYS_GETPID, 0, 0, 0) }
    }
}

/// `write(fd, bytes)`; returns the raw result.
pub fn write(fd: u64, bytes: &[u8]) -> u64 {
    // SAFETY: the buffer is valid for `bytes.len()` bytes.
    unsafe { syscall3(SYS_WRITE, fd, bytes.as_ptr() as u64, bytes.len() as u64) }
}

/// `getpid()`.
pub fn getpid() -> u64 {
    // SAFETY: no pointer arguments.
    unsafe { syscall3(SYS_GETPID, 0, 0, 0) }
}

/// A raw result as `Result`: negative errno values become `Err`.
pub fn check(value: u64) -> Result<u64, Errno> {
    Errno::from_return(value).map_or(Ok(value), Err)
}

/// `fork()`: the child's pid in the parent, 0 in the child.
pub fn fork() -> Result<u64, Errno> {
    // SAFETY: no pointer arguments.
    check(unsafe { syscall3(SYS_FORK, 0, 0, 0) })
}

/// `exec(name)`: returns only on failure.
pub fn exec(name: &str) -> Errno {
    // SAFETY: the name is valid for its length.
    let result = unsafe { syscall3(SYS_EXEC, name.as_ptr() as u64, name.len() as u64, 0) };
    Errno::from_return(result).unwrap_or(Errno::EINVAL)
}

/// `wait()`: a finished child's pid and exit status.
pub fn wait() -> Result<(u64, u64), Errno> {
    let mut status = 0u64;
    // SAFETY: `status` is valid for 8 bytes and lives across the call.
    let pid = check(unsafe { syscall3(SYS_WAIT, core::ptr::addr_of_mut!(status) as u64, 0, 0) })?;
    Ok((pid, status))
}

/// `sbrk(increment)`: the old break.
pub fn sbrk(increment: i64) -> Result<u64, Errno> {
    // SAFETY: no pointer arguments.
    check(unsafe { syscall3(SYS_SBRK, increment as u64, 0, 0) })
}

/// `yield()`.
pub fn yield_now() -> Result<u64, Errno> {
    // SAFETY: no pointer arguments.
    check(unsafe { syscall3(SYS_YIELD, 0, 0, 0) })
}

/// `sleep(milliseconds)`.
pub fn sleep(milliseconds: u64) -> Result<u64, Errno> {
    // SAFETY: no pointer arguments.
    check(unsafe { syscall3(SYS_SLEEP, milliseconds, 0, 0) })
}

/// `getarg(index, buf)`: the length written.
pub fn getarg(index: u64, buffer: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the buffer is valid for its length.
    let len = check(unsafe {
        syscall3(SYS_GETARG, index, buffer.as_mut_ptr() as u64, buffer.len() as u64)
    })?;
    Ok(len as usize)
}

/// `hvstats()`: the hypervisor's counters for this domain (`ENOSYS` natively).
pub fn hvstats() -> Result<Stats, Errno> {
    let mut words = [0u64; Stats::WORDS];
    // SAFETY: the buffer is valid for its length in bytes.
    check(unsafe {
        syscall3(SYS_HVSTATS, words.as_mut_ptr() as u64, (Stats::WORDS * 8) as u64, 0)
    })?;
    Ok(Stats::from_words(&words))
}

/// `null_hypercalls(n)`: the kernel makes `n` null hypercalls (`ENOSYS` natively).
pub fn null_hypercalls(n: u64) -> Result<u64, Errno> {
    // SAFETY: no pointer arguments.
    check(unsafe { syscall3(SYS_NULL_HYPERCALLS, n, 0, 0) })
}

/// `pte_updates(batch, rounds)`: the kernel makes `rounds` page-table updates of `batch`
/// entries each.
pub fn pte_updates(batch: u64, rounds: u64) -> Result<u64, Errno> {
    // SAFETY: no pointer arguments.
    check(unsafe { syscall3(SYS_PTE_UPDATES, batch, rounds, 0) })
}

/// The time-stamp counter. Under QEMU's `-icount shift=0` and Bochs' `clock: sync=none` it
/// counts retired instructions (DESIGN §9), which is what the benchmarks report.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter; the kernel leaves CR4.TSD clear.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `exit(status)`.
pub fn exit(status: u8) -> ! {
    // SAFETY: no pointer arguments.
    unsafe { syscall3(SYS_EXIT, u64::from(status), 0, 0) };
    loop {
        // SAFETY: if exit ever returned, trap rather than run on.
        unsafe { asm!("ud2") };
    }
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(1, s.as_bytes());
        Ok(())
    }
}

/// Formats to the console (for the macros).
pub fn print(args: fmt::Arguments<'_>) {
    let _ = Console.write_fmt(args);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::print(format_args!($($arg)*)));
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => ($crate::print(format_args!("{}\n", format_args!($($arg)*))));
}

/// Defines `_start`, which runs `main` and exits with its status.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn _start() -> ! {
            $crate::exit($main())
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("user panic: {}", info.message());
    exit(101)
}
