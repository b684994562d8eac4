//! An emulated 16550 UART at COM1, for `console=uart`: the guest's console by trap-and-emulate,
//! one VM exit per register access, where `console_io` is one hypercall per line.
//!
//! The registers a driver touches (the Linux and blog_os serial drivers, and this project's
//! kernel), at offsets from the base port:
//!
//! | offset | DLAB = 0, read | DLAB = 0, write | DLAB = 1 |
//! |---|---|---|---|
//! | 0 | RBR, received byte (none: 0) | THR, the byte to send | DLL, divisor low |
//! | 1 | IER, interrupt enables | IER | DLM, divisor high |
//! | 2 | IIR, "no interrupt pending" (FIFO bits if enabled) | FCR, FIFO control | |
//! | 3 | LCR, line control (bit 7: DLAB) | LCR | |
//! | 4 | MCR, modem control (bit 4: loopback) | MCR | |
//! | 5 | LSR, line status | (ignored) | |
//! | 6 | MSR, modem status | (ignored) | |
//! | 7 | SCR, scratch | SCR | |
//!
//! Transmit timing: a byte written to THR keeps the transmitter busy (LSR's THRE and TEMT
//! clear) until the guest has read LSR once, as if the line took one poll to send it. A driver
//! that polls LSR before each byte, as they all do, therefore costs three exits per byte: the
//! busy read, the ready read, the write. The receiver never has data (xen-lite has no input for
//! guests) and the UART raises no interrupt: drivers that poll work, and one that waited for
//! the transmit interrupt would wait for ever. In loopback (MCR bit 4) MSR reflects MCR, as a
//! driver's probe expects. See: the TI/National PC16550D data sheet; OSDev, "Serial Ports".

use hypercall_abi::devices::{UART_LSR_TEMT, UART_LSR_THRE};

/// LCR bit 7: the divisor latch is at offsets 0 and 1.
const LCR_DLAB: u8 = 1 << 7;
/// MCR bit 4: loopback.
const MCR_LOOPBACK: u8 = 1 << 4;
/// FCR bit 0: the FIFOs are on (IIR then says so in bits 7:6).
const FCR_ENABLE: u8 = 1 << 0;
/// MSR when nothing is connected in loopback: clear to send, data set ready, carrier detect.
const MSR_CONNECTED: u8 = 0xb0;

/// One UART as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fifo: bool,
    divisor: u16,
    /// A byte was written and LSR not read since: the transmitter is busy.
    sending: bool,
}

impl Uart {
    /// A UART after reset: 8 data bits would have to be set by the driver; nothing is sending.
    pub const fn new() -> Uart {
        Uart { ier: 0, lcr: 0, mcr: 0, scr: 0, fifo: false, divisor: 0, sending: false }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// The guest's `out` of `value` to register `offset` (0 to 7): the byte sent, if it was a
    /// THR write.
    pub fn write(&mut self, offset: u16, value: u8) -> Option<u8> {
        match (offset, self.dlab()) {
            (0, true) => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            (1, true) => self.divisor = (self.divisor & 0x00ff) | u16::from(value) << 8,
            (0, false) => {
                self.sending = true;
                // In loopback the byte goes to the receiver, not to the line.
                return (self.mcr & MCR_LOOPBACK == 0).then_some(value);
            }
            (1, false) => self.ier = value & 0x0f,
            (2, _) => self.fifo = value & FCR_ENABLE != 0,
            (3, _) => self.lcr = value,
            (4, _) => self.mcr = value & 0x1f,
            (7, _) => self.scr = value,
            _ => {} // LSR and MSR are read-only: writes are ignored, as on the chip
        }
        None
    }

    /// The guest's `in` from register `offset` (0 to 7).
    pub fn read(&mut self, offset: u16) -> u8 {
        match (offset, self.dlab()) {
            (0, true) => self.divisor as u8,
            (1, true) => (self.divisor >> 8) as u8,
            (0, false) => 0,
            (1, false) => self.ier,
            // Bit 0 set: no interrupt pending; bits 7:6 say the FIFOs are on.
            (2, _) => 0x01 | if self.fifo { 0xc0 } else { 0 },
            (3, _) => self.lcr,
            (4, _) => self.mcr,
            (5, _) => {
                let ready = if self.sending { 0 } else { UART_LSR_THRE | UART_LSR_TEMT };
                self.sending = false;
                ready
            }
            (6, _) if self.mcr & MCR_LOOPBACK != 0 => {
                // DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
                let m = self.mcr;
                (m & 1) << 5 | (m & 2) << 3 | (m & 4) << 4 | (m & 8) << 4
            }
            (6, _) => MSR_CONNECTED,
            _ => self.scr,
        }
    }
}

impl Default for Uart {
    fn default() -> Uart {
        Uart::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_polling_driver_sends_each_byte_after_one_busy_poll() {
        let mut uart = Uart::new();
        assert_eq!(uart.read(5) & UART_LSR_THRE, UART_LSR_THRE, "idle: ready");
        assert_eq!(uart.write(0, b'h'), Some(b'h'));
        assert_eq!(uart.read(5), 0, "busy sending");
        assert_eq!(uart.read(5), UART_LSR_THRE | UART_LSR_TEMT, "sent");
        assert_eq!(uart.write(0, b'i'), Some(b'i'));
    }

    #[test]
    fn the_divisor_latch_takes_offsets_0_and_1_while_dlab_is_set() {
        let mut uart = Uart::new();
        uart.write(1, 0x00); // IER off
        uart.write(3, 0x80); // DLAB
        assert_eq!(uart.write(0, 0x03), None, "DLL, not a byte to send");
        uart.write(1, 0x00);
        uart.write(3, 0x03); // 8N1, DLAB off
        assert_eq!(uart.divisor, 3, "38400 baud (115200 / 3)");
        assert_eq!(uart.read(3), 0x03);
        assert_eq!(uart.write(0, b'x'), Some(b'x'), "THR again");
    }

    #[test]
    fn fifo_scratch_ier_and_the_interrupt_register_read_back_as_on_the_chip() {
        let mut uart = Uart::new();
        assert_eq!(uart.read(2), 0x01, "no interrupt, no FIFO");
        uart.write(2, 0xc7);
        assert_eq!(uart.read(2), 0xc1, "FIFOs on");
        uart.write(7, 0x5a);
        assert_eq!(uart.read(7), 0x5a);
        uart.write(1, 0xff);
        assert_eq!(uart.read(1), 0x0f, "IER has four bits");
        assert_eq!(uart.read(0), 0, "nothing received");
    }

    #[test]
    fn loopback_keeps_bytes_off_the_line_and_mirrors_mcr_in_msr() {
        let mut uart = Uart::new();
        assert_eq!(uart.read(6), MSR_CONNECTED);
        uart.write(4, 0x1e); // loopback, RTS, OUT1, OUT2
        assert_eq!(uart.read(6), 0xd0, "CTS, RI, DCD");
        assert_eq!(uart.write(0, 0xae), None, "looped back, not sent");
        uart.write(4, 0x0b);
        assert_eq!(uart.write(0, b'y'), Some(b'y'));
    }
}
