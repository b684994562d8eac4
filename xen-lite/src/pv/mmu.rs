//! The page-table hypercalls: `mmu_update`, `mmuext_op`, `update_va_mapping`.
//!
//! Each request names machine addresses (direct paging: the guest's tables hold real frame
//! numbers, computed from `StartInfo::pte_base`). Every one goes through the rules of
//! `page_types` before anything is written; a refused request returns its errno, counts in
//! `Stats::mmu_rejected`, and ends the batch, whose applied count goes to `*done`.
//!
//! Under shadow paging (`paging=shadow`, `super::shadow`) the guest writes its own tables:
//! `mmu_update` and `update_va_mapping` are refused, and `mmuext_op` goes to the shadow.
//!
//! TLB: after any change xen-lite flushes the TLB itself. Leaving it to the guest would let a
//! stale writable translation outlive the rule that removed it (a frame that just became a
//! page table must not stay writable through a cached entry).

use hypercall_abi::hypercall::{
    Errno, MmuUpdate, MmuextOp, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE,
    MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, MMU_BATCH_MAX,
    MMU_NORMAL_PT_UPDATE, UVMF_INVLPG,
};
use hypercall_abi::layout::{is_canonical, PAGE_SIZE};

use hypercall_abi::page_table::{self, Step, Stop, Tables};
use hypercall_abi::record::Record;

use super::page_types::{FrameTable, MmError, PageType, TableMemory};
use crate::domain::{kill, Domain};
use crate::instructions::{flush_tlb, invlpg};
use crate::memory_map::HYPERVISOR_L4_SLOTS;

type Result = core::result::Result<u64, Errno>;

/// Where a batch's records come from: a domain's memory (or, in the host tests, a fake).
pub trait ReadGuest {
    /// Copies `out.len()` bytes from guest address `va`, or `EFAULT`.
    fn read_guest(&self, va: u64, out: &mut [u8]) -> core::result::Result<(), Errno>;
}

impl ReadGuest for Domain {
    fn read_guest(&self, va: u64, out: &mut [u8]) -> core::result::Result<(), Errno> {
        self.copy_from_guest(va, out)
    }
}

/// The 16-byte records of a batch.
pub trait BatchRecord: Record<Bytes = [u8; 16]> {}
impl<R: Record<Bytes = [u8; 16]>> BatchRecord for R {}

/// Reads record `index` of a guest array of 16-byte records.
fn read_record<R: BatchRecord>(
    domain: &impl ReadGuest,
    array: u64,
    index: u64,
) -> core::result::Result<R, Errno> {
    let mut raw = R::ZERO;
    let at = array.checked_add(index * 16).ok_or(Errno::EFAULT)?;
    domain.read_guest(at, &mut raw)?;
    Ok(R::decode(&raw))
}

/// Checks, before a batch applies anything, that its `done` pointer (if any) can take the
/// count: otherwise the batch would be applied and then reported as `EFAULT`, hiding that it
/// was.
fn check_done(domain: &Domain, done: u64) -> core::result::Result<(), Errno> {
    if done != 0 {
        let current: u64 = domain.read(done)?;
        domain.write(done, &current)?;
    }
    Ok(())
}

/// Stores the applied count, if the guest asked for it. [`check_done`] passed before the batch,
/// so this fails only if the batch itself made `done`'s frame a page table: the guest pointed
/// xen-lite's output at a table it was building, an ABI violation, and is killed (the count
/// could not be reported either way).
fn report_done(domain: &mut Domain, done: u64, count: u64, what: &str) {
    if done != 0 && domain.write(done, &count).is_err() {
        kill!(
            domain,
            "{what}: `done` at {done:#x} lies in a frame its own batch made a page table ({count} applied)"
        );
    }
}

/// A domain's tables as the walker sees them: only frames the domain owns can be read.
struct Owned<'t, 'a, M>(&'t FrameTable<'a, M>);

impl<M: TableMemory> Tables for Owned<'_, '_, M> {
    fn read(&self, table: u64, index: usize) -> Option<u64> {
        let frame = self.0.index(table >> 12).ok()?;
        Some(self.0.memory.entry(frame, index))
    }
}

/// Counts and converts a rule violation.
fn refused(domain: &mut Domain, error: MmError) -> Errno {
    domain.stats.mmu_rejected += 1;
    log::debug!("dom{}: page-table request refused: {error:?}", domain.id);
    error.errno()
}

/// `mmu_update(requests, count, done)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn do_mmu_update(domain: &mut Domain, requests: u64, count: u64, done: u64) -> Result {
    if domain.pv().shadow.is_some() {
        return Err(super::shadow::refuse(domain, "mmu_update"));
    }
    check_done(domain, done)?;
    let (applied, result) = batch(domain, requests, count, apply_update)?;
    if applied > 0 {
        flush_tlb();
    }
    report_done(domain, done, applied, "mmu_update");
    result
}

/// Applies the 16-byte records of a guest array in order, stopping at the first refusal;
/// returns how many were applied and the outcome.
pub fn batch<D: ReadGuest, R: BatchRecord>(
    domain: &mut D,
    array: u64,
    count: u64,
    mut apply: impl FnMut(&mut D, R) -> core::result::Result<(), Errno>,
) -> core::result::Result<(u64, Result), Errno> {
    if count > MMU_BATCH_MAX {
        return Err(Errno::EINVAL);
    }
    // Records are copied in chunks (one range check and copy per 32, not per record); a chunk
    // that cannot be copied whole is read record by record, so the error names the first bad
    // one exactly as before.
    const CHUNK: u64 = 32;
    let mut raw = [0u8; CHUNK as usize * 16];
    let mut start = 0;
    while start < count {
        let n = (count - start).min(CHUNK);
        let at = array.checked_add(start * 16).ok_or(Errno::EFAULT);
        let whole = at.and_then(|at| domain.read_guest(at, &mut raw[..n as usize * 16]));
        for index in start..start + n {
            let record = match whole {
                Ok(()) => {
                    let at = (index - start) as usize * 16;
                    let mut bytes = R::ZERO;
                    bytes.copy_from_slice(&raw[at..at + 16]);
                    Ok(R::decode(&bytes))
                }
                Err(_) => read_record(domain, array, index),
            };
            if let Err(errno) = record.and_then(|record| apply(domain, record)) {
                return Ok((index, Err(errno)));
            }
        }
        start += n;
    }
    Ok((count, Ok(0)))
}

fn apply_update(domain: &mut Domain, request: MmuUpdate) -> core::result::Result<(), Errno> {
    if request.ptr & 7 != MMU_NORMAL_PT_UPDATE {
        domain.stats.mmu_rejected += 1;
        return Err(Errno::EINVAL);
    }
    let slot = (request.ptr & (PAGE_SIZE - 1)) as usize / 8;
    let mut table = domain.frame_table();
    let outcome = table
        .index(request.ptr >> 12)
        .and_then(|index| table.update_entry(index, slot, request.val));
    outcome.map_err(|error| refused(domain, error))
}

/// `mmuext_op(ops, count, done)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn do_mmuext_op(domain: &mut Domain, ops: u64, count: u64, done: u64) -> Result {
    check_done(domain, done)?;
    let (applied, result) = batch(domain, ops, count, apply_ext)?;
    report_done(domain, done, applied, "mmuext_op");
    result
}

fn apply_ext(domain: &mut Domain, op: MmuextOp) -> core::result::Result<(), Errno> {
    if domain.pv().shadow.is_some() {
        return super::shadow::mmuext(domain, op);
    }
    let mut table = domain.frame_table();
    let outcome = match op.cmd {
        MMUEXT_PIN_L1_TABLE..=MMUEXT_PIN_L4_TABLE => {
            let level = (op.cmd - MMUEXT_PIN_L1_TABLE + 1) as u8;
            let kind = PageType::table(level).unwrap_or(PageType::L1);
            table.index(op.arg).and_then(|index| table.pin(index, kind))
        }
        MMUEXT_UNPIN_TABLE => table.index(op.arg).and_then(|index| table.unpin(index)),
        MMUEXT_NEW_BASEPTR => return new_baseptr(domain, op.arg),
        MMUEXT_TLB_FLUSH_LOCAL => {
            flush_tlb();
            Ok(())
        }
        MMUEXT_INVLPG_LOCAL => {
            invlpg(op.arg);
            Ok(())
        }
        _ => return Err(Errno::ENOSYS),
    };
    outcome.map_err(|error| refused(domain, error))
}

/// Switches the domain to the level-4 table in machine frame `frame`.
fn new_baseptr(domain: &mut Domain, frame: u64) -> core::result::Result<(), Errno> {
    let old = domain.pv().cr3 >> 12;
    let mut table = domain.frame_table();
    let outcome = table.index(frame).and_then(|index| {
        table.get_type(index, PageType::L4)?;
        let old_index = table.index(old)?;
        table.put_type(old_index);
        Ok(())
    });
    outcome.map_err(|error| refused(domain, error))?;
    // The return from this hypercall loads it (`switcher::RETURN_CR3`).
    domain.pv().cr3 = frame << 12;
    Ok(())
}

/// `update_va_mapping(va, entry, flags)`.
// A real function under its plain name, so `break do_<name>` finds it in gdb.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn do_update_va_mapping(domain: &mut Domain, va: u64, entry: u64, flags: u64) -> Result {
    if domain.pv().shadow.is_some() {
        return Err(super::shadow::refuse(domain, "update_va_mapping"));
    }
    if !is_canonical(va) {
        return Err(refused(domain, MmError::NotMapped { va }));
    }
    let cr3 = domain.pv().cr3;
    let mut table = domain.frame_table();
    // The walk reads only frames of the domain, and never goes through xen-lite's slots.
    let outside = |step: &Step| !(step.level == 4 && HYPERVISOR_L4_SLOTS.contains(&step.index));
    let l1 = match page_table::walk_with(&Owned(&table), cr3, va, 1, outside) {
        Ok(step) | Err(Stop::NotPresent(step)) if step.level == 1 => Ok(step.table),
        Err(Stop::Unreadable { table: frame, .. }) => table.index(frame >> 12).map(|_| frame),
        _ => Err(MmError::NotMapped { va }),
    };
    let walk = l1.and_then(|l1| {
        let index = table.index(l1 >> 12)?;
        table.update_entry(index, page_table::index(va, 1), entry)
    });
    walk.map_err(|error| refused(domain, error))?;
    // `UVMF_INVLPG` flushes one entry; anything else (`UVMF_TLB_FLUSH` or nothing) the whole
    // TLB, since xen-lite never leaves a stale translation behind (see the module comment).
    if flags == UVMF_INVLPG {
        invlpg(va);
    } else {
        flush_tlb();
    }
    Ok(0)
}
