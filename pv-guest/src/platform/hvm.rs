//! The `hvm` flavour of the platform layer: the kernel runs in ring 0 and uses the real
//! instructions.
//!
//! Today this is `native` mode, where no hypervisor is underneath: the console is COM1 driven
//! by port I/O, and shutdown uses the same exit device as xen-lite (`hypercall_abi::devices`).
//! Under VMX and SVM the console and shutdown will go through the hypercall page instead.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hypercall_abi::devices::{COM1, DEBUG_EXIT_PORT, UART_LSR, UART_LSR_TEMT, UART_LSR_THRE};
use hypercall_abi::StartInfo;

/// This flavour's name, for messages.
pub const FLAVOUR: &str = "hvm";

/// Whether the next byte starts a line (and so gets the `[domN] ` prefix).
static AT_LINE_START: AtomicBool = AtomicBool::new(true);
/// This domain's id, for the prefix.
static DOMAIN_ID: AtomicU32 = AtomicU32::new(0);

/// Start-of-day platform set-up.
pub fn init(info: &StartInfo) {
    DOMAIN_ID.store(info.domain_id, Ordering::Relaxed);
}

/// Writes console output. With no hypervisor to tag lines, the platform adds the `[domN]`
/// prefix itself, so transcripts read the same in every mode.
pub fn console_write(bytes: &[u8]) {
    for &byte in bytes {
        if AT_LINE_START.swap(false, Ordering::Relaxed) {
            let mut prefix = [0u8; 16];
            uart_write(format_prefix(&mut prefix, DOMAIN_ID.load(Ordering::Relaxed)));
        }
        if byte == b'\n' {
            uart_write(b"\r");
            AT_LINE_START.store(true, Ordering::Relaxed);
        }
        uart_write(&[byte]);
    }
}

/// `[domN] ` into `buffer`.
fn format_prefix(buffer: &mut [u8; 16], domain_id: u32) -> &[u8] {
    use core::fmt::Write;
    struct Cursor<'a>(&'a mut [u8; 16], usize);
    impl Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.1 + s.len();
            self.0.get_mut(self.1..end).ok_or(core::fmt::Error)?.copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
    let mut cursor = Cursor(buffer, 0);
    // A u32 always fits: "[dom4294967295] " is 16 bytes.
    let _ = write!(cursor, "[dom{domain_id}] ");
    let len = cursor.1;
    &buffer[..len]
}

fn uart_write(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: reading COM1's line status register has no side effect; the guest owns the
        // machine in native mode.
        while unsafe { x86::io::inb(COM1 + UART_LSR) } & UART_LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: writing COM1's transmit register sends one byte.
        unsafe { x86::io::outb(COM1, byte) };
    }
}

/// Ends the run with `code` as the emulator's exit status.
pub fn shutdown(code: u8) -> ! {
    // SAFETY: as in `uart_write`; waiting for the transmitter to drain loses no output.
    while unsafe { x86::io::inb(COM1 + UART_LSR) } & UART_LSR_TEMT == 0 {
        core::hint::spin_loop();
    }
    // SAFETY: QEMU's isa-debug-exit ends the emulator here; elsewhere the port is unassigned.
    unsafe { x86::io::outl(DEBUG_EXIT_PORT, u32::from(code)) };
    // SAFETY: the Bochs magic breakpoint (`xchg bx, bx`) only exchanges a register with itself.
    unsafe { core::arch::asm!("xchg bx, bx", in("eax") u32::from(code), options(nomem, nostack)) };
    loop {
        // SAFETY: nothing is left to run; halting with interrupts off stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_the_domain() {
        let mut buffer = [0; 16];
        assert_eq!(format_prefix(&mut buffer, 0), b"[dom0] ");
        assert_eq!(format_prefix(&mut buffer, u32::MAX), b"[dom4294967295] ");
    }
}
