//! The `hvm` kernel's page tables: it owns them and writes them itself, through the direct
//! map, with no validation and no pinning; a write is followed by a TLB flush, as xen-lite's
//! would be. The pv ABI's page-table hypercalls are emulated on the same tables, for the
//! workloads that make them.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::hypercall::{Errno, MmuUpdate, MmuextOp};

use crate::page_tables::DirectMap;
use crate::platform::PteWrite;

/// What a page-table entry holds for gfn 0: machine addresses in entries become kernel
/// addresses with it (`DirectMap`).
static PTE_BASE: AtomicU64 = AtomicU64::new(0);

/// Remembers where gfn 0 is (`StartInfo::pte_base`).
pub fn init(pte_base: u64) {
    PTE_BASE.store(pte_base, Ordering::Relaxed);
}

/// Nothing to do: the frame stays writable.
pub fn make_page_table(_gfn: u64) -> Result<(), Errno> {
    Ok(())
}

/// Nothing to do: the frame stayed writable.
pub fn release_page_table(_gfn: u64) -> Result<(), Errno> {
    Ok(())
}

/// Writes each entry, then flushes the TLB once. Out of line: see `platform::set_ptes`.
#[inline(never)]
pub fn set_ptes(writes: &[PteWrite]) -> Result<(), Errno> {
    for write in writes {
        write_entry(write.slot, write.entry);
    }
    flush_tlb();
    Ok(())
}

/// Writes the entry and does not flush: the TLB may keep the old translation.
pub fn set_pte_keeping_tlb(slot: u64, entry: u64) -> Result<(), Errno> {
    write_entry(slot, entry);
    Ok(())
}

/// The real `invlpg`.
pub fn invalidate_page(va: u64) -> Result<(), Errno> {
    // SAFETY: `invlpg` only drops a cached translation.
    unsafe { x86::tlb::flush(va as usize) };
    Ok(())
}

/// Nothing to do: there is no validator to keep the table typed.
pub fn pin_table(_level: u32, _table: u64) -> Result<(), Errno> {
    Ok(())
}

/// Nothing to do, as for [`pin_table`].
pub fn unpin_table(_table: u64) -> Result<(), Errno> {
    Ok(())
}

/// The real CR3 load.
pub fn load_root(root: u64) -> Result<(), Errno> {
    // SAFETY: the new L4 shares the kernel's upper half, so this code stays mapped.
    unsafe { x86::controlregs::cr3_write(root) };
    Ok(())
}

/// Writes the entry at machine address `slot` ([`DirectMap::write`]).
fn write_entry(slot: u64, entry: u64) {
    // SAFETY: `slot` is an entry of one of this kernel's tables, which it owns and writes
    // itself; the callers keep the kernel's own mappings in place.
    unsafe { DirectMap::new(PTE_BASE.load(Ordering::Relaxed)).write(slot, entry) };
}

/// `mmu_update` on its own tables: [`set_ptes`] of the records.
pub fn mmu_update(requests: &[MmuUpdate]) -> (u64, Result<(), Errno>) {
    for request in requests {
        write_entry(request.ptr, request.val);
    }
    flush_tlb();
    (requests.len() as u64, Ok(()))
}

/// Pinning means nothing without a validator; new base pointer and flushes are the real thing.
pub fn mmuext_op(ops: &[MmuextOp]) -> (u64, Result<(), Errno>) {
    use hypercall_abi::hypercall::{
        MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL,
    };
    for op in ops {
        match op.cmd {
            MMUEXT_NEW_BASEPTR => {
                let _ = load_root(op.arg << 12);
            }
            MMUEXT_TLB_FLUSH_LOCAL => flush_tlb(),
            // SAFETY: `invlpg` only drops a cached translation.
            MMUEXT_INVLPG_LOCAL => unsafe { x86::tlb::flush(op.arg as usize) },
            _ => {}
        }
    }
    (ops.len() as u64, Ok(()))
}

/// Walks the current tables to the level-1 entry that maps `va`, rewrites it, `invlpg`.
pub fn update_va_mapping(va: u64, entry: u64) -> Result<(), Errno> {
    // SAFETY: reading CR3 has no side effect.
    let root = unsafe { x86::controlregs::cr3() };
    write_entry(DirectMap::new(PTE_BASE.load(Ordering::Relaxed)).leaf_slot(root, va)?, entry);
    // SAFETY: `invlpg` only drops a cached translation.
    unsafe { x86::tlb::flush(va as usize) };
    Ok(())
}

fn flush_tlb() {
    // SAFETY: reloading CR3 with its own value only drops cached translations.
    unsafe { x86::controlregs::cr3_write(x86::controlregs::cr3()) };
}
