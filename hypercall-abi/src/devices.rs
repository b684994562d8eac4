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

/// I/O port of the master 8259 PIC's command register (the end-of-interrupt goes here).
pub const PIC1_COMMAND: u16 = 0x20;
/// I/O port of the master 8259 PIC's data register (initialisation words, the mask).
pub const PIC1_DATA: u16 = 0x21;
/// I/O port of the slave 8259 PIC's command register.
pub const PIC2_COMMAND: u16 = 0xa0;
/// I/O port of the slave 8259 PIC's data register.
pub const PIC2_DATA: u16 = 0xa1;
/// The non-specific end-of-interrupt command: written to [`PIC1_COMMAND`] after each IRQ 0.
pub const PIC_EOI: u8 = 0x20;
/// I/O port of the 8254 PIT's mode/command register.
pub const PIT_COMMAND: u16 = 0x43;
/// I/O port of the 8254 PIT's channel 0 (wired to IRQ 0).
pub const PIT_CHANNEL0: u16 = 0x40;
/// The PIT's input clock, in Hz: fixed, so no calibration is needed.
pub const PIT_INPUT_HZ: u64 = 1_193_182;

/// The port writes that give a kernel a periodic tick: remap both 8259 PICs to vectors
/// `vector..vector + 16` (past the exceptions), unmask only IRQ 0, and start PIT channel 0 as a
/// rate generator at `hz` (rounded down to what its 16-bit divisor can express; `hz` must be
/// above 18). xen-lite runs it for its own tick; the `hvm` guest kernel runs it in `native`
/// mode, where nothing else owns the timer.
///
/// See: Intel 8259A and 8254 data sheets (ICW1-ICW4, OCW1; control word, mode 2).
pub const fn timer_init_sequence(vector: u8, hz: u64) -> [(u16, u8); 13] {
    let divisor = (PIT_INPUT_HZ / hz) as u16;
    [
        (PIC1_COMMAND, 0x11), // ICW1: initialise, ICW4 follows
        (PIC2_COMMAND, 0x11),
        (PIC1_DATA, vector), // ICW2: vector base
        (PIC2_DATA, vector + 8),
        (PIC1_DATA, 0x04), // ICW3: a slave hangs on IRQ 2
        (PIC2_DATA, 0x02), // ICW3: the slave's cascade identity
        (PIC1_DATA, 0x01), // ICW4: 8086 mode
        (PIC2_DATA, 0x01),
        (PIC1_DATA, 0xfe), // OCW1: mask everything but IRQ 0
        (PIC2_DATA, 0xff),
        (PIT_COMMAND, 0x34), // channel 0, low then high byte, mode 2 (rate generator)
        (PIT_CHANNEL0, divisor as u8),
        (PIT_CHANNEL0, (divisor >> 8) as u8),
    ]
}

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
///
/// Writing `v` makes QEMU exit with status `(v << 1) | 1`. Bochs has no device here and ignores
/// the write; it ends the run on the magic breakpoint (`xchg bx, bx`) that follows, with the
/// status in `eax`. A kernel leaving the emulator does both, so one exit path serves both
/// emulators (and KVM, which runs QEMU's device model).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// `mode=trap`'s counter port: `in eax, dx` here reads how many times the domain has trapped
/// into xen-lite so far, the timer's traps left out (low 32 bits). A trap-mode kernel has no
/// hypercalls to ask with; the census and the bench read their costs here. Elsewhere the port
/// is unassigned.
pub const TRAP_COUNTER_PORT: u16 = 0x510;

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
    fn timer_sequence_remaps_the_pics_and_programs_the_divisor() {
        let sequence = timer_init_sequence(0x20, 1000);
        assert_eq!(sequence[2], (PIC1_DATA, 0x20));
        assert_eq!(sequence[3], (PIC2_DATA, 0x28));
        // 1193182 / 1000 = 1193 = 0x04a9, low byte first.
        assert_eq!(
            &sequence[10..],
            &[(PIT_COMMAND, 0x34), (PIT_CHANNEL0, 0xa9), (PIT_CHANNEL0, 0x04)]
        );
        let divisor = |hz| {
            let s = timer_init_sequence(0x20, hz);
            u16::from_le_bytes([s[11].1, s[12].1])
        };
        assert_eq!(divisor(100), 11931);
        assert_eq!(divisor(19), 62799);
    }

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
