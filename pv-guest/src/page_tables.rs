//! The kernel's page tables as `hypercall_abi::page_table` reads them: through the direct map.
//!
//! Entries hold machine addresses: `StartInfo::pte_base` is the machine address of gfn 0, and
//! gfn `n` is at `pte_base + n * 4096` (in `pv` the frame xen-lite gave the domain, in `hvm` the
//! guest-physical address). Every gfn is mapped at `gfn_to_va(n)` in the start-of-day direct
//! map, so a table at machine address `m` is readable at `gfn_to_va(0) + (m - pte_base)`.
//! [`DirectMap`] is that conversion, and the [`Tables`] every guest walker walks with.

use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE};
use hypercall_abi::page_table::{address, Tables};

/// The machine address of the start-of-day level-4 table `info` describes (the kernel's own,
/// loaded while no process runs).
pub fn start_of_day_root(info: &hypercall_abi::StartInfo) -> u64 {
    info.pte_base + (info.pt_base - gfn_to_va(0))
}

/// The domain's memory as its page tables name it.
#[derive(Clone, Copy, Debug)]
pub struct DirectMap {
    pte_base: u64,
}

impl DirectMap {
    /// The tables of a domain whose gfn 0 is at machine address `pte_base`.
    pub const fn new(pte_base: u64) -> DirectMap {
        DirectMap { pte_base }
    }

    /// The machine address of gfn `gfn`: what an entry mapping it holds.
    #[inline]
    pub fn machine(&self, gfn: u64) -> u64 {
        self.pte_base + gfn * PAGE_SIZE
    }

    /// Writes `entry` into the entry at machine address `slot` (its low three bits ignored, as
    /// `mmu_update` reads them as a command), through the direct map.
    ///
    /// # Safety
    ///
    /// `slot` must be an entry of a table of this kernel's that it writes itself (`hvm`, or
    /// `pv` under shadow paging, where its tables are writable in the direct map), and the
    /// change must leave the code and data the kernel is using mapped.
    #[inline]
    pub unsafe fn write(&self, slot: u64, entry: u64) {
        let va = gfn_to_va(0) + (slot & !7) - self.pte_base;
        // SAFETY: the caller's promise; every gfn of the domain is in the direct map.
        unsafe { (va as *mut u64).write_volatile(entry) };
    }

    /// The machine address of the level-1 entry that maps `va` in the tables under `root`;
    /// `EINVAL` if no level-1 table maps it (nothing mapped there, or a huge page).
    pub fn leaf_slot(&self, root: u64, va: u64) -> Result<u64, hypercall_abi::hypercall::Errno> {
        use hypercall_abi::page_table;
        let invalid = hypercall_abi::hypercall::Errno::EINVAL;
        let l2 = page_table::walk(self, root, va, 2).map_err(|_| invalid)?;
        if l2.level != 2 {
            return Err(invalid); // a huge page: there is no level-1 entry
        }
        Ok(address(l2.entry) + page_table::index(va, 1) as u64 * 8)
    }

    /// The gfn an entry (or a machine address) names, if it lies at or above gfn 0.
    #[inline]
    pub fn gfn(&self, entry: u64) -> Option<u64> {
        Some(address(entry).checked_sub(self.pte_base)? / PAGE_SIZE)
    }
}

impl Tables for DirectMap {
    #[inline]
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        let offset = table.checked_sub(self.pte_base)?;
        let va = gfn_to_va(0) + offset + index as u64 * 8;
        // SAFETY: every gfn of the domain is mapped (readable) in the direct map, and a walk
        // only reaches tables the kernel hooked in itself (in `pv`, validated by xen-lite).
        Some(unsafe { (va as *const u64).read_volatile() })
    }
}
