//! Nested page tables: AMD's format for the second translation, guest-physical to machine
//! (`crate::hvm::nested` builds them, for this format and Intel's EPT).
//!
//! Where EPT has a format of its own, a nested page table *is* an ordinary long-mode page table:
//! the CPU walks it with the same rules as the guest's own, except that every nested access
//! counts as a user access, so each entry needs U/S as well as present and writable (APM Vol.
//! 2, revision 3.42, 15.25.5). The root goes in the VMCB's `n_cr3`, nested paging is switched
//! on by `np_enable`, and an access the tables do not map ends the guest's run with `#VMEXIT
//! (NPF)`: EXITINFO1 holds a page-fault error code, EXITINFO2 the guest-physical address.

use hypercall_abi::page_table::{PRESENT, USER, WRITABLE};

use crate::hvm::nested::{self, Format};
use crate::hvm::VcpuBoot;

/// `np_enable` bit 0: nested paging on.
pub const NP_ENABLE: u64 = 1;

/// Present, writable, user: every access allowed (the guest's own tables restrict it further).
const ALL_ACCESS: u64 = PRESENT | WRITABLE | USER;

/// A non-leaf entry pointing at the table at machine address `table`.
pub const fn table_entry(table: u64) -> u64 {
    table | ALL_ACCESS
}

/// A leaf entry mapping a 4-KiB page at machine address `page` (PAT index 0: write-back).
pub const fn page_entry(page: u64) -> u64 {
    page | ALL_ACCESS
}

/// The NPT format, for the one second-stage builder.
pub const FORMAT: Format =
    Format { table_entry, page_entry, present: |entry| entry & PRESENT != 0 };

/// Builds the nested page tables of a domain starting as `boot` says (its memory, exactly, and
/// nothing else); returns `n_cr3` for its VMCB.
pub fn for_domain(boot: &VcpuBoot) -> Result<u64, &'static str> {
    nested::for_domain(&FORMAT, boot)
}

/// The bits of an NPF's EXITINFO1 (a page-fault error code) in words: which access.
pub fn access(exit_info1: u64) -> &'static str {
    match exit_info1 {
        e if e & (1 << 4) != 0 => "instruction fetch",
        e if e & (1 << 1) != 0 => "write",
        _ => "read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hvm::nested::host::HostTables;
    use crate::hvm::nested::{build, translate};
    use hypercall_abi::layout::PAGE_SIZE;

    #[test]
    fn exactly_the_domain_is_mapped_with_user_access() {
        let mut memory = HostTables::default();
        let base = 0x4000_0000;
        let root = build(&mut memory, &FORMAT, base, 513).unwrap();
        let at = |gpa| translate(&memory, &FORMAT, root, gpa);
        assert_eq!(at(0), Some(base));
        assert_eq!(at(513 * PAGE_SIZE - 1), Some(base + 513 * PAGE_SIZE - 1));
        assert_eq!(at(513 * PAGE_SIZE), None, "one byte past the end");
        // Every entry is present, writable and user: a nested walk is a user access.
        let entries = memory.entries();
        assert_eq!(entries.len(), 4 + 513);
        assert!(entries.iter().all(|&(_, _, e)| e & 0xfff == 0x7));
        assert_eq!(page_entry(0x5000), 0x5007);
        assert_eq!(table_entry(0x6000), 0x6007);
    }

    #[test]
    fn faults_name_the_access() {
        assert_eq!(access(0x4), "read"); // user, not present
        assert_eq!(access(0x6), "write");
        assert_eq!(access(0x14), "instruction fetch");
    }
}
