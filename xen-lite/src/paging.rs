//! xen-lite's own address space, and access to physical frames through the direct map.

use hypercall_abi::page_table::{self, Tables};
use spin::Once;

use crate::frame::Frame;
use crate::instructions::{read_cr3, write_cr3};
use crate::memory_map::{phys_to_virt, HYPERVISOR_L4_SLOTS};

/// Number of level-4 slots xen-lite occupies.
pub const HYPERVISOR_SLOT_COUNT: usize = HYPERVISOR_L4_SLOTS.end - HYPERVISOR_L4_SLOTS.start;

/// The level-4 entries of xen-lite's range, as loaded by [`adopt_boot_tables`].
static HYPERVISOR_L4_ENTRIES: Once<[u64; HYPERVISOR_SLOT_COUNT]> = Once::new();

/// Replaces the bootloader's level-4 table by a fresh one that keeps only xen-lite's slots,
/// dropping the bootloader's low identity mappings. Lower-level tables are shared.
pub fn adopt_boot_tables(l4_frame: Frame) {
    let boot_l4 = page_table::address(read_cr3());
    // SAFETY: CR3 names the bootloader's L4, which is RAM reachable through the direct map and
    // not referenced elsewhere by Rust code.
    let boot = unsafe { &*(phys_to_virt(boot_l4) as *const [u64; 512]) };
    let mut entries = [0; HYPERVISOR_SLOT_COUNT];
    entries.copy_from_slice(&boot[HYPERVISOR_L4_SLOTS]);
    // SAFETY: `l4_frame` was just allocated for this table and nothing else refers to it.
    let new = unsafe { &mut *(phys_to_virt(l4_frame.addr()) as *mut [u64; 512]) };
    new.fill(0);
    new[HYPERVISOR_L4_SLOTS].copy_from_slice(&entries);
    HYPERVISOR_L4_ENTRIES.call_once(|| entries);
    // SAFETY: every part of xen-lite (image, stacks, boot info, ramdisk, direct map) lies in the
    // slots copied above, as `memory_map::BOOTLOADER_CONFIG` requests.
    unsafe { write_cr3(l4_frame.addr()) };
    crate::switcher::set_hypervisor_cr3(l4_frame.addr());
}

/// The live tables, read through xen-lite's direct map of physical memory.
struct LiveTables;

impl Tables for LiveTables {
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        // SAFETY: `table` is a page-table frame of the live tables (CR3 or a present entry
        // names it), reachable through the direct map; reading an entry has no side effect.
        Some(unsafe { *(phys_to_virt(table) as *const u64).add(index) })
    }
}

/// The physical address behind `va` in the current address space, if it is mapped. Follows
/// 1 GiB and 2 MiB pages.
pub fn translate(va: u64) -> Option<u64> {
    let leaf = page_table::walk(&LiveTables, read_cr3(), va, 1).ok()?;
    Some(leaf.translate(va))
}

/// xen-lite's level-4 entries, to copy into an address space that must keep xen-lite mapped.
pub fn hypervisor_l4_entries() -> &'static [u64; HYPERVISOR_SLOT_COUNT] {
    HYPERVISOR_L4_ENTRIES.get().expect("adopt_boot_tables runs at boot")
}
