//! Address spaces for user programs, built and changed only through xen-lite (direct paging).
//!
//! A new space gets its own level-4 table. The kernel's half (level-4 slot 511: the direct map,
//! the kernel image, its stacks) is shared with the start-of-day tables, so the kernel runs
//! unchanged whichever space is loaded. Every table frame goes through the same steps: zero it
//! while it is still mapped writable, remap it read-only in the direct map (a page table may
//! never be writable), then hook it into its parent with `mmu_update`, which makes xen-lite
//! validate it. Tearing down runs the other way: unpin, remap writable, free.

use hypercall_abi::hypercall::{
    Errno, MmuUpdate, MmuextOp, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE,
};
use hypercall_abi::layout::{gfn_to_va, PAGE_SIZE, USER_END};
use hypercall_abi::StartInfo;

use crate::{frames, platform};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Frames one space can own (tables and data).
const MAX_FRAMES: usize = 256;

/// A user address space.
pub struct AddressSpace {
    l4: u64,
    pte_base: u64,
    tables: [u64; 32],
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

fn check((_, result): (u64, Result<(), Errno>)) -> Result<(), Errno> {
    result
}

impl AddressSpace {
    fn machine(&self, gfn: u64) -> u64 {
        self.pte_base + gfn * PAGE_SIZE
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
            pte_base: info.pte_base,
            tables: [0; 32],
            nr_tables: 0,
            data: [(0, 0, false); MAX_FRAMES],
            nr_data: 0,
        };
        make_table(&space, l4)?;
        check(platform::mmuext_op(&[MmuextOp {
            cmd: MMUEXT_PIN_L4_TABLE,
            arg: space.machine(l4) >> 12,
        }]))?;
        space.tables[0] = l4;
        space.nr_tables = 1;
        Ok(space)
    }

    /// Maps `gfn` at user address `va`, creating tables on the way.
    pub fn map(&mut self, va: u64, gfn: u64, writable: bool) -> Result<(), Errno> {
        if va >= USER_END {
            return Err(Errno::EINVAL);
        }
        let mut table = self.l4;
        for level in [4u32, 3, 2] {
            let index = (va >> (12 + 9 * (level - 1))) & 0x1ff;
            let entry = peek(table, index);
            table = if entry & PRESENT != 0 {
                ((entry & ADDRESS) - self.pte_base) / PAGE_SIZE
            } else {
                if self.nr_tables == self.tables.len() {
                    return Err(Errno::ENOSPC);
                }
                let next = frames::alloc().ok_or(Errno::ENOSPC)?;
                zero(next);
                make_table(self, next)?;
                let update = MmuUpdate {
                    ptr: self.machine(table) + index * 8,
                    val: self.machine(next) | PRESENT | WRITABLE | USER,
                };
                check(platform::mmu_update(&[update]))?;
                self.tables[self.nr_tables] = next;
                self.nr_tables += 1;
                next
            };
        }
        let flags = PRESENT | USER | if writable { WRITABLE } else { 0 };
        let update = MmuUpdate {
            ptr: self.machine(table) + ((va >> 12) & 0x1ff) * 8,
            val: self.machine(gfn) | flags,
        };
        check(platform::mmu_update(&[update]))
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
        check(platform::mmu_update(&[MmuUpdate { ptr: pte, val: 0 }]))?;
        frames::free(gfn);
        self.nr_data -= 1;
        self.data[position] = self.data[self.nr_data];
        Ok(())
    }

    /// The machine address of the level-1 entry for `va`, if its tables exist.
    fn leaf_entry_address(&self, va: u64) -> Option<u64> {
        let mut table = self.l4;
        for level in [4u32, 3, 2] {
            let entry = peek(table, (va >> (12 + 9 * (level - 1))) & 0x1ff);
            if entry & PRESENT == 0 {
                return None;
            }
            table = ((entry & ADDRESS) - self.pte_base) / PAGE_SIZE;
        }
        Some(self.machine(table) + ((va >> 12) & 0x1ff) * 8)
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
        let entry_address = self.leaf_entry_address(va)?;
        let entry =
            peek((entry_address - self.pte_base) / PAGE_SIZE, (entry_address % PAGE_SIZE) / 8);
        (entry & PRESENT != 0 && entry & USER != 0)
            .then(|| (((entry & ADDRESS) - self.pte_base) / PAGE_SIZE, entry & WRITABLE != 0))
    }

    /// The gfn mapped at user address `va` in the space whose L4 is `l4`, if any.
    pub fn lookup(l4: u64, pte_base: u64, va: u64) -> Option<u64> {
        if va >= USER_END {
            return None;
        }
        let mut table = l4;
        for level in [4u32, 3, 2, 1] {
            let entry = peek(table, (va >> (12 + 9 * (level - 1))) & 0x1ff);
            if entry & PRESENT == 0 || entry & USER == 0 {
                return None;
            }
            table = ((entry & ADDRESS).checked_sub(pte_base)?) / PAGE_SIZE;
        }
        Some(table)
    }

    /// The L4's gfn.
    pub fn l4(&self) -> u64 {
        self.l4
    }

    /// Makes this space the current one.
    pub fn activate(&self) -> Result<(), Errno> {
        switch_to(self.machine(self.l4))
    }

    /// Releases every frame: unpin (xen-lite drops the references), make the tables writable
    /// again, free. The space must not be the current one.
    pub fn destroy(self) {
        let _ = platform::mmuext_op(&[MmuextOp {
            cmd: MMUEXT_UNPIN_TABLE,
            arg: self.machine(self.l4) >> 12,
        }]);
        for &gfn in &self.tables[..self.nr_tables] {
            if !platform::KERNEL_WRITES_PAGE_TABLES {
                let _ = platform::update_va_mapping(
                    gfn_to_va(gfn),
                    self.machine(gfn) | PRESENT | WRITABLE,
                );
            }
            frames::free(gfn);
        }
        self.data[..self.nr_data].iter().for_each(|&(_, gfn, _)| frames::free(gfn));
    }
}

/// Prepares frame `gfn` to become a page table. Under direct paging (`pv`) a page table may
/// never be writable, so its direct-map mapping becomes read-only first; a kernel that writes
/// its tables itself (`hvm`) keeps it writable.
fn make_table(space: &AddressSpace, gfn: u64) -> Result<(), Errno> {
    if platform::KERNEL_WRITES_PAGE_TABLES {
        return Ok(());
    }
    platform::update_va_mapping(gfn_to_va(gfn), space.machine(gfn) | PRESENT)
}

/// Loads the level-4 table in machine frame address `l4_machine` (`mmuext_op(NEW_BASEPTR)`).
pub fn switch_to(l4_machine: u64) -> Result<(), Errno> {
    check(platform::mmuext_op(&[MmuextOp { cmd: MMUEXT_NEW_BASEPTR, arg: l4_machine >> 12 }]))
}
