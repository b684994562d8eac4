//! `paging=shadow` for a ring-1 guest: the lecture's CR3 swap in `pv` mode, on the shadow
//! module every mode shares (`crate::shadow`).
//!
//! Under direct paging the guest's tables hold machine addresses and only xen-lite writes them
//! (`page_types`, `mmu`). Here the guest is told so by `StartInfo::flags`
//! (`START_FLAG_SHADOW_PAGING`) and, like a native kernel, writes guest-physical tables itself
//! with ordinary stores; xen-lite never validates them, because the MMU never sees them. The
//! MMU runs on the domain's shadow, whose root the domain's `PvState::cr3` names:
//!
//! | the guest does                       | xen-lite does                                        |
//! |--------------------------------------|------------------------------------------------------|
//! | touches a page the shadow lacks      | #PF into xen-lite: [`page_fault`] fills the shadow and returns to the instruction (hidden), or bounces the guest's own fault |
//! | `mmuext_op(new_baseptr, gfn)`        | `Shadow::load_cr3`: the guest's root is now that gfn, the shadow starts empty |
//! | `mmuext_op(invlpg_local, va)`        | `Shadow::invalidate_page`                            |
//! | `mmuext_op(tlb_flush_local)`         | `Shadow::flush`                                      |
//! | `mmu_update`, `update_va_mapping`, pin, unpin | refused with `EPERM` ([`refuse`]): there is nothing to validate |
//!
//! The switcher is the one thing of xen-lite's a guest address space holds, as under direct
//! paging: every shadow root gets its level-4 entry (the host slots, [`host_slots`]), and the
//! guest's own entries in xen-lite's reserved slots are never followed. Every other shadow entry
//! names a frame of the domain, found through its pmap; the auditor checks both after every
//! entry (`audit::check_shadow`).

use hypercall_abi::hypercall::{
    Errno, MmuextOp, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL,
};
use hypercall_abi::layout::PAGE_SIZE;

use crate::domain::Domain;
use crate::entry::TrapFrame;
use crate::instructions::{rdmsr, read_cr0};
use crate::memory_map::HYPERVISOR_L4_SLOTS;
use crate::shadow::walk::Controls;
use crate::shadow::{self, Fault, HostSlots};

/// What every `pv` shadow root holds in xen-lite's slots: the switcher's entry.
pub fn host_slots() -> HostSlots {
    HostSlots { slots: HYPERVISOR_L4_SLOTS, entry: Some(super::switcher_slot()) }
}

/// The controls the guest's tables are read with: the CPU's own CR0.WP and EFER.NXE, which
/// are xen-lite's and stay as they are while ring 1 runs.
fn controls() -> Controls {
    const CR0_WP: u64 = 1 << 16;
    const EFER_NXE: u64 = 1 << 11;
    // SAFETY: reading EFER has no side effect; xen-lite runs in ring 0.
    let efer = unsafe { rdmsr(x86::msr::IA32_EFER) };
    Controls { write_protect: read_cr0() & CR0_WP != 0, no_execute: efer & EFER_NXE != 0 }
}

/// A page fault raised by shadowed `domain` at `address` (CR2): `true` if it is the guest's own
/// and goes on to its handler (with `frame.error_code` as its MMU would give it); `false` if it
/// was hidden (the frame returns to the instruction, which now succeeds) or the domain was
/// killed for an entry beyond its memory.
pub fn page_fault(domain: &mut Domain, frame: &mut TrapFrame, address: u64) -> bool {
    let Domain { id, pv: Some(pv), stats, .. } = domain else { return true };
    let Some(shadow) = pv.shadow.as_mut() else { return true };
    let fault = shadow.page_fault(*id, stats, controls(), address, frame.error_code);
    pv.cr3 = shadow.tables.root(); // a recycle may have moved the root
    let pages = shadow.pmap.pages;
    match fault {
        Fault::Hidden => false,
        Fault::True { error_code } => {
            frame.error_code = error_code;
            true
        }
        Fault::Beyond(beyond) => {
            shadow::kill_beyond(domain, beyond, pages, address, frame.rip);
            false
        }
    }
}

/// `mmuext_op` for a shadowed domain: the base pointer and the invalidations go to its shadow;
/// pinning has nothing to pin.
pub fn mmuext(domain: &mut Domain, op: MmuextOp) -> Result<(), Errno> {
    let Domain { pv: Some(pv), stats, nr_pages, .. } = domain else { return Err(Errno::ENOSYS) };
    let Some(shadow) = pv.shadow.as_mut() else { return Err(Errno::ENOSYS) };
    match op.cmd {
        MMUEXT_NEW_BASEPTR if op.arg < *nr_pages => shadow.tables.load_cr3(op.arg * PAGE_SIZE),
        MMUEXT_NEW_BASEPTR => {
            stats.mmu_rejected += 1;
            return Err(Errno::EINVAL);
        }
        MMUEXT_TLB_FLUSH_LOCAL => shadow.tables.flush(),
        MMUEXT_INVLPG_LOCAL => shadow.tables.invalidate_page(op.arg),
        _ => return Err(refuse(domain, "mmuext_op")),
    }
    shadow.record(stats);
    pv.cr3 = shadow.tables.root();
    Ok(())
}

/// A direct-paging request (`mmu_update`, `update_va_mapping`, pin, unpin) from a shadowed
/// domain: counted in `Stats::mmu_rejected`, and `EPERM`.
pub fn refuse(domain: &mut Domain, what: &str) -> Errno {
    domain.stats.mmu_rejected += 1;
    log::debug!(
        "dom{}: {what} refused: under shadow paging the guest writes its own tables",
        domain.id
    );
    Errno::EPERM
}
