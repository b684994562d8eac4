//! `shadow-tlb`: the TLB's rules as the guest sees them, the ones shadow paging must keep
//! (`xen-lite/src/shadow/mod.rs`) and the hardware keeps natively.
//!
//! In a fresh address space the workload maps one page at [`VA`] to frame A, reads it, and
//! checks that the MMU set the level-1 entry's A bit and not D; writes it and checks D. Then it
//! points the entry at frame B **without** `invlpg` and reads again: the old translation (A's
//! marker) must still be there, as a TLB keeps it; after `invlpg` the new one (B's marker).
//! Each finding is one line; the last says whether all held.
//!
//! `shadow-sweep` maps [`SWEEP_PAGES`] pages 1 GiB apart (each needs a level-2 and a level-1
//! table of its own) and reads them all back three times: more tables than a small shadow pool
//! (`shadow_pool=16`) holds, so xen-lite must recycle, and every value must still be right.

use hypercall_abi::hypercall::Errno;
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
    let kernel_l4 = info.pte_base + (info.pt_base - hypercall_abi::layout::gfn_to_va(0));
    space.activate()?;
    // SAFETY: `VA` is mapped to frame A in the space just loaded; the kernel may touch user
    // pages of the current space.
    let read = || unsafe { (VA as *const u64).read_volatile() };
    let value = read();
    let entry = space.leaf(VA).map_or(0, |(_, e)| e);
    let accessed = value == MARK_A && entry & (ACCESSED | DIRTY) == ACCESSED;
    // SAFETY: as above, and the page is writable.
    unsafe { (VA as *mut u64).write_volatile(MARK_A) };
    let dirty = space.leaf(VA).is_some_and(|(_, e)| e & DIRTY != 0);
    let retarget = (first & !address(first)) | tables.machine(b);
    platform::set_pte_keeping_tlb(slot, retarget)?;
    let stale = read();
    platform::invalidate_page(VA)?;
    let fresh = read();
    platform::load_root(kernel_l4)?;
    println!("shadow-tlb: first read {value:#x}: accessed set, dirty clear: {accessed}");
    println!("shadow-tlb: after a write, dirty set: {dirty}");
    println!(
        "shadow-tlb: entry changed without invlpg, read {stale:#x}: the old page: {}",
        stale == MARK_A
    );
    println!("shadow-tlb: after invlpg, read {fresh:#x}: the new page: {}", fresh == MARK_B);
    let held = accessed && dirty && stale == MARK_A && fresh == MARK_B;
    println!("shadow-tlb: {}", if held { "the TLB's rules hold" } else { "a rule did NOT hold" });
    space.destroy();
    crate::frames::free(b);
    if held {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Pages `shadow-sweep` maps, 1 GiB apart.
pub const SWEEP_PAGES: u64 = 12;

/// Maps [`SWEEP_PAGES`] pages 1 GiB apart with a marker each, and reads them back three times.
pub fn shadow_sweep(info: &StartInfo) -> Result<(), Errno> {
    let mut space = AddressSpace::new(info)?;
    let kernel_l4 = info.pte_base + (info.pt_base - hypercall_abi::layout::gfn_to_va(0));
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
