//! The 16550 UART on COM1: xen-lite's only output device.
//!
//! Polled, no interrupts. Every byte waits for the transmit holding register: Bochs models the
//! UART's timing and drops bytes written too fast (DESIGN §2).

use hypercall_abi::devices::{COM1, UART_LSR, UART_LSR_TEMT, UART_LSR_THRE};

use crate::instructions::{inb, outb};

/// Programs 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on, interrupts off.
pub fn init() {
    const SETUP: [(u16, u8); 7] = [
        (1, 0x00), // IER: no UART interrupts
        (3, 0x80), // LCR: DLAB on, to reach the divisor latch
        (0, 0x01), // DLL: divisor 1 = 115200 baud
        (1, 0x00), // DLM
        (3, 0x03), // LCR: DLAB off, 8N1
        (2, 0xc7), // FCR: enable and clear FIFOs
        (4, 0x03), // MCR: DTR, RTS
    ];
    for (register, value) in SETUP {
        // SAFETY: programming COM1's own registers; xen-lite is the UART's only user.
        unsafe { outb(COM1 + register, value) };
    }
}

/// Sends `bytes`, turning `\n` into `\r\n`. Takes no lock: callers that want whole lines
/// together hold [`crate::console`]'s lock; the fatal path writes even if that lock is held.
pub fn write_bytes(bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'\n' {
            put(b'\r');
        }
        put(byte);
    }
}

fn put(byte: u8) {
    wait_for(UART_LSR_THRE);
    // SAFETY: writing the transmit holding register of COM1 sends one byte.
    unsafe { outb(COM1, byte) };
}

/// Waits until every byte has left the UART (before the emulator is told to exit).
pub fn flush() {
    wait_for(UART_LSR_TEMT);
}

fn wait_for(bit: u8) {
    // SAFETY: reading the line status register has no side effect.
    while unsafe { inb(COM1 + UART_LSR) } & bit == 0 {
        core::hint::spin_loop();
    }
}
