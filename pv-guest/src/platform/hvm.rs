//! The `hvm` flavour of the platform layer: the kernel runs in ring 0 and uses the real
//! instructions.
//!
//! It runs in three places, and this layer is the same in all:
//!
//! - `native`: no hypervisor underneath. The console is COM1 driven by port I/O and shutdown
//!   uses the same exit device as xen-lite (`hypercall_abi::devices`).
//! - `vmx`: VMX non-root ring 0 under xen-lite, with EPT; `svm`: SVM guest mode, ring 0, with
//!   nested paging. The console, shutdown, yield and `stats` go through the hypercall page,
//!   whose stubs xen-lite filled with `vmcall` or `vmmcall`; everything else is the real
//!   instruction, and xen-lite virtualises what it must (the PIC and PIT ports, a few MSRs,
//!   `hlt`) without the kernel knowing.
//!
//! In all three, the kernel loads its own GDT, TSS and IDT, programs the PIT and PIC for its tick
//! (`hvm/pit.rs`), writes its page tables directly (`hvm/paging.rs`), and takes `syscall` at its
//! own LSTAR entry. Which of the two it is comes from `StartInfo::mode`, read once in [`init`].

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::devices::{self, COM1, DEBUG_EXIT_PORT, UART_LSR, UART_LSR_TEMT, UART_LSR_THRE};
use hypercall_abi::hypercall::{
    Errno, Hypercall, Stats, CONSOLEIO_WRITE, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD,
};
use hypercall_abi::layout::selectors::{FLAT_RING3_CS, FLAT_RING3_DS};
use hypercall_abi::{Mode, StartInfo};
use spin::Once;
use x86::bits64::segmentation::Descriptor64;
use x86::bits64::task::TaskStateSegment;
use x86::segmentation::{
    BuildDescriptor, CodeSegmentType, DataSegmentType, Descriptor, DescriptorBuilder,
    GateDescriptorBuilder, SegmentDescriptorBuilder, SegmentSelector,
};
use x86::Ring;

mod paging;
mod pit;

pub use paging::{
    invalidate_page, load_root, make_page_table, mmu_update, mmuext_op, pin_table,
    release_page_table, set_pte_keeping_tlb, set_ptes, unpin_table, update_va_mapping,
};
pub use pit::{
    acknowledge_event, bind_timer, now_ns, port_pending, set_timer, take_pending_events,
    upcall_pending,
};

/// This flavour's name, for messages.
pub const FLAVOUR: &str = "hvm";
/// The kernel's code selector: ring 0, in this kernel's own GDT.
pub const KERNEL_CS: u16 = 0x08;
/// The kernel's stack selector: ring 0.
pub const KERNEL_SS: u16 = 0x10;
/// The TSS's selector.
const TSS_SELECTOR: u16 = 0x38;

/// Whether the next byte starts a line (and so gets the `[domN] ` prefix).
static AT_LINE_START: AtomicBool = AtomicBool::new(true);
/// The console is the UART even under a hypervisor (`START_FLAG_CONSOLE_UART`).
static CONSOLE_UART: AtomicBool = AtomicBool::new(false);
/// This domain's id, for the prefix.
static DOMAIN_ID: AtomicU32 = AtomicU32::new(0);
/// `patch=on` (`START_FLAG_PATCHED`): the sites that rely on `popfq` setting IF are patched.
static PATCHED: AtomicBool = AtomicBool::new(false);
/// `mode=trap`: xen-lite answers the counter port (`hypercall_abi::devices::TRAP_COUNTER_PORT`).
static TRAP_MODE: AtomicBool = AtomicBool::new(false);
/// Where xen-lite's hypercall page is; 0 in `native` mode, where there is no hypervisor.
static HYPERCALL_PAGE: AtomicU64 = AtomicU64::new(0);

/// The kernel's GDT: the same selectors as xen-lite's (`hypercall_abi::layout::selectors`
/// for ring 3), without the ring-1 pair this flavour never uses.
#[repr(C, packed)]
struct Gdt {
    null: Descriptor,
    code: Descriptor,
    data: Descriptor,
    unused: [Descriptor; 2],
    user_data: Descriptor,
    user_code: Descriptor,
    tss: Descriptor64,
}
const _: () = assert!(FLAT_RING3_DS == 0x2b && FLAT_RING3_CS == 0x33);

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<Gdt> = Once::new();

/// Builds and loads the kernel's own GDT and TSS and reloads every segment register. Under
/// VMX the CPU arrives with no usable GDT at all (xen-lite's is not in the guest's memory), so
/// this runs before anything can raise an exception.
fn load_descriptor_tables() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.set_rsp(Ring::Ring0, kernel_stack_top());
        // No I/O bitmap: ring 3 never reaches a port.
        tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
        tss
    });
    let code = |ring| {
        DescriptorBuilder::code_descriptor(0, 0xfffff, CodeSegmentType::ExecuteReadAccessed)
            .present()
            .dpl(ring)
            .l()
            .limit_granularity_4kb()
            .finish()
    };
    let data = |ring| {
        DescriptorBuilder::data_descriptor(0, 0xfffff, DataSegmentType::ReadWriteAccessed)
            .present()
            .dpl(ring)
            .limit_granularity_4kb()
            .finish()
    };
    let gdt = GDT.call_once(|| Gdt {
        null: Descriptor::NULL,
        code: code(Ring::Ring0),
        data: data(Ring::Ring0),
        unused: [Descriptor::NULL; 2],
        user_data: data(Ring::Ring3),
        user_code: code(Ring::Ring3),
        tss: <DescriptorBuilder as GateDescriptorBuilder<u64>>::tss_descriptor(
            core::ptr::from_ref(tss) as u64,
            core::mem::size_of::<TaskStateSegment>() as u64 - 1,
            true,
        )
        .present()
        .dpl(Ring::Ring0)
        .finish(),
    });
    // SAFETY: `GDT` and `TSS` are statics built once; the selectors name descriptors in it, and
    // the kernel runs in ring 0 with interrupts off this early.
    unsafe {
        x86::dtables::lgdt(&x86::dtables::DescriptorTablePointer::new(gdt));
        x86::segmentation::load_cs(SegmentSelector::from_raw(KERNEL_CS));
        let data = SegmentSelector::from_raw(KERNEL_SS);
        x86::segmentation::load_ss(data);
        x86::segmentation::load_ds(data);
        x86::segmentation::load_es(data);
        x86::task::load_tr(SegmentSelector::from_raw(TSS_SELECTOR));
    }
}

/// Start-of-day platform set-up.
pub fn init(info: &StartInfo) {
    load_descriptor_tables();
    DOMAIN_ID.store(info.domain_id, Ordering::Relaxed);
    let uart = info.flags & hypercall_abi::start_info::START_FLAG_CONSOLE_UART != 0;
    CONSOLE_UART.store(uart, Ordering::Relaxed);
    TRAP_MODE.store(info.mode() == Some(Mode::Trap), Ordering::Relaxed);
    let patched = info.flags & hypercall_abi::start_info::START_FLAG_PATCHED != 0;
    PATCHED.store(patched, Ordering::Relaxed);
    if matches!(info.mode(), Some(Mode::Vmx | Mode::Svm)) {
        HYPERCALL_PAGE.store(info.hypercall_page, Ordering::Relaxed);
    }
    // What `cpuid` says about the CPU underneath: under xen-lite the "hypervisor present" bit
    // is set and VMX and SVM are hidden (the `cpuid` exits, and xen-lite edits the answer).
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    let extended = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    let svm =
        extended >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    let offered = |yes: bool| if yes { "offered" } else { "not offered" };
    crate::println!(
        "cpuid: hypervisor bit {}, VMX {}, SVM {}",
        if ecx & (1 << 31) != 0 { "set" } else { "clear" },
        offered(ecx & (1 << 5) != 0),
        offered(svm)
    );
    paging::init(info.pte_base);
}

/// Whether a hypervisor is underneath (`vmx`, `svm`): then it has a hypercall page.
fn under_hypervisor() -> bool {
    HYPERCALL_PAGE.load(Ordering::Relaxed) != 0
}

/// Calls `hypercall` and turns a negative return into an `Errno`.
fn call(hypercall: Hypercall, args: [u64; 5]) -> Result<u64, Errno> {
    crate::hypercall_page::checked(HYPERCALL_PAGE.load(Ordering::Relaxed), hypercall, args)
}

/// Writes console output: `console_io` under a hypervisor (which tags the lines), else COM1 (and
/// under a hypervisor too with `console=uart`, whose emulated UART tags them).
/// With no hypervisor to tag lines, the platform adds the `[domN]` prefix itself, so
/// transcripts read the same in every mode.
pub fn console_write(bytes: &[u8]) {
    if under_hypervisor() && !CONSOLE_UART.load(Ordering::Relaxed) {
        // Nothing useful can be done if the console itself fails.
        let _ = call(
            Hypercall::ConsoleIo,
            [CONSOLEIO_WRITE, bytes.len() as u64, bytes.as_ptr() as u64, 0, 0],
        );
        return;
    }
    for &byte in bytes {
        // A hypervisor tags the lines of the UART it emulates, as it tags `console_io`'s.
        if AT_LINE_START.swap(false, Ordering::Relaxed) && !under_hypervisor() {
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

/// Ends the domain with `code`: `sched_op(shutdown)` under a hypervisor; alone on the
/// machine, ends the emulator with `code` as its exit status.
pub fn shutdown(code: u8) -> ! {
    if under_hypervisor() {
        let _ = call(Hypercall::SchedOp, [SCHEDOP_SHUTDOWN, u64::from(code), 0, 0, 0]);
        // xen-lite never resumes a domain that shut down; if it did, trap loudly.
        loop {
            // SAFETY: `ud2` only raises #UD.
            unsafe { asm!("ud2") };
        }
    }
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

/// Calls hypercall `number` through the hypercall page (`vmcall` stubs under VMX); `ENOSYS`
/// without a hypervisor.
pub fn hypercall(number: u64, args: [u64; 5]) -> u64 {
    crate::hypercall_page::call(HYPERCALL_PAGE.load(Ordering::Relaxed), number, args)
}

/// The kernel's own IDT (every exception vector to its `traps` entry, ring-0 interrupt gates,
/// #BP and #OF and the `int 0x80` system call reachable from ring 3) and its system-call entry
/// (`syscall`: EFER.SCE, STAR, LSTAR, FMASK). Its entry stack (TSS.RSP0) is set with the TSS.
pub fn install_traps() -> Result<(), Errno> {
    use x86::dtables::DescriptorTablePointer;

    let idt = IDT.call_once(|| {
        let selector = SegmentSelector::from_raw(KERNEL_CS);
        let gate = |address: u64, dpl: Ring| {
            <DescriptorBuilder as GateDescriptorBuilder<u64>>::interrupt_descriptor(
                selector, address,
            )
            .present()
            .dpl(dpl)
            .finish()
        };
        let mut idt = [Descriptor64::NULL; 256];
        for (vector, entry) in idt.iter_mut().enumerate().take(crate::traps::VECTORS) {
            let dpl = if vector == 3 || vector == 4 { Ring::Ring3 } else { Ring::Ring0 };
            *entry = gate(crate::traps::handler_address(vector as u64), dpl);
        }
        idt[crate::traps::SYSCALL_VECTOR as usize] =
            gate(crate::traps::handler_address(crate::traps::SYSCALL_VECTOR), Ring::Ring3);
        // The timer's interrupt arrives at the event entry, as a pv upcall would.
        idt[usize::from(pit::TIMER_VECTOR)] =
            gate(crate::traps::handler_address(crate::traps::EVENT_VECTOR), Ring::Ring0);
        idt
    });
    // SAFETY: the table is a static built once, and every gate points at a `traps` entry stub.
    unsafe { x86::dtables::lidt(&DescriptorTablePointer::new_from_slice(idt)) };
    KERNEL_STACK_TOP.store(kernel_stack_top(), Ordering::Relaxed);
    // Until `bind_timer` remaps and programs them, the PICs stay as the firmware left them,
    // IRQ 0 on vector 8 (#DF's): mask every line, so enabling interrupts early is harmless.
    for port in [devices::PIC1_DATA, devices::PIC2_DATA] {
        // SAFETY: writing the interrupt mask only stops the PIC from raising lines.
        unsafe { x86::io::outb(port, 0xff) };
    }
    // SAFETY: these MSRs exist on every x86-64 CPU; LSTAR points at this kernel's syscall entry
    // (below), which switches to its own stack before touching memory.
    unsafe {
        use x86::msr::{rdmsr, wrmsr, IA32_EFER, IA32_FMASK, IA32_LSTAR, IA32_STAR};
        wrmsr(IA32_STAR, u64::from(KERNEL_CS) << 32);
        wrmsr(IA32_LSTAR, core::ptr::addr_of!(hvm_syscall_entry) as u64);
        wrmsr(IA32_FMASK, SYSCALL_CLEARS_RFLAGS);
        wrmsr(IA32_EFER, rdmsr(IA32_EFER) | 1);
    }
    Ok(())
}

/// RFLAGS bits `syscall` clears on entry (FMASK): IF (no interrupt before the entry has a
/// stack), TF, DF (the ABI wants it clear), IOPL, and NT and AC, which a user sets with `popfq`:
/// with NT still set, this kernel's own `iretq` would raise #GP (in 64-bit mode `iretq` with NT
/// is a task return, which does not exist), so a user could panic the kernel. As Linux's.
const SYSCALL_CLEARS_RFLAGS: u64 = 1 << 9 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 14 | 1 << 18;

static IDT: spin::Once<[x86::bits64::segmentation::Descriptor64; 256]> = spin::Once::new();

const KERNEL_STACK_SIZE: usize = 64 * 1024;
#[repr(C, align(16))]
struct Stack(core::cell::UnsafeCell<[u8; KERNEL_STACK_SIZE]>);
// SAFETY: only the CPU uses these bytes, as a stack.
unsafe impl Sync for Stack {}
static KERNEL_STACK: Stack = Stack(core::cell::UnsafeCell::new([0; KERNEL_STACK_SIZE]));
/// [`kernel_stack_top`], for the syscall entry.
static KERNEL_STACK_TOP: AtomicU64 = AtomicU64::new(0);
/// The user's `rsp` during the first instructions of the syscall entry.
static SYSCALL_SCRATCH: AtomicU64 = AtomicU64::new(0);

/// The top of the kernel stack user code enters on (TSS.RSP0, and the syscall entry's).
pub fn kernel_stack_top() -> u64 {
    KERNEL_STACK.0.get() as u64 + KERNEL_STACK_SIZE as u64
}

// `syscall` leaves rsp alone and IF cleared (FMASK): move to the kernel stack and build the
// frame `int 0x80` would have left, then join the common entry as vector 0x80.
global_asm!(
    concat!(
        r#"
    .section .text.hvm_syscall, "ax"
    "#,
        hypercall_abi::entry_code_begin!(),
        r#"
    .global hvm_syscall_entry
hvm_syscall_entry:
    mov [rip + {scratch}], rsp
    mov rsp, [rip + {stack}]
    push {user_ss}
    push qword ptr [rip + {scratch}]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {vector}
    jmp guest_trap_common
    "#,
        hypercall_abi::entry_code_end!(),
    ),
    scratch = sym SYSCALL_SCRATCH,
    stack = sym KERNEL_STACK_TOP,
    user_ss = const FLAT_RING3_DS,
    user_cs = const FLAT_RING3_CS,
    vector = const crate::traps::SYSCALL_VECTOR,
);

unsafe extern "C" {
    static hvm_syscall_entry: u8;
}

/// CR2, read directly: ring 0 may.
pub fn fault_address() -> u64 {
    // SAFETY: reading CR2 has no side effect; the hvm kernel runs in ring 0.
    unsafe { x86::controlregs::cr2() as u64 }
}

/// The real `cli`.
pub fn events_disable() {
    // SAFETY: ring 0 may clear IF.
    unsafe { x86::irq::disable() };
}

/// `pushfq`: the real flags (under `mode=trap`, the real IF: 1).
pub fn save_flags() -> u64 {
    let flags: u64;
    // SAFETY: `pushfq; pop` only reads RFLAGS.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags) };
    flags
}

/// `popfq`. In ring 1 (`mode=trap`) it cannot change IF and does not trap; patched
/// (`START_FLAG_PATCHED`), the kernel follows it with an `sti` when the word has IF set, which
/// traps and lets xen-lite set the virtual IF: one site made paravirtual.
pub fn restore_flags(flags: u64) {
    // SAFETY: restores a word `save_flags` read in this kernel.
    unsafe { asm!("push {}", "popfq", in(reg) flags) };
    if PATCHED.load(Ordering::Relaxed) && flags & (1 << 9) != 0 {
        events_enable();
    }
}

/// The real `sti`.
pub fn events_enable() {
    // SAFETY: every interrupt that can arrive (the timer, once bound) has a gate.
    unsafe { x86::irq::enable() };
}

/// Waits for an interrupt with interrupts on (the real `sti; hlt`).
pub fn block() -> Result<(), Errno> {
    // SAFETY: `sti` takes effect after `hlt`, so no interrupt is lost in between.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
    Ok(())
}

/// Where the CPU's IDT is.
pub fn idt_base() -> u64 {
    let mut pointer = [0u8; 10];
    // SAFETY: `sidt` stores 10 bytes to the buffer.
    unsafe { asm!("sidt [{}]", in(reg) pointer.as_mut_ptr()) };
    u64::from_le_bytes(pointer[2..10].try_into().unwrap_or_default())
}

/// `sched_op(yield)` under a hypervisor; alone on the machine, yielding returns at once.
pub fn yield_cpu() {
    if under_hypervisor() {
        let _ = call(Hypercall::SchedOp, [SCHEDOP_YIELD, 0, 0, 0, 0]);
    }
}

/// No other domains without a hypervisor.
pub fn open_port_for(_remote: u32) -> Result<u64, Errno> {
    Err(Errno::ENOSYS)
}

/// No other domains without a hypervisor.
pub fn send_event(_domain: u32, _port: u64) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

/// xen-lite's counters for this domain (`ENOSYS` with no hypervisor to count anything). Under
/// `mode=trap`, which has no hypercalls, only the number of traps (besides the timer's), read
/// from xen-lite's counter port and shown as exits of slot 0.
pub fn stats() -> Result<Stats, Errno> {
    if TRAP_MODE.load(Ordering::Relaxed) {
        let traps: u32;
        // SAFETY: a read of xen-lite's counter port under `mode=trap` (the only mode that sets
        // TRAP_MODE); it changes nothing.
        unsafe { asm!("in eax, dx", out("eax") traps, in("dx") devices::TRAP_COUNTER_PORT) };
        let mut stats = Stats::new();
        stats.vm_exits[0] = u64::from(traps);
        return Ok(stats);
    }
    crate::hypercall_page::stats(HYPERCALL_PAGE.load(Ordering::Relaxed))
}

// The return from an exception (`traps` jumps here with `rsp` at the `TrapFrame`): restore
// the registers, drop vector and error code, and the real `iretq` restores IF itself.
global_asm!(
    r#"
    .section .text.platform_return, "ax"
    .global platform_trap_restore
platform_trap_restore:
    "#,
    hypercall_abi::pop_registers!(),
    r#"
    add rsp, {stub_pushed}
    iretq
    "#,
    stub_pushed = const hypercall_abi::frame::STUB_PUSHED,
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
