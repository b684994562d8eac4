//! The `pv` flavour of the platform layer: the kernel runs in ring 1 under xen-lite, and every
//! sensitive operation is a hypercall or a store to the shared page.
//!
//! | what a native kernel does      | what this flavour does instead                        |
//! |--------------------------------|-------------------------------------------------------|
//! | `out` to the UART              | `console_io` hypercall                                |
//! | `lidt` with its IDT            | `set_trap_table` (a virtual IDT), `stack_switch`      |
//! | `cli` / `sti`                  | store 1 / 0 to `SharedInfo.vcpu.upcall_mask`; after   |
//! |                                | unmasking, check `upcall_pending` ("unmask, then      |
//! |                                | check pending") and, if set, make any hypercall so    |
//! |                                | xen-lite delivers it on the way back                  |
//! | program the timer              | `set_timer_op` (one-shot) + the timer VIRQ            |
//! | `hlt`                          | `sched_op(block)`                                     |
//! | read CR2 in the #PF handler    | read `SharedInfo.vcpu.cr2`                            |
//! | `iretq` from an interrupt      | restore the virtual IF, then `iretq`, inside the      |
//! |                                | no-delivery window registered with `set_callbacks`    |
//! | power off                      | `sched_op(shutdown, code)`                            |
//! | write a page-table entry       | `mmu_update` (xen-lite validates it); a frame that    |
//! |                                | becomes a table is first remapped read-only           |
//! |                                | (`update_va_mapping`), and pinned (`mmuext_op`)       |
//! | `mov cr3`                      | `mmuext_op(new_baseptr)`                              |
//!
//! Under shadow paging (`StartInfo::flags` has `START_FLAG_SHADOW_PAGING`, xen-lite's
//! `paging=shadow`) the page-table rows change: the tables hold guest-physical addresses and the
//! kernel writes them itself, as `hvm` does; nothing is remapped read-only or pinned; after a
//! batch it flushes (`mmuext_op(tlb_flush_local)`), and `new_baseptr` names the root's gfn. Every
//! other row stays: it is still a ring-1 kernel.

use core::arch::{asm, global_asm};
use core::mem::{offset_of, size_of};
use core::ptr::addr_of_mut;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};

use hypercall_abi::frame::TrapFrame;
use hypercall_abi::hypercall::{
    Errno, Hypercall, MmuUpdate, MmuextOp, Stats, TrapInfo, CONSOLEIO_WRITE,
    EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND, MMUEXT_NEW_BASEPTR,
    MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE,
    MMU_NORMAL_PT_UPDATE, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, UVMF_INVLPG, VIRQ_TIMER,
};
use hypercall_abi::layout::selectors::{FLAT_RING1_CS, FLAT_RING1_DS};
use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE};
use hypercall_abi::page_table::{PRESENT, WRITABLE};
use hypercall_abi::shared_info::{SharedInfo, VcpuInfo};
use hypercall_abi::start_info::START_FLAG_SHADOW_PAGING;
use hypercall_abi::StartInfo;

use super::PteWrite;
use crate::page_tables::DirectMap;
use crate::traps;

/// This flavour's name, for messages.
pub const FLAVOUR: &str = "pv";
/// The kernel's code selector (ring 1).
pub const KERNEL_CS: u16 = FLAT_RING1_CS;
/// The kernel's stack selector (ring 1).
pub const KERNEL_SS: u16 = FLAT_RING1_DS;

static HYPERCALL_PAGE: AtomicU64 = AtomicU64::new(0);
/// Address of `SharedInfo` (read by the return path's assembly too).
static SHARED_INFO: AtomicU64 = AtomicU64::new(0);
/// `StartInfo::pte_base`: the machine address of gfn 0 (0 under shadow paging).
static PTE_BASE: AtomicU64 = AtomicU64::new(0);
/// Whether xen-lite shadows this kernel's tables (`START_FLAG_SHADOW_PAGING`).
static SHADOW_PAGING: AtomicBool = AtomicBool::new(false);
/// The root last loaded ([`load_root`]), which [`update_va_mapping`] walks under shadow paging.
static CURRENT_ROOT: AtomicU64 = AtomicU64::new(0);

const KERNEL_STACK_SIZE: usize = 64 * 1024;
/// A stack only the CPU (and xen-lite's bounces) touch; `UnsafeCell` keeps it in writable
/// memory.
#[repr(C, align(16))]
struct Stack(core::cell::UnsafeCell<[u8; KERNEL_STACK_SIZE]>);
// SAFETY: Rust code never accesses the bytes; they are only used as a stack.
unsafe impl Sync for Stack {}
/// The ring-1 stack xen-lite bounces onto when user code is interrupted (`stack_switch`).
static KERNEL_STACK: Stack = Stack(core::cell::UnsafeCell::new([0; KERNEL_STACK_SIZE]));

/// The top of the kernel stack user code enters on (the `stack_switch` stack).
pub fn kernel_stack_top() -> u64 {
    KERNEL_STACK.0.get() as u64 + KERNEL_STACK_SIZE as u64
}

/// Remembers where the hypercall page and shared page are, and where gfn 0 is.
pub fn init(info: &StartInfo) {
    HYPERCALL_PAGE.store(info.hypercall_page, Ordering::Relaxed);
    SHARED_INFO.store(info.shared_info, Ordering::Relaxed);
    PTE_BASE.store(info.pte_base, Ordering::Relaxed);
    SHADOW_PAGING.store(info.flags & START_FLAG_SHADOW_PAGING != 0, Ordering::Relaxed);
    CURRENT_ROOT.store(crate::page_tables::start_of_day_root(info), Ordering::Relaxed);
}

/// Calls hypercall `number` with up to five arguments; returns `rax` (negative errno on error).
pub fn hypercall(number: u64, args: [u64; 5]) -> u64 {
    crate::hypercall_page::call(HYPERCALL_PAGE.load(Ordering::Relaxed), number, args)
}

/// Calls `hypercall` and turns a negative return into an `Errno`.
fn call(hypercall: Hypercall, args: [u64; 5]) -> Result<u64, Errno> {
    crate::hypercall_page::checked(HYPERCALL_PAGE.load(Ordering::Relaxed), hypercall, args)
}

/// Writes console output (`console_io`).
pub fn console_write(bytes: &[u8]) {
    // Nothing useful can be done if the console itself fails.
    let _ = call(
        Hypercall::ConsoleIo,
        [CONSOLEIO_WRITE, bytes.len() as u64, bytes.as_ptr() as u64, 0, 0],
    );
}

/// Ends the domain with `code` (`sched_op(shutdown)`).
pub fn shutdown(code: u8) -> ! {
    let _ = call(Hypercall::SchedOp, [SCHEDOP_SHUTDOWN, u64::from(code), 0, 0, 0]);
    // xen-lite never resumes a domain that shut down; if it did, trap loudly.
    loop {
        // SAFETY: `ud2` only raises #UD.
        unsafe { asm!("ud2") };
    }
}

/// Installs the trap table, the bounce stack and the event callback.
pub fn install_traps() -> Result<(), Errno> {
    let mut table = [TrapInfo::default(); traps::VECTORS + 2];
    for (vector, entry) in table.iter_mut().take(traps::VECTORS).enumerate() {
        // #BP and #OF may be raised from user code with `int3` / `into`.
        let dpl = if vector == 3 || vector == 4 { 3 } else { 0 };
        *entry = TrapInfo {
            vector: vector as u8,
            flags: dpl,
            reserved: [0; 6],
            address: traps::handler_address(vector as u64),
        };
    }
    // `int 0x80` with DPL 3: xen-lite turns it into the fast trap, ring 3 straight to ring 1.
    let syscall = traps::handler_address(traps::SYSCALL_VECTOR);
    table[traps::VECTORS] = TrapInfo {
        vector: traps::SYSCALL_VECTOR as u8,
        flags: 3,
        reserved: [0; 6],
        address: syscall,
    };
    call(Hypercall::SetTrapTable, [table.as_ptr() as u64, 0, 0, 0, 0])?;
    let stack_top = kernel_stack_top();
    call(Hypercall::StackSwitch, [u64::from(FLAT_RING1_DS), stack_top, 0, 0, 0])?;
    let (start, end) = unmask_window();
    call(
        Hypercall::SetCallbacks,
        [traps::handler_address(traps::EVENT_VECTOR), 0, syscall, start, end],
    )?;
    Ok(())
}

#[inline]
fn shared() -> *mut SharedInfo {
    SHARED_INFO.load(Ordering::Relaxed) as *mut SharedInfo
}

/// The faulting address of the last #PF (xen-lite copies CR2 into the shared page).
pub fn fault_address() -> u64 {
    // SAFETY: the shared page is mapped for the domain's whole life.
    unsafe { addr_of_mut!((*shared()).vcpu.cr2).read_volatile() }
}

/// The virtual `cli`.
#[inline] // two instructions on every system call: worth no call
pub fn events_disable() {
    // SAFETY: as in `fault_address`; a byte store is atomic with respect to xen-lite.
    unsafe { addr_of_mut!((*shared()).vcpu.upcall_mask).write_volatile(1) };
    compiler_fence(Ordering::SeqCst);
}

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// The flags word: the real RFLAGS (whose IF a pv kernel ignores), with IF replaced by the
/// virtual IF (events unmasked).
pub fn save_flags() -> u64 {
    let flags: u64;
    // SAFETY: `pushfq; pop` only reads RFLAGS.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags) };
    // SAFETY: as in `events_disable`: the vCPU's mask in the shared page, read.
    let masked = unsafe { addr_of_mut!((*shared()).vcpu.upcall_mask).read_volatile() } != 0;
    (flags & !RFLAGS_IF) | if masked { 0 } else { RFLAGS_IF }
}

/// The paravirtual `popfq`: the virtual IF from the word's IF bit (ring 1 cannot set the real one).
pub fn restore_flags(flags: u64) {
    if flags & RFLAGS_IF != 0 {
        events_enable();
    } else {
        events_disable();
    }
}

/// The virtual `sti`: unmask, then check pending; if something is pending, any hypercall
/// makes xen-lite deliver it on the way back.
pub fn events_enable() {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as in `events_disable`.
    unsafe { addr_of_mut!((*shared()).vcpu.upcall_mask).write_volatile(0) };
    compiler_fence(Ordering::SeqCst);
    if upcall_pending() {
        let _ = call(Hypercall::XenVersion, [0; 5]);
    }
}

/// Whether xen-lite has an upcall waiting.
pub fn upcall_pending() -> bool {
    // SAFETY: as in `fault_address`.
    unsafe { addr_of_mut!((*shared()).vcpu.upcall_pending).read_volatile() != 0 }
}

/// Nothing to acknowledge: an upcall is not a device interrupt (see `take_pending_events`).
pub fn acknowledge_event() {}

/// Clears `upcall_pending` and takes (clears and returns) the pending, unmasked ports.
pub fn take_pending_events() -> u64 {
    let shared = shared();
    // SAFETY: as in `fault_address`; xen-lite only writes these while the guest is stopped.
    unsafe {
        addr_of_mut!((*shared).vcpu.upcall_pending).write_volatile(0);
        let pending = addr_of_mut!((*shared).evtchn_pending).read_volatile();
        let mask = addr_of_mut!((*shared).evtchn_mask).read_volatile();
        let taken = pending & !mask;
        addr_of_mut!((*shared).evtchn_pending).write_volatile(pending & !taken);
        taken
    }
}

/// Whether port `port` is pending.
pub fn port_pending(port: u64) -> bool {
    // SAFETY: as in `fault_address`.
    unsafe { addr_of_mut!((*shared()).evtchn_pending).read_volatile() >> port & 1 == 1 }
}

/// xen-lite's clock.
pub fn now_ns() -> Result<u64, Errno> {
    // SAFETY: as in `fault_address`.
    Ok(unsafe { addr_of_mut!((*shared()).system_time_ns).read_volatile() })
}

/// Arms the one-shot timer.
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    call(Hypercall::SetTimerOp, [deadline_ns, 0, 0, 0, 0]).map(drop)
}

/// Binds the timer VIRQ; returns its port.
pub fn bind_timer() -> Result<u64, Errno> {
    call(Hypercall::EventChannelOp, [EVTCHNOP_BIND_VIRQ, VIRQ_TIMER, 0, 0, 0])
}

/// Sleeps until an event is pending (the virtual `sti; hlt`).
pub fn block() -> Result<(), Errno> {
    call(Hypercall::SchedOp, [SCHEDOP_BLOCK, 0, 0, 0, 0]).map(drop)
}

/// Where the CPU's IDT is (`sidt` is not privileged): xen-lite's, in the switcher.
pub fn idt_base() -> u64 {
    let mut pointer = [0u8; 10];
    // SAFETY: `sidt` stores 10 bytes to the buffer; it needs no privilege (UMIP is off).
    unsafe { asm!("sidt [{}]", in(reg) pointer.as_mut_ptr()) };
    u64::from_le_bytes(pointer[2..10].try_into().unwrap_or_default())
}

/// Gives the CPU to another domain.
pub fn yield_cpu() {
    let _ = call(Hypercall::SchedOp, [SCHEDOP_YIELD, 0, 0, 0, 0]);
}

/// Opens an event port that domain `remote` may send to; returns it.
pub fn open_port_for(remote: u32) -> Result<u64, Errno> {
    call(Hypercall::EventChannelOp, [EVTCHNOP_ALLOC_UNBOUND, u64::from(remote), 0, 0, 0])
}

/// Raises event `port` in domain `domain`.
pub fn send_event(domain: u32, port: u64) -> Result<(), Errno> {
    call(Hypercall::EventChannelOp, [EVTCHNOP_SEND, u64::from(domain), port, 0, 0]).map(drop)
}

// Page tables. Under direct paging every write is xen-lite's, after it validated it, and a
// frame that is a page table is mapped read-only wherever it is mapped. Under shadow paging the
// kernel writes its tables itself and tells xen-lite when the TLB's rules say it must.

/// Whether the tables are the kernel's own to write (shadow paging).
#[inline]
fn shadowed() -> bool {
    SHADOW_PAGING.load(Ordering::Relaxed)
}

/// The machine address of gfn `gfn`.
fn machine(gfn: u64) -> u64 {
    PTE_BASE.load(Ordering::Relaxed) + gfn * PAGE_SIZE
}

/// Writes the entry at `slot` itself (shadow paging).
fn write_entry(slot: u64, entry: u64) {
    // SAFETY: under shadow paging the kernel's tables are its own, writable in the direct map,
    // and `slot` is an entry of one of them; the callers keep the kernel's mappings in place.
    unsafe { DirectMap::new(PTE_BASE.load(Ordering::Relaxed)).write(slot, entry) };
}

/// Writes each `(slot, entry)` itself, then has xen-lite drop the shadow's translations
/// (shadow paging: what a batch of validated updates does under direct paging).
fn write_all_then_flush(writes: impl Iterator<Item = (u64, u64)>) -> Result<(), Errno> {
    writes.for_each(|(slot, entry)| write_entry(slot, entry));
    mmuext_op(&[MmuextOp { cmd: MMUEXT_TLB_FLUSH_LOCAL, arg: 0 }]).1
}

/// Remaps `gfn` read-only in the direct map (`update_va_mapping`); nothing under shadow paging.
pub fn make_page_table(gfn: u64) -> Result<(), Errno> {
    if shadowed() {
        return Ok(());
    }
    update_va_mapping(gfn_to_va(gfn), machine(gfn) | PRESENT)
}

/// Remaps `gfn` writable in the direct map (`update_va_mapping`); nothing under shadow paging.
pub fn release_page_table(gfn: u64) -> Result<(), Errno> {
    if shadowed() {
        return Ok(());
    }
    update_va_mapping(gfn_to_va(gfn), machine(gfn) | PRESENT | WRITABLE)
}

// A `PteWrite` is an `mmu_update` record as it stands: the slot is the record's `ptr` (8-byte
// aligned, so its command bits say `MMU_NORMAL_PT_UPDATE`), the entry its `val`.
const _: () = assert!(
    size_of::<PteWrite>() == size_of::<MmuUpdate>()
        && offset_of!(PteWrite, slot) == offset_of!(MmuUpdate, ptr)
        && offset_of!(PteWrite, entry) == offset_of!(MmuUpdate, val)
        && MMU_NORMAL_PT_UPDATE == 0
);

/// One `mmu_update` of the batch, as it stands; under shadow paging the writes, then one
/// `mmuext_op(tlb_flush_local)`. Out of line: see `platform::set_ptes`.
#[inline(never)]
pub fn set_ptes(writes: &[PteWrite]) -> Result<(), Errno> {
    if shadowed() {
        return write_all_then_flush(writes.iter().map(|w| (w.slot, w.entry)));
    }
    mmu_update_at(writes.as_ptr() as u64, writes.len()).1
}

/// `mmu_update` of one entry (xen-lite flushes after it, as after every validated update);
/// under shadow paging the write alone: the shadow keeps the old translation until
/// [`invalidate_page`] or a new base pointer, as a TLB would.
pub fn set_pte_keeping_tlb(slot: u64, entry: u64) -> Result<(), Errno> {
    if shadowed() {
        write_entry(slot, entry);
        return Ok(());
    }
    set_ptes(&[PteWrite { slot, entry }])
}

/// `mmuext_op(invlpg_local)`.
pub fn invalidate_page(va: u64) -> Result<(), Errno> {
    mmuext_op(&[MmuextOp { cmd: hypercall_abi::hypercall::MMUEXT_INVLPG_LOCAL, arg: va }]).1
}

/// `mmuext_op(pin_lN_table)`; nothing under shadow paging.
pub fn pin_table(level: u32, table: u64) -> Result<(), Errno> {
    if shadowed() {
        return Ok(());
    }
    let cmd = MMUEXT_PIN_L1_TABLE + u64::from(level - 1);
    mmuext_op(&[MmuextOp { cmd, arg: table >> 12 }]).1
}
const _: () = assert!(MMUEXT_PIN_L4_TABLE == MMUEXT_PIN_L1_TABLE + 3);

/// `mmuext_op(unpin_table)`; nothing under shadow paging.
pub fn unpin_table(table: u64) -> Result<(), Errno> {
    if shadowed() {
        return Ok(());
    }
    mmuext_op(&[MmuextOp { cmd: MMUEXT_UNPIN_TABLE, arg: table >> 12 }]).1
}

/// `mmuext_op(new_baseptr)` of the root's frame (its gfn, under shadow paging).
pub fn load_root(root: u64) -> Result<(), Errno> {
    mmuext_op(&[MmuextOp { cmd: MMUEXT_NEW_BASEPTR, arg: root >> 12 }]).1?;
    CURRENT_ROOT.store(root, Ordering::Relaxed);
    Ok(())
}

/// The `mmu_update` hypercall; under shadow paging, where xen-lite refuses it, the kernel
/// writes the records itself and flushes, as `hvm` does.
pub fn mmu_update(requests: &[MmuUpdate]) -> (u64, Result<(), Errno>) {
    if shadowed() {
        let flushed = write_all_then_flush(requests.iter().map(|r| (r.ptr, r.val)));
        return (requests.len() as u64, flushed);
    }
    mmu_update_at(requests.as_ptr() as u64, requests.len())
}

/// `mmu_update` of the `count` records at `records`.
fn mmu_update_at(records: u64, count: usize) -> (u64, Result<(), Errno>) {
    let mut done = 0u64;
    let result = call(
        Hypercall::MmuUpdate,
        [records, count as u64, core::ptr::addr_of_mut!(done) as u64, 0, 0],
    );
    (done, result.map(drop))
}

/// The `mmuext_op` hypercall.
pub fn mmuext_op(ops: &[MmuextOp]) -> (u64, Result<(), Errno>) {
    let mut done = 0u64;
    let result = call(
        Hypercall::MmuextOp,
        [ops.as_ptr() as u64, ops.len() as u64, core::ptr::addr_of_mut!(done) as u64, 0, 0],
    );
    (done, result.map(drop))
}

/// The `update_va_mapping` hypercall, with `invlpg`; under shadow paging, where xen-lite
/// refuses it, the kernel walks its current tables, writes the entry and invalidates it.
pub fn update_va_mapping(va: u64, entry: u64) -> Result<(), Errno> {
    if shadowed() {
        let tables = DirectMap::new(PTE_BASE.load(Ordering::Relaxed));
        write_entry(tables.leaf_slot(CURRENT_ROOT.load(Ordering::Relaxed), va)?, entry);
        return invalidate_page(va);
    }
    call(Hypercall::UpdateVaMapping, [va, entry, UVMF_INVLPG, 0, 0]).map(drop)
}

/// This domain's counters in xen-lite.
pub fn stats() -> Result<Stats, Errno> {
    crate::hypercall_page::stats(HYPERCALL_PAGE.load(Ordering::Relaxed))
}

// The return from an exception or upcall (`traps` jumps here with `rsp` at the `TrapFrame`):
// the virtual IF is restored from the saved RFLAGS.IF, then the registers, then `iretq`. The
// virtual IF goes first, while `rax` is still free (it is popped after), so the common case
// costs two instructions more than a native return. Unmasking, the pops and `iretq` sit inside
// the window registered with `set_callbacks`, where xen-lite delivers no upcall: an event
// arriving there waits until the `iretq` is done, so frames never pile up.
global_asm!(
    r#"
    .section .text.platform_return, "ax"
    .global platform_trap_restore
platform_trap_restore:
    test qword ptr [rsp + {rflags}], 0x200
    jz 2f
    .global pv_unmask_window_start
pv_unmask_window_start:
    mov rax, [rip + {shared}]
    mov byte ptr [rax + {mask}], 0
    "#,
    hypercall_abi::pop_registers!(),
    r#"
    add rsp, {stub_pushed}
    iretq
    .global pv_unmask_window_end
pv_unmask_window_end:
2:
    mov rax, [rip + {shared}]
    mov byte ptr [rax + {mask}], 1
    "#,
    hypercall_abi::pop_registers!(),
    r#"
    add rsp, {stub_pushed}
    iretq
    "#,
    rflags = const offset_of!(TrapFrame, rflags),
    shared = sym SHARED_INFO,
    mask = const offset_of!(SharedInfo, vcpu) + offset_of!(VcpuInfo, upcall_mask),
    stub_pushed = const hypercall_abi::frame::STUB_PUSHED,
);

unsafe extern "C" {
    static pv_unmask_window_start: u8;
    static pv_unmask_window_end: u8;
}

fn unmask_window() -> (u64, u64) {
    (
        core::ptr::addr_of!(pv_unmask_window_start) as u64,
        core::ptr::addr_of!(pv_unmask_window_end) as u64,
    )
}
