//! Leaving the emulator with a status the xtask can read.
//!
//! QEMU: the `isa-debug-exit` device at [`DEBUG_EXIT_PORT`] ends QEMU with `(status << 1) | 1`.
//! Bochs: no device answers there, so the write is ignored and the magic breakpoint that follows
//! stops Bochs' debugger with the status in `eax` (the xtask's `-rc` script prints the registers
//! and quits). On real hardware neither happens and the CPU halts. See `hypercall_abi::devices`.

use hypercall_abi::devices::{describe_status, DEBUG_EXIT_PORT, STATUS_MAX};

use crate::instructions::{bochs_magic_break, halt_forever, outl};
use crate::serial;

/// Prints the final status line, drains the UART and ends the emulation.
pub fn exit_emulator(status: u8) -> ! {
    let status = status.min(STATUS_MAX);
    log::info!("exit: status {status} ({})", describe_status(status));
    serial::flush();
    leave(status)
}

/// The exit itself, without a status line (the fatal path prints its own).
pub fn leave(status: u8) -> ! {
    serial::flush();
    // SAFETY: the debug-exit port either ends the emulator (QEMU) or is unassigned (Bochs, real
    // hardware), where a write has no effect.
    unsafe { outl(DEBUG_EXIT_PORT, u32::from(status)) };
    bochs_magic_break(u32::from(status));
    halt_forever()
}
