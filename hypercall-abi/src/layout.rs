//! The guest-visible virtual address space, the same for every mode.
//!
//! ```text
//! 0x0000_0000_0000_0000 ┬──────────────────────────────────────────────────────────────┐
//!                       │ user space: the guest kernel's processes (ring 3)            │
//! 0x0000_8000_0000_0000 ┼──────────────────────────────────────────────────────────────┤
//!                       │ non-canonical hole                                           │
//! 0xffff_8000_0000_0000 ┼──────────────────────────────────────────────────────────────┤
//!   HYPERVISOR_START    │ reserved for xen-lite (16 L4 slots, 8 TiB); a guest may      │
//!                       │ never map anything here. xen-lite's own memory map is in     │
//!                       │ xen-lite/src/memory_map.rs.                                  │
//! 0xffff_8800_0000_0000 ┼──────────────────────────────────────────────────────────────┤
//!   HYPERVISOR_END      │ the guest kernel's to use                                    │
//! 0xffff_ffff_8000_0000 ┼──────────────────────────────────────────────────────────────┤
//!   GUEST_DIRECT_MAP    │ start of day: all of the domain's memory, gfn 0 first:       │
//!                       │   gfn 0x000..0x100  free (1 MiB)                             │
//!                       │   gfn 0x100..       kernel image, linked at GUEST_KERNEL_BASE│
//!                       │   then              StartInfo page, page tables, boot stack  │
//!                       │   then              free frames (StartInfo::first_free_gfn)  │
//! 0xffff_ffff_ffff_ffff ┴──────────────────────────────────────────────────────────────┘
//! ```
//!
//! A *gfn* (guest frame number) counts 4 KiB frames of the domain's own memory from 0. The
//! guest kernel is linked in the top 2 GiB so it can use the `kernel` code model.

/// Size of a page and of a frame.
pub const PAGE_SIZE: u64 = 4096;

/// One past the highest user-space (lower-half canonical) address.
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// First address of the range reserved for the hypervisor.
pub const HYPERVISOR_START: u64 = 0xffff_8000_0000_0000;
/// One past the last address reserved for the hypervisor.
pub const HYPERVISOR_END: u64 = 0xffff_8800_0000_0000;

/// Where the start-of-day page tables map gfn 0.
pub const GUEST_DIRECT_MAP: u64 = 0xffff_ffff_8000_0000;
/// First gfn the kernel image may occupy: the first 1 MiB stays free.
pub const GUEST_KERNEL_FIRST_GFN: u64 = 0x100;
/// The address guest kernels are linked at (`pv-guest/kernel.ld` uses the same number).
pub const GUEST_KERNEL_BASE: u64 = GUEST_DIRECT_MAP + GUEST_KERNEL_FIRST_GFN * PAGE_SIZE;

/// Smallest domain xen-lite builds: image, start info, page tables and stack must fit.
pub const MIN_GUEST_PAGES: u64 = 1024;
/// Largest domain: its direct map must fit in the top 2 GiB.
pub const MAX_GUEST_PAGES: u64 = (1 << 31) / PAGE_SIZE;

/// Segment selectors a `pv` guest uses (xen-lite's GDT holds them; the low two bits are the
/// ring). Named as in Xen's `public/arch-x86/xen-x86_32.h`.
pub mod selectors {
    /// Guest kernel code, ring 1, 64-bit.
    pub const FLAT_RING1_CS: u16 = 0x19;
    /// Guest kernel data and stack, ring 1 (`stack_switch` takes this).
    pub const FLAT_RING1_DS: u16 = 0x21;
    /// User data and stack, ring 3.
    pub const FLAT_RING3_DS: u16 = 0x2b;
    /// User code, ring 3, 64-bit.
    pub const FLAT_RING3_CS: u16 = 0x33;
}

/// Virtual address of `gfn` in the start-of-day direct map.
pub const fn gfn_to_va(gfn: u64) -> u64 {
    GUEST_DIRECT_MAP + gfn * PAGE_SIZE
}

/// The gfn behind a start-of-day direct-map address, if `va` lies in it for `nr_pages` pages.
pub fn va_to_gfn(va: u64, nr_pages: u64) -> Option<u64> {
    let gfn = va.checked_sub(GUEST_DIRECT_MAP)? / PAGE_SIZE;
    (gfn < nr_pages).then_some(gfn)
}

/// Whether `va` is canonical: bits 63..47 all equal (48-bit virtual addresses). A page-table
/// walk uses only bits 47..0, so a non-canonical address has a canonical twin with the same
/// entries; hypercalls that take addresses refuse it rather than silently edit the twin's.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// Whether `[start, start + len)` touches the hypervisor's reserved range (or wraps around).
pub fn overlaps_hypervisor(start: u64, len: u64) -> bool {
    match start.checked_add(len) {
        None => true,
        Some(end) => len != 0 && start < HYPERVISOR_END && end > HYPERVISOR_START,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_base_is_in_the_top_two_gib_and_page_aligned() {
        assert_eq!(GUEST_KERNEL_BASE, 0xffff_ffff_8010_0000);
        assert_eq!(GUEST_KERNEL_BASE % PAGE_SIZE, 0);
        assert_eq!(gfn_to_va(MAX_GUEST_PAGES - 1), u64::MAX - PAGE_SIZE + 1);
    }

    #[test]
    fn direct_map_translation_is_bounded() {
        assert_eq!(va_to_gfn(GUEST_KERNEL_BASE + 5, 2048), Some(0x100));
        assert_eq!(va_to_gfn(gfn_to_va(2048), 2048), None);
        assert_eq!(va_to_gfn(GUEST_DIRECT_MAP - 1, 2048), None);
    }

    #[test]
    fn canonical_addresses_are_the_two_halves() {
        for va in [0, USER_END - 1, HYPERVISOR_START, GUEST_DIRECT_MAP, u64::MAX] {
            assert!(is_canonical(va), "{va:#x}");
        }
        for va in [USER_END, HYPERVISOR_START - 1, 0x0001_0000_0000_0000, 1 << 63] {
            assert!(!is_canonical(va), "{va:#x}");
        }
    }

    #[test]
    fn the_reserved_range_is_detected_including_wraparound() {
        assert!(overlaps_hypervisor(HYPERVISOR_START, 1));
        assert!(overlaps_hypervisor(HYPERVISOR_START - 1, 2));
        assert!(overlaps_hypervisor(HYPERVISOR_END - 1, 1));
        assert!(!overlaps_hypervisor(HYPERVISOR_END, 4096));
        assert!(!overlaps_hypervisor(HYPERVISOR_START - 4096, 4096));
        assert!(overlaps_hypervisor(u64::MAX, 2), "a range that wraps is never safe");
        assert!(!overlaps_hypervisor(0x1000, 0));
    }
}
