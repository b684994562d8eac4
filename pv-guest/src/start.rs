//! The guest's first instruction: entry from xen-lite (or from the hand-off in `native` mode).
//!
//! Register contract at `_start` (set by xen-lite's domain builder, DESIGN §3):
//! - `rdi`: virtual address of the `StartInfo` page;
//! - `rsp`: top of the boot stack, 16-byte aligned;
//! - interrupts off; the start-of-day page tables map all guest memory at `GUEST_DIRECT_MAP`.
//!
//! Steps: clear the frame pointer so backtraces end here, call `kernel_main` (the call pushes
//! the return address the ABI expects), and trap if it ever returns.

use core::arch::global_asm;

use hypercall_abi::StartInfo;

global_asm!(
    concat!(
        r#"
    .section .text.start, "ax"
    .global _start
_start:
    "#,
        hypercall_abi::entry_code_begin!(), // the first instruction: `bt` ends here
        r#"
    xor ebp, ebp
    call {main}
    ud2
    "#,
        hypercall_abi::entry_code_end!(),
    ),
    main = sym rust_start,
);

/// Converts the raw `StartInfo` pointer and enters the kernel proper.
extern "C" fn rust_start(info: *const StartInfo) -> ! {
    // SAFETY: xen-lite's domain builder passes the address of a mapped, initialised `StartInfo`
    // page that no one else writes while the guest runs.
    let info = unsafe { &*info };
    crate::kernel_main(info)
}
