//! Extended page tables: the second translation, guest-physical to machine, that xen-lite owns.
//!
//! In `pv` mode xen-lite validates every page-table entry a guest writes (direct paging,
//! `pv/page_types.rs`). Under VMX the guest writes its own tables freely, because they only
//! translate guest-virtual to *guest-physical* addresses; the CPU then walks these tables to
//! turn each guest-physical address into a machine address. A guest-physical page these tables
//! do not map cannot be reached at all: touching it ends non-root operation with an EPT
//! violation, and xen-lite kills the domain.
//!
//! The format is a four-level radix tree like the ordinary one, with different bits: 0 read,
//! 1 write, 2 execute, and in a leaf bits 5:3 the memory type (6 = write-back). The EPT pointer
//! in the VMCS holds the root's address, the walk length minus one (bits 5:3) and the memory
//! type of the tables themselves (bits 2:0). See: Intel SDM Vol. 3C, revision 086, 29.3.
//!
//! The index of an address in each level, the address bits of an entry and the walk are the
//! ordinary ones, so they come from `hypercall_abi::page_table`; only what makes an entry
//! present differs (any of read, write, execute, where an ordinary entry has bit 0).
//! [`build`] and [`translate`] reach tables through [`EptMemory`]: [`for_domain`] builds a
//! domain's tables in machine frames, the host tests build them in a map.

use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::page_table::{self, Stop, Tables};

use crate::hvm::VcpuBoot;
use crate::memory_map::phys_to_virt;

/// Read, write and execute allowed.
const RWX: u64 = 0b111;
/// Memory type write-back, in a leaf's bits 5:3.
const LEAF_WRITE_BACK: u64 = 6 << 3;

/// A non-leaf entry pointing at the table at machine address `table`.
pub const fn table_entry(table: u64) -> u64 {
    table | RWX
}

/// A leaf entry mapping a 4-KiB page at machine address `page`, write-back, all access.
pub const fn page_entry(page: u64) -> u64 {
    page | RWX | LEAF_WRITE_BACK
}

/// The EPT pointer for a root table at machine address `root`: four levels, write-back.
pub const fn pointer(root: u64) -> u64 {
    root | (3 << 3) | 6
}

/// Where EPT tables live, so the same code builds them in xen-lite and in a host test.
pub trait EptMemory {
    /// A new zeroed table: its machine address.
    fn new_table(&mut self) -> Option<u64>;
    /// Entry `slot` of the table at `table`.
    fn entry(&self, table: u64, slot: usize) -> u64;
    /// Sets entry `slot` of the table at `table`.
    fn set_entry(&mut self, table: u64, slot: usize, value: u64);
}

/// EPT tables in `M` as the one page-table walker sees them.
struct Ept<'a, M>(&'a M);

impl<M: EptMemory> Tables for Ept<'_, M> {
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        Some(self.0.entry(table, index))
    }

    /// Any access allowed (read, write or execute) makes an EPT entry present.
    fn present(&self, entry: u64) -> bool {
        entry & RWX != 0
    }
}

/// Builds tables that map guest-physical pages `0..nr_pages` to the machine pages starting at
/// `base` and nothing else; returns the root. `None` if `memory` runs out of tables.
pub fn build(memory: &mut impl EptMemory, base: u64, nr_pages: u64) -> Option<u64> {
    let root = memory.new_table()?;
    for page in 0..nr_pages {
        let gpa = page * PAGE_SIZE;
        // Down to the level-2 entry that names `gpa`'s level-1 table, adding each missing table
        // on the way, top first.
        let table = loop {
            match page_table::walk(&Ept(&*memory), root, gpa, 2) {
                Ok(step) => break page_table::address(step.entry),
                Err(Stop::NotPresent(missing)) => {
                    let next = memory.new_table()?;
                    memory.set_entry(missing.table, missing.index, table_entry(next));
                }
                Err(stop) => unreachable!("every EPT table is readable: {stop:?}"),
            }
        };
        memory.set_entry(table, page_table::index(gpa, 1), page_entry(base + gpa));
    }
    Some(root)
}

/// The machine address `gpa` translates to under the tables at `root`, if any.
pub fn translate(memory: &impl EptMemory, root: u64, gpa: u64) -> Option<u64> {
    let leaf = page_table::walk(&Ept(memory), root, gpa, 1).ok()?;
    Some(leaf.translate(gpa))
}

/// EPT tables in machine frames from the frame allocator, through xen-lite's direct map.
struct MachineTables;

impl EptMemory for MachineTables {
    fn new_table(&mut self) -> Option<u64> {
        let frame = crate::frame::alloc()?;
        // SAFETY: a frame just allocated for this table; nothing else refers to it.
        unsafe { core::ptr::write_bytes(phys_to_virt(frame.addr()) as *mut u8, 0, 4096) };
        Some(frame.addr())
    }

    fn entry(&self, table: u64, slot: usize) -> u64 {
        // SAFETY: `table` is a frame `new_table` returned, in the direct map; `slot` < 512.
        unsafe { (phys_to_virt(table + slot as u64 * 8) as *const u64).read() }
    }

    fn set_entry(&mut self, table: u64, slot: usize, value: u64) {
        // SAFETY: as in `entry`; no guest runs on these tables yet.
        unsafe { (phys_to_virt(table + slot as u64 * 8) as *mut u64).write(value) }
    }
}

/// Builds the EPT of a domain starting as `boot` says: its memory, exactly, and nothing else.
/// Returns the EPT pointer for its VMCS.
pub fn for_domain(boot: &VcpuBoot) -> Result<u64, &'static str> {
    let base = boot.memory.addr();
    let root = build(&mut MachineTables, base, boot.nr_pages)
        .ok_or("no free frames for its EPT tables")?;
    // The domain's memory, exactly: its first byte is there, the byte past its end is not.
    let end = boot.nr_pages * 4096;
    assert_eq!(translate(&MachineTables, root, 0), Some(base));
    assert_eq!(translate(&MachineTables, root, end), None);
    Ok(pointer(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use hypercall_abi::page_table::ENTRIES;

    /// Tables in a hash map, at made-up machine addresses.
    #[derive(Default)]
    struct HostTables {
        tables: HashMap<u64, [u64; ENTRIES]>,
    }

    impl EptMemory for HostTables {
        fn new_table(&mut self) -> Option<u64> {
            let address = 0x100_0000 + self.tables.len() as u64 * PAGE_SIZE;
            self.tables.insert(address, [0; ENTRIES]);
            Some(address)
        }
        fn entry(&self, table: u64, slot: usize) -> u64 {
            self.tables[&table][slot]
        }
        fn set_entry(&mut self, table: u64, slot: usize, value: u64) {
            self.tables.get_mut(&table).unwrap()[slot] = value;
        }
    }

    #[test]
    fn exactly_the_domain_is_mapped() {
        let mut memory = HostTables::default();
        let base = 0x4000_0000;
        let pages = 4096; // 16 MiB: eight level-1 tables
        let root = build(&mut memory, base, pages).unwrap();
        assert_eq!(translate(&memory, root, 0), Some(base));
        assert_eq!(translate(&memory, root, 0x1234), Some(base + 0x1234));
        let last = pages * PAGE_SIZE - 1;
        assert_eq!(translate(&memory, root, last), Some(base + last));
        assert_eq!(translate(&memory, root, last + 1), None, "one byte past the end");
        assert_eq!(translate(&memory, root, 1 << 32), None);
        assert_eq!(translate(&memory, root, page_table::ADDRESS_MASK), None);
        assert_eq!(memory.tables.len() as u64, 1 + 1 + 1 + 8);
    }

    #[test]
    fn the_tables_hold_exactly_these_entries() {
        // 513 pages: one table per level, and a second level-1 table for the last page.
        let mut memory = HostTables::default();
        let base = 0x4000_0000;
        let root = build(&mut memory, base, 513).unwrap();
        let [l3, l2, l1, l1_next] = [1, 2, 3, 4].map(|n| root + n * PAGE_SIZE);
        let mut expected = vec![
            (root, 0, table_entry(l3)),
            (l3, 0, table_entry(l2)),
            (l2, 0, table_entry(l1)),
            (l2, 1, table_entry(l1_next)),
            (l1_next, 0, page_entry(base + 512 * PAGE_SIZE)),
        ];
        expected
            .extend((0..512).map(|slot| (l1, slot, page_entry(base + slot as u64 * PAGE_SIZE))));
        expected.sort();
        let mut entries: Vec<_> = memory
            .tables
            .iter()
            .flat_map(|(&table, slots)| {
                slots.iter().enumerate().filter(|(_, &e)| e != 0).map(move |(i, &e)| (table, i, e))
            })
            .collect();
        entries.sort();
        assert_eq!(entries, expected);
    }

    #[test]
    fn entries_and_pointer_encode_access_and_write_back() {
        assert_eq!(page_entry(0x5000), 0x5037);
        assert_eq!(table_entry(0x6000), 0x6007);
        assert_eq!(pointer(0x7000), 0x701e);
    }
}
