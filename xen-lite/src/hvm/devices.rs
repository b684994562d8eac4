//! The devices an `hvm` guest sees, emulated per domain: just enough of an 8259 PIC and an 8254
//! PIT for the kernel in `pv-guest` to run its tick unchanged on real hardware and under VMX or
//! SVM, and a 16550 UART at COM1 for `console=uart` (`super::uart`). Pure state machines, so
//! they are tested on the host.
//!
//! Trap and emulate, the lecture's oldest technique, here for I/O: with "unconditional I/O
//! exiting" every `in`/`out` of the guest leaves non-root mode, and xen-lite plays the device
//! ([`Devices::write`], [`Devices::read`]). The real PIC and PIT stay xen-lite's own.
//!
//! What is modelled: the PIC's initialisation words (ICW1-ICW4, of which ICW2, the vector base,
//! matters), its mask (OCW1), one request latch and one in-service bit for IRQ 0, and the
//! non-specific EOI; the PIT's channel 0 in rate-generator mode, whose divisor becomes a
//! period counted in xen-lite's own ticks. Like a real PIC, IRQ 0 latches once: ticks that
//! arrive while one is still pending are lost, and the guest's clock falls behind while it is
//! not scheduled (the "lost ticks" problem of every virtualised timer).
//!
//! See: Intel 8259A and 8254 data sheets.

use core::fmt;

use hypercall_abi::devices::{
    COM1, PIC1_COMMAND, PIC1_DATA, PIC2_COMMAND, PIC2_DATA, PIC_EOI, PIT_CHANNEL0, PIT_COMMAND,
    PIT_INPUT_HZ,
};

use super::uart::Uart;

/// The UART's eight registers, from [`COM1`].
const UART_PORTS: core::ops::Range<u16> = COM1..COM1 + 8;

/// Where one 8259 is in its initialisation sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum InitStep {
    /// Initialised (or never started): data writes set the mask.
    #[default]
    Ready,
    /// ICW1 seen: the next data write is ICW2 (vector base).
    Icw2,
    /// Then ICW3 (cascade wiring), ignored.
    Icw3,
    /// Then ICW4 (mode), ignored.
    Icw4,
}

/// One 8259's state as the guest sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pic {
    step: InitStep,
    /// ICW2: the vector of IRQ 0 of this chip; `None` until initialised.
    vector_base: Option<u8>,
    /// OCW1: a set bit masks that IRQ.
    mask: u8,
}

impl Pic {
    fn command(&mut self, value: u8) -> Result<(), DeviceError> {
        if value & 0x10 != 0 {
            // ICW1 (bit 4): start initialising; everything is masked until OCW1 says otherwise.
            *self = Pic { step: InitStep::Icw2, vector_base: None, mask: 0xff };
            Ok(())
        } else if value == PIC_EOI {
            Ok(()) // the caller clears in-service (only IRQ 0 is modelled)
        } else {
            Err(DeviceError::Unsupported("PIC command"))
        }
    }

    /// A write to the data port: the next initialisation word, or else the mask. (ICW1 may
    /// say "single PIC" or "no ICW4"; the guest kernel never does, so ICW3 and ICW4 are always
    /// expected.)
    fn data(&mut self, value: u8) {
        // LAB 4.1 BEGIN: emulate a write to the PIC's data port: the initialisation words ICW2, ICW3, ICW4 in turn after an ICW1, then the interrupt mask (OCW1)
        // Hint: ICW2 holds the vector of IRQ 0 in its top five bits; ICW3 and ICW4 need no state here.
        // Hint: see the 8259A datasheet's initialisation flowchart, or OSDev's "8259 PIC" page.
        self.step = match self.step {
            InitStep::Icw2 => {
                self.vector_base = Some(value & 0xf8);
                InitStep::Icw3
            }
            InitStep::Icw3 => InitStep::Icw4,
            InitStep::Icw4 => InitStep::Ready,
            InitStep::Ready => {
                self.mask = value;
                InitStep::Ready
            }
        };
        // LAB 4.1 END
    }
}

/// What the guest did that these devices do not model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// No device here.
    NoDevice,
    /// A device feature the guest kernel does not need and xen-lite does not emulate.
    Unsupported(&'static str),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDevice => f.write_str("no device xen-lite emulates at this port"),
            Self::Unsupported(what) => write!(f, "unsupported {what}"),
        }
    }
}

/// The PIT's channel 0, as far as the guest has programmed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pit {
    /// The low byte of a divisor whose high byte has not arrived yet.
    low: Option<u8>,
    /// The programmed divisor (0 = not running).
    divisor: u32,
}

/// One domain's PIC pair and PIT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    master: Pic,
    slave: Pic,
    pit: Pit,
    /// Time since the PIT last requested IRQ 0.
    elapsed_ns: u64,
    /// IRQ 0 requested and not yet delivered.
    requested: bool,
    /// IRQ 0 delivered and not yet acknowledged with EOI.
    in_service: bool,
    /// COM1, a 16550 (`super::uart`).
    uart: Uart,
    /// The byte the guest's last THR write sent, until the caller takes it.
    sent: Option<u8>,
}

impl Devices {
    /// Fresh devices, as after reset: nothing programmed, nothing pending.
    pub const fn new() -> Devices {
        const PIC: Pic = Pic { step: InitStep::Ready, vector_base: None, mask: 0xff };
        Devices {
            master: PIC,
            slave: PIC,
            pit: Pit { low: None, divisor: 0 },
            elapsed_ns: 0,
            requested: false,
            in_service: false,
            uart: Uart::new(),
            sent: None,
        }
    }

    /// The byte the guest sent through the UART with its last `out`, if it sent one.
    pub fn take_sent(&mut self) -> Option<u8> {
        self.sent.take()
    }

    /// The guest's `out` of `value` (one byte) to `port`.
    pub fn write(&mut self, port: u16, value: u8) -> Result<(), DeviceError> {
        match port {
            PIC1_COMMAND => {
                self.master.command(value)?;
                if value == PIC_EOI {
                    self.in_service = false;
                }
                Ok(())
            }
            PIC2_COMMAND => self.slave.command(value),
            PIC1_DATA => {
                self.master.data(value);
                Ok(())
            }
            PIC2_DATA => {
                self.slave.data(value);
                Ok(())
            }
            PIT_COMMAND => match value {
                // Channel 0, low then high byte, mode 2 or 3 (rate or square wave), binary.
                0x34 | 0x36 => {
                    self.pit = Pit { low: None, divisor: 0 };
                    Ok(())
                }
                _ => Err(DeviceError::Unsupported("PIT control word")),
            },
            PIT_CHANNEL0 => {
                match self.pit.low.take() {
                    None => self.pit.low = Some(value),
                    Some(low) => {
                        let divisor = u32::from(u16::from_le_bytes([low, value]));
                        // A divisor of 0 means 65536 on the real chip.
                        self.pit.divisor = if divisor == 0 { 0x1_0000 } else { divisor };
                        self.elapsed_ns = 0;
                    }
                }
                Ok(())
            }
            port if UART_PORTS.contains(&port) => {
                self.sent = self.uart.write(port - COM1, value);
                Ok(())
            }
            _ => Err(DeviceError::NoDevice),
        }
    }

    /// The guest's `in` of one byte from `port`.
    pub fn read(&mut self, port: u16) -> Result<u8, DeviceError> {
        match port {
            PIC1_DATA => Ok(self.master.mask),
            PIC2_DATA => Ok(self.slave.mask),
            port if UART_PORTS.contains(&port) => Ok(self.uart.read(port - COM1)),
            _ => Err(DeviceError::NoDevice),
        }
    }

    /// The PIT's period in nanoseconds, once programmed.
    pub fn period_ns(&self) -> Option<u64> {
        (self.pit.divisor != 0).then(|| u64::from(self.pit.divisor) * 1_000_000_000 / PIT_INPUT_HZ)
    }

    /// `ns` of time passed: the PIT may request IRQ 0.
    pub fn advance(&mut self, ns: u64) {
        // LAB 4.2 BEGIN: let `ns` of time pass on the PIT: when a whole period has gone by, request IRQ 0 (once, however many periods passed)
        // Hint: a PIT that was never given a divisor counts nothing (`period_ns`).
        // Hint: keep the remainder of the period, so ticks stay evenly spaced.
        let Some(period) = self.period_ns() else { return };
        self.elapsed_ns += ns;
        if self.elapsed_ns >= period {
            self.elapsed_ns %= period;
            self.requested = true;
        }
        // LAB 4.2 END
    }

    /// The vector of an interrupt the PIC would deliver now, if any: IRQ 0 requested, not
    /// masked, not still in service, and the PIC initialised.
    pub fn deliverable(&self) -> Option<u8> {
        // LAB 4.3 BEGIN: the vector the PIC would raise now: IRQ 0 requested, not masked, not still in service (no EOI yet), and the PIC initialised
        // Hint: the vector is the master PIC's ICW2 base plus the IRQ number (0).
        let unmasked = self.master.mask & 1 == 0;
        match self.master.vector_base {
            Some(base) if self.requested && unmasked && !self.in_service => Some(base),
            _ => None,
        }
        // LAB 4.3 END
    }

    /// The interrupt [`Devices::deliverable`] named was delivered.
    pub fn acknowledge(&mut self) {
        self.requested = false;
        self.in_service = true;
    }

    /// Whether an interrupt can ever arrive: the PIT runs and IRQ 0 is unmasked.
    pub fn can_interrupt(&self) -> bool {
        self.period_ns().is_some() && self.master.mask & 1 == 0 && self.master.vector_base.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall_abi::devices::timer_init_sequence;

    fn programmed(hz: u64) -> Devices {
        let mut devices = Devices::new();
        for (port, value) in timer_init_sequence(0x20, hz) {
            devices.write(port, value).unwrap();
        }
        devices
    }

    #[test]
    fn the_guest_init_sequence_programs_vector_mask_and_period() {
        let devices = programmed(100);
        assert_eq!(devices.master.vector_base, Some(0x20));
        assert_eq!(devices.slave.vector_base, Some(0x28));
        assert_eq!(devices.master.mask, 0xfe);
        // 11931 / 1193182 Hz = 9.999 ms.
        assert_eq!(devices.period_ns(), Some(11931 * 1_000_000_000 / PIT_INPUT_HZ));
        assert_eq!(devices.period_ns(), Some(9_999_312));
        assert!(devices.can_interrupt());
        assert_eq!(devices.deliverable(), None, "nothing has happened yet");
    }

    #[test]
    fn ticks_request_irq0_once_until_eoi() {
        let mut devices = programmed(100);
        devices.advance(5_000_000);
        assert_eq!(devices.deliverable(), None);
        devices.advance(5_000_000);
        assert_eq!(devices.deliverable(), Some(0x20));
        devices.acknowledge();
        assert_eq!(devices.deliverable(), None, "delivered");
        devices.advance(10_000_000);
        assert_eq!(devices.deliverable(), None, "still in service: no EOI yet");
        devices.write(PIC1_COMMAND, PIC_EOI).unwrap();
        assert_eq!(devices.deliverable(), Some(0x20), "the latched request follows the EOI");
        // Many periods while the request is pending latch one interrupt, not many.
        devices.advance(100_000_000);
        devices.acknowledge();
        devices.write(PIC1_COMMAND, PIC_EOI).unwrap();
        assert_eq!(devices.deliverable(), None, "lost ticks are lost");
    }

    #[test]
    fn masking_holds_the_interrupt_back() {
        let mut devices = programmed(100);
        devices.write(PIC1_DATA, 0xff).unwrap();
        devices.advance(20_000_000);
        assert_eq!(devices.deliverable(), None);
        assert!(!devices.can_interrupt());
        assert_eq!(devices.read(PIC1_DATA), Ok(0xff));
        devices.write(PIC1_DATA, 0xfe).unwrap();
        assert_eq!(devices.deliverable(), Some(0x20));
    }

    #[test]
    fn nothing_is_delivered_before_initialisation() {
        let mut devices = Devices::new();
        devices.advance(1 << 40);
        assert_eq!(devices.deliverable(), None);
        assert!(!devices.can_interrupt());
    }

    // LAB HIDDEN BEGIN
    #[test]
    fn hidden_a_divisor_of_zero_is_65536() {
        let mut devices = programmed(100);
        devices.write(PIT_COMMAND, 0x34).unwrap();
        devices.write(PIT_CHANNEL0, 0).unwrap();
        devices.write(PIT_CHANNEL0, 0).unwrap();
        assert_eq!(devices.period_ns(), Some(0x1_0000 * 1_000_000_000 / PIT_INPUT_HZ));
    }

    #[test]
    fn hidden_reinitialising_masks_everything_and_forgets_the_vector() {
        let mut devices = programmed(100);
        devices.advance(20_000_000);
        devices.write(PIC1_COMMAND, 0x11).unwrap();
        assert_eq!(devices.read(PIC1_DATA), Ok(0xff));
        assert_eq!(devices.deliverable(), None);
        for value in [0x40, 0x04, 0x01, 0xfe] {
            devices.write(PIC1_DATA, value).unwrap();
        }
        assert_eq!(devices.deliverable(), Some(0x40), "the new base, the latched request");
    }

    #[test]
    fn hidden_ticks_keep_their_spacing() {
        let mut devices = programmed(1000);
        let period = devices.period_ns().unwrap();
        let mut delivered = 0;
        for _ in 0..1000 {
            devices.advance(period / 3 + 1);
            if devices.deliverable().is_some() {
                devices.acknowledge();
                devices.write(PIC1_COMMAND, PIC_EOI).unwrap();
                delivered += 1;
            }
        }
        assert!((332..=334).contains(&delivered), "{delivered} ticks in 1000 thirds of a period");
    }
    // LAB HIDDEN END

    #[test]
    fn a_byte_written_to_com1_is_sent_once() {
        let mut devices = Devices::new();
        assert_eq!(devices.read(COM1 + 5), Ok(0x60), "LSR: transmitter empty");
        assert_eq!(devices.write(COM1, b'h'), Ok(()));
        assert_eq!(devices.take_sent(), Some(b'h'));
        assert_eq!(devices.take_sent(), None, "taken");
        assert_eq!(devices.write(COM1 + 3, 0x03), Ok(()), "LCR");
        assert_eq!(devices.take_sent(), None, "a register write sends nothing");
    }

    #[test]
    fn unknown_ports_and_modes_are_refused() {
        let mut devices = Devices::new();
        assert_eq!(devices.write(0x80, 0), Err(DeviceError::NoDevice));
        assert_eq!(devices.read(0x2f8), Err(DeviceError::NoDevice), "COM2: only COM1 is there");
        assert_eq!(devices.take_sent(), None);
        assert_eq!(
            devices.write(PIT_COMMAND, 0xb4),
            Err(DeviceError::Unsupported("PIT control word"))
        );
        assert_eq!(devices.write(PIC1_COMMAND, 0x0b), Err(DeviceError::Unsupported("PIC command")));
    }
}
