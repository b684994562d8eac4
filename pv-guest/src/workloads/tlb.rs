//! `shadow-tlb`: the TLB's rules as the guest sees them, the ones shadow paging must keep
//! (`xen-lite/src/shadow/mod.rs`) and the hardware keeps natively.
//!
//! In a fresh address space the workload maps one page at [`VA`] to frame A, reads it, and
//! checks that the MMU set the level-1 entry's A bit and not D; writes it and checks D. Then it
//! points the entry at frame B **without** `invlpg` and reads again: the old translation (A's
//! marker) must still be there, as a TLB keeps it; after `invlpg` the new one (B's marker).
//! Back on the kernel's own tables (a CR3 load), a read of the page faults and must report the
//! page's address in CR2, though the fault's own delivery takes hidden faults on a shadow.
//! Each finding is one line; the last says whether all held. On a shadow (the counters say
//! whether there is one) it also counts the hidden faults of each of the four accesses: one for
//! the first read (the shadow starts empty after the CR3 load), one for the first write (the
//! shadow maps a clean page read-only, so that the write's fault can set D), none for the stale
//! read, one after the `invlpg`.
//!
//! `shadow-sweep` maps [`SWEEP_PAGES`] pages 1 GiB apart (each needs a level-2 and a level-1
//! table of its own) and reads them all back three times: more tables than a small shadow pool
//! (`shadow_pool=16`) holds, so xen-lite must recycle, and every value must still be right.
//!
//! `shadow-reserved-slot` attacks the one thing of xen-lite's in a `pv` guest's address space
//! under shadow paging, the level-4 slots reserved for it (where the switcher lives): the
//! kernel copies the entry that maps [`VA`] into slot [`RESERVED_SLOT`] of its own L4, so its
//! tables map the same page at [`reserved_va`] too, and `invlpg`s xen-lite's IDT on the way.
//! xen-lite never follows a guest entry in its slots: the read is the guest's own page fault,
//! and the kernel reports an unexpected exception and stops. (Under direct paging the entry is
//! refused; under VMX or SVM, or natively, the guest owns every slot and the read succeeds.)

use hypercall_abi::hypercall::Errno;
use hypercall_abi::page_table::Tables;
use hypercall_abi::page_table::{address, ACCESSED, DIRTY};
use hypercall_abi::StartInfo;

use crate::address_space::AddressSpace;
use crate::{platform, println};

/// Where the page is mapped: a user address no program uses.
pub const VA: u64 = 0x7000_0000;
/// What frames A and B hold.
const MARK_A: u64 = 0xaaaa_0000_0000_000a;
const MARK_B: u64 = 0xbbbb_0000_0000_000b;

/// Runs the checks in an address space of its own, then returns to the start-of-day tables.
pub fn shadow_tlb(info: &StartInfo) -> Result<(), Errno> {
    let mut space = AddressSpace::new(info)?;
    let a = space.map_new(VA, true)?;
    let b = crate::frames::alloc().ok_or(Errno::ENOMEM)?;
    let (slot, first) = space.leaf(VA).ok_or(Errno::EINVAL)?;
    // SAFETY: both frames are the domain's, mapped writable in the direct map.
    unsafe {
        (hypercall_abi::layout::gfn_to_va(a) as *mut u64).write_volatile(MARK_A);
        (hypercall_abi::layout::gfn_to_va(b) as *mut u64).write_volatile(MARK_B);
    }
    let tables = crate::page_tables::DirectMap::new(info.pte_base);
    let kernel_l4 = crate::page_tables::start_of_day_root(info);
    space.activate()?;
    // SAFETY: a kernel static, mapped in every address space: this only warms the code of
    // `touch` and the counters' path, so that the accesses below count only their own faults.
    unsafe { touch(&WARM_UP as *const u64 as u64, None) };
    // SAFETY: `VA` is mapped to frame A in the space just loaded, writable; the kernel may
    // touch user pages of the current space.
    let (value, first_read) = unsafe { touch(VA, None) };
    let entry = space.leaf(VA).map_or(0, |(_, e)| e);
    let accessed = value == MARK_A && entry & (ACCESSED | DIRTY) == ACCESSED;
    // SAFETY: as above.
    let (_, first_write) = unsafe { touch(VA, Some(MARK_A)) };
    let dirty = space.leaf(VA).is_some_and(|(_, e)| e & DIRTY != 0);
    let retarget = (first & !address(first)) | tables.machine(b);
    platform::set_pte_keeping_tlb(slot, retarget)?;
    // SAFETY: as above; the entry now names frame B, also the domain's.
    let (stale, stale_read) = unsafe { touch(VA, None) };
    platform::invalidate_page(VA)?;
    // SAFETY: as above.
    let (fresh, fresh_read) = unsafe { touch(VA, None) };
    platform::load_root(kernel_l4)?;
    // Right after a CR3 load, a fault whose delivery itself takes hidden faults (the snippet's
    // stack is not in the new shadow yet) must still report its own address in CR2.
    let caught = crate::traps::catch_in_kernel(core::ptr::addr_of!(shadow_tlb_read_va) as u64);
    let own_cr2 = caught.vector == 14 && caught.fault_address == VA;
    if let (Some(a), Some(b), Some(c), Some(d)) = (first_read, first_write, stale_read, fresh_read)
    {
        println!(
            "shadow-tlb: hidden faults: first read {a}, first write {b}, stale read {c}, read after invlpg {d}"
        );
    }
    println!("shadow-tlb: first read {value:#x}: accessed set, dirty clear: {accessed}");
    println!("shadow-tlb: after a write, dirty set: {dirty}");
    println!(
        "shadow-tlb: entry changed without invlpg, read {stale:#x}: the old page: {}",
        stale == MARK_A
    );
    println!("shadow-tlb: after invlpg, read {fresh:#x}: the new page: {}", fresh == MARK_B);
    println!(
        "shadow-tlb: a fault right after a CR3 load reports its own address ({:#x}): {own_cr2}",
        caught.fault_address
    );
    let held = accessed && dirty && stale == MARK_A && fresh == MARK_B && own_cr2;
    println!("shadow-tlb: {}", if held { "the TLB's rules hold" } else { "a rule did NOT hold" });
    space.destroy();
    crate::frames::free(b);
    if held {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

// A kernel read of `VA`, for `catch_in_kernel`: it faults when `VA` is not mapped.
core::arch::global_asm!(
    r#"
    .section .text.shadow_tlb, "ax"
    .global shadow_tlb_read_va
shadow_tlb_read_va:
    mov rax, {va}
    mov rax, [rax]
    ud2
    "#,
    va = const VA,
);

unsafe extern "C" {
    static shadow_tlb_read_va: u8;
}

/// A word every address space maps (the kernel's), for warming [`touch`] up.
static WARM_UP: u64 = 0;

/// Hidden shadow faults so far, from xen-lite's counters: `None` where there is no shadow
/// (natively, or under direct paging, where no shadow table is ever built).
fn hidden_faults() -> Option<u64> {
    let stats = platform::stats().ok()?;
    (stats.shadow_tables_built > 0).then_some(stats.shadow_hidden_faults)
}

/// Reads the word at `va`, or writes `write` there, and counts the hidden faults that took:
/// `(the word, hidden faults)`. Never inlined: one copy of its code, warmed once, serves
/// every access.
///
/// # Safety
///
/// `va` is mapped in the current address space (writable, for a write).
#[inline(never)]
unsafe fn touch(va: u64, write: Option<u64>) -> (u64, Option<u64>) {
    let before = hidden_faults();
    let value = match write {
        // SAFETY: the caller's promise.
        Some(value) => unsafe {
            (va as *mut u64).write_volatile(value);
            value
        },
        // SAFETY: the caller's promise.
        None => unsafe { (va as *const u64).read_volatile() },
    };
    let after = hidden_faults();
    (value, before.zip(after).map(|(before, after)| after - before))
}

/// The level-4 slot `shadow-reserved-slot` writes: the first of xen-lite's.
pub const RESERVED_SLOT: u64 = 256;

/// Where [`VA`]'s page appears once the guest's L4 has the same entry in [`RESERVED_SLOT`].
pub const fn reserved_va() -> u64 {
    0xffff_0000_0000_0000 | RESERVED_SLOT << 39 | VA
}

/// Maps a marked page at [`VA`], gives its L4 entry a copy in xen-lite's slot 256, and reads
/// the page through both; the second read never returns under a hypervisor that keeps the
/// slot.
pub fn shadow_reserved_slot(info: &StartInfo) -> Result<(), Errno> {
    let mut space = AddressSpace::new(info)?;
    let page = space.map_new(VA, true)?;
    // SAFETY: a frame just mapped for this space, writable in the direct map.
    unsafe { (hypercall_abi::layout::gfn_to_va(page) as *mut u64).write_volatile(MARK_A) };
    let tables = crate::page_tables::DirectMap::new(info.pte_base);
    let l4 = tables.machine(space.l4());
    let low = tables.read(l4, 0).ok_or(Errno::EINVAL)?;
    space.activate()?;
    platform::set_pte_keeping_tlb(l4 + RESERVED_SLOT * 8, low)?;
    platform::invalidate_page(reserved_va())?;
    platform::invalidate_page(platform::idt_base())?;
    println!(
        "shadow-reserved-slot: invlpg of xen-lite's IDT at {:#x}: still running",
        platform::idt_base()
    );
    // SAFETY: mapped in the space just loaded.
    let value = unsafe { (VA as *const u64).read_volatile() };
    println!("shadow-reserved-slot: read {value:#x} at {VA:#x}; now at {:#x}, through the guest's own entry in L4 slot {RESERVED_SLOT}", reserved_va());
    // SAFETY: deliberately reads through an entry in a slot a hypervisor reserves; where it
    // keeps the slot this faults and never returns.
    let again = unsafe { (reserved_va() as *const u64).read_volatile() };
    println!("shadow-reserved-slot: read {again:#x} there: the guest's entry was followed");
    let kernel_l4 = crate::page_tables::start_of_day_root(info);
    platform::load_root(kernel_l4)?;
    space.destroy();
    Ok(())
}

/// Pages `shadow-sweep` maps, 1 GiB apart.
pub const SWEEP_PAGES: u64 = 12;

/// Maps [`SWEEP_PAGES`] pages 1 GiB apart with a marker each, and reads them back three times.
pub fn shadow_sweep(info: &StartInfo) -> Result<(), Errno> {
    let mut space = AddressSpace::new(info)?;
    let kernel_l4 = crate::page_tables::start_of_day_root(info);
    let va = |n: u64| (n + 1) << 30;
    for n in 0..SWEEP_PAGES {
        let gfn = space.map_new(va(n), true)?;
        // SAFETY: a frame just mapped for this space, writable in the direct map.
        unsafe { (hypercall_abi::layout::gfn_to_va(gfn) as *mut u64).write_volatile(MARK_A + n) };
    }
    space.activate()?;
    let mut wrong = 0;
    for _ in 0..3 {
        for n in 0..SWEEP_PAGES {
            // SAFETY: mapped in the space just loaded.
            wrong += u64::from(unsafe { (va(n) as *const u64).read_volatile() } != MARK_A + n);
        }
    }
    platform::load_root(kernel_l4)?;
    space.destroy();
    println!("shadow-sweep: {SWEEP_PAGES} pages 1 GiB apart read back 3 times: {wrong} wrong");
    if wrong == 0 {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}
