//! Address spaces for user programs, built and changed through the platform's page-table
//! interface.
//!
//! A new space gets its own level-4 table. The kernel's half (level-4 slot 511: the direct map,
//! the kernel image, its stacks) is shared with the start-of-day tables, so the kernel runs
//! unchanged whichever space is loaded. Every table frame goes through the same steps: zero it
//! while it is still mapped writable, [`platform::make_page_table`] (in `pv`: read-only in the
//! direct map, since a page table may never be writable), then hook it into its parent with
//! [`platform::set_pte`] (in `pv`: `mmu_update`, which makes xen-lite validate it). Tearing
//! down runs the other way: unpin, [`platform::release_page_table`], free. The three walkers
//! ([`AddressSpace::map`], `leaf_entry_address`, [`AddressSpace::lookup`]) are
//! `hypercall_abi::page_table::walk` over the direct map (`page_tables`).

use hypercall_abi::hypercall::Errno;
use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE, USER_END};
use hypercall_abi::page_table::{
    address, index, walk, walk_with, Step, Stop, PRESENT, USER, WRITABLE,
};
use hypercall_abi::StartInfo;

use crate::page_tables::DirectMap;
use crate::{frames, platform};

/// Frames one space can own (tables and data).
const MAX_FRAMES: usize = 256;

/// A user address space.
pub struct AddressSpace {
    l4: u64,
    tables: DirectMap,
    table_gfns: [u64; 32],
    nr_tables: usize,
    /// `(user address, gfn, writable)` of every data page.
    data: [(u64, u64, bool); MAX_FRAMES],
    nr_data: usize,
}

fn peek(gfn: u64, index: u64) -> u64 {
    // SAFETY: every gfn of the domain is mapped (readable) in the direct map.
    unsafe { ((gfn_to_va(gfn) + index * 8) as *const u64).read_volatile() }
}

fn zero(gfn: u64) {
    // SAFETY: the frame was just allocated and is still mapped writable in the direct map.
    unsafe { core::ptr::write_bytes(gfn_to_va(gfn) as *mut u8, 0, PAGE_SIZE as usize) };
}

/// The machine address of `va`'s slot in the level-`level` table at machine address `table`.
fn entry_slot(table: u64, va: u64, level: u32) -> u64 {
    table + index(va, level) as u64 * 8
}

impl AddressSpace {
    fn machine(&self, gfn: u64) -> u64 {
        self.tables.machine(gfn)
    }

    /// A new space: an L4 sharing the kernel's half, pinned.
    pub fn new(info: &StartInfo) -> Result<AddressSpace, Errno> {
        let l4 = frames::alloc().ok_or(Errno::ENOSPC)?;
        zero(l4);
        let kernel_l4 = (info.pt_base - gfn_to_va(0)) / PAGE_SIZE;
        // The upper half is the kernel's (slot 511: its image and direct map) and, below it,
        // whatever the platform put there (xen-lite's reserved slots: in `pv` xen-lite rewrites
        // them when it pins the table; in `native` they hold the CPU tables xen-lite left).
        for slot in 256..512 {
            // SAFETY: `l4` is still writable (just allocated); the slot is inside the page.
            unsafe {
                ((gfn_to_va(l4) + slot * 8) as *mut u64).write_volatile(peek(kernel_l4, slot))
            };
        }
        let mut space = AddressSpace {
            l4,
            tables: DirectMap::new(info.pte_base),
            table_gfns: [0; 32],
            nr_tables: 0,
            data: [(0, 0, false); MAX_FRAMES],
            nr_data: 0,
        };
        platform::make_page_table(l4)?;
        platform::pin_table(4, space.machine(l4))?;
        space.table_gfns[0] = l4;
        space.nr_tables = 1;
        Ok(space)
    }

    /// Maps `gfn` at user address `va`, creating tables on the way.
    pub fn map(&mut self, va: u64, gfn: u64, writable: bool) -> Result<(), Errno> {
        if va >= USER_END {
            return Err(Errno::EINVAL);
        }
        let leaf = match walk(&self.tables, self.machine(self.l4), va, 2) {
            // The level-2 entry names the level-1 table the leaf is in.
            Ok(l2) => entry_slot(address(l2.entry), va, 1),
            Err(Stop::NotPresent(missing)) => self.add_tables(va, &missing)?,
            Err(_) => return Err(Errno::EINVAL),
        };
        let flags = PRESENT | USER | if writable { WRITABLE } else { 0 };
        platform::set_pte(leaf, self.machine(gfn) | flags)
    }

    /// Makes the tables `va` lacks below the empty entry `missing` (every table under an empty
    /// entry is new, so none of them needs reading), each hooked into its parent; returns the
    /// machine address of `va`'s level-1 slot.
    fn add_tables(&mut self, va: u64, missing: &Step) -> Result<u64, Errno> {
        let mut parent_slot = missing.slot_address();
        for level in (1..missing.level).rev() {
            if self.nr_tables == self.table_gfns.len() {
                return Err(Errno::ENOSPC);
            }
            let next = frames::alloc().ok_or(Errno::ENOSPC)?;
            zero(next);
            platform::make_page_table(next)?;
            platform::set_pte(parent_slot, self.machine(next) | PRESENT | WRITABLE | USER)?;
            self.table_gfns[self.nr_tables] = next;
            self.nr_tables += 1;
            parent_slot = entry_slot(self.machine(next), va, level);
        }
        Ok(parent_slot)
    }

    /// Allocates a zeroed frame, maps it at `va`, and remembers it for [`Self::destroy`].
    pub fn map_new(&mut self, va: u64, writable: bool) -> Result<u64, Errno> {
        if self.nr_data == MAX_FRAMES {
            return Err(Errno::ENOSPC);
        }
        let gfn = frames::alloc().ok_or(Errno::ENOSPC)?;
        zero(gfn);
        self.data[self.nr_data] = (va, gfn, writable);
        self.nr_data += 1;
        self.map(va, gfn, writable)?;
        Ok(gfn)
    }

    /// Unmaps the data page at `va` (if this space mapped one) and frees its frame.
    pub fn unmap(&mut self, va: u64) -> Result<(), Errno> {
        let Some(position) = self.data[..self.nr_data].iter().position(|&(at, _, _)| at == va)
        else {
            return Ok(());
        };
        let (_, gfn, _) = self.data[position];
        let pte = self.leaf_entry_address(va).ok_or(Errno::EINVAL)?;
        platform::set_pte(pte, 0)?;
        frames::free(gfn);
        self.nr_data -= 1;
        self.data[position] = self.data[self.nr_data];
        Ok(())
    }

    /// The machine address of the level-1 entry for `va`, if its tables exist.
    fn leaf_entry_address(&self, va: u64) -> Option<u64> {
        let l2 = walk(&self.tables, self.machine(self.l4), va, 2).ok()?;
        Some(entry_slot(address(l2.entry), va, 1))
    }

    /// A copy of this space: the same pages at the same addresses, with copied contents
    /// (`fork`).
    pub fn duplicate(&self, info: &StartInfo) -> Result<AddressSpace, Errno> {
        let mut copy = AddressSpace::new(info)?;
        for &(va, gfn, writable) in &self.data[..self.nr_data] {
            let result = copy.map_new(va, writable).map(|new| {
                // SAFETY: both frames belong to the domain and are mapped in the direct map;
                // `new` was just allocated and is still writable there.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        gfn_to_va(gfn) as *const u8,
                        gfn_to_va(new) as *mut u8,
                        PAGE_SIZE as usize,
                    )
                };
            });
            if let Err(errno) = result {
                copy.destroy();
                return Err(errno);
            }
        }
        Ok(copy)
    }

    /// The gfn mapped at user address `va` in this space, if any (and whether writable).
    pub fn lookup_page(&self, va: u64) -> Option<(u64, bool)> {
        let leaf = walk(&self.tables, self.machine(self.l4), va, 1).ok()?;
        if leaf.entry & USER == 0 {
            return None;
        }
        Some((self.tables.gfn(leaf.entry)?, leaf.entry & WRITABLE != 0))
    }

    /// The gfn mapped at user address `va` in the space whose L4 is `l4`, if any: every entry
    /// on the way must be a user entry.
    pub fn lookup(l4: u64, pte_base: u64, va: u64) -> Option<u64> {
        if va >= USER_END {
            return None;
        }
        let tables = DirectMap::new(pte_base);
        let user = |step: &Step| step.entry & USER != 0;
        let leaf = walk_with(&tables, tables.machine(l4), va, 1, user).ok()?;
        tables.gfn(leaf.entry)
    }

    /// The machine address of the level-1 entry that maps `va`, and the entry.
    pub fn leaf(&self, va: u64) -> Option<(u64, u64)> {
        let slot = self.leaf_entry_address(va)?;
        let leaf = walk(&self.tables, self.machine(self.l4), va, 1).ok()?;
        Some((slot, leaf.entry))
    }

    /// The L4's gfn.
    pub fn l4(&self) -> u64 {
        self.l4
    }

    /// Makes this space the current one.
    pub fn activate(&self) -> Result<(), Errno> {
        platform::load_root(self.machine(self.l4))
    }

    /// Releases every frame: unpin (xen-lite drops the references), make the tables ordinary
    /// frames again, free. The space must not be the current one.
    pub fn destroy(self) {
        let _ = platform::unpin_table(self.machine(self.l4));
        for &gfn in &self.table_gfns[..self.nr_tables] {
            let _ = platform::release_page_table(gfn);
            frames::free(gfn);
        }
        self.data[..self.nr_data].iter().for_each(|&(_, gfn, _)| frames::free(gfn));
    }
}
