//! The platform interface: everything the kernel does that a native kernel would do with a
//! privileged instruction, listed once, item by item.
//!
//! Two flavours implement it, and the build compiles exactly one (`--features pv` or `hvm`):
//!
//! - `pv.rs`: ring 1 under xen-lite; each item is a hypercall or a store to the shared page.
//! - `hvm.rs` (with `hvm/`): ring 0, natively or under VMX; each item is the real instruction.
//!
//! Every item below forwards to the flavour compiled in. The forwarders are `#[inline(always)]`
//! and cost nothing; what they buy is that the list is written once, here, and that a flavour
//! that misses an item or changes its signature does not compile. The rest of the kernel sees
//! only this list (the flavour module is private), so a difference between the flavours is
//! always behaviour behind an item, never a constant tested by a caller (STYLE rule 25).
//!
//! Page tables are the one place where the flavours differ in kind. Under direct paging (`pv`)
//! a page table must never be writable and every entry is written by xen-lite, which validates
//! it; the `hvm` kernel owns its tables and writes them itself. So the interface names the
//! kernel's intent ([`make_page_table`], [`set_ptes`], [`pin_table`], [`load_root`]...), and
//! each flavour does what that intent takes. Entries, slots and roots are machine addresses,
//! the values page-table entries hold (`crate::page_tables`). A `pv` kernel under shadow paging
//! (xen-lite's `paging=shadow`) is told so at start of day and then treats its tables as `hvm`
//! does, guest-physical and its own, telling xen-lite only of invalidations and base pointers.
//!
//! The last group is the pv ABI itself ([`hypercall`], [`mmu_update`], [`mmuext_op`],
//! [`update_va_mapping`]), for the workloads whose job is to exercise it: the self-tests, the
//! attacks, the fuzzer and the hostile guests. The kernel proper does not use them.
//!
//! Besides these items, each flavour defines the assembly label `platform_trap_restore`, where
//! `traps` jumps with `rsp` at a `TrapFrame` to resume what it describes (the linker fails if a
//! flavour lacks it).

use hypercall_abi::hypercall::{Errno, Hypercall, MmuUpdate, MmuextOp, Stats};
use hypercall_abi::StartInfo;

#[cfg(feature = "pv")]
mod pv;
#[cfg(feature = "pv")]
use pv as flavour;

#[cfg(any(feature = "hvm", all(test, not(feature = "pv"))))]
mod hvm;
#[cfg(any(feature = "hvm", all(test, not(feature = "pv"))))]
use hvm as flavour;

// Start of day.

/// This flavour's name, for messages (`pv`, `hvm`).
pub const FLAVOUR: &str = flavour::FLAVOUR;
/// The kernel's code selector (its privilege level in the low two bits).
pub const KERNEL_CS: u16 = flavour::KERNEL_CS;
/// The kernel's stack selector.
pub const KERNEL_SS: u16 = flavour::KERNEL_SS;

/// Start-of-day set-up, before anything else runs: remember what `StartInfo` says the platform
/// needs (and, in `hvm`, load the kernel's own descriptor tables).
#[inline(always)]
pub fn init(info: &StartInfo) {
    flavour::init(info)
}

/// Installs the entries of `traps` (every exception, the system call, the event upcall) and
/// the stack user code enters the kernel on.
#[inline(always)]
pub fn install_traps() -> Result<(), Errno> {
    flavour::install_traps()
}

/// The top of the kernel stack user code enters on.
#[inline(always)]
pub fn kernel_stack_top() -> u64 {
    flavour::kernel_stack_top()
}

// Console and power.

/// Writes console output.
#[inline(always)]
pub fn console_write(bytes: &[u8]) {
    flavour::console_write(bytes)
}

/// Ends the domain (or the machine) with exit code `code`.
#[inline(always)]
pub fn shutdown(code: u8) -> ! {
    flavour::shutdown(code)
}

// Exceptions.

/// The faulting address of the last page fault (CR2).
#[inline(always)]
pub fn fault_address() -> u64 {
    flavour::fault_address()
}

/// Where the CPU's IDT is (`sidt`).
#[inline(always)]
pub fn idt_base() -> u64 {
    flavour::idt_base()
}

// Events: the upcall (pv) or the timer interrupt (hvm), masked with the (virtual) IF.

/// Masks events (`cli`).
#[inline(always)]
pub fn events_disable() {
    flavour::events_disable()
}

/// Unmasks events (`sti`); one that arrived while they were masked is delivered now.
#[inline(always)]
pub fn events_enable() {
    flavour::events_enable()
}

/// The flags word, as `pushfq` reads it, for [`restore_flags`].
#[inline(always)]
pub fn save_flags() -> u64 {
    flavour::save_flags()
}

/// Restores a [`save_flags`] word: `popfq` (hvm), which under `mode=trap` cannot set IF unless
/// the kernel is patched (`patch=on`); the virtual IF from its IF bit (pv).
#[inline(always)]
pub fn restore_flags(flags: u64) {
    flavour::restore_flags(flags)
}

/// Whether an event is waiting to be delivered.
#[inline(always)]
pub fn upcall_pending() -> bool {
    flavour::upcall_pending()
}

/// Acknowledges the event being handled, first thing in the upcall.
#[inline(always)]
pub fn acknowledge_event() {
    flavour::acknowledge_event()
}

/// Takes (clears and returns, one bit per port) the pending, unmasked event ports.
#[inline(always)]
pub fn take_pending_events() -> u64 {
    flavour::take_pending_events()
}

/// Whether port `port` has an event waiting.
#[inline(always)]
pub fn port_pending(port: u64) -> bool {
    flavour::port_pending(port)
}

// Time.

/// The clock, in nanoseconds.
#[inline(always)]
pub fn now_ns() -> Result<u64, Errno> {
    flavour::now_ns()
}

/// Arms the one-shot timer for `deadline_ns` on [`now_ns`]'s clock.
#[inline(always)]
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    flavour::set_timer(deadline_ns)
}

/// Binds the timer to an event port; returns the port.
#[inline(always)]
pub fn bind_timer() -> Result<u64, Errno> {
    flavour::bind_timer()
}

/// Sleeps with events enabled until one is pending (`sti; hlt`).
#[inline(always)]
pub fn block() -> Result<(), Errno> {
    flavour::block()
}

// Other domains.

/// Gives the CPU to another domain (returns at once if there is none).
#[inline(always)]
pub fn yield_cpu() {
    flavour::yield_cpu()
}

/// Opens an event port that domain `remote` may send to; returns it.
#[inline(always)]
pub fn open_port_for(remote: u32) -> Result<u64, Errno> {
    flavour::open_port_for(remote)
}

/// Raises event `port` in domain `domain`.
#[inline(always)]
pub fn send_event(domain: u32, port: u64) -> Result<(), Errno> {
    flavour::send_event(domain, port)
}

/// xen-lite's counters for this domain.
#[inline(always)]
pub fn stats() -> Result<Stats, Errno> {
    flavour::stats()
}

// Page tables, by intent.

/// One page-table write: which entry, and what it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PteWrite {
    /// The machine address of the entry (8-byte aligned).
    pub slot: u64,
    /// The new entry: a machine address and `hypercall_abi::page_table` flags.
    pub entry: u64,
}

/// Frame `gfn`, zeroed by the caller, is about to become a page table: in `pv` its direct-map
/// mapping becomes read-only (a page table may never be writable); in `hvm`, nothing.
#[inline(always)]
pub fn make_page_table(gfn: u64) -> Result<(), Errno> {
    flavour::make_page_table(gfn)
}

/// Frame `gfn` is no longer a page table (unpinned, unhooked): in `pv` its direct-map mapping
/// becomes writable again; in `hvm`, nothing.
#[inline(always)]
pub fn release_page_table(gfn: u64) -> Result<(), Errno> {
    flavour::release_page_table(gfn)
}

/// Writes page-table entries, in order, as one batch (in `pv`, one `mmu_update`, which
/// validates each and stops at the first refused one); the TLB is then up to date.
///
/// Both flavours keep theirs out of line (`#[inline(never)]`): one platform call per batch
/// whatever the flavour, so the benchmark's `pte_updates` compares the mechanisms, not what
/// the compiler chose to inline.
#[inline(always)]
pub fn set_ptes(writes: &[PteWrite]) -> Result<(), Errno> {
    flavour::set_ptes(writes)
}

/// Writes the one entry at `slot` and leaves the TLB alone, so the old translation may stay
/// until [`invalidate_page`] or a CR3 load, as on hardware. In `pv` xen-lite validates the
/// entry and flushes anyway (every validated update does).
#[inline(always)]
pub fn set_pte_keeping_tlb(slot: u64, entry: u64) -> Result<(), Errno> {
    flavour::set_pte_keeping_tlb(slot, entry)
}

/// Drops the TLB's translation of `va` (`invlpg`; in `pv`, `mmuext_op(invlpg_local)`).
#[inline(always)]
pub fn invalidate_page(va: u64) -> Result<(), Errno> {
    flavour::invalidate_page(va)
}

/// [`set_ptes`] of the one entry at `slot`.
#[inline(always)]
pub fn set_pte(slot: u64, entry: u64) -> Result<(), Errno> {
    set_ptes(&[PteWrite { slot, entry }])
}

/// Pins the table at machine address `table` as a level-`level` table (1 to 4): in `pv`,
/// xen-lite validates it and keeps it typed while pinned; in `hvm`, nothing.
#[inline(always)]
pub fn pin_table(level: u32, table: u64) -> Result<(), Errno> {
    flavour::pin_table(level, table)
}

/// Unpins the table at machine address `table` (in `hvm`, nothing).
#[inline(always)]
pub fn unpin_table(table: u64) -> Result<(), Errno> {
    flavour::unpin_table(table)
}

/// Loads the address space whose level-4 table is at (page-aligned) machine address `root`.
#[inline(always)]
pub fn load_root(root: u64) -> Result<(), Errno> {
    flavour::load_root(root)
}

// The pv ABI, for the workloads that exercise it.

/// Calls hypercall `number` with up to five arguments; returns `rax` (a negative errno on
/// error). `ENOSYS` without a hypervisor.
#[inline(always)]
pub fn hypercall(number: u64, args: [u64; 5]) -> u64 {
    flavour::hypercall(number, args)
}

/// `domain_id()`: which domain this kernel is, asked of the hypervisor (lab 1's new hypercall;
/// the same in both flavours, since the dispatcher is). `ENOSYS` without a hypervisor.
pub fn domain_id() -> Result<u64, Errno> {
    // LAB 1.5 BEGIN: call hypercall `DomainId` with no arguments and turn its `rax` into a `Result`
    // Hint: `hypercall(number, args)` above returns `rax`; `Errno::from_return` tells an errno from a value.
    let value = hypercall(Hypercall::DomainId as u64, [0; 5]);
    Errno::from_return(value).map_or(Ok(value), Err)
    // LAB 1.5 END
}

/// `mmu_update`: applies the records in order; returns how many were applied, and the error
/// that stopped the batch, if any. The `hvm` flavour writes them itself, and so does `pv` under
/// shadow paging (where xen-lite refuses the hypercall: there is nothing to validate).
#[inline(always)]
pub fn mmu_update(requests: &[MmuUpdate]) -> (u64, Result<(), Errno>) {
    flavour::mmu_update(requests)
}

/// `mmuext_op`: pin, unpin, new base pointer, flushes; returns as [`mmu_update`] does. The
/// `hvm` flavour does the base pointer and the flushes itself and ignores the rest.
#[inline(always)]
pub fn mmuext_op(ops: &[MmuextOp]) -> (u64, Result<(), Errno>) {
    flavour::mmuext_op(ops)
}

/// `update_va_mapping`: sets the level-1 entry that maps `va` in the current tables to `entry`
/// and flushes that translation. The `hvm` flavour walks and writes the tables itself, and so
/// does `pv` under shadow paging.
#[inline(always)]
pub fn update_va_mapping(va: u64, entry: u64) -> Result<(), Errno> {
    flavour::update_va_mapping(va, entry)
}
