//! Calling through the hypercall page: the one way any flavour of the kernel reaches xen-lite.
//!
//! xen-lite fills the page with one 32-byte stub per hypercall number (DESIGN §3), and the
//! stub's instruction is the hypervisor's choice: `int 0x82` for a `pv` domain, `vmcall` for a
//! `vmx` one. The kernel only ever calls `page + number * 32` with the arguments in the
//! registers of the ABI; it does not know, or need to know, which transport the stub uses.

use core::arch::asm;

use hypercall_abi::hypercall::{
    Errno, Hypercall, Stats, HYPERCALL_PAGE_ENTRIES, HYPERCALL_STUB_SIZE,
};

/// Calls hypercall `number` through the page at `page` with up to five arguments; returns
/// `rax` (a negative errno on error). `page` must be the address `StartInfo::hypercall_page`
/// gave.
pub fn call(page: u64, number: u64, args: [u64; 5]) -> u64 {
    if number >= HYPERCALL_PAGE_ENTRIES || page == 0 {
        return Errno::ENOSYS.to_return();
    }
    let entry = page + number * HYPERCALL_STUB_SIZE;
    let result;
    // SAFETY: the stub xen-lite wrote at `entry` loads the number into `rax`, traps into
    // xen-lite and returns; xen-lite preserves every register but `rax`. Pointer arguments are
    // checked by xen-lite, never trusted.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            out("rax") result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
        );
    }
    result
}

/// [`call`], with a negative return turned into an `Errno`.
pub fn checked(page: u64, hypercall: Hypercall, args: [u64; 5]) -> Result<u64, Errno> {
    let value = call(page, hypercall as u64, args);
    match Errno::from_return(value) {
        Some(errno) => Err(errno),
        None => Ok(value),
    }
}

/// xen-lite's counters for this domain (`stats`).
pub fn stats(page: u64) -> Result<Stats, Errno> {
    let mut words = [0u64; Stats::WORDS];
    checked(page, Hypercall::Stats, [words.as_mut_ptr() as u64, 0, 0, 0, 0])?;
    Ok(Stats::from_words(&words))
}
