//! The `hvm` flavour of the platform layer: the kernel runs in ring 0 and uses the real
//! instructions.
//!
//! Today this is `native` mode, where no hypervisor is underneath: the console is COM1 driven
//! by port I/O, shutdown uses the same exit device as xen-lite (`hypercall_abi::devices`), and
//! `cli`/`sti` are the real instructions, and the kernel loads its own IDT. It still runs on the
//! GDT and TSS xen-lite left behind; its timer, page-table writes and system-call entry arrive
//! with the comparison builds (VMX, SVM), and until then the operations that need them answer
//! `ENOSYS`, which every caller reports as "not in this flavour yet".

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use hypercall_abi::devices::{COM1, DEBUG_EXIT_PORT, UART_LSR, UART_LSR_TEMT, UART_LSR_THRE};
use hypercall_abi::hypercall::{Errno, MmuUpdate, MmuextOp, Stats};
use hypercall_abi::StartInfo;

/// This flavour's name, for messages.
pub const FLAVOUR: &str = "hvm";
/// The kernel's code selector: ring 0 (xen-lite's GDT, still loaded in `native` mode).
pub const KERNEL_CS: u16 = 0x08;
/// The kernel's stack selector: ring 0.
pub const KERNEL_SS: u16 = 0x10;
/// The kernel owns its page tables and writes them directly.
pub const KERNEL_WRITES_PAGE_TABLES: bool = true;

/// Whether the next byte starts a line (and so gets the `[domN] ` prefix).
static AT_LINE_START: AtomicBool = AtomicBool::new(true);
/// This domain's id, for the prefix.
static DOMAIN_ID: AtomicU32 = AtomicU32::new(0);

/// No separate stack for entries from user code yet in this flavour (processes need the
/// page-table operations it lacks, so none can start).
pub fn kernel_stack_top() -> u64 {
    0
}

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
    unsafe { asm!("xchg bx, bx", in("eax") u32::from(code), options(nomem, nostack)) };
    loop {
        // SAFETY: nothing is left to run; halting with interrupts off stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// No hypercalls without a hypervisor.
pub fn hypercall(_number: u64, _args: [u64; 5]) -> u64 {
    Errno::ENOSYS.to_return()
}

/// The kernel's own IDT: every exception vector to its `traps` entry, ring-0 interrupt gates
/// (#BP and #OF reachable from ring 3), then `lidt`.
pub fn install_traps() -> Result<(), Errno> {
    use x86::bits64::segmentation::Descriptor64;
    use x86::dtables::DescriptorTablePointer;
    use x86::segmentation::{
        BuildDescriptor, DescriptorBuilder, GateDescriptorBuilder, SegmentSelector,
    };
    use x86::Ring;

    let idt = IDT.call_once(|| {
        let mut idt = [Descriptor64::NULL; 256];
        for (vector, gate) in idt.iter_mut().enumerate().take(crate::traps::VECTORS) {
            let dpl = if vector == 3 || vector == 4 { Ring::Ring3 } else { Ring::Ring0 };
            *gate = <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
                SegmentSelector::from_raw(KERNEL_CS),
                crate::traps::handler_address(vector as u64),
            )
            .present()
            .dpl(dpl)
            .finish();
        }
        idt[crate::traps::SYSCALL_VECTOR as usize] =
            <DescriptorBuilder as GateDescriptorBuilder<u64>>::trap_gate_descriptor(
                SegmentSelector::from_raw(KERNEL_CS),
                crate::traps::handler_address(crate::traps::SYSCALL_VECTOR),
            )
            .present()
            .dpl(Ring::Ring3)
            .finish();
        idt
    });
    // SAFETY: the table is a static built once, and every gate points at a `traps` entry stub.
    unsafe { x86::dtables::lidt(&DescriptorTablePointer::new_from_slice(idt)) };
    Ok(())
}

static IDT: spin::Once<[x86::bits64::segmentation::Descriptor64; 256]> = spin::Once::new();

/// CR2, read directly: ring 0 may.
pub fn fault_address() -> u64 {
    // SAFETY: reading CR2 has no side effect; the hvm kernel runs in ring 0.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// The real `cli`.
pub fn events_disable() {
    // SAFETY: ring 0 may clear IF; nothing relies on interrupts here.
    unsafe { x86::irq::disable() };
}

/// The real `sti`.
pub fn events_enable() {
    // SAFETY: no interrupt source is programmed in native mode yet, so none can arrive.
    unsafe { x86::irq::enable() };
}

/// No event channels without a hypervisor.
pub fn upcall_pending() -> bool {
    false
}

/// No event channels without a hypervisor.
pub fn take_pending_events() -> u64 {
    0
}

/// No event channels without a hypervisor.
pub fn port_pending(_port: u64) -> bool {
    false
}

/// No clock yet in this flavour.
pub fn now_ns() -> Result<u64, Errno> {
    Err(Errno::ENOSYS)
}

/// No timer yet in this flavour.
pub fn set_timer(_deadline_ns: u64) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// No timer yet in this flavour.
pub fn bind_timer() -> Result<u64, Errno> {
    Err(Errno::ENOSYS)
}

/// Nothing to wait for without interrupts.
pub fn block() -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// Where the CPU's IDT is.
pub fn idt_base() -> u64 {
    let mut pointer = [0u8; 10];
    // SAFETY: `sidt` stores 10 bytes to the buffer.
    unsafe { asm!("sidt [{}]", in(reg) pointer.as_mut_ptr()) };
    u64::from_le_bytes(pointer[2..10].try_into().unwrap_or_default())
}

/// Alone on the machine, yielding returns at once.
pub fn yield_cpu() {}

/// No other domains without a hypervisor.
pub fn open_port_for(_remote: u32) -> Result<u64, Errno> {
    Err(Errno::ENOSYS)
}

/// No other domains without a hypervisor.
pub fn send_event(_domain: u32, _port: u64) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// The hvm kernel will write its own tables directly; not built yet in this flavour.
pub fn mmu_update(_requests: &[MmuUpdate]) -> (u64, Result<(), Errno>) {
    (0, Err(Errno::ENOSYS))
}

/// Not built yet in this flavour (see `mmu_update`).
pub fn mmuext_op(_ops: &[MmuextOp]) -> (u64, Result<(), Errno>) {
    (0, Err(Errno::ENOSYS))
}

/// Not built yet in this flavour (see `mmu_update`).
pub fn update_va_mapping(_va: u64, _entry: u64) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// No hypervisor counts anything.
pub fn stats() -> Result<Stats, Errno> {
    Err(Errno::ENOSYS)
}

// The return from an exception: the real `iretq` restores IF itself.
global_asm!(
    r#"
    .section .text.platform_return, "ax"
    .global platform_trap_return
platform_trap_return:
    iretq
    "#
);

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
