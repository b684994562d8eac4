//! The emulated devices a kernel may drive directly, and the exit-status code shared with the
//! xtask.
//!
//! xen-lite owns these devices; in `native` mode the guest kernel drives them itself because
//! there is no hypervisor underneath it.

/// I/O base of the first 16550 UART (COM1): the console of every kernel in this project.
pub const COM1: u16 = 0x3f8;
/// Line status register offset; bit 5 is "transmit holding register empty", bit 6 "transmitter
/// empty". Bochs models UART timing, so every byte must wait for bit 5 and a kernel about to end
/// the emulation waits for bit 6, or characters are lost.
pub const UART_LSR: u16 = 5;
/// LSR bit: the holding register can take another byte.
pub const UART_LSR_THRE: u8 = 1 << 5;
/// LSR bit: the shift register is empty too (everything has left the UART).
pub const UART_LSR_TEMT: u8 = 1 << 6;

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
///
/// Writing `v` makes QEMU exit with status `(v << 1) | 1`. Bochs has no device here and ignores
/// the write; it ends the run on the magic breakpoint (`xchg bx, bx`) that follows, with the
/// status in `eax`. A kernel leaving the emulator does both, so one exit path serves both
/// emulators (and KVM, which runs QEMU's device model).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exit statuses `0..=GUEST_STATUS_MAX` are a guest's own `shutdown` code, passed through.
pub const GUEST_STATUS_MAX: u8 = 99;
/// xen-lite took an exception or panicked.
pub const STATUS_HYPERVISOR_FAULT: u8 = 101;
/// The boot bundle could not be used (bad format, missing image, bad command line).
pub const STATUS_BAD_BUNDLE: u8 = 102;
/// The guest image could not be loaded.
pub const STATUS_BAD_GUEST: u8 = 103;
/// A `pv` domain was killed by xen-lite for breaking the ABI (its status in the summary).
pub const STATUS_DOMAIN_KILLED: u8 = 104;
/// Largest status the exit path can carry: QEMU reports `(v << 1) | 1` in an 8-bit exit code.
pub const STATUS_MAX: u8 = 127;

/// Recovers the status a kernel wrote to [`DEBUG_EXIT_PORT`] from QEMU's process exit code.
///
/// Returns `None` for an even code: QEMU then ended for another reason (with `-no-reboot` a
/// triple fault exits 0), never through the device. Code 1 is ambiguous (device status 0, or
/// QEMU failing to start); the xtask tells them apart by the kernel's final status line.
pub fn status_from_qemu_exit(code: i32) -> Option<u8> {
    if code & 1 == 1 && (1..=255).contains(&code) {
        Some((code >> 1) as u8)
    } else {
        None
    }
}

/// Names a status for humans: "guest status 3", "hypervisor fault", ...
pub fn describe_status(status: u8) -> &'static str {
    match status {
        0 => "success",
        1..=GUEST_STATUS_MAX => "guest failure status",
        STATUS_HYPERVISOR_FAULT => "hypervisor fault",
        STATUS_BAD_BUNDLE => "bad boot bundle",
        STATUS_BAD_GUEST => "bad guest image",
        STATUS_DOMAIN_KILLED => "a domain was killed",
        _ => "unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_exit_codes_map_back_to_statuses() {
        assert_eq!(status_from_qemu_exit(1), Some(0));
        assert_eq!(status_from_qemu_exit(7), Some(3));
        assert_eq!(status_from_qemu_exit((i32::from(STATUS_MAX) << 1) | 1), Some(STATUS_MAX));
        assert_eq!(status_from_qemu_exit(0), None, "triple fault with -no-reboot");
        assert_eq!(status_from_qemu_exit(2), None);
        assert_eq!(status_from_qemu_exit(-1), None);
    }

    #[test]
    fn reserved_statuses_are_outside_the_guest_range() {
        for s in
            [STATUS_HYPERVISOR_FAULT, STATUS_BAD_BUNDLE, STATUS_BAD_GUEST, STATUS_DOMAIN_KILLED]
        {
            assert!(s > GUEST_STATUS_MAX && s <= STATUS_MAX);
        }
    }
}
