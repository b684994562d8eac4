//! xen-lite's own virtual memory map, and the bootloader configuration that creates it.
//!
//! Everything of xen-lite lives in the range `hypercall_abi::layout` reserves for it, so the
//! lower half and the top of the address space are free for guests:
//!
//! ```text
//! 0xffff_8000_0000_0000 ┬──────────────────────────────────────────────────────────────┐
//!   PHYS_MAP            │ all of physical memory, 1:1, up to the highest address in    │
//!                       │ the firmware's map (at least 4 GiB; QEMU reports a reserved  │
//!                       │ region near 1 TiB): how xen-lite reads page tables, the      │
//!                       │ ramdisk and domain memory. Room for 4 TiB.                   │
//! 0xffff_8400_0000_0000 ┼──────────────────────────────────────────────────────────────┤
//!   IMAGE_BASE          │ xen-lite's ELF image (a PIE; symbols = ELF vaddr + this)     │
//! 0xffff_8480_0000_0000 ┼──────────────────────────────────────────────────────────────┤
//!   DYNAMIC_START       │ placed by the bootloader: boot stack, BootInfo, ramdisk,     │
//!                       │ frame buffer                                                 │
//! 0xffff_8800_0000_0000 ┴──────────────────────────────────────────────────────────────┘
//!   HYPERVISOR_END        (guests own everything outside this range)
//! ```
//!
//! The bootloader also identity-maps a few low frames (its context-switch code and GDT) in the
//! tables it hands over; xen-lite drops them when it loads its own level-4 table, which keeps
//! only the slots of this range (see `paging::adopt_boot_tables`).

use bootloader_api::config::{BootloaderConfig, Mapping};
use hypercall_abi::layout::{HYPERVISOR_END, HYPERVISOR_START};

/// Start of the direct map of physical memory.
pub const PHYS_MAP: u64 = HYPERVISOR_START;
/// Where the bootloader loads xen-lite's image.
pub const IMAGE_BASE: u64 = 0xffff_8400_0000_0000;
/// Start of the range the bootloader may choose addresses in.
pub const DYNAMIC_START: u64 = 0xffff_8480_0000_0000;
/// Size of the boot stack xen-lite runs on.
pub const BOOT_STACK_SIZE: u64 = 128 * 1024;

/// First and one-past-last level-4 slot of the reserved range.
pub const HYPERVISOR_L4_SLOTS: core::ops::Range<usize> =
    l4_index(HYPERVISOR_START)..l4_index(HYPERVISOR_END);

/// The level-4 page-table index of a virtual address.
pub const fn l4_index(va: u64) -> usize {
    hypercall_abi::page_table::index(va, 4)
}

/// What the bootloader is asked to set up before it jumps to `kernel_main`.
pub const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::FixedAddress(PHYS_MAP));
    config.mappings.kernel_base = Mapping::FixedAddress(IMAGE_BASE);
    config.mappings.dynamic_range_start = Some(DYNAMIC_START);
    config.mappings.dynamic_range_end = Some(HYPERVISOR_END - 0x1000);
    config.kernel_stack_size = BOOT_STACK_SIZE;
    config
};

/// The address through which xen-lite reaches physical address `phys`.
pub const fn phys_to_virt(phys: u64) -> u64 {
    PHYS_MAP + phys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_lies_inside_the_reserved_range() {
        for address in [PHYS_MAP, IMAGE_BASE, DYNAMIC_START] {
            assert!((HYPERVISOR_START..HYPERVISOR_END).contains(&address));
        }
        assert_eq!(HYPERVISOR_L4_SLOTS, 256..272);
        const { assert!(IMAGE_BASE - PHYS_MAP >= 4 << 40, "the direct map may cover 4 TiB") };
    }
}
