//! Extended page tables: Intel's format for the second translation, guest-physical to machine
//! (`crate::hvm::nested` builds them, for this format and AMD's).
//!
//! An EPT entry has its own bits: 0 read, 1 write, 2 execute, and in a leaf bits 5:3 the memory
//! type (6 = write-back); it is present when any access is allowed. The EPT pointer in the VMCS
//! holds the root's address, the walk length minus one (bits 5:3) and the memory type of the
//! tables themselves (bits 2:0). See: Intel SDM Vol. 3C, revision 086, 29.3.

use crate::hvm::nested::{self, Format};
use crate::hvm::VcpuBoot;

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

/// The EPT format, for the one second-stage builder.
pub const FORMAT: Format = Format {
    table_entry,
    page_entry,
    // Any access allowed (read, write or execute) makes an EPT entry present.
    present: |entry| entry & RWX != 0,
};

/// Builds the EPT of a domain starting as `boot` says (its memory, exactly, and nothing else)
/// and returns the EPT pointer for its VMCS.
pub fn for_domain(boot: &VcpuBoot) -> Result<u64, &'static str> {
    Ok(pointer(nested::for_domain(&FORMAT, boot)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hvm::nested::host::HostTables;
    use crate::hvm::nested::{build, translate};
    use hypercall_abi::layout::PAGE_SIZE;
    use hypercall_abi::page_table;

    #[test]
    fn exactly_the_domain_is_mapped() {
        let mut memory = HostTables::default();
        let base = 0x4000_0000;
        let pages = 4096; // 16 MiB: eight level-1 tables
        let root = build(&mut memory, &FORMAT, base, pages).unwrap();
        let at = |gpa| translate(&memory, &FORMAT, root, gpa);
        assert_eq!(at(0), Some(base));
        assert_eq!(at(0x1234), Some(base + 0x1234));
        let last = pages * PAGE_SIZE - 1;
        assert_eq!(at(last), Some(base + last));
        assert_eq!(at(last + 1), None, "one byte past the end");
        assert_eq!(at(1 << 32), None);
        assert_eq!(at(page_table::ADDRESS_MASK), None);
        assert_eq!(memory.tables.len() as u64, 1 + 1 + 1 + 8);
    }

    #[test]
    fn the_tables_hold_exactly_these_entries() {
        // 513 pages: one table per level, and a second level-1 table for the last page.
        let mut memory = HostTables::default();
        let base = 0x4000_0000;
        let root = build(&mut memory, &FORMAT, base, 513).unwrap();
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
        assert_eq!(memory.entries(), expected);
    }

    #[test]
    fn entries_and_pointer_encode_access_and_write_back() {
        assert_eq!(page_entry(0x5000), 0x5037);
        assert_eq!(table_entry(0x6000), 0x6007);
        assert_eq!(pointer(0x7000), 0x701e);
    }
}
