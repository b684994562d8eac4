//! The second translation, guest-physical to machine, that xen-lite owns under hardware
//! virtualisation: Intel's extended page tables (`crate::vmx::ept`) and AMD's nested page
//! tables (`crate::svm::npt`) are built here, by one builder.
//!
//! In `pv` mode xen-lite validates every page-table entry a guest writes (direct paging,
//! `pv/page_types.rs`). Under VMX or SVM the guest writes its own tables freely, because they
//! only translate guest-virtual to *guest-physical* addresses; the CPU then walks a second set
//! of tables, these, to turn each guest-physical address into a machine address. A
//! guest-physical page they do not map cannot be reached at all: touching it ends the guest's
//! run with an EPT violation or a nested page fault, and xen-lite kills the domain.
//!
//! Both formats are four-level radix trees indexed like the ordinary page table, so the index
//! of an address in each level, the address bits of an entry and the walk come from
//! `hypercall_abi::page_table`. What differs is only the bits of an entry ([`Format`]): EPT
//! has read/write/execute and a memory type, NPT *is* the ordinary format (present, writable,
//! user). [`build`] and [`translate`] reach tables through [`TableMemory`]: [`for_domain`]
//! builds a domain's tables in machine frames, the host tests build them in a map.

use hypercall_abi::layout::PAGE_SIZE;
use hypercall_abi::page_table::{self, Stop, Tables};

use crate::hvm::VcpuBoot;
use crate::memory_map::phys_to_virt;

/// The entry bits of one second-stage format.
pub struct Format {
    /// A non-leaf entry pointing at the table at machine address `table`.
    pub table_entry: fn(u64) -> u64,
    /// A leaf entry mapping a 4-KiB page at machine address `page` with every access allowed.
    pub page_entry: fn(u64) -> u64,
    /// Whether the walk may go through (or stop at) `entry`.
    pub present: fn(u64) -> bool,
}

/// Where second-stage tables live, so the same code builds them in xen-lite and in a host test.
pub trait TableMemory {
    /// A new zeroed table: its machine address.
    fn new_table(&mut self) -> Option<u64>;
    /// Entry `slot` of the table at `table`.
    fn entry(&self, table: u64, slot: usize) -> u64;
    /// Sets entry `slot` of the table at `table`.
    fn set_entry(&mut self, table: u64, slot: usize, value: u64);
}

/// Tables in `M`, of format `F`, as the one page-table walker sees them.
struct Walk<'a, M> {
    memory: &'a M,
    format: &'a Format,
}

impl<M: TableMemory> Tables for Walk<'_, M> {
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        Some(self.memory.entry(table, index))
    }

    fn present(&self, entry: u64) -> bool {
        (self.format.present)(entry)
    }
}

/// Builds tables of `format` that map guest-physical pages `0..nr_pages` to the machine pages
/// starting at `base` and nothing else; returns the root. `None` if `memory` runs out.
pub fn build(
    memory: &mut impl TableMemory,
    format: &Format,
    base: u64,
    nr_pages: u64,
) -> Option<u64> {
    let root = memory.new_table()?;
    for page in 0..nr_pages {
        let gpa = page * PAGE_SIZE;
        // Down to the level-2 entry that names `gpa`'s level-1 table, adding each missing table
        // on the way, top first.
        let table = loop {
            match page_table::walk(&Walk { memory: &*memory, format }, root, gpa, 2) {
                Ok(step) => break page_table::address(step.entry),
                Err(Stop::NotPresent(missing)) => {
                    let next = memory.new_table()?;
                    memory.set_entry(missing.table, missing.index, (format.table_entry)(next));
                }
                Err(stop) => unreachable!("every second-stage table is readable: {stop:?}"),
            }
        };
        memory.set_entry(table, page_table::index(gpa, 1), (format.page_entry)(base + gpa));
    }
    Some(root)
}

/// The machine address `gpa` translates to under the tables of `format` at `root`, if any.
pub fn translate(memory: &impl TableMemory, format: &Format, root: u64, gpa: u64) -> Option<u64> {
    let leaf = page_table::walk(&Walk { memory, format }, root, gpa, 1).ok()?;
    Some(leaf.translate(gpa))
}

/// Second-stage tables in machine frames from the frame allocator, through xen-lite's direct
/// map.
pub struct MachineTables;

impl TableMemory for MachineTables {
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

/// Builds the second-stage tables of `format` for a domain starting as `boot` says: its memory,
/// exactly, and nothing else. Returns the root's machine address.
pub fn for_domain(format: &Format, boot: &VcpuBoot) -> Result<u64, &'static str> {
    let base = boot.memory.addr();
    let root = build(&mut MachineTables, format, base, boot.nr_pages)
        .ok_or("no free frames for its second-stage tables")?;
    // The domain's memory, exactly: its first byte is there, the byte past its end is not.
    let end = boot.nr_pages * PAGE_SIZE;
    assert_eq!(translate(&MachineTables, format, root, 0), Some(base));
    assert_eq!(translate(&MachineTables, format, root, end), None);
    Ok(root)
}

/// Tables in a hash map at made-up machine addresses, for the formats' host tests.
#[cfg(test)]
pub mod host {
    use std::collections::HashMap;

    use hypercall_abi::layout::PAGE_SIZE;
    use hypercall_abi::page_table::ENTRIES;

    use super::TableMemory;

    /// Tables in a hash map, at made-up machine addresses from 16 MiB up.
    #[derive(Default)]
    pub struct HostTables {
        /// Every table by its address.
        pub tables: HashMap<u64, [u64; ENTRIES]>,
    }

    impl TableMemory for HostTables {
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

    impl HostTables {
        /// Every non-zero entry as (table, slot, entry), sorted.
        pub fn entries(&self) -> Vec<(u64, usize, u64)> {
            let mut entries: Vec<_> = self
                .tables
                .iter()
                .flat_map(|(&table, slots)| {
                    let used = slots.iter().enumerate().filter(|(_, &e)| e != 0);
                    used.map(move |(i, &e)| (table, i, e))
                })
                .collect();
            entries.sort();
            entries
        }
    }
}
